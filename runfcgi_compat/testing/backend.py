"""runfcgi behind a live server: in a thread of the test process, or in a child.

* ``ThreadBackend`` (``method="threaded"``, the default) runs the threaded
  pool in a thread of the test process, so it sees the test database as
  Django's ``LiveServerTestCase`` server does: the test's in-memory SQLite
  connections are shared with the pool's threads (``connections_override``),
  and every request closes the thread's other connections when it is done.
* ``ChildBackend`` runs ``runfcgi`` in a child process (``method="prefork"``,
  or ``threaded`` when asked), started with ``python -m
  runfcgi_compat.testing.child`` and told the test databases' names, so it
  needs a database another process can open.

Either way the project is loaded, URLconf included, before the live server
is ready: an error there (bad settings, a view module that does not import)
fails the test class with its message instead of turning into 500 pages.
"""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ..options import Options

CHILD_ENV = "RUNFCGI_TESTING_CHILD"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# What runfcgi prints once it listens (runner._banner).
BANNER = b"runfcgi: serving"
# Settings a test process changes (the test runner, the test case) that a
# child process must see too.
SETTINGS_FOR_CHILD = ("ALLOWED_HOSTS", "DEBUG", "STATIC_ROOT", "FORCE_SCRIPT_NAME")


class LiveServerError(RuntimeError):
    """The live server cannot start; the message says why and what to do."""


def load_project():
    """Return the project's WSGI application with its URLconf imported.

    Django imports the URLconf, and with it the views, at the first
    request; importing it here makes a broken view module a start-up error.
    """
    from django.core.servers.basehttp import get_internal_wsgi_application
    from django.urls import get_resolver

    app = get_internal_wsgi_application()
    get_resolver().url_patterns  # noqa: B018 - imported for its errors
    return app


class SharedConnections:
    """Run the app with the test's shared connections, as Django's live
    server thread does, and close the thread's own connections after each
    request (an in-memory SQLite connection ignores ``close()``)."""

    def __init__(self, app, connections_override):
        self.app = app
        self.connections_override = dict(connections_override or {})

    def __call__(self, environ, start_response):
        from django.db import connections

        for alias, conn in self.connections_override.items():
            connections[alias] = conn
        try:
            result = self.app(environ, start_response)
        except BaseException:
            connections.close_all()
            raise
        return _Closing(result, connections.close_all)


class _Closing:
    """A WSGI response whose ``close()`` also calls ``after``."""

    def __init__(self, result, after):
        self.result = result
        self.after = after

    def __iter__(self):
        return iter(self.result)

    def close(self):
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            self.after()


def _listening_socket():
    return socket.create_server(("127.0.0.1", 0), backlog=128)


class ThreadBackend:
    """The threaded pool in a thread of this process."""

    def __init__(self, protocol, connections_override=None):
        from ..servers import make_server

        self.protocol = protocol
        self.method = "threaded"
        self._shared = list((connections_override or {}).values())
        self._sock = _listening_socket()
        self.address = self._sock.getsockname()[:2]
        options = Options(protocol=protocol, method="threaded", host=self.address[0],
                          port=self.address[1], gracetimeout=5)
        self._pool = make_server(
            options, lambda: SharedConnections(load_project(), connections_override))
        for conn in self._shared:
            conn.inc_thread_sharing()  # As Django's live server thread does.
        try:
            self._pool.open(self._sock)
        except Exception as exc:
            self._release()
            raise LiveServerError(f"runfcgi cannot load the project: "
                                  f"{type(exc).__name__}: {exc}") from exc
        self._thread = threading.Thread(target=self._serve, name="runfcgi-live-server",
                                        daemon=True)
        self._thread.start()

    def _serve(self):
        try:
            while self._pool.turn():
                pass
            self._pool.finish()
        finally:
            self._pool.close()

    def stop(self):
        self._pool.stop()
        self._thread.join(STOP_TIMEOUT + 5)
        self._release()

    def _release(self):
        self._sock.close()
        for conn in self._shared:
            conn.dec_thread_sharing()
        self._shared = []


