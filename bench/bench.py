"""The benchmark of issues #5 and #16: runfcgi against flup, uWSGI, gunicorn and the ceiling.

Run it through ``bench/run`` (which installs what it needs); ``bench/run --help``
lists the options and ``bench/README.rst`` says how to read the results.

One nginx on loopback fronts every backend, one ``server`` block (port) per
target.  wrk (``-t1 -c8``) drives each target in short rounds, interleaved so
that the machine's noise lands on every target alike; the figures that matter
are ratios taken within one run.  Then single requests time large bodies
through nginx and Apache, and a large upload's memory cost is sampled from
/proc.  Then two parts with servers of their own: slow views beside fast
ones (``slowviews.py``) and memory against uWSGI (``memory.py``).  Every
process started here runs in a session of its own and is stopped by its id
at the end, also on Ctrl-C.
"""
import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv"
PY = str(VENV / "bin" / "python") if (VENV / "bin" / "python").exists() else sys.executable
RESULTS = BENCH / "results"
DOCS_PNG = REPO / "docs" / "_static" / "bench.png"
# The figures behind that chart, committed with it so the docs table builds anywhere.
DOCS_JSON = REPO / "docs" / "_static" / "bench.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
MiB = 1024 * 1024

# FastCGI parameters sent by every FastCGI server block: nginx's stock
# fastcgi_params, except that SCRIPT_NAME is empty and PATH_INFO holds the
# path (the set-up old guides use), so flup and uWSGI route like runfcgi.
FASTCGI_PARAMS = """
    fastcgi_param QUERY_STRING $query_string;
    fastcgi_param REQUEST_METHOD $request_method;
    fastcgi_param CONTENT_TYPE $content_type;
    fastcgi_param CONTENT_LENGTH $content_length;
    fastcgi_param SCRIPT_NAME "";
    fastcgi_param PATH_INFO $fastcgi_script_name;
    fastcgi_param REQUEST_URI $request_uri;
    fastcgi_param DOCUMENT_URI $document_uri;
    fastcgi_param DOCUMENT_ROOT $document_root;
    fastcgi_param SERVER_PROTOCOL $server_protocol;
    fastcgi_param REQUEST_SCHEME $scheme;
    fastcgi_param HTTPS $https if_not_empty;
    fastcgi_param GATEWAY_INTERFACE CGI/1.1;
    fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
    fastcgi_param REMOTE_ADDR $remote_addr;
    fastcgi_param REMOTE_PORT $remote_port;
    fastcgi_param SERVER_ADDR $server_addr;
    fastcgi_param SERVER_PORT $server_port;
    fastcgi_param SERVER_NAME $server_name;
"""
# nginx's stock scgi_params plus the same SCRIPT_NAME/PATH_INFO pair.
SCGI_PARAMS = """
    scgi_param REQUEST_METHOD $request_method;
    scgi_param REQUEST_URI $request_uri;
    scgi_param QUERY_STRING $query_string;
    scgi_param CONTENT_TYPE $content_type;
    scgi_param DOCUMENT_URI $document_uri;
    scgi_param DOCUMENT_ROOT $document_root;
    scgi_param SCGI 1;
    scgi_param SERVER_PROTOCOL $server_protocol;
    scgi_param REQUEST_SCHEME $scheme;
    scgi_param HTTPS $https if_not_empty;
    scgi_param REMOTE_ADDR $remote_addr;
    scgi_param REMOTE_PORT $remote_port;
    scgi_param SERVER_PORT $server_port;
    scgi_param SERVER_NAME $server_name;
    scgi_param SCRIPT_NAME "";
    scgi_param PATH_INFO $document_uri;
"""


def log(message):
    print(f"bench: {message}", flush=True)


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# -- processes ------------------------------------------------------------------


