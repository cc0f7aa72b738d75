"""Start real nginx, Apache and lighttpd in front of ``runfcgi``, for the tests.

Every configuration comes from ``runfcgi_compat.frontends`` (the same text the
docs show); this module only adds a temporary directory, free ports, a
readiness check and a stop by pid.  Each process runs in its own session, so
stopping it also reaches the workers it forked.

A set-up is a ``build(tmp, method, processes) -> port`` function registered
in ``SETUPS``; ``launch()`` turns one into a running ``Site``.  Set
RUNFCGI_KEEP_TMP=1 to keep each set-up's directory (configs and logs).
"""
import contextlib
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runfcgi_compat import frontends as conf
from tests.helpers import BANNER, expect_root_warning, free_port
from tests.integration.conftest import require_binary

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "testproject"
SETTINGS = "testproject.settings"
APACHE_USER = "www-data"
START_TIMEOUT = 15
STOP_TIMEOUT = 8


# -- processes ---------------------------------------------------------------


@dataclass
class Process:
    """A started server: its pid (leader of its own session) and its log."""

    name: str
    popen: subprocess.Popen
    log: Path
    extra_logs: list = field(default_factory=list)

    @property
    def pid(self):
        return self.popen.pid

    def describe(self):
        text = [f"--- {self.name} (pid {self.pid}, exit {self.popen.poll()})"]
        for path in [self.log, *self.extra_logs]:
            with contextlib.suppress(OSError):
                text.append(f"--- {path}:\n{tail(path)}")
        return "\n".join(text)

    def stop(self):
        """SIGTERM the process; SIGKILL its whole session if it lingers."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Whatever it forked (prefork workers, Apache children, fcgid apps)
        # shares its session id, which is its pid: end the stragglers too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(2)
        for pid in session_members(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def session_members(sid):
    """Pids whose session id is ``sid`` (children that changed group)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and int(entry) != sid:
                members.append(int(entry))
    return members


def tail(path, lines=25):
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def start(name, argv, log, *, ready, env=None, cwd=None, extra_logs=()):
    """Start ``argv`` in its own session; return once ``ready()`` is true."""
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True)
    process = Process(name, popen, Path(log), list(extra_logs))
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if popen.poll() is not None or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"{name} did not start:\n{process.describe()}")
        time.sleep(0.05)
    return process


def accepts(address):
    """Return a readiness check: True once ``address`` takes connections."""
    if isinstance(address, str):
        family = socket.AF_UNIX
    else:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET

    def ready():
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect(address)
            except OSError:
                return False
            return True

    return ready


# -- the Django side -----------------------------------------------------------


def django_env(**extra):
    """The test project's environment; runfcgi_compat is the installed one."""
    env = dict(os.environ)
    env.pop("RUNFCGI_TEST_WHEEL", None)
    env.update(DJANGO_SETTINGS_MODULE=SETTINGS, PYTHONPATH=str(PROJECT), PYTHONUNBUFFERED="1")
    env.update({key: value for key, value in extra.items() if value is not None})
    return env


def runfcgi_argv(protocol, method, *, host=None, port=None, socket_path=None, extra=()):
    """The real command: ``python -m django runfcgi ...`` in the foreground."""
    words = conf.runfcgi_words(protocol, host, port, socket_path, method=method,
                               daemonize="false")
    return [sys.executable, "-m", "django", "runfcgi", *words, *extra]


def start_backend(tmp, protocol, method, *, host=None, port=None, socket_path=None,
                  extra=(), env=None):
    log = tmp / "runfcgi.log"
    argv = runfcgi_argv(protocol, method, host=host, port=port, socket_path=socket_path,
                        extra=extra)
    address = socket_path if socket_path else (host, port)
    accepting = accepts(address)

    def ready():
        # Its own banner first: a free port can be taken by another test
        # run (tox runs its cells side by side) between free_port() and the
        # bind, and then the other server would answer the connect.
        return log.exists() and BANNER.encode() in log.read_bytes() and accepting()

    process = start(f"runfcgi {protocol} {method}", argv, log, ready=ready,
                    env=django_env(**(env or {})), cwd=str(PROJECT))
    expect_root_warning(argv, log.read_text(errors="replace"))
    return process


# -- the web servers --------------------------------------------------------------