def child_settings():
    """The settings a child process takes from this one (see SETTINGS_FOR_CHILD)."""
    from django.conf import settings

    values = {}
    for name in SETTINGS_FOR_CHILD:
        value = getattr(settings, name, None)
        values[name] = os.fspath(value) if isinstance(value, os.PathLike) else value
    values["ALLOWED_HOSTS"] = list(values["ALLOWED_HOSTS"] or [])
    return values


def check_shareable(connections_, method):
    """Refuse test databases a child process cannot open (in-memory SQLite)."""
    for conn in connections_:
        if conn.vendor == "sqlite" and conn.is_in_memory_db():
            raise LiveServerError(
                f"method={method!r} runs runfcgi in a child process, which cannot open "
                f"the in-memory SQLite test database of {conn.alias!r}. Give it a file "
                f"(DATABASES[{conn.alias!r}]['TEST']['NAME'] = '/tmp/test-db.sqlite3'), "
                "use a database server (PostgreSQL, MySQL), or use method='threaded'.")


class ChildBackend:
    """``runfcgi`` in a child process, told the test databases' names."""

    def __init__(self, protocol, method, *, databases, settings, workdir):
        self.protocol = protocol
        self.method = method
        self._dir = workdir
        for attempt in range(3):
            with _listening_socket() as probe:
                self.address = probe.getsockname()[:2]
            try:
                self._start(databases, settings)
                return
            except LiveServerError as exc:
                if "already in use" not in str(exc) or attempt == 2:
                    raise

    def _start(self, databases, settings):
        host, port = self.address
        words = [f"protocol={self.protocol}", f"method={self.method}", f"host={host}",
                 f"port={port}", "daemonize=false", "gracetimeout=5", "minspare=1",
                 "maxspare=2", "maxchildren=8"]
        spec = {"words": words, "databases": databases, "settings": settings}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env[CHILD_ENV] = json.dumps(spec)
        # The child imports what this process imports (the project, the app).
        env["PYTHONPATH"] = os.pathsep.join(path or os.getcwd() for path in sys.path)
        self._out = tempfile.TemporaryFile(dir=self._dir)
        self._err = tempfile.TemporaryFile(dir=self._dir)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runfcgi_compat.testing.child"], env=env,
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not (BANNER in self._read(self._out) and _accepts(self.address)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._kill()
                text = self.errors() or self._read(self._out).decode(errors="replace")
                self._out.close()
                self._err.close()
                raise LiveServerError(
                    f"runfcgi ({self.protocol}, {self.method}) did not start:\n{text}")
            time.sleep(0.02)

    @staticmethod
    def _read(handle):
        handle.seek(0)
        return handle.read()

    def errors(self):
        """What the child wrote on standard error so far."""
        return self._read(self._err).decode("utf-8", "replace").strip()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT)
        self._kill()
        errors = self.errors()
        if errors:
            # Tracebacks of failed requests: where the test runner shows them.
            sys.stderr.write(f"runfcgi (pid {self.process.pid}) wrote:\n{errors}\n")
        self._out.close()
        self._err.close()

    def _kill(self):
        """End the child's whole session (prefork workers too) and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _accepts(address):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(address)
        except OSError:
            return False
        return True


def start_backend(protocol, method, *, in_process, connections_, workdir):
    """Start runfcgi for a live server; return a backend with ``address`` and ``stop()``.

    ``connections_`` are Django's connections of the test process.
    """
    if in_process:
        if method != "threaded":
            raise LiveServerError(f"method={method!r} cannot run inside the test process; "
                                  "only method='threaded' can.")
        override = {conn.alias: conn for conn in connections_.all()
                    if conn.vendor == "sqlite" and conn.is_in_memory_db()}
        return ThreadBackend(protocol, override)
    check_shareable(connections_.all(), method)
    databases = {conn.alias: os.fspath(conn.settings_dict["NAME"])
                 for conn in connections_.all()}
    return ChildBackend(protocol, method, databases=databases, settings=child_settings(),
                        workdir=workdir)