def read_stat(pid):
    """Return the fields of /proc/<pid>/stat after the command name, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def session_pids(sid):
    """Every live process in session ``sid`` (a backend and all its workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = read_stat(entry)
        # fields[0] is the state (stat field 3), fields[3] the session id.
        if fields and int(fields[3]) == sid and fields[0] != b"Z":
            pids.append(int(entry))
    return pids


def session_cpu_ticks(sid):
    """(user, system) clock ticks of a session, including reaped children's."""
    user = system = 0
    for pid in session_pids(sid):
        fields = read_stat(pid)
        if not fields:
            continue
        user += int(fields[11])  # utime
        system += int(fields[12])  # stime
        if pid == sid:
            user += int(fields[13])  # cutime
            system += int(fields[14])  # cstime
    return user, system


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Processes:
    """Every long-running process this run starts; ``stop_all`` ends them by id."""

    def __init__(self, logdir):
        self.logdir = Path(logdir)
        self.running = []  # (name, Popen)

    def start(self, name, argv, env=None, cwd=None):
        logfile = open(self.logdir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile,
                                stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        logfile.close()
        proc.bench_name = name
        self.running.append((name, proc))
        return proc

    def log_tail(self, name, lines=15):
        path = self.logdir / f"{name}.log"
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, proc, sig=signal.SIGTERM, grace=5.0):
        """Signal the leader, wait, then SIGKILL whatever is left of its session."""
        sid = proc.pid
        members = set(session_pids(sid))
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # flup's prefork master ignores SIGTERM while idle (a known defect);
        # workers may outlive their master: kill each by its pid.
        members |= set(session_pids(sid))
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self.running = [(n, p) for n, p in self.running if p is not proc]

    def stop_all(self, grace=5.0):
        """Signal every leader at once, wait ``grace`` seconds, kill the rest."""
        members = {}
        for name, proc in self.running:
            members[proc.pid] = set(session_pids(proc.pid))
            if proc.poll() is None:
                sig = signal.SIGQUIT if name == "nginx" else signal.SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
        deadline = time.monotonic() + grace
        for _name, proc in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for name, proc in self.running:
            # flup's prefork master ignores SIGTERM while idle; workers may
            # outlive their master: kill whatever is left, each by its pid.
            for pid in members[proc.pid] | set(session_pids(proc.pid)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                log(f"could not stop {name} (pid {proc.pid})")
        self.running = []


def wait_port(port, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
            return True
        time.sleep(0.1)
    return False


# -- backends ---------------------------------------------------------------------


class Backend:
    """One application server process group listening on 127.0.0.1:port."""

    def __init__(self, key, protocol, argv_for_port, env, optional=False, cwd=None):
        self.key = key
        self.protocol = protocol  # fcgi, scgi, ajp or http
        self.port = free_port()
        self.argv_for_port = argv_for_port
        self.argv = argv_for_port(self.port)
        self.env = env
        self.optional = optional
        self.cwd = cwd
        self.proc = None
        self.error = None

    @property
    def ok(self):
        return self.proc is not None and self.error is None and self.proc.poll() is None

    def start(self, procs):
        self.proc = procs.start(self.key, self.argv, env=self.env, cwd=self.cwd)

    def wait(self, procs, timeout=60.0):
        if not wait_port(self.port, self.proc, timeout):
            tail = procs.log_tail(self.key, 8)
            self.error = "did not start" + (f":\n{tail}" if tail else "")
            return False
        return True

    def cpu_ticks(self):
        return session_cpu_ticks(self.proc.pid)

    def pids(self):
        return session_pids(self.proc.pid)


def bench_env():
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "benchsite.settings"
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(REPO / "example")])
    env.pop("PYTHONDEVMODE", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def runfcgi_argv(protocol, method, threads, pool=None):
    """``pool``: the pool's options instead of the benchmark's (2 prefork workers)."""
    if pool is None:
        maxchildren = 2 if method == "prefork" else threads
        pool = {"maxspare": 2, "minspare": 2, "maxchildren": maxchildren}

    def argv(port):
        return [PY, str(REPO / "example" / "manage.py"), "runfcgi", "daemonize=false",
                f"protocol={protocol}", f"method={method}", f"host={HOST}", f"port={port}",
                *(f"{name}={value}" for name, value in pool.items())]
    return argv


def flup_argv(protocol, method, threads):
    return lambda port: [PY, str(BENCH / "flup_serve.py"), protocol, method, str(port),
                         str(threads)]


def uwsgi_argv(port, processes=2):
    common = [f"--fastcgi-socket={HOST}:{port}", "--master", f"--processes={processes}",
              "--module=benchsite.wsgi:application", f"--pythonpath={BENCH}",
              f"--pythonpath={REPO / 'example'}", "--disable-logging", "--die-on-term",
              "--need-app", "--env=DJANGO_SETTINGS_MODULE=benchsite.settings"]
    if (VENV / "bin" / "uwsgi").exists():
        return [str(VENV / "bin" / "uwsgi")] + common
    # Debian's uwsgi + python3 plugin, used when the venv runs Debian's python3.
    return ["/usr/bin/uwsgi", "--plugin=python3", f"--virtualenv={VENV}"] + common


def gunicorn_argv(port):
    return [str(VENV / "bin" / "gunicorn"), "--workers=2", "--worker-class=sync",
            f"--bind={HOST}:{port}", "--log-level=warning", "benchsite.wsgi:application"]


def runfcgi_available():
    """True when runfcgi_compat.servers can build a server (make_server exists)."""
    probe = subprocess.run(
        [PY, "-c", "from runfcgi_compat.servers import make_server"],
        env=bench_env(), capture_output=True, text=True)
    return probe.returncode == 0, probe.stderr.strip().splitlines()[-1:] or [""]


# -- nginx ------------------------------------------------------------------------


class Target:
    """One thing wrk measures: a backend behind one nginx server block."""

    def __init__(self, key, label, group, backend, mode="plain"):
        self.key = key
        self.label = label
        self.group = group  # runfcgi, reference, ceiling
        self.backend = backend
        self.mode = mode  # plain, keep (fastcgi_keep_conn), http, inprocess
        self.port = free_port() if backend is not None else None
        self.rounds = []
        self.error = None
        self.access_log = None  # set by nginx_conf
        self.nginx_outcome = None  # what nginx logged during the rounds

    def url(self, path="/"):
        return f"http://{HOST}:{self.port}{path}"

    def nginx_block(self):
        b = self.backend
        upstream = ""
        if self.mode == "keep":
            name = f"keep_{self.key.replace('-', '_')}"
            upstream = f"upstream {name} {{ server {HOST}:{b.port}; keepalive 8; }}\n"
            location = (f"{FASTCGI_PARAMS}    fastcgi_keep_conn on;\n"
                        f"    fastcgi_pass {name};\n")
        elif b.protocol == "fcgi":
            location = f"{FASTCGI_PARAMS}    fastcgi_pass {HOST}:{b.port};\n"
        elif b.protocol == "scgi":
            location = f"{SCGI_PARAMS}    scgi_pass {HOST}:{b.port};\n"
        elif b.protocol == "http":
            location = (f"    proxy_pass http://{HOST}:{b.port};\n"
                        "    proxy_set_header Host $host;\n")
        else:
            raise ValueError(b.protocol)
        return (f"{upstream}server {{\n  listen {HOST}:{self.port};\n  server_name localhost;\n"
                f"  # {self.label}\n"
                f"  access_log {self.access_log} bench buffer=64k flush=1s;\n"
                f"  location / {{\n{location}  }}\n}}\n")


def nginx_conf(tmp, targets, status_port=None):
    for t in targets:
        t.access_log = f"{tmp}/access-{t.key}.log"
    blocks = "\n".join(t.nginx_block() for t in targets if t.backend is not None)
    if status_port:
        blocks += (f"server {{\n  listen {HOST}:{status_port};\n  access_log off;\n"
                   "  location / { stub_status; }\n}\n")
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  log_format bench '$status $request_time';
  client_body_temp_path {tmp}/client_body;
  fastcgi_temp_path {tmp}/fastcgi_temp;
  scgi_temp_path {tmp}/scgi_temp;
  proxy_temp_path {tmp}/proxy_temp;
  uwsgi_temp_path {tmp}/uwsgi_temp;
  client_max_body_size 0;
  keepalive_requests 1000000;
  fastcgi_connect_timeout 5s;
  fastcgi_read_timeout 10s;
  fastcgi_send_timeout 10s;
  scgi_connect_timeout 5s;
  scgi_read_timeout 10s;
  scgi_send_timeout 10s;
  proxy_connect_timeout 5s;
  proxy_read_timeout 10s;
  proxy_send_timeout 10s;
{blocks}
}}
"""


def start_nginx(procs, tmp, targets, status_port):
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(nginx_conf(tmp, targets, status_port))
    check = subprocess.run(["nginx", "-t", "-q", "-c", str(conf), "-p", str(tmp)],
                           capture_output=True, text=True)
    if check.returncode:
        raise SystemExit(f"bench: nginx rejected its config {conf}:\n{check.stderr}")
    proc = procs.start("nginx", ["nginx", "-c", str(conf), "-p", str(tmp)])
    first = next((t for t in targets if t.backend is not None), None)
    if first is not None and not wait_port(first.port, proc, 10):
        raise SystemExit("bench: nginx did not start:\n" + procs.log_tail("nginx"))
    return proc


def nginx_wait_idle(status_port, timeout=15.0):
    """Wait until nginx holds no client connection but our status request.

    Requests stuck in a backend's backlog end (as 499 or 504) only when
    nginx gives up on them; waiting here puts them in the access logs.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, status_port, timeout=2)
            conn.request("GET", "/")
            text = conn.getresponse().read().decode()
            conn.close()
            if int(text.split("Active connections:")[1].split()[0]) <= 1:
                break
        except (OSError, ValueError, IndexError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    time.sleep(1.2)  # access_log flush=1s


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def nginx_outcome(path, offset):
    """Count what nginx answered in ``path`` from ``offset``: ok, failed, by status.

    A 499 that waited less than a second is a request wrk left in flight
    when its run ended, not a failure; every other non-200 is one.
    """
    counts = {}
    ok = failed = in_flight = 0
    try:
        with open(path) as f:
            f.seek(offset)
            for line in f:
                parts = line.split()
                if len(parts) < 2:
                    continue
                status, seconds = parts[0], float(parts[1])
                if status == "200":
                    ok += 1
                    continue
                if status == "499" and seconds < 1.0:
                    in_flight += 1
                    continue
                failed += 1
                key = status if status != "499" else "499 after waiting"
                counts[key] = counts.get(key, 0) + 1
    except OSError:
        pass
    return {"ok": ok, "failed": failed, "in_flight_at_stop": in_flight, "failed_by_status": counts}


# -- Apache -----------------------------------------------------------------------

APACHE_MODULES = ["mpm_event", "authz_core", "proxy", "proxy_ajp", "proxy_fcgi"]


def apache_conf(tmp, vhosts):
    """``vhosts``: list of (port, backend url) pairs, e.g. ajp://127.0.0.1:9000/."""
    modules = "\n".join(
        f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in APACHE_MODULES)
    listens = "\n".join(f"Listen {HOST}:{port}" for port, _ in vhosts)
    # AJP as the docs configure it (frontends/templates/apache.conf).
    hosts = "\n".join(
        f"<VirtualHost {HOST}:{port}>\n"
        + ("  ProxyIOBufferSize 65536\n" if url.startswith("ajp:") else "")
        + f"  ProxyPass / {url} timeout=30\n</VirtualHost>"
        for port, url in vhosts)
    return f"""
ServerRoot {tmp}
DefaultRuntimeDir {tmp}
PidFile {tmp}/apache.pid
Mutex file:{tmp} default
ServerName localhost
# One process: mod_proxy keeps one AJP connection per Apache process, and
# with the compiled-in 3 processes those kept connections would outnumber
# the 2 backend workers (the fresh-connection check measures that case).
StartServers 1
ServerLimit 1
ThreadsPerChild 25
MaxRequestWorkers 25
User www-data
Group www-data
ErrorLog {tmp}/apache-error.log
LogLevel warn
{modules}
LimitRequestBody 0
ProxyTimeout 30
{listens}
{hosts}
"""


def start_apache(procs, tmp, vhosts):
    adir = Path(tmp) / "apache"
    adir.mkdir(exist_ok=True)
    conf = adir / "apache.conf"
    conf.write_text(apache_conf(adir, vhosts))
    proc = procs.start("apache", ["apache2", "-f", str(conf), "-DFOREGROUND"])
    if not wait_port(vhosts[0][0], proc, 10):
        return None, "Apache did not start: " + procs.log_tail("apache", 5)
    return proc, None


# -- measuring ----------------------------------------------------------------------


def run_wrk(url, seconds, conns):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "5s", "-s", str(BENCH / "report.lua"), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:])
    raise RuntimeError(f"wrk printed no summary: {out.stdout[-300:]} {out.stderr[-300:]}")


