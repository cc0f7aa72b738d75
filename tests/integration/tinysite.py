"""A tiny Django project on disk, served by the real ``manage.py runfcgi``.

Written to a temporary directory for each test (the repository's example is
never edited), so a test may rewrite its view module (reloads) or hold a
request in flight for as long as it wants (``/hold/<name>``: touch
``<name>.started``, wait until ``<name>.go`` exists).  Bytecode caching is
off in the server, so a rewrite within the same second is never hidden by
a stale ``.pyc``.
"""
import os
import signal
import subprocess
import sys

from runfcgi_compat import client
from tests.helpers import BANNER, free_port, kill_quietly
from tests.integration.lifecycle import REPO

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

urlpatterns = [path("", views.index), path("ppid", views.ppid),
               path("hold/<name>", views.hold)]
"""
VIEWS = """
import os
import pathlib
import time

from django.http import HttpResponse

{prelude}

def index(request):
    return HttpResponse("version {version}")


def ppid(request):
    return HttpResponse(str(os.getppid()))


def hold(request, name):
    root = pathlib.Path(__file__).resolve().parent.parent
    (root / f"{{name}}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (root / f"{{name}}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return HttpResponse(f"held {{name}}")
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
        self.process = None  # The last one started.
        self.processes = []

    def write_version(self, version, prelude=""):
        """Serve ``version`` from now on; ``prelude`` runs when views is imported."""
        self.views.write_text(VIEWS.format(version=version, prelude=prelude))

    def break_views(self):
        self.views.write_text("raise ImportError('half-edited view module')\n")

    def start(self, *words, script="manage.py", command=("runfcgi",)):
        paths = [str(self.root)]
        if not os.environ.get("RUNFCGI_TEST_WHEEL"):
            paths.append(str(REPO))  # This checkout, as lifecycle.py does.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths),
                   PYTHONDONTWRITEBYTECODE="1", DJANGO_SETTINGS_MODULE="reloadsite.settings")
        given = {word.partition("=")[0] for word in words}
        pool = [word for word in ("minspare=2", "maxspare=4", "maxchildren=6")
                if word.partition("=")[0] not in given]  # The test's own win.
        argv = [sys.executable, script, *command, "protocol=fcgi", "method=prefork",
                f"errlog={self.errlog}", *pool, *words]
        if not any(word.startswith("socket=") for word in words):
            argv += ["host=127.0.0.1", f"port={self.address[1]}"]
        if not any(word.startswith("daemonize=") for word in words):
            argv.append("daemonize=false")
        # Relative script path: the reload must run it from where it started.
        self.outlog = self.root / f"out-{len(self.processes)}.log"
        with open(self.outlog, "w") as out:
            self.process = subprocess.Popen(argv, cwd=self.root, env=env,
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(self.process)
        return self.process

    def listening(self):
        """True once the last server started printed its banner (it listens)."""
        if self.process.poll() is not None:
            raise AssertionError(f"runfcgi exited with {self.process.returncode}:\n"
                                 f"{self.outlog.read_text()}{self.log()}")
        return BANNER in self.outlog.read_text()

    def get(self, path="/", timeout=30):
        return client.request(self.address, "fcgi", path=path, timeout=timeout)

    def text(self):
        return self.get().body.decode()

    def log(self):
        return self.errlog.read_text() if self.errlog.exists() else ""

    def release(self, name):
        (self.root / f"{name}.go").touch()

    def started(self, name):
        """The pid of the worker running ``/hold/<name>``, or None yet."""
        marker = self.root / f"{name}.started"
        return marker.exists() and marker.read_text() and int(marker.read_text())

    def stop(self):
        for process in self.processes:
            kill_quietly(process.pid, signal.SIGKILL)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
