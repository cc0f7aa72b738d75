"""Caddy, HAProxy, h2o and spawn-fcgi in front of runfcgi, for the tests.

The same machinery as ``frontends.py`` (whose end imports this module):
configurations from ``runfcgi_compat.frontends``, free ports, readiness
checks, processes stopped by pid; the set-ups registered here get the same
checks in test_frontends.py as nginx, Apache and lighttpd.

To keep the suite lean each front end starts once per method, and the
variants are spread over the two methods: e.g. Caddy over TCP at the root
in prefork, over a UNIX socket under /app with the HTTPS flag in threaded.
"""
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runfcgi_compat import frontends as conf
from tests.helpers import BANNER, free_port, wait_for_exit
from tests.integration.conftest import require_binary
from tests.integration.frontends import (
    PROJECT,
    SETTINGS,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Process,
    _backend,
    accepts,
    django_env,
    setup,
    start,
    start_nginx,
)

# -- the web servers ---------------------------------------------------------------


def start_caddy(tmp, site_text, port):
    caddy = require_binary("caddy")
    root = tmp / "caddy"
    root.mkdir()
    site = root / "site.caddy"
    site.write_text(site_text)
    main = root / "Caddyfile"
    # Sites at http://:port answer any Host header; only on 127.0.0.1.
    main.write_text(conf.caddy_main(str(root), str(site), bind="127.0.0.1"))
    # Caddy keeps its state under HOME/XDG directories: keep them in root.
    env = dict(os.environ, HOME=str(root), XDG_CONFIG_HOME=str(root / "config"),
               XDG_DATA_HOME=str(root / "data"))
    return start("caddy", [caddy, "run", "--adapter", "caddyfile", "--config", str(main)],
                 root / "stdout.log", ready=accepts(("127.0.0.1", port)), env=env,
                 extra_logs=[root / "error.log"])