def measure_wrk(target, seconds, conns):
    """One wrk run against a target, with the backend's CPU use over it."""
    backend = target.backend
    cpu0 = backend.cpu_ticks()
    res = run_wrk(target.url(), seconds, conns)
    cpu1 = backend.cpu_ticks()
    res["cpu_s"] = (sum(cpu1) - sum(cpu0)) / CLK_TCK
    res["cpu_sys_s"] = (cpu1[1] - cpu0[1]) / CLK_TCK
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["socket_errors"] = res["connect"] + res["read"] + res["write"] + res["timeout"]
    res["failed"] = res["socket_errors"] + res["status"]  # refined from nginx's log
    return res


def measure_inprocess(seconds):
    out = subprocess.run([PY, str(BENCH / "inprocess.py"), str(seconds)], env=bench_env(),
                         capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode:
        raise RuntimeError(out.stderr.strip()[-500:])
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {"requests": data["requests"], "duration_us": int(data["seconds"] * 1e6),
            "rps": data["requests"] / data["seconds"], "cpu_s": data["cpu"], "failed": 0,
            "p50_us": None, "p99_us": None}


def probe(target, timeout=30.0):
    """Wait until a GET / through nginx answers 200; return an error or None."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, target.port, timeout=5)
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status == 200:
                return None
            last = f"HTTP {resp.status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    return last or "no answer"


def summarize(target):
    rounds = target.rounds
    if not rounds:
        return None
    rps = [r["rps"] for r in rounds]
    requests = sum(r["requests"] for r in rounds)
    cpu = sum(r["cpu_s"] for r in rounds)
    cpu_sys = sum(r.get("cpu_sys_s", 0) for r in rounds)
    p50 = [r["p50_us"] for r in rounds if r.get("p50_us") is not None and r["requests"]]
    p99 = [r["p99_us"] for r in rounds if r.get("p99_us") is not None and r["requests"]]
    return {
        "label": target.label, "group": target.group,
        "rps_median": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
        "p50_ms": statistics.median(p50) / 1000 if p50 else None,
        "p99_ms": statistics.median(p99) / 1000 if p99 else None,
        "cpu_us_per_request": cpu / requests * 1e6 if requests else None,
        "cpu_sys_us_per_request": (cpu_sys / requests * 1e6
                                   if requests and target.backend is not None else None),
        "requests": requests,
        "failed": failed_count(target),
        "nginx": target.nginx_outcome,
        "rounds": rounds,
    }


def failed_count(target):
    """Failed requests over the rounds: wrk's socket errors plus nginx's non-200s.

    wrk never reports a request that is still waiting when its run ends (a
    connection stuck in a backend's backlog), so nginx's access log is the
    judge: it logs such a request as 499 (client gone) or 504.
    """
    sockets = sum(r.get("socket_errors", 0) for r in target.rounds)
    if target.nginx_outcome is None:
        return sum(r["failed"] for r in target.rounds)
    return sockets + target.nginx_outcome["failed"]


# -- a minimal FastCGI client (kept connections) ---------------------------------------

FCGI_BEGIN, FCGI_END, FCGI_PARAMS_T, FCGI_STDIN, FCGI_STDOUT = 1, 3, 4, 5, 6


def _fcgi_record(rtype, content, rid=1):
    padding = -len(content) & 7
    return struct.pack("!BBHHBx", 1, rtype, rid, len(content), padding) + content + b"\0" * padding


def _fcgi_pair(name, value):
    name, value = name.encode(), value.encode()
    def length(n):
        return struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)
    return length(len(name)) + length(len(value)) + name + value


def fcgi_request_bytes(path="/", keep=False):
    params = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path,
              "REQUEST_URI": path, "QUERY_STRING": "", "SERVER_NAME": "localhost",
              "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": HOST,
              "REMOTE_PORT": "40000", "GATEWAY_INTERFACE": "CGI/1.1", "HTTP_HOST": "localhost"}
    body = b"".join(_fcgi_pair(k, v) for k, v in params.items())
    return (_fcgi_record(FCGI_BEGIN, struct.pack("!HB5x", 1, 1 if keep else 0))
            + _fcgi_record(FCGI_PARAMS_T, body) + _fcgi_record(FCGI_PARAMS_T, b"")
            + _fcgi_record(FCGI_STDIN, b""))


def fcgi_read_response(sock, timeout):
    """Read records until FCGI_END_REQUEST; return the stdout bytes or None on timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    stdout = []
    while True:
        while len(buf) >= 8:
            _v, rtype, _rid, clen, plen = struct.unpack("!BBHHBx", buf[:8])
            if len(buf) < 8 + clen + plen:
                break
            content = buf[8:8 + clen]
            buf = buf[8 + clen + plen:]
            if rtype == FCGI_STDOUT:
                stdout.append(content)
            elif rtype == FCGI_END:
                return b"".join(stdout)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None
        if not data:
            return None
        buf += data


def check_fresh_connection(backend, kept=4, timeout=3.0):
    """Park ``kept`` idle kept-open FastCGI connections, then time a fresh one.

    ``kept`` is more than the workers (prefork) or threads (threaded), so
    idle kept connections pin every worker of a server that gives each
    connection a worker until it closes; the target is that the fresh
    connection is still answered at once.
    """
    socks = []
    served = 0
    try:
        for _ in range(kept):
            sock = socket.create_connection((HOST, backend.port), timeout)
            socks.append(sock)
            sock.sendall(fcgi_request_bytes("/", keep=True))
            if fcgi_read_response(sock, timeout) is not None:
                served += 1
        time.sleep(0.2)
        t0 = time.perf_counter()
        fresh = socket.create_connection((HOST, backend.port), timeout)
        socks.append(fresh)
        fresh.sendall(fcgi_request_bytes("/", keep=False))
        answer = fcgi_read_response(fresh, 5.0)
        fresh_s = time.perf_counter() - t0 if answer is not None else None
        # The kept connections still work after the fresh one.
        again = 0
        for sock in socks[:served]:
            sock.sendall(fcgi_request_bytes("/", keep=True))
            if fcgi_read_response(sock, timeout) is not None:
                again += 1
    except OSError as exc:
        return {"kept": kept, "kept_served": served, "fresh_s": None, "error": str(exc)}
    finally:
        for sock in socks:
            sock.close()
    return {"kept": kept, "kept_served": served, "fresh_s": fresh_s, "kept_reused": again}


# -- single timed requests (large bodies, uploads, memory) ---------------------------


def timed_request(port, method, path, body_size=0, timeout=60.0):
    """Send one request; return {"seconds", "status", "bytes", "body"} or {"error"}."""
    deadline = time.monotonic() + timeout
    chunk = b"u" * MiB
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        t0 = time.perf_counter()
        conn.putrequest(method, path)
        if method == "POST":
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(body_size))
        conn.endheaders()
        left = body_size
        while left > 0:
            step = min(left, len(chunk))
            conn.send(chunk[:step])
            left -= step
        resp = conn.getresponse()
        received = 0
        head = b""
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"more than {timeout:.0f} s")
            data = resp.read(MiB)
            if not data:
                break
            if len(head) < 4096:
                head += data[:4096]
            received += len(data)
        seconds = time.perf_counter() - t0
        conn.close()
        return {"seconds": seconds, "status": resp.status, "bytes": received,
                "body": head[:300].decode("latin-1")}
    except (OSError, http.client.HTTPException) as exc:
        return {"error": f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__}