def start_nginx(tmp, site_text, port):
    nginx = require_binary("nginx")
    root = tmp / "nginx"
    (root / "tmp").mkdir(parents=True)
    site = root / "site.conf"
    site.write_text(site_text)
    main = root / "nginx.conf"
    main.write_text(conf.nginx_main(str(root), str(site), user="root"))
    check = subprocess.run([nginx, "-t", "-p", str(root), "-c", str(main)],
                           capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError(f"nginx -t refused the configuration:\n{check.stderr}")
    return start("nginx", [nginx, "-p", str(root), "-c", str(main)], root / "stdout.log",
                 ready=accepts(("127.0.0.1", port)), extra_logs=[root / "error.log"])


def start_apache(tmp, site_text, port, modules):
    apache = require_binary("apache2")
    try:
        pwd.getpwnam(APACHE_USER)
    except KeyError:
        pytest.skip(f"Apache needs a {APACHE_USER} account to run its children as")
    root = tmp / "apache"
    (root / "fcgid").mkdir(parents=True)
    shutil.chown(root / "fcgid", APACHE_USER, APACHE_USER)
    site = root / "site.conf"
    site.write_text(site_text)
    main = root / "httpd.conf"
    main.write_text(conf.apache_main(str(root), str(site), port=port, modules=modules))
    env = dict(os.environ, APACHE_RUN_DIR=str(root), APACHE_LOCK_DIR=str(root),
               APACHE_LOG_DIR=str(root))
    check = subprocess.run([apache, "-t", "-f", str(main)], capture_output=True, text=True,
                           env=env)
    if check.returncode:
        raise RuntimeError(f"apache2 -t refused the configuration:\n{check.stderr}")
    return start("apache2", [apache, "-f", str(main), "-DFOREGROUND"], root / "stdout.log",
                 ready=accepts(("127.0.0.1", port)), env=env,
                 extra_logs=[root / "error.log"])


def start_lighttpd(tmp, site_text, port):
    lighttpd = require_binary("lighttpd")
    root = tmp / "lighttpd"
    (root / "tmp").mkdir(parents=True)
    (root / "htdocs").mkdir()
    site = root / "site.conf"
    site.write_text(site_text)
    main = root / "lighttpd.conf"
    main.write_text(conf.lighttpd_main(str(root), str(site), port=port))
    check = subprocess.run([lighttpd, "-tt", "-f", str(main)], capture_output=True,
                           text=True)
    if check.returncode:
        raise RuntimeError(f"lighttpd -tt refused the configuration:\n{check.stderr}")
    return start("lighttpd", [lighttpd, "-D", "-f", str(main)], root / "stdout.log",
                 ready=accepts(("127.0.0.1", port)), extra_logs=[root / "error.log"])


def python_for(user):
    """An interpreter ``user`` can run with this one's packages, or None.

    The test interpreter may live where only root can enter (pyenv under
    /root).  A system python of the same version can use the same
    site-packages, which the generated script adds to sys.path; failing
    that, running as root we let others *traverse* (never list) the
    directories above this interpreter, as a shared host's Python is.
    """
    if shutil.which("runuser") is None:
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if os.geteuid() == 0:
        # Whichever interpreter runs it, the script imports from these.
        for top in {os.path.dirname(os.path.realpath(sys.executable)), sys.base_prefix,
                    *site_packages()}:
            _allow_traversal(top)
    for candidate in (sys.executable, f"/usr/bin/python{version}",
                      f"/usr/local/bin/python{version}"):
        if _runs_as(user, candidate):
            return candidate
    return None


def _runs_as(user, python):
    probe = subprocess.run(["runuser", "-u", user, "--", python, "-c", "import encodings"],
                           capture_output=True)
    return probe.returncode == 0


def _allow_traversal(path):
    while path not in ("/", ""):
        mode = os.stat(path).st_mode
        if not mode & 0o001:
            os.chmod(path, (mode & 0o7777) | 0o001)
        path = os.path.dirname(path)


# -- sites -------------------------------------------------------------------------


@dataclass
class Site:
    """A front end on 127.0.0.1:port with Django mounted at ``prefix``."""

    name: str
    port: int
    prefix: str = ""
    processes: list = field(default_factory=list)
    secure: bool = False

    def request(self, method, path, body=None, headers=None, timeout=60):
        """Return (status, headers, body bytes) for one HTTP/1.1 request."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, self.prefix + path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def json(self, method, path, body=None, headers=None):
        status, _, data = self.request(method, path, body, headers)
        assert status == 200, f"{method} {path}: HTTP {status}\n{data[:2000]!r}\n{self.logs()}"
        return json.loads(data)

    def logs(self):
        return "\n".join(process.describe() for process in self.processes)

    def stop(self):
        for process in reversed(self.processes):
            process.stop()


# -- set-ups: (tmp, method) -> Site ---------------------------------------------------

METHODS = ("prefork", "threaded")


@dataclass(frozen=True)
class SetUp:
    name: str
    build: object
    methods: tuple = METHODS
    prefix: str = ""
    secure: bool = False


SETUPS = {}


def setup(name, *, methods=METHODS, prefix="", secure=False):
    """Register ``build(tmp, method, processes) -> port`` as a set-up."""
    def register(build):
        SETUPS[name] = SetUp(name, build, tuple(methods), prefix, secure)
        return build
    return register


def launch(setup_, method, tmp):
    """Start a set-up's processes; return its Site (stop it when done)."""
    site = Site(f"{setup_.name}-{method}", 0, setup_.prefix, [], setup_.secure)
    try:
        site.port = setup_.build(tmp, method, site.processes)
    except BaseException:
        site.stop()
        raise
    return site


def make_tmp():
    """A temporary directory Apache's children (www-data) can enter."""
    path = Path(tempfile.mkdtemp(prefix="runfcgi-frontends-"))
    path.chmod(0o755)
    return path


def _backend(tmp, processes, protocol, method, *, unix=False, host="127.0.0.1", env=None,
             extra=()):
    """Start runfcgi; return (host, port, socket) for the front end's config."""
    if unix:
        path = str(tmp / "django.sock")
        # umask=000: the socket must be writable by the web server's user.
        processes.append(start_backend(tmp, protocol, method, socket_path=path,
                                       extra=["umask=000", *extra], env=env))
        return None, None, path
    for attempt in range(5):
        port = free_port(host)
        try:
            processes.append(start_backend(tmp, protocol, method, host=host, port=port,
                                           env=env, extra=extra))
        except RuntimeError as exc:
            # Taken between free_port() and the bind: try another port.
            if "already in use" not in str(exc) or attempt == 4:
                raise
            continue
        return host, port, None


def _nginx(protocol="fcgi", *, unix=False, host="127.0.0.1", env=None, **options):
    def build(tmp, method, processes):
        host_, port, path = _backend(tmp, processes, protocol, method, unix=unix, host=host,
                                     env=env)
        listen = free_port()
        site = conf.nginx(protocol, host_, port, path, listen=f"127.0.0.1:{listen}", **options)
        processes.append(start_nginx(tmp, site, listen))
        return listen
    return build


def _apache(protocol="fcgi", *, unix=False, host="127.0.0.1", env=None, **options):
    # A secret is checked at both ends, as the generated configuration says.
    extra = [f"ajpsecret={options['secret']}"] if options.get("secret") else []

    def build(tmp, method, processes):
        host_, port, path = _backend(tmp, processes, protocol, method, unix=unix, host=host,
                                     env=env, extra=extra)
        listen = free_port()
        site = conf.apache(protocol, host_, port, path, listen=f"127.0.0.1:{listen}", **options)
        processes.append(start_apache(tmp, site, listen, conf.apache_modules(protocol)))
        return listen
    return build


def _lighttpd(protocol="fcgi", *, unix=True, env=None, **options):
    def build(tmp, method, processes):
        host, port, path = _backend(tmp, processes, protocol, method, unix=unix, env=env)
        listen = free_port()
        site = conf.lighttpd(protocol, host, port, path, **options)
        processes.append(start_lighttpd(tmp, site, listen))
        return listen
    return build


def _lighttpd_spawning(*, fix_root=True, env=None):
    """lighttpd starts ``manage.py runfcgi`` itself (bin-path, socket on fd 0)."""
    def build(tmp, method, processes):
        command = f"{sys.executable} {PROJECT / 'manage.py'} runfcgi method={method}"
        environment = {k: v for k, v in django_env(**(env or {})).items()
                       if k in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PATH",
                                "TESTPROJECT_FORCE_SCRIPT_NAME")}
        site = conf.lighttpd("fcgi", socket=str(tmp / "spawned.sock"), fix_root=fix_root,
                             bin_path=command, bin_environment=environment)
        listen = free_port()
        processes.append(start_lighttpd(tmp, site, listen))
        return listen
    return build


