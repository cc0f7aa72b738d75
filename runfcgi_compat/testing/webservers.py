"""Real web servers in front of a live server's runfcgi, for tests.

Each configuration is the text ``runfcgi_compat.frontends`` makes (what the
docs show and ``manage.py runfcgi_config`` prints), written to a temporary
directory with a minimal whole-server configuration around it.  A server
runs in the foreground in its own session, on a free port of 127.0.0.1; it
is ready once that port takes connections, and it is stopped by its pid.

``FRONTENDS`` is the table: a name, the program, the Debian package that
has it, the function that writes the configuration, the protocols the
server speaks, whether it can serve static files, and whether it tells
Django the mount point (SCRIPT_NAME) under a prefix.
"""
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .. import frontends as conf
from ..options import OptionError
from .backend import LiveServerError

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class FrontEndMissing(LiveServerError):
    """The chosen web server is not installed; the message names its package."""


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    name: str
    program: str
    package: str
    configure: object  # (Site, program) -> (argv, env)
    protocols: tuple = ("fcgi",)
    serves_files: bool = True
    # False: under a prefix it sends SCRIPT_NAME "" (h2o), so the live
    # server sets FORCE_SCRIPT_NAME to the prefix.
    sends_script_name: bool = True
    # A file https needs beyond the program, and the package that has it.
    tls_module: tuple = None


@dataclasses.dataclass
class Site:
    """What a front end serves: where runfcgi listens, and how it is mounted."""

    root: Path
    port: int
    protocol: str
    backend: tuple  # (host, port) of runfcgi
    prefix: str = ""
    certificate: tuple = (None, None)  # (cert.pem, key.pem) for https
    static_url: str = None
    static_root: str = None


def find_program(frontend):
    """Return the path of ``frontend``'s program, or raise FrontEndMissing."""
    path = shutil.which(frontend.program)
    if path is None and os.path.exists(f"/usr/sbin/{frontend.program}"):
        path = f"/usr/sbin/{frontend.program}"
    if path is None:
        raise FrontEndMissing(
            f"frontend={frontend.name!r} needs the {frontend.program} program, which is "
            f"not installed (Debian package {frontend.package}: "
            f"apt-get install {frontend.package}).")
    return path


def check_installed(frontend, https=False):
    """Raise FrontEndMissing unless ``frontend`` (and its TLS module for
    ``https``) is installed."""
    find_program(frontend)
    if https and frontend.tls_module and not os.path.exists(frontend.tls_module[0]):
        path, package = frontend.tls_module
        raise FrontEndMissing(
            f"https=True with frontend={frontend.name!r} needs {path}, which is not "
            f"installed (Debian package {package}: apt-get install {package}).")


def _write(site, name, text):
    path = site.root / name
    path.write_text(text)
    return str(path)


def _nginx(site, program):
    host, port = site.backend
    cert, key = site.certificate
    snippet = conf.nginx(site.protocol, host, port, listen=f"127.0.0.1:{site.port}",
                         server_name="localhost", prefix=site.prefix,
                         static_url=site.static_url, static_root=site.static_root,
                         certificate=cert, certificate_key=key, host_with_port=True)
    (site.root / "tmp").mkdir()
    # As root, nginx's workers would run as nobody, who cannot enter this
    # test's private directories; as anyone else they run as that user.
    user = "root" if os.geteuid() == 0 else None
    main = _write(site, "nginx.conf",
                  conf.nginx_main(str(site.root), _write(site, "site.conf", snippet),
                                  user=user))
    # -e: the error log from the start, not the packaged /var/log/nginx one.
    return [program, "-e", str(site.root / "error.log"), "-p", str(site.root),
            "-c", main], None


def _apache(site, program):
    host, port = site.backend
    cert, key = site.certificate
    snippet = conf.apache(site.protocol, host, port, listen=f"127.0.0.1:{site.port}",
                          prefix=site.prefix, static_url=site.static_url,
                          static_root=site.static_root, certificate=cert,
                          certificate_key=key)
    # Apache never runs its children as root: they become www-data, who
    # must be able to enter this directory (its lock files are there).
    root_user = os.geteuid() == 0
    if root_user:
        for path in (site.root.parent, site.root):
            path.chmod(0o755)
    modules = conf.apache_modules(site.protocol, tls=bool(cert))
    main = _write(site, "httpd.conf", conf.apache_main(
        str(site.root), _write(site, "site.conf", snippet), port=site.port,
        modules=modules, user="www-data" if root_user else None))
    env = dict(os.environ, APACHE_RUN_DIR=str(site.root), APACHE_LOCK_DIR=str(site.root),
               APACHE_LOG_DIR=str(site.root))
    return [program, "-f", main, "-DFOREGROUND"], env


def _lighttpd(site, program):
    host, port = site.backend
    cert, key = site.certificate
    snippet = conf.lighttpd(site.protocol, host, port, prefix=site.prefix,
                            static_url=site.static_url, static_root=site.static_root,
                            certificate=cert, certificate_key=key)
    (site.root / "tmp").mkdir()
    (site.root / "htdocs").mkdir()
    main = _write(site, "lighttpd.conf", conf.lighttpd_main(
        str(site.root), _write(site, "site.conf", snippet), port=site.port))
    return [program, "-D", "-f", main], None