def repeat_timed(times, *args, warmup=False, **kwargs):
    """Best of ``times`` runs of timed_request; stop at the first failure.

    ``warmup`` sends one request first and ignores its time (the first
    request of a size makes each worker allocate and cache the body).
    """
    if warmup:
        res = timed_request(*args, **kwargs)
        if "error" in res or res["status"] != 200:
            return res
    runs = []
    for _ in range(times):
        res = timed_request(*args, **kwargs)
        runs.append(res)
        if "error" in res or res["status"] != 200:
            return res | {"runs": runs}
    # The best run is the server's own cost; slower runs are the machine's
    # noise (other processes), which only ever adds time.
    times = [r["seconds"] for r in runs]
    return runs[0] | {"seconds": min(times), "median": statistics.median(times), "runs": times}


def upload_rss_growth(backend, port, size, timeout=120.0):
    """POST ``size`` bytes to /echo/ (read in 64 KiB chunks) and sample RSS."""
    base = {pid: rss_kib(pid) or 0 for pid in backend.pids()}
    peak = dict(base)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for pid in backend.pids():
                value = rss_kib(pid)
                if value is None:
                    continue
                base.setdefault(pid, value)
                peak[pid] = max(peak.get(pid, 0), value)
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        res = timed_request(port, "POST", "/echo/", size, timeout)
    finally:
        stop.set()
        sampler.join()
    growth = max((peak[pid] - base[pid] for pid in peak), default=0)
    res["rss_growth_mib"] = growth / 1024
    if "body" in res:
        try:
            res["echo_length"] = json.loads(res["body"]).get("length")
        except ValueError:
            res["echo_length"] = None
    return res