def _apache_fcgid(tmp, method, processes):
    """The shared-host recipe: .htaccess + mysite.fcgi, started by mod_fcgid."""
    python = python_for(APACHE_USER)
    if python is None:
        pytest.skip(f"no Python {sys.version_info[:2]} that {APACHE_USER} may run")
    docroot = tmp / "www"
    docroot.mkdir()
    docroot.chmod(0o755)
    (docroot / ".htaccess").write_text(conf.htaccess(str(docroot)))
    script = docroot / "mysite.fcgi"
    # The project, then this interpreter's packages (Django, flup, the app).
    pythonpath = [str(PROJECT), *site_packages()]
    script.write_text(conf.fcgi_script(python, str(PROJECT), SETTINGS,
                                       pythonpath=pythonpath))
    script.chmod(0o755)
    listen = free_port()
    site = conf.apache_fcgid(str(docroot), listen=f"127.0.0.1:{listen}")
    processes.append(start_apache(tmp, site, listen, conf.apache_modules(fcgid=True)))
    return listen


def site_packages():
    import sysconfig

    import runfcgi_compat

    paths = [sysconfig.get_paths()["purelib"]]
    # An editable install: the checkout holding runfcgi_compat.
    paths.append(str(Path(runfcgi_compat.__file__).resolve().parent.parent))
    return paths