def start_haproxy(tmp, site_text, port):
    haproxy = require_binary("haproxy")
    root = tmp / "haproxy"
    root.mkdir()
    site = root / "site.cfg"
    site.write_text(site_text)
    main = root / "haproxy.cfg"
    main.write_text(conf.haproxy_main(str(root), str(site)))
    files = ["-f", str(main), "-f", str(site)]
    check = subprocess.run([haproxy, "-c", "-q", *files], capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError(f"haproxy -c refused the configuration:\n{check.stdout}"
                           f"{check.stderr}")
    # -db: stay in the foreground, log to standard output.
    return start("haproxy", [haproxy, "-db", *files], root / "stdout.log",
                 ready=accepts(("127.0.0.1", port)))


def start_h2o(tmp, site_text, port, *, env=None):
    h2o = require_binary("h2o")
    root = tmp / "h2o"
    root.mkdir()
    site = root / "site.yaml"
    site.write_text(site_text)
    main = root / "h2o.conf"
    # Started as root, h2o switches to nobody, who may not write into tmp.
    main.write_text(conf.h2o_main(str(root), str(site),
                                  user="root" if os.geteuid() == 0 else None))
    check = subprocess.run([h2o, "-t", "-c", str(main)], capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError(f"h2o -t refused the configuration:\n{check.stdout}{check.stderr}")
    return start("h2o", [h2o, "-c", str(main)], root / "stdout.log",
                 ready=accepts(("127.0.0.1", port)), env=env,
                 extra_logs=[root / "error.log"])


# -- spawn-fcgi ------------------------------------------------------------------------


@dataclass
class Spawned(Process):
    """runfcgi forked by spawn-fcgi (init-script style): its pid is in ``pidfile``."""

    pidfile: Path = None

    @property
    def pid(self):
        return int(self.pidfile.read_text().split()[0])

    def stop(self):
        """SIGTERM the pid in the pidfile, then end whatever is left of its session."""
        try:
            pid = self.pid
        except (OSError, ValueError, IndexError):  # no pid written: nothing was forked
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_for_exit(pid, STOP_TIMEOUT)
        super().stop()


def spawn_fcgi_argv(method, *, host=None, port=None, socket_path=None, pidfile=None,
                    options=()):
    """The generated spawn-fcgi command for the test project."""
    return conf.spawn_fcgi_argv(
        "fcgi", host, port, socket_path, python=sys.executable, manage_py="manage.py",
        project_dir=str(PROJECT), settings=SETTINGS, method=method, pidfile=pidfile,
        spawn_fcgi=require_binary("spawn-fcgi"), options=options,
        socket_mode="666" if socket_path else None)


def start_spawn_fcgi(tmp, method, *, host=None, port=None, socket_path=None,
                     pidfile=False):
    """Have spawn-fcgi start runfcgi: in the foreground (-n), or forked with a pidfile.

    The forked runfcgi's standard streams are /dev/null, so it writes its
    banner and errors to ``outlog``/``errlog`` instead.
    """
    log = tmp / "runfcgi.log"
    address = socket_path if socket_path else (host, port)
    accepting = accepts(address)

    def ready():
        return log.exists() and BANNER.encode() in log.read_bytes() and accepting()

    if not pidfile:
        argv = spawn_fcgi_argv(method, host=host, port=port, socket_path=socket_path)
        return start(f"spawn-fcgi -n runfcgi {method}", argv, log, ready=ready,
                     env=django_env())
    path = tmp / "runfcgi.pid"
    argv = spawn_fcgi_argv(method, host=host, port=port, socket_path=socket_path,
                           pidfile=str(path), options=[f"outlog={log}", f"errlog={log}"])
    with open(tmp / "spawn-fcgi.log", "ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=django_env())
    process = Spawned(f"spawn-fcgi -P runfcgi {method}", popen, log,
                      [tmp / "spawn-fcgi.log"], pidfile=path)
    try:
        # spawn-fcgi exits once runfcgi is forked and its pid written.
        status = popen.wait(STOP_TIMEOUT)
        if status:
            raise RuntimeError(f"spawn-fcgi exited with status {status}")
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError("runfcgi printed no banner")
            time.sleep(0.05)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        process.stop()
        raise RuntimeError(f"{process.name} did not start: {exc}\n{process.describe()}")
    return process


# -- set-ups ---------------------------------------------------------------------------


def _caddy(*, unix=False, **options):
    def build(tmp, method, processes):
        host, port, path = _backend(tmp, processes, "fcgi", method, unix=unix)
        listen = free_port()
        site = conf.caddy("fcgi", host, port, path, address=f"http://:{listen}", **options)
        processes.append(start_caddy(tmp, site, listen))
        return listen
    return build


def _haproxy(*, unix=False, **options):
    def build(tmp, method, processes):
        host, port, path = _backend(tmp, processes, "fcgi", method, unix=unix)
        listen = free_port()
        site = conf.haproxy("fcgi", host, port, path, listen=f"127.0.0.1:{listen}", **options)
        processes.append(start_haproxy(tmp, site, listen))
        return listen
    return build


def _h2o(*, unix=False, env=None, **options):
    def build(tmp, method, processes):
        host, port, path = _backend(tmp, processes, "fcgi", method, unix=unix, env=env)
        listen = free_port()
        site = conf.h2o("fcgi", host, port, path, listen=f"127.0.0.1:{listen}", **options)
        processes.append(start_h2o(tmp, site, listen))
        return listen
    return build


def h2o_spawning(tmp, method, processes):
    """h2o starts runfcgi itself (fastcgi.spawn, socket on fd 0)."""
    command = conf.h2o_spawn_command(sys.executable, str(PROJECT / "manage.py"),
                                     settings=SETTINGS, method=method)
    listen = free_port()
    site = conf.h2o(spawn=command, listen=f"127.0.0.1:{listen}")
    processes.append(start_h2o(tmp, site, listen, env=django_env()))
    return listen


def _spawn_fcgi(*, unix=False, host="127.0.0.1", pidfile=False):
    """spawn-fcgi starts runfcgi; nginx is the front end."""
    def build(tmp, method, processes):
        if unix:
            where = dict(socket_path=str(tmp / "django.sock"))
            processes.append(start_spawn_fcgi(tmp, method, pidfile=pidfile, **where))
            site_where = dict(socket=where["socket_path"])
        else:
            port = free_port(host)
            processes.append(start_spawn_fcgi(tmp, method, host=host, port=port,
                                              pidfile=pidfile))
            site_where = dict(host=host, port=port)
        listen = free_port()
        site = conf.nginx("fcgi", **site_where, listen=f"127.0.0.1:{listen}")
        processes.append(start_nginx(tmp, site, listen))
        return listen
    return build


# One start per front end and method; the variants are spread over the methods.
setup("caddy-fcgi-tcp", methods=("prefork",))(_caddy())
setup("caddy-fcgi-unix-prefix-https", methods=("threaded",), prefix="/app", secure=True)(
    _caddy(unix=True, prefix="/app", https=True))
setup("haproxy-fcgi-tcp", methods=("prefork",))(_haproxy())
setup("haproxy-fcgi-unix-prefix-https", methods=("threaded",), prefix="/app", secure=True)(
    _haproxy(unix=True, prefix="/app", https=True))
setup("h2o-fcgi-tcp-keepalive", methods=("prefork",))(_h2o(keepalive=10))
# h2o sends SCRIPT_NAME "" under a prefix: FORCE_SCRIPT_NAME names the mount point.
setup("h2o-fcgi-unix-prefix-https", methods=("threaded",), prefix="/app", secure=True)(
    _h2o(unix=True, keepalive=10, prefix="/app", https=True,
         env={"TESTPROJECT_FORCE_SCRIPT_NAME": "/app"}))
setup("h2o-spawn", methods=("threaded",))(h2o_spawning)
setup("spawn-fcgi-ipv6", methods=("prefork",))(_spawn_fcgi(host="::1"))
setup("spawn-fcgi-unix-pidfile", methods=("threaded",))(_spawn_fcgi(unix=True, pidfile=True))