# -- checks, report, chart ---------------------------------------------------------------


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def make_checks(summary, fresh, bodies, uploads, slow=None, memory=None):
    """The issues' targets, each PASS, MISS or N/A (not measured)."""
    def rps(key):
        s = summary.get(key)
        return s["rps_median"] if s else None

    checks = []

    def add(name, value, goal, passed, detail="", noisy=False):
        status = "N/A" if passed is None else ("PASS" if passed else "MISS")
        checks.append({"name": name, "value": value, "goal": goal, "status": status,
                       "detail": detail, "noisy": noisy})

    def add_rps_ratio(name, key_a, key_b, goal, extra=""):
        """Median req/s of a over b; say so when single rounds disagree."""
        r = ratio(rps(key_a), rps(key_b))
        if r is None:
            add(name, None, f">= {goal}x", None)
            return
        a, b = summary[key_a], summary[key_b]
        by_round = {x.get("round"): x["rps"] for x in b["rounds"]}
        per_round = [x["rps"] / by_round[x.get("round")] for x in a["rounds"]
                     if by_round.get(x.get("round"))]
        notes = []
        noisy = bool(per_round) and min(per_round) < goal <= max(per_round)
        if per_round:
            notes.append(f"rounds {min(per_round):.2f}-{max(per_round):.2f}x")
        if a["cpu_us_per_request"] and b["cpu_us_per_request"]:
            cpu = a["cpu_us_per_request"] / b["cpu_us_per_request"]
            notes.append(f"uses {cpu:.2f}x the CPU per request")
        if extra:
            notes.append(extra)
        add(name, r, f">= {goal}x", r >= goal, "; ".join(notes), noisy)

    rk = ratio(rps("runfcgi-prefork-fcgi-keep"), rps("uwsgi-fcgi"))
    add_rps_ratio("prefork FastCGI vs uWSGI", "runfcgi-prefork-fcgi", "uwsgi-fcgi", 1.0,
                  f"with keep_conn {rk:.2f}x" if rk is not None else "")
    for method in ("prefork", "threaded"):
        add_rps_ratio(f"{method} keep_conn vs without", f"runfcgi-{method}-fcgi-keep",
                      f"runfcgi-{method}-fcgi", 1.2)
    failed = {k: s["failed"] for k, s in summary.items() if k.startswith("runfcgi-")}
    bad = {k: v for k, v in failed.items() if v}
    add("runfcgi: zero failed requests", sum(failed.values()) if failed else None, "0",
        None if not failed else not bad,
        ", ".join(f"{k}: {v}" for k, v in bad.items()))
    for method in ("prefork", "threaded"):
        f = fresh.get(f"runfcgi-{method}-fcgi")
        if f is None:
            add(f"{method}: fresh connection beside idle kept ones", None, "< 1 s", None)
            continue
        ok = (f.get("fresh_s") is not None and f["fresh_s"] < 1.0
              and f["kept_served"] == f["kept"])
        add(f"{method}: fresh connection beside idle kept ones", f.get("fresh_s"), "< 1 s", ok,
            f"{f['kept_served']}/{f['kept']} kept connections served"
            + (f"; {f['error']}" if f.get("error") else ""))
    add_rps_ratio("threaded FastCGI vs flup threaded", "runfcgi-threaded-fcgi",
                  "flup-threaded-fcgi", 1.5)

    def seconds(results, key):
        # The median: a single lucky run of the small body would skew a
        # ratio of best times more than the noise skews the medians.
        res = results.get(key, {})
        return None if res.get("error") else res.get("median", res.get("seconds"))

    for via in ("nginx-fcgi", "apache-ajp"):
        small = seconds(bodies, f"runfcgi-{via}-16MiB")
        large = seconds(bodies, f"runfcgi-{via}-64MiB")
        r = ratio(large, small)
        add(f"64 MiB response <= 5x 16 MiB ({via})", r, "<= 5x",
            None if r is None else r <= 5.0,
            f"16 MiB {small:.3f} s, 64 MiB {large:.3f} s" if r is not None else
            _errors(bodies, f"runfcgi-{via}-"))
    ajp = seconds(uploads, "runfcgi-apache-ajp")
    fcgi = seconds(uploads, "runfcgi-apache-fcgi")
    r = ratio(fcgi, ajp)  # speed ratio = time ratio inverted
    add("8 MiB upload: mod_proxy_ajp vs mod_proxy_fcgi speed", r, ">= 0.5x",
        None if r is None else r >= 0.5,
        f"AJP {ajp:.3f} s, FastCGI {fcgi:.3f} s" if r is not None else
        _errors(uploads, "runfcgi-apache-"))
    import memory as memory_part
    import slowviews

    for method in ("prefork", "threaded"):
        value, passed, detail, noisy = slowviews.check(slow, method)
        add(f"{method}: fast p99 beside slow views, keep_conn vs without", value,
            f"<= {slowviews.GOAL:g}x", passed, detail, noisy)
    value, passed, detail, noisy = memory_part.check(memory)
    add(f"memory: PSS of {memory_part.WORKERS} prefork workers vs uWSGI", value,
        f"<= {memory_part.GOAL:g}x", passed, detail, noisy)
    return checks


def _errors(results, prefix):
    return "; ".join(f"{k}: {v['error']}" for k, v in results.items()
                     if k.startswith(prefix) and v.get("error"))[:200]


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(summary, order):
    uwsgi = summary.get("uwsgi-fcgi", {}).get("rps_median")
    head = (f"{'target':<38} {'req/s':>8} {'min-max':>13} {'p50 ms':>7} {'p99 ms':>7}"
            f" {'CPU us/req':>10} {'(sys)':>5} {'failed':>6} {'x uWSGI':>7}")
    print(head)
    print("-" * len(head))
    for key in order:
        s = summary.get(key)
        if s is None:
            continue
        spread = f"{s['rps_min']:.0f}-{s['rps_max']:.0f}"
        print(f"{s['label']:<38} {s['rps_median']:>8.0f} {spread:>13} {fmt(s['p50_ms'], '.2f'):>7}"
              f" {fmt(s['p99_ms'], '.2f'):>7} {fmt(s['cpu_us_per_request'], '.0f'):>10}"
              f" {fmt(s.get('cpu_sys_us_per_request'), '.0f'):>5}"
              f" {s['failed']:>6} {fmt(ratio(s['rps_median'], uwsgi), '.2f'):>7}")


def print_checks(checks):
    for c in checks:
        value = c["value"]
        if isinstance(value, float):
            value = f"{value:.2f}"
        detail = f"  ({c['detail']})" if c["detail"] else ""
        status = c["status"] + ("?" if c.get("noisy") else "")
        print(f"  {status:<5} {c['name']}: {fmt(value, '')} (target {c['goal']}){detail}")
    if any(c.get("noisy") for c in checks):
        print("  ?: single rounds fall on both sides of the target: the machine was too noisy "
              "to tell; rerun (more --rounds) before trusting it.")


def draw_chart(summary, order, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in order if k in summary]
    labels = [summary[k]["label"] for k in keys]
    rps = [summary[k]["rps_median"] for k in keys]
    lo = [summary[k]["rps_median"] - summary[k]["rps_min"] for k in keys]
    hi = [summary[k]["rps_max"] - summary[k]["rps_median"] for k in keys]
    cpu = [summary[k]["cpu_us_per_request"] or 0 for k in keys]
    colors = {"runfcgi": "#1f77b4", "reference": "#9a9a9a", "ceiling": "#2ca02c"}
    col = [colors.get(summary[k]["group"], "#9a9a9a") for k in keys]
    uwsgi = summary.get("uwsgi-fcgi", {}).get("rps_median")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.42 * len(keys) + 1.6),
                                   gridspec_kw={"width_ratios": [3, 1.3]}, sharey=True)
    ypos = list(range(len(keys)))
    ax1.barh(ypos, rps, xerr=[lo, hi], color=col, capsize=2)
    ax1.set_yticks(ypos, labels, fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("requests/s (median of rounds; bars: min-max)")
    if uwsgi:
        ax1.axvline(uwsgi, color="#d62728", linestyle="--", linewidth=1)
        ax1.text(uwsgi, -0.7, " uWSGI", color="#d62728", fontsize=8, va="bottom")
    tops = [summary[k]["rps_max"] for k in keys]
    for y, value, top, key in zip(ypos, rps, tops, keys, strict=True):
        text = f" {value:,.0f}"
        if uwsgi:
            text += f"  ({value / uwsgi:.2f}x)"
        if summary[key]["failed"]:
            text += f"  {summary[key]['failed']} failed"
        ax1.text(top, y, text, va="center", fontsize=7)
    ax1.set_xlim(0, max(tops) * 1.4)
    ax2.barh(ypos, cpu, color=col)
    ax2.set_xlabel("backend CPU per request (us)")
    for y, value in zip(ypos, cpu, strict=True):
        if value:
            ax2.text(value, y, f" {value:.0f}", va="center", fontsize=7)
    ax2.set_xlim(0, max(cpu + [1]) * 1.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions():
    def out(argv):
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (res.stdout + res.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None
    pkgs = subprocess.run(
        [PY, "-c", "import importlib.metadata as m, json; print(json.dumps({n: m.version(n) "
         "for n in ['Django', 'flup', 'gunicorn', 'runfcgi-compat']}))"],
        capture_output=True, text=True)
    info = json.loads(pkgs.stdout) if pkgs.returncode == 0 else {}
    uwsgi = uwsgi_argv(1)[0]
    info.update({
        "python": out([PY, "--version"]),
        "uwsgi": out([uwsgi, "--version"]) if os.path.exists(uwsgi) else None,
        "uwsgi_build": ("PyPI, in the bench venv" if "/.venv/" in uwsgi
                        else "Debian + python3 plugin"),
        "nginx": out(["nginx", "-v"]),
        "wrk": out(["wrk", "-v"]),
        "apache": out(["apache2", "-v"]),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "wire": out([PY, "-c", "from runfcgi_compat.servers import fcgi_whole as f; "
                     "print('C' if f.parse_whole is not f.parse_whole_py else 'Python')"]),
        "git": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                          "runfcgi_compat"], capture_output=True,
                                         text=True).stdout.strip()),
    })
    return info


