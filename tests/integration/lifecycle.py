"""A tiny launcher for the servers package, and the fixture that drives it.

Run as a script, this file binds a socket itself, builds ``Options`` with
``from_mapping`` and calls ``make_server(...).serve(sock)`` with a small
WSGI app, so the lifecycle tests depend on nothing but ``servers/``.

    python lifecycle.py '{"options": {...}, "bind": "tcp", ...}'

It prints ``LISTENING <address>`` once the socket listens and
``SERVE-RETURNED <pid>`` after ``serve()`` returns, so tests can check that
clean-up code runs in the master only.

The app, by path:

* ``/pid``: the worker's pid.
* ``/wait?<name>``: touch ``<dir>/<name>.started``, then wait until
  ``<dir>/<name>.go`` exists: a request held in flight for as long as the
  test wants, with no sleeps.
* ``/boom``: raise.  ``/stream-boom``: one chunk, then raise.
* ``/big?<n>``: n bytes.  ``/echo``: the request body.
* ``/pool``: the threaded pool's ``stats()``, as JSON.
* ``/frozen``: the worker's pid and ``gc.get_freeze_count()``.
"""
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

if __name__ != "__main__":
    # Test side only: run as the launcher script, the checkout may not be on
    # the path (under tox the launcher imports runfcgi_compat from the wheel).
    from tests.helpers import kill_group, wait_until  # noqa: F401


# -- the launched side ----------------------------------------------------------


def make_app(control_dir, pool=None):
    control = Path(control_dir)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if path == "/wait":
            (control / f"{query}.started").write_text(str(os.getpid()))
            go = control / f"{query}.go"
            deadline = time.monotonic() + 60
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        elif path == "/boom":
            raise RuntimeError("boom from the test app")
        elif path == "/stream-boom":
            start_response("200 OK", [("Content-Type", "text/plain")])

            def body():
                yield b"first chunk\n"
                raise RuntimeError("boom while streaming")
            return body()
        elif path == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [b"x" * int(query)]
        elif path == "/pool":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(pool.stats()).encode()]
        elif path == "/frozen":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [f"{os.getpid()} {gc.get_freeze_count()}".encode()]
        elif path == "/echo":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            data = environ["wsgi.input"].read(length)
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [data]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{os.getpid()}".encode()]

    return app


def launch(config):
    from runfcgi_compat.options import from_mapping
    from runfcgi_compat.servers import POOLS, PROTOCOLS, make_server, pool_class, protocol_class

    # RUNFCGI_TEST_LOG=DEBUG shows the pools' debug lines when hunting a failure.
    logging.basicConfig(level=os.environ.get("RUNFCGI_TEST_LOG", "INFO"), stream=sys.stderr,
                        format="%(process)d %(levelname)s %(message)s")
    for name, value in config.get("handler_attrs", {}).items():
        for protocol in PROTOCOLS:
            setattr(protocol_class(protocol), name, value)
    for name, value in config.get("pool_attrs", {}).items():
        for method in POOLS:
            setattr(pool_class(method), name, value)
    control = config["control_dir"]
    bind = config.get("bind", "tcp")
    if bind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = os.path.join(control, "server.sock")
        sock.bind(address)
    else:
        family = socket.AF_INET6 if bind == "tcp6" else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind(("::1" if bind == "tcp6" else "127.0.0.1", 0))
        address = sock.getsockname()[:2]
    sock.listen(128)

    def load_app():
        if os.path.exists(os.path.join(control, "fail-load")):
            raise RuntimeError("load_app told to fail")
        return make_app(control, server)

    def reopen_logs():
        with open(os.path.join(control, "reopened"), "a") as log:
            log.write(f"{os.getpid()}\n")

    server = make_server(from_mapping(config["options"]), load_app,
                         on_reopen_logs=reopen_logs)
    # As the runner does: signals sent as soon as we listen wait for the
    # pool's handlers (the pools unblock them) instead of killing us.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGUSR1})
    print("LISTENING", json.dumps(address), flush=True)
    try:
        server.serve(sock)
    finally:
        print("SERVE-RETURNED", os.getpid(), flush=True)
        sock.close()


# -- the test side --------------------------------------------------------------------


class Server:
    """One launched server process (the master)."""

    def __init__(self, tmp_path, options, bind="tcp", handler_attrs=None, pool_attrs=None,
                 env=None):
        self.dir = tmp_path
        self.stdout_path = tmp_path / "stdout.txt"
        self.stderr_path = tmp_path / "stderr.txt"
        config = {"options": options, "bind": bind, "control_dir": str(tmp_path),
                  "handler_attrs": handler_attrs or {}, "pool_attrs": pool_attrs or {}}
        run_env = dict(os.environ)
        if not run_env.get("RUNFCGI_TEST_WHEEL"):
            run_env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO)] + [p for p in [run_env.get("PYTHONPATH")] if p])
        run_env.update(env or {})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, __file__, json.dumps(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=run_env,
                start_new_session=True)  # Group id = master pid, for clean-up.
        self.address = self._wait_listening()

    @property
    def pid(self):
        return self.process.pid

    def _wait_listening(self):
        while True:
            for line in self.stdout().splitlines():
                if line.startswith("LISTENING "):
                    address = json.loads(line.split(" ", 1)[1])
                    return address if isinstance(address, str) else tuple(address)
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.stderr()}")
            time.sleep(0.02)

    def stdout(self):
        return self.stdout_path.read_text()

    def stderr(self):
        return self.stderr_path.read_text()

    def children(self):
        """Pids of the master's live child processes."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return {int(p) for p in path.read_text().split()}
        except FileNotFoundError:
            return set()

    def signal(self, signum):
        os.kill(self.pid, signum)

    def wait(self, timeout=20.0):
        """Wait for the master to exit; return (exit code, seconds waited)."""
        started = time.monotonic()
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started

    def release(self, name):
        (self.dir / f"{name}.go").touch()

    def wait_started(self, name, timeout=30.0):
        """Wait until the app runs the ``/wait?name`` request; return its pid."""
        marker = self.dir / f"{name}.started"
        wait_until(lambda: marker.exists() and marker.read_text(), timeout,
                   f"request {name} to start")
        return int(marker.read_text())

    def kill(self):
        kill_group(self.process)


# wait_until lives in tests.helpers (imported above, used from here too).


def server_starter(tmp_path_factory):
    """Body of a ``start_server`` fixture: yield a function that starts
    launcher processes; each is killed with its workers at the end."""
    started = []

    def start(options, **kwargs):
        server = Server(tmp_path_factory.mktemp("srv"), options, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


if __name__ == "__main__":
    launch(json.loads(sys.argv[1]))
