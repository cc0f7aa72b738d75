"""SIGHUP reloads a prefork server with the project's new code (issue #3).

A tiny Django project is written to a temporary directory for each test
(the repository's example is never edited), served by the real
``manage.py runfcgi`` (or ``runfastcgi()`` from a script), and its view
module is rewritten between reloads.  Bytecode caching is off in the
server, so a rewrite within the same second is never hidden by a stale
``.pyc``.
"""
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runfcgi_compat import client
from tests.helpers import free_port, kill_quietly, wait_for_connect, wait_for_exit
from tests.integration.lifecycle import REPO, wait_until

SETTINGS = """
SECRET_KEY = "reload-test"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "reloadsite.urls"
INSTALLED_APPS = ["runfcgi_compat"]
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True
"""
URLS = """
from django.urls import path

from reloadsite import views

urlpatterns = [path("", views.index), path("ppid", views.ppid)]
"""
VIEWS = """
import os

from django.http import HttpResponse


def index(request):
    return HttpResponse("version {version}")


def ppid(request):
    return HttpResponse(str(os.getppid()))
"""
MANAGE = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reloadsite.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""
SCRIPT = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reloadsite.settings")
import django

django.setup()
from runfcgi_compat.fastcgi import runfastcgi

runfastcgi(sys.argv[1:])
"""


class Site:
    """The project on disk, and the server that serves it."""

    def __init__(self, root):
        self.root = root
        package = root / "reloadsite"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "settings.py").write_text(SETTINGS)
        (package / "urls.py").write_text(URLS)
        (root / "manage.py").write_text(MANAGE)
        (root / "serve.py").write_text(SCRIPT)
        self.views = package / "views.py"
        self.write_version(1)
        self.errlog = root / "err.log"
        self.address = ("127.0.0.1", free_port())
        self.process = None

    def write_version(self, version):
        self.views.write_text(VIEWS.format(version=version))

    def break_views(self):
        self.views.write_text("raise ImportError('half-edited view module')\n")

    def start(self, *words, script="manage.py", command=("runfcgi",)):
        paths = [str(self.root)]
        if not os.environ.get("RUNFCGI_TEST_WHEEL"):
            paths.append(str(REPO))  # This checkout, as lifecycle.py does.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths),
                   PYTHONDONTWRITEBYTECODE="1", DJANGO_SETTINGS_MODULE="reloadsite.settings")
        argv = [sys.executable, script, *command, "protocol=fcgi", "method=prefork",
                f"errlog={self.errlog}", "minspare=2", "maxspare=4", "maxchildren=6",
                *words]
        if not any(word.startswith("socket=") for word in words):
            argv += ["host=127.0.0.1", f"port={self.address[1]}"]
        if not any(word.startswith("daemonize=") for word in words):
            argv.append("daemonize=false")
        # Relative script path: the reload must run it from where it started.
        self.process = subprocess.Popen(argv, cwd=self.root, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        return self.process

    def get(self, path="/", timeout=30):
        return client.request(self.address, "fcgi", path=path, timeout=timeout)

    def text(self):
        return self.get().body.decode()

    def log(self):
        return self.errlog.read_text() if self.errlog.exists() else ""

    def stop(self):
        if self.process is not None:
            kill_quietly(self.process.pid, signal.SIGKILL)
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()


@pytest.fixture
def site(tmp_path):
    site = Site(tmp_path)
    yield site
    site.stop()


class Hammer:
    """Threads that keep requesting ``/`` and record every outcome."""

    def __init__(self, site, threads=4):
        self.site = site
        self.outcomes = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self):
        while not self._stop.is_set():
            try:
                response = self.site.get()
                self.outcomes.append(response.body.decode() if response.status == 200
                                     else f"status {response.status}")
            except (OSError, client.ClientError) as exc:
                self.outcomes.append(f"error {exc}")

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def seen_since(self, start, text):
        return text in self.outcomes[start:]

    def failures(self):
        return [o for o in self.outcomes if not o.startswith("version ")]


def reload_to(site, pid, version, hammer=None):
    """Write the new view, SIGHUP the master, wait until it answers."""
    site.write_version(version)
    start = len(hammer.outcomes) if hammer else 0
    os.kill(pid, signal.SIGHUP)
    if hammer is not None:
        wait_until(lambda: hammer.seen_since(start, f"version {version}"), 60,
                   f"version {version} after the reload")
    else:
        wait_until(lambda: site.text() == f"version {version}", 60,
                   f"version {version} after the reload")


def test_two_reloads_under_load_serve_new_code_and_lose_no_request(site):
    process = site.start()
    wait_for_connect(site.address, process=process)
    assert site.text() == "version 1"
    with Hammer(site) as hammer:
        wait_until(lambda: len(hammer.outcomes) > 20, 30, "some requests")
        for version in (2, 3):
            reload_to(site, process.pid, version, hammer)
            assert process.poll() is None
    failures = hammer.failures()
    print(f"two reloads under load: {len(hammer.outcomes)} requests, "
          f"{len(failures)} failures")
    assert failures == []
    # Same master throughout: the workers answering are its children.
    assert int(site.get("/ppid").body) == process.pid
    assert site.log().count("reloaded with the new code") == 2
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


def children(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()}


def test_kept_connections_stay_open_across_the_masters_exec(site):
    # More kept connections than workers: some wait in the master while it
    # re-executes itself.  Those, the channel the workers pass connections
    # through, and the ones the old workers pass on as they leave all reach
    # the new image; every connection serves the new code afterwards.
    process = site.start()
    wait_for_connect(site.address, process=process)
    kept = [client.FastCGIConnection(site.address, timeout=30) for _ in range(8)]
    try:
        for conn in kept:
            assert conn.request(path="/").body == b"version 1"
        old_workers = children(process.pid)
        reload_to(site, process.pid, 2)
        wait_until(lambda: not old_workers & children(process.pid), 60,
                   "the old workers to exit")
        for conn in kept:
            assert conn.request(path="/").body == b"version 2"
        assert "lost in passing" not in site.log()
    finally:
        for conn in kept:
            conn.close()


def test_code_that_does_not_load_cancels_the_reload(site):
    process = site.start()
    wait_for_connect(site.address, process=process)
    site.break_views()
    os.kill(process.pid, signal.SIGHUP)
    wait_until(lambda: "reload cancelled" in site.log(), 60, "the cancelled reload")
    errors = [line for line in site.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "still serving the old code" in errors[0]
    assert site.text() == "version 1"
    assert process.poll() is None
    reload_to(site, process.pid, 2)  # Fixed: the next reload goes through.


def test_daemonized_reload_keeps_pid_pidfile_and_unix_socket(site):
    sock_path = site.root / "fcgi.sock"
    pidfile = site.root / "server.pid"
    site.address = str(sock_path)
    site.start("daemonize=true", f"pidfile={pidfile}", f"socket={sock_path}",
               f"workdir={site.root}").wait(60)
    pid = int(pidfile.read_text())
    try:
        inode = sock_path.stat().st_ino
        assert site.text() == "version 1"
        reload_to(site, pid, 2)
        assert int(pidfile.read_text()) == pid
        assert sock_path.stat().st_ino == inode
        assert int(site.get("/ppid").body) == pid
        os.kill(pid, signal.SIGTERM)
        wait_for_exit(pid, timeout=30)
        assert not pidfile.exists() and not sock_path.exists()
    finally:
        kill_quietly(pid, signal.SIGKILL)


def test_runfastcgi_from_a_script_reloads(site):
    process = site.start(script="serve.py", command=())
    wait_for_connect(site.address, process=process)
    assert site.text() == "version 1"
    reload_to(site, process.pid, 2)
    assert process.poll() is None
    assert Path(site.root / "serve.py").exists()