# -- the run --------------------------------------------------------------------------------


def build(args, runfcgi_ok):
    """Return (backends, targets, order) for this run."""
    env = bench_env()
    t = args.threads
    backends = {}

    def add_backend(key, protocol, argv, optional=False):
        backends[key] = Backend(key, protocol, argv, env, optional=optional, cwd=str(BENCH))

    if runfcgi_ok:
        for method in ("prefork", "threaded"):
            for proto in ("fcgi", "scgi"):
                add_backend(f"runfcgi-{method}-{proto}", proto, runfcgi_argv(proto, method, t))
    add_backend("uwsgi-fcgi", "fcgi", uwsgi_argv)
    add_backend("gunicorn", "http", gunicorn_argv)
    for method in ("prefork", "threaded"):
        for proto in ("fcgi", "scgi"):
            add_backend(f"flup-{method}-{proto}", proto, flup_argv(proto, method, t))
    if not args.skip_bodies:
        if runfcgi_ok:
            add_backend("runfcgi-prefork-ajp", "ajp", runfcgi_argv("ajp", "prefork", t),
                        optional=True)
        if args.flup_bodies:
            add_backend("flup-prefork-ajp", "ajp", flup_argv("ajp", "prefork", t), optional=True)

    targets = []

    def add(key, label, group, backend_key, mode="plain"):
        if backend_key is None:
            targets.append(Target(key, label, group, None, mode))
            return
        if backend_key not in backends:
            return
        if mode == "keep":
            # Its own instance: nginx's idle kept connections must not pin
            # the workers that the plain target's measurement needs.
            base = backends[backend_key]
            backends[key] = Backend(key, base.protocol, base.argv_for_port, env, cwd=str(BENCH))
            backend_key = key
        targets.append(Target(key, label, group, backends[backend_key], mode))

    for method in ("prefork", "threaded"):
        add(f"runfcgi-{method}-fcgi", f"runfcgi {method} fcgi", "runfcgi",
            f"runfcgi-{method}-fcgi")
        add(f"runfcgi-{method}-fcgi-keep", f"runfcgi {method} fcgi keep_conn", "runfcgi",
            f"runfcgi-{method}-fcgi", "keep")
        add(f"runfcgi-{method}-scgi", f"runfcgi {method} scgi", "runfcgi",
            f"runfcgi-{method}-scgi")
    add("uwsgi-fcgi", "uWSGI fcgi (2 processes)", "reference", "uwsgi-fcgi")
    add("gunicorn", "gunicorn sync (2 workers) proxy_pass", "reference", "gunicorn", "http")
    for method in ("prefork", "threaded"):
        for proto in ("fcgi", "scgi"):
            add(f"flup-{method}-{proto}", f"flup 1.0.3 {method} {proto} (1.8 way)",
                "reference", f"flup-{method}-{proto}")
    if args.flup_keep:
        for method in ("prefork", "threaded"):
            add(f"flup-{method}-fcgi-keep", f"flup 1.0.3 {method} fcgi keep_conn",
                "reference", f"flup-{method}-fcgi", "keep")
    add("inprocess", "view called in-process (1 core)", "ceiling", None, "inprocess")

    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        targets = [x for x in targets if any(w in x.key for w in wanted)]
        used = {x.backend.key for x in targets if x.backend is not None}
        backends = {k: b for k, b in backends.items() if k in used or b.optional}
    order = [x.key for x in targets]
    return backends, targets, order


# Targets measured right next to the one they are compared with (see
# paired): key -> (partner, 1 after it or 0 before it).
NEIGHBOURS = {
    "runfcgi-prefork-fcgi-keep": ("runfcgi-prefork-fcgi", 0),
    "uwsgi-fcgi": ("runfcgi-prefork-fcgi", 1),
    "runfcgi-threaded-fcgi-keep": ("runfcgi-threaded-fcgi", 1),
}


def paired(targets):
    """Targets in groups measured one right after another: each target in
    NEIGHBOURS next to its partner, so the two see the same phase of a
    shared machine (a round of every target takes a minute, and this
    machine's speed drifts within one).  Rounds rotate whole groups."""
    groups = [[t] for t in targets if t.key not in NEIGHBOURS]
    for target in targets:
        if target.key not in NEIGHBOURS:
            continue
        partner, after = NEIGHBOURS[target.key]
        group = next((g for g in groups if partner in [t.key for t in g]), None)
        if group is None:
            groups.append([target])
        else:
            group.insert([t.key for t in group].index(partner) + after, target)
    return groups


def throughput(args, targets, status_port):
    """Warm up each target, then interleaved rounds of wrk."""
    measured = [t for t in targets if t.error is None]
    log(f"warming up {len(measured)} targets ({args.warmup} s each)")
    for target in measured:
        if target.backend is None:
            continue
        try:
            res = measure_wrk(target, args.warmup, args.connections)
        except Exception as exc:
            target.error = f"warm-up failed: {exc}"
            continue
        if res["requests"] and res["failed"] >= res["requests"]:
            target.error = f"warm-up: all {res['requests']} requests failed"
        elif res["requests"] == 0:
            target.error = "warm-up: no request completed"
    measured = [t for t in targets if t.error is None]
    for t in targets:
        if t.error:
            log(f"skipping {t.label}: {t.error}")
    nginx_wait_idle(status_port)
    offsets = {t.key: log_size(t.access_log) for t in measured if t.access_log}
    groups = paired(measured)
    for rnd in range(args.rounds):
        # Rotate the order each round so no group always follows the same one.
        shift = rnd % max(1, len(groups))
        for target in [t for group in groups[shift:] + groups[:shift] for t in group]:
            try:
                if target.backend is None:
                    res = measure_inprocess(args.seconds)
                else:
                    res = measure_wrk(target, args.seconds, args.connections)
            except Exception as exc:
                log(f"round {rnd + 1}: {target.label}: {exc}")
                continue
            res["round"] = rnd
            target.rounds.append(res)
            log(f"round {rnd + 1}/{args.rounds} {target.label:<38} {res['rps']:>8.0f} req/s"
                + (f"  {res['failed']} failed" if res["failed"] else ""))
    nginx_wait_idle(status_port)
    for target in measured:
        if target.key in offsets:
            target.nginx_outcome = nginx_outcome(target.access_log, offsets[target.key])


