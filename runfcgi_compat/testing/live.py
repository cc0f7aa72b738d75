"""A live server: runfcgi, with a real web server in front of it.

``LiveServer`` is what the test case and the pytest fixture share: it
starts runfcgi (``backend.py``), then the front end (``webservers.py``)
with a certificate for ``https`` and the static files it serves, and stops
both, in the reverse order, by pid.
"""
import os
import shutil
import tempfile

from .backend import LiveServerError, start_backend
from .certificate import make_certificate
from .client import FastCGIClient
from .webservers import FRONTENDS, FrontEndMissing, WebServer

PROTOCOLS = ("fcgi", "scgi", "ajp")
METHODS = ("threaded", "prefork")
# Set to 1 to skip (not fail) tests whose front end is not installed.
SKIP_ENV = "RUNFCGI_TESTING_SKIP_MISSING"


def skip_missing_default():
    return os.environ.get(SKIP_ENV, "").lower() in ("1", "true", "yes", "on")


def check_choices(protocol, method, frontend, prefix, static=None):
    """Refuse a bad class attribute or option by name, before starting anything."""
    if protocol not in PROTOCOLS:
        raise LiveServerError(f"protocol={protocol!r} is not one of: {', '.join(PROTOCOLS)}.")
    if method not in METHODS:
        raise LiveServerError(f"method={method!r} is not one of: {', '.join(METHODS)}.")
    if frontend is not None and frontend not in FRONTENDS:
        raise LiveServerError(f"frontend={frontend!r} is not one of: "
                              f"{', '.join(FRONTENDS)} (or None for runfcgi alone).")
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise LiveServerError(f"prefix={prefix!r} must start with '/' and not end with "
                              "one (e.g. '/app').")
    if frontend is None:
        return
    spoken = FRONTENDS[frontend].protocols
    if protocol not in spoken:
        raise LiveServerError(f"protocol={protocol!r} cannot go through "
                              f"frontend={frontend!r}, which speaks only "
                              f"{' and '.join(spoken)}; choose another protocol or "
                              "frontend.")
    if static == "collect" and not FRONTENDS[frontend].serves_files:
        raise LiveServerError(f"frontend={frontend!r} cannot serve static files, which "
                              "StaticFastCGILiveServerTestCase needs; use "
                              f"{', '.join(n for n, f in FRONTENDS.items() if f.serves_files)}"
                              " or FastCGILiveServerTestCase.")


class LiveServer:
    """runfcgi and its front end for one test class or one test session.

    ``frontend=None`` starts runfcgi alone (``url`` is then unusable; use
    ``client()``).  ``in_process`` runs a threaded runfcgi in this process
    (the default for ``method="threaded"``).
    """

    def __init__(self, *, protocol="fcgi", method="threaded", frontend="nginx", prefix="",
                 https=False, host="localhost", port=0, static=None, in_process=None):
        check_choices(protocol, method, frontend, prefix, static)
        self.protocol = protocol
        self.method = method
        self.frontend = frontend
        self.prefix = prefix
        self.https = https
        self.host = host
        self.port = port  # Where the front end listens; 0: a free port.
        # "collect": collectstatic into a directory of our own for the front
        # end to serve (the Static test case); "root": serve STATIC_ROOT if
        # it exists (as LiveServerTestCase does); None: serve none.
        self.static = static
        self._static_override = None
        self.in_process = method == "threaded" if in_process is None else in_process
        self.backend = None
        self.web_server = None
        self.workdir = None

    @property
    def settings_changes(self):
        """Settings the project needs behind this front end (a prefix Django
        cannot see otherwise)."""
        if not self.prefix:
            return {}
        # AJP carries only the path after the mount point, and h2o sends
        # SCRIPT_NAME "": either way Django learns the prefix from settings.
        hidden = self.frontend is not None and not FRONTENDS[self.frontend].sends_script_name
        if self.protocol == "ajp" or hidden:
            return {"FORCE_SCRIPT_NAME": self.prefix}
        return {}

    def check_frontend(self):
        """Raise FrontEndMissing now if the front end (or, for https, its
        TLS module) is not installed."""
        if self.frontend is not None:
            from .webservers import check_installed, get_frontend

            check_installed(get_frontend(self.frontend), self.https)

    def start(self, connections_):
        """Start runfcgi, then the front end; ``connections_`` are Django's."""
        self.workdir = tempfile.mkdtemp(prefix="runfcgi-live-")
        try:
            self.check_frontend()
            static = self._prepare_static()
            self.backend = start_backend(self.protocol, self.method,
                                         in_process=self.in_process,
                                         connections_=connections_, workdir=self.workdir)
            if self.frontend is not None:
                self.web_server = WebServer(self.frontend, self._site_args(static),
                                            self.workdir, self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare_static(self):
        """Return (URL path, directory) of the static files the front end serves."""
        from django.conf import settings

        if (self.static is None or self.frontend is None or not settings.STATIC_URL
                or not FRONTENDS[self.frontend].serves_files):
            return None, None
        url = settings.STATIC_URL
        if "://" in url or url.startswith("//"):
            return None, None  # Served elsewhere (a CDN): nothing for us to serve.
        if not url.startswith("/"):
            url = f"{self.prefix}/{url}"  # Django puts SCRIPT_NAME before it.
        if self.static == "collect":
            from django.core.management import call_command
            from django.test.utils import override_settings

            root = os.path.join(self.workdir, "static")
            os.mkdir(root)
            os.chmod(self.workdir, 0o755)  # Apache's children (www-data) read it.
            self._static_override = override_settings(STATIC_ROOT=root)
            self._static_override.enable()
            call_command("collectstatic", interactive=False, verbosity=0)
            return url, root
        root = settings.STATIC_ROOT
        if root and os.path.isdir(root):
            return url, os.fspath(root)
        return None, None

    def _site_args(self, static):
        certificate = (None, None)
        if self.https:
            certificate = make_certificate(self.workdir)
        static_url, static_root = static
        return dict(protocol=self.protocol, backend=self.backend.address, prefix=self.prefix,
                    certificate=certificate, static_url=static_url, static_root=static_root)

    @property
    def url(self):
        if self.web_server is None:
            raise LiveServerError("frontend=None: runfcgi runs without a web server, so "
                                  "there is no URL; use the FastCGI client.")
        scheme = "https" if self.https else "http"
        return f"{scheme}://{self.host}:{self.web_server.port}{self.prefix}"

    def client(self):
        """A FastCGIClient that talks to this runfcgi directly."""
        return FastCGIClient(self.backend.address, self.protocol, prefix=self.prefix,
                             host=self.host)

    def logs(self):
        """The front end's logs and runfcgi's errors, for a failure message."""
        parts = []
        if self.web_server is not None:
            parts.append(self.web_server.logs())
        if self.backend is not None and hasattr(self.backend, "errors"):
            parts.append(f"--- runfcgi\n{self.backend.errors()}")
        return "\n".join(parts)

    def stop(self):
        try:
            if self.web_server is not None:
                self.web_server.stop()
                self.web_server = None
        finally:
            if self.backend is not None:
                self.backend.stop()
                self.backend = None
            if self._static_override is not None:
                self._static_override.disable()
                self._static_override = None
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def __str__(self):
        return self.url


__all__ = ["FrontEndMissing", "LiveServer", "LiveServerError"]