def _caddy(site, program):
    host, port = site.backend
    cert, key = site.certificate
    # A site address with no host answers whatever the Host header says;
    # default_bind keeps it on 127.0.0.1.
    address = f"{'https' if cert else 'http'}://:{site.port}"
    snippet = conf.caddy(site.protocol, host, port, address=address, prefix=site.prefix,
                         static_url=site.static_url, static_root=site.static_root,
                         certificate=cert, certificate_key=key)
    main = _write(site, "Caddyfile", conf.caddy_main(
        str(site.root), _write(site, "site.caddy", snippet), bind="127.0.0.1"))
    # Caddy keeps its state under HOME and the XDG directories: keep them here.
    env = dict(os.environ, HOME=str(site.root), XDG_CONFIG_HOME=str(site.root / "config"),
               XDG_DATA_HOME=str(site.root / "data"))
    return [program, "run", "--adapter", "caddyfile", "--config", main], env


def _haproxy(site, program):
    host, port = site.backend
    cert, key = site.certificate
    pem = None
    if cert:
        # HAProxy's crt is one file: the certificate, then its key.
        pem = site.root / "site.pem"
        pem.write_text(Path(cert).read_text() + Path(key).read_text())
        pem.chmod(0o600)
    snippet = conf.haproxy(site.protocol, host, port, listen=f"127.0.0.1:{site.port}",
                           prefix=site.prefix, docroot=str(site.root),
                           certificate=pem and str(pem))
    path = _write(site, "site.cfg", snippet)
    main = _write(site, "haproxy.cfg", conf.haproxy_main(str(site.root), path))
    # -db: stay in the foreground and log to standard output.
    return [program, "-db", "-f", main, "-f", path], None


def _h2o(site, program):
    host, port = site.backend
    cert, key = site.certificate
    snippet = conf.h2o(site.protocol, host, port, listen=f"127.0.0.1:{site.port}",
                       prefix=site.prefix, static_url=site.static_url, static_root=site.static_root,
                       certificate=cert, certificate_key=key)
    # Started as root h2o would switch to nobody, who cannot enter this
    # test's private directories; as anyone else it stays that user.
    user = "root" if os.geteuid() == 0 else None
    main = _write(site, "h2o.conf", conf.h2o_main(
        str(site.root), _write(site, "site.yaml", snippet), user=user))
    return [program, "-c", main], None


FRONTENDS = {
    frontend.name: frontend for frontend in (
        FrontEnd("nginx", "nginx", "nginx", _nginx, protocols=("fcgi", "scgi")),
        FrontEnd("apache", "apache2", "apache2", _apache, protocols=("fcgi", "scgi", "ajp")),
        FrontEnd("lighttpd", "lighttpd", "lighttpd", _lighttpd, protocols=("fcgi", "scgi"),
                 tls_module=("/usr/lib/lighttpd/mod_openssl.so", "lighttpd-mod-openssl")),
        FrontEnd("caddy", "caddy", "caddy", _caddy),
        FrontEnd("haproxy", "haproxy", "haproxy", _haproxy, serves_files=False),
        FrontEnd("h2o", "h2o", "h2o", _h2o, sends_script_name=False),
    )
}


def get_frontend(name):
    try:
        return FRONTENDS[name]
    except KeyError:
        raise LiveServerError(f"frontend={name!r} is not one of: "
                              f"{', '.join(FRONTENDS)} (or None for runfcgi alone).") from None


class WebServer:
    """A running front end; ``port`` is where it listens on 127.0.0.1."""

    def __init__(self, name, site_args, root, port=0):
        """Start front end ``name`` on ``port`` (0: a free one)."""
        frontend = get_frontend(name)
        program = find_program(frontend)
        attempts = 1 if port else 3
        for attempt in range(attempts):
            site = Site(root=Path(root) / f"{frontend.name}-{attempt}",
                        port=port or _free_port(), **site_args)
            site.root.mkdir()
            try:
                argv, env = frontend.configure(site, program)
            except OptionError as exc:
                raise LiveServerError(f"frontend={name!r}: {exc}") from None
            try:
                self._start(frontend, site, argv, env)
                return
            except LiveServerError as exc:
                # A free port taken before the server bound it: another.
                if "in use" not in str(exc) or attempt == attempts - 1:
                    raise

    def _start(self, frontend, site, argv, env):
        self.name, self.port, self.root = frontend.name, site.port, site.root
        self.log = site.root / "output.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = self.logs()
                self.stop()
                raise LiveServerError(f"{frontend.program} did not start:\n{text}")
            time.sleep(0.02)

    def logs(self):
        """The server's own output and error log (the end of each)."""
        texts = []
        for path in (self.log, self.root / "error.log"):
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").splitlines()[-30:]
                texts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(texts)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT)
        # Its workers share its session: none may outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _free_port():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def _accepts(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True