def bodies_and_uploads(args, procs, tmp, backends, targets):
    """Large responses, uploads and upload memory; return (bodies, uploads, rss)."""
    bodies, uploads, rss = {}, {}, {}
    by_key = {t.key: t for t in targets}
    # Best of a few after a warm-up even in a quick run: a single cold
    # request (the worker's first large allocation, nginx's first temp file)
    # was seen to take 8x the time of the next.
    times = 3 if args.quick else 7
    sizes = {"16MiB": 16 * MiB, "64MiB": 64 * MiB}

    def nginx_bodies(prefix, target, timeout, repeat):
        if target is None or target.error:
            return
        for name, size in sizes.items():
            log(f"large response {name} via nginx FastCGI: {target.label}")
            res = repeat_timed(repeat, target.port, "GET", f"/big/{size}/", timeout=timeout,
                               warmup=repeat > 1)
            if "error" not in res and (res["status"] != 200 or res["bytes"] != size):
                res["error"] = f"HTTP {res['status']}, {res['bytes']} bytes"
            bodies[f"{prefix}-nginx-fcgi-{name}"] = res
            if "error" in res:
                break

    nginx_bodies("runfcgi", by_key.get("runfcgi-prefork-fcgi"), 120, times)
    if args.flup_bodies:
        nginx_bodies("flup", by_key.get("flup-prefork-fcgi"), args.flup_timeout, 1)

    # Apache: mod_proxy_ajp and mod_proxy_fcgi, one virtual host each.
    vhosts = {}
    for key, backend_key, scheme in (
            ("runfcgi-apache-ajp", "runfcgi-prefork-ajp", "ajp"),
            ("runfcgi-apache-fcgi", "runfcgi-prefork-fcgi", "fcgi"),
            ("flup-apache-ajp", "flup-prefork-ajp", "ajp")):
        b = backends.get(backend_key)
        if b is not None and b.ok:
            vhosts[key] = (free_port(), f"{scheme}://{HOST}:{b.port}/")
        elif b is not None:
            err = (b.error or "not running").splitlines()[0]
            uploads[key] = {"error": f"{backend_key}: {err}"}
            if scheme == "ajp":
                bodies[f"{key.split('-apache')[0]}-apache-ajp-16MiB"] = {"error": err}
    if vhosts:
        apache, err = start_apache(procs, tmp, list(vhosts.values()))
        if apache is None:
            for key in vhosts:
                uploads[key] = {"error": err}
        else:
            for key, (port, _url) in vhosts.items():
                who = key.split("-apache")[0]
                if key.endswith("ajp"):
                    flup = who == "flup"
                    for name, size in sizes.items():
                        log(f"large response {name} via Apache mod_proxy_ajp: {who}")
                        res = repeat_timed(1 if flup else times, port, "GET", f"/big/{size}/",
                                           timeout=args.flup_timeout if flup else 120,
                                           warmup=not flup)
                        if "error" not in res and (res["status"] != 200 or res["bytes"] != size):
                            res["error"] = f"HTTP {res['status']}, {res['bytes']} bytes"
                        bodies[f"{who}-apache-ajp-{name}"] = res
                        if "error" in res:
                            break
                log(f"8 MiB upload via Apache {key.rsplit('-', 1)[1]}: {who}")
                res = repeat_timed(1 if who == "flup" else times, port, "POST", "/echo/",
                                   8 * MiB, timeout=args.flup_timeout if who == "flup" else 120,
                                   warmup=who != "flup")
                if "error" not in res:
                    try:
                        length = json.loads(res["body"]).get("length")
                    except ValueError:
                        length = None
                    if res["status"] != 200 or length != 8 * MiB:
                        res["error"] = f"HTTP {res['status']}, echo length {length}"
                uploads[key] = res
            procs.stop(apache, signal.SIGTERM)

    size = (64 if args.quick else 256) * MiB
    for key in ("runfcgi-prefork-fcgi", "runfcgi-threaded-fcgi", "flup-prefork-fcgi",
                "flup-threaded-fcgi"):
        target = by_key.get(key)
        if target is None or target.error:
            continue
        log(f"{size // MiB} MiB upload, peak RSS growth: {target.label}")
        res = upload_rss_growth(target.backend, target.port, size, timeout=300)
        if "error" not in res and (res["status"] != 200 or res.get("echo_length") != size):
            res["error"] = f"HTTP {res['status']}, echo length {res.get('echo_length')}"
        rss[key] = res
    for group in (bodies, uploads, rss):
        for value in group.values():
            value.pop("body", None)
    return bodies, uploads, rss