setup("nginx-fcgi-tcp")(_nginx())
setup("nginx-fcgi-unix")(_nginx(unix=True))
setup("nginx-fcgi-keepalive")(_nginx(keepalive=4))
# Only the web server may talk to runfcgi: FCGI_WEB_SERVER_ADDRS, over IPv6.
setup("nginx-fcgi-ipv6")(_nginx(host="::1", env={"FCGI_WEB_SERVER_ADDRS": "::1"}))
setup("nginx-scgi-ipv6")(_nginx("scgi", host="::1"))
setup("nginx-fcgi-prefix", prefix="/app")(_nginx(prefix="/app"))
setup("nginx-fcgi-https", secure=True)(_nginx(https=True))
setup("nginx-scgi-tcp")(_nginx("scgi"))
setup("nginx-scgi-prefix", prefix="/app")(_nginx("scgi", prefix="/app"))
setup("apache-fcgi-tcp")(_apache())
setup("apache-fcgi-unix")(_apache(unix=True))
setup("apache-fcgi-prefix", prefix="/app")(_apache(prefix="/app"))
setup("apache-scgi-tcp")(_apache("scgi"))
setup("apache-ajp-tcp")(_apache("ajp"))
setup("apache-ajp-ipv6")(_apache("ajp", host="::1"))
setup("apache-ajp-secret")(_apache("ajp", secret="s3cret-for-tests"))
# AJP carries only the backend's path: the mount point must be configured.
setup("apache-ajp-prefix", prefix="/app")(
    _apache("ajp", prefix="/app", env={"TESTPROJECT_FORCE_SCRIPT_NAME": "/app"}))
setup("apache-fcgid", methods=("threaded",))(_apache_fcgid)
setup("lighttpd-fcgi-unix")(_lighttpd(env={"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"}))
# Without fix-root-scriptname lighttpd splits at the first segment; Django
# 1.8's documented remedy, FORCE_SCRIPT_NAME = "", still works.
setup("lighttpd-fcgi-unix-nofix")(
    _lighttpd(fix_root=False, env={"TESTPROJECT_FORCE_SCRIPT_NAME": ""}))
setup("lighttpd-fcgi-prefix", prefix="/app")(_lighttpd(prefix="/app"))
setup("lighttpd-scgi-tcp")(_lighttpd("scgi", unix=False))
setup("lighttpd-spawn")(_lighttpd_spawning())
setup("lighttpd-spawn-nofix")(
    _lighttpd_spawning(fix_root=False, env={"TESTPROJECT_FORCE_SCRIPT_NAME": ""}))


def cases():
    """Every (set-up, method) pair, in a stable order."""
    return [(s, method) for s in SETUPS.values() for method in s.methods]


# Caddy, HAProxy, h2o and spawn-fcgi add their set-ups (last: they use the above).
from tests.integration import frontends_more  # noqa: E402,F401