def print_bodies(bodies, uploads, rss):
    def show(name, res, extra=""):
        if res.get("error"):
            print(f"  {name:<40} {res['error']}")
        elif "median" in res and len(res.get("runs", [])) > 1:
            print(f"  {name:<40} {res['seconds']:8.3f} s (median {res['median']:.3f} s){extra}")
        else:
            print(f"  {name:<40} {res['seconds']:8.3f} s{extra}")
    if bodies:
        print("Large single-chunk responses (best of runs):")
        for key, res in bodies.items():
            show(key, res)
    if uploads:
        print("8 MiB upload to /echo/ through Apache:")
        for key, res in uploads.items():
            show(key, res)
    if rss:
        print("Large upload read in 64 KiB chunks, backend peak RSS growth:")
        for key, res in rss.items():
            show(key, res, f", RSS +{res['rss_growth_mib']:.1f} MiB"
                 if "rss_growth_mib" in res else "")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 3 rounds x 2 s, smaller upload, no flup body references")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target (default 3)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per round (default 5)")
    parser.add_argument("--warmup", type=float, default=1, help="warm-up seconds per target")
    parser.add_argument("--connections", type=int, default=8, help="wrk -c (default 8)")
    parser.add_argument("--threads", type=int, default=16,
                        help="threads of the threaded servers (runfcgi maxchildren, flup "
                             "maxThreads; default 16: flup refuses connections beyond it, "
                             "and nginx opens up to -c of them)")
    parser.add_argument("--only", help="comma-separated substrings of target keys to measure "
                        "(slow-views and memory name those two parts)")
    parser.add_argument("--skip-bodies", action="store_true",
                        help="skip large bodies, uploads and the upload RSS check")
    parser.add_argument("--no-flup-bodies", dest="flup_bodies", action="store_false",
                        help="do not time flup's large bodies (they take up to --flup-timeout)")
    parser.add_argument("--flup-timeout", type=float, default=15,
                        help="give up on a flup large-body request after this many seconds")
    parser.add_argument("--flup-keep", action="store_true",
                        help="also measure flup with fastcgi_keep_conn (stalls and fails)")
    parser.add_argument("--no-runfcgi", action="store_true",
                        help="measure the references only")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the benchmark: py-spy and strace on runfcgi under load "
                             "(--only picks servers; see profile_run.py)")
    args = parser.parse_args(argv)
    import memory as memory_part  # both import this module: not at its top
    import slowviews

    if args.profile:
        import profile_run

        return profile_run.run(args)
    if args.quick:
        # Three short rounds, not one: a single round's ratio moved by 10-20 %
        # from one run to the next, on either side of the targets.
        args.rounds, args.seconds, args.warmup = 3, 2, 1
        args.flup_bodies = False

    runfcgi_ok, why = (False, ["--no-runfcgi"]) if args.no_runfcgi else runfcgi_available()
    if not runfcgi_ok:
        log(f"runfcgi servers not available ({why[0]}); measuring the references only")

    RESULTS.mkdir(exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="runfcgi-bench-")
    os.chmod(tmp, 0o755)
    procs = Processes(tmp)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    # SIGINT explicitly too: a shell starting us in the background leaves it
    # ignored, and Python then keeps it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_term)

    started = datetime.datetime.now()
    backends, targets, order = build(args, runfcgi_ok)
    wanted = [w.strip() for w in (args.only or "").split(",") if w.strip()]
    # The parts after the throughput rounds start servers of their own.
    parts = [p for p in (slowviews, memory_part)
             if runfcgi_ok and (not wanted or any(w in p.KEY for w in wanted))]
    if wanted and not targets:
        backends = {}  # --only names none of the throughput targets: skip them
    fresh, bodies, uploads, rss = {}, {}, {}, {}
    slow = memory = None
    interrupted = False
    try:
        log(f"starting {len(backends)} backends (logs in {tmp})")
        for b in backends.values():
            b.start(procs)
        for b in backends.values():
            if not b.wait(procs):
                log(f"{b.key}: {b.error}")
        for t in targets:
            if t.backend is not None and not t.backend.ok:
                t.error = f"backend {t.backend.key} {t.backend.error or 'exited'}"
        live = [t for t in targets if t.backend is not None and t.error is None]
        status_port = free_port()
        start_nginx(procs, tmp, live, status_port)
        for t in live:
            err = probe(t)
            if err:
                t.error = f"GET / through nginx: {err}"
                log(f"{t.label}: {t.error}\n{procs.log_tail(t.backend.key, 8)}")
        throughput(args, targets, status_port)
        for key in ("runfcgi-prefork-fcgi", "runfcgi-threaded-fcgi"):
            b = backends.get(key)
            if b is not None and b.ok:
                kept = 4 if "prefork" in key else args.threads + 2
                log(f"fresh connection beside {kept} idle kept connections: {key}")
                fresh[key] = check_fresh_connection(b, kept)
        if args.flup_keep:
            for key in ("flup-prefork-fcgi", "flup-threaded-fcgi"):
                if backends.get(key) is not None and backends[key].ok:
                    kept = 4 if "prefork" in key else args.threads + 2
                    fresh[key] = check_fresh_connection(backends[key], kept)
        if not args.skip_bodies and backends:
            bodies, uploads, rss = bodies_and_uploads(args, procs, tmp, backends, targets)
        procs.stop_all()  # the idle servers above must not share the machine below
        if slowviews in parts:
            slow = slowviews.run(args, procs, Path(tmp) / "slow-views")
        if memory_part in parts:
            memory = memory_part.run(args, procs)
    except KeyboardInterrupt:
        interrupted = True
        log(f"interrupted: stopping everything (configs and logs kept in {tmp})")
    finally:
        procs.stop_all()
        if not args.keep_tmp and not interrupted:
            shutil.rmtree(tmp, ignore_errors=True)
    if interrupted:
        return 130

    summary = {t.key: s for t in targets if (s := summarize(t)) is not None}
    uwsgi = summary.get("uwsgi-fcgi", {}).get("rps_median")
    for s in summary.values():
        s["ratio_vs_uwsgi"] = ratio(s["rps_median"], uwsgi)
    checks = make_checks(summary, fresh, bodies, uploads, slow, memory)
    if wanted:  # what --only left out is not "could not be measured"
        checks = [c for c in checks if c["status"] != "N/A"]
    stamp = started.strftime("%Y%m%d-%H%M%S")
    results = {
        "started": started.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "settings": {"rounds": args.rounds, "seconds": args.seconds,
                     "connections": args.connections, "wrk_threads": 1,
                     "threads": args.threads, "processes": 2},
        "versions": versions(),
        "targets": summary,
        "not_measured": {t.key: t.error for t in targets if t.error},
        "fresh_connection": fresh,
        "large_responses": bodies,
        "uploads": uploads,
        "upload_rss": rss,
        "slow_views": slow,
        "memory": memory,
        "checks": checks,
    }
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")

    print()
    print(f"runfcgi benchmark, {results['mode']} run of {results['started']}")
    if summary:
        print(f"Throughput: {args.rounds} round(s) x {args.seconds:g} s, "
              f"wrk -t1 -c{args.connections}, 2 processes per server")
        print_table(summary, order)
    for key, err in results["not_measured"].items():
        print(f"  not measured: {key}: {err.splitlines()[0]}")
    if fresh:
        print("Fresh connection while kept connections sit idle (more than the "
              "workers/threads):")
        for key, f in fresh.items():
            error = f" ({f['error']})" if f.get("error") else ""
            print(f"  {key:<40} kept served {f['kept_served']}/{f['kept']}, fresh answered in "
                  f"{fmt(f.get('fresh_s'), '.3f')} s{error}")
    print_bodies(bodies, uploads, rss)
    slowviews.print_slow(slow)
    memory_part.print_memory(memory)
    print("Targets (issues #5 and #16):")
    print_checks(checks)
    if summary:
        png = RESULTS / "bench.png"
        draw_chart(summary, order, png,
                   f"runfcgi_compat benchmark ({results['mode']}, {results['started']}; "
                   f"wrk -t1 -c{args.connections} via nginx, 2 processes each; compare ratios "
                   f"within one run)")
        written = [RESULTS / f"{stamp}.json", RESULTS / "latest.json", png]
        # Only a full run of every target may stand for the project in the docs.
        if not args.quick and not args.only:
            DOCS_PNG.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, DOCS_PNG)
            shutil.copyfile(RESULTS / "latest.json", DOCS_JSON)
            written += [DOCS_PNG, DOCS_JSON]
        print("Results: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
