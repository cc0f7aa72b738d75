"""Shared set-up: under tox, the code under test is the installed wheel; in the
portable mode, the tests expected to fail there are marked (see the end)."""
import os
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from tests import modes

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("RUNFCGI_TEST_WHEEL"):
    # pytest put the checkout on sys.path to import the ``tests`` package;
    # drop it so ``import runfcgi_compat`` finds the wheel tox installed.
    sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != REPO]
    for name in [m for m in sys.modules if m.split(".")[0] == "runfcgi_compat"]:
        del sys.modules[name]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()


@pytest.fixture(scope="session")
def repo():
    return REPO


# Expected to fail in the portable mode (tests/modes.py) until the threaded
# pool runs without epoll and eventfd (held.py's select.epoll, threaded.py's
# os.eventfd; issue #16's threaded slice).  Remove this list when that
# lands.  Not run meanwhile: a threaded server that cannot start leaves
# files and processes behind for later tests to trip on.
PORTABLE_FAILS_UNTIL_THREADED = [
    "tests/unit/test_servers_held.py::*",
    "tests/integration/*threaded*",  # Every integration test of method=threaded.
    # These start a threaded server too:
    "tests/integration/test_cgi_fcgi.py::test_legacy_fcgi_script",
    "tests/integration/test_frontends.py::test_touching_mysite_fcgi_restarts_it_under_mod_fcgid",
    "tests/integration/test_fuzz.py::test_idle_peers_never_grow_the_pool_past_maxchildren",
    "tests/integration/test_runfcgi_config.py::test_lighttpd_spawning_runfcgi",
]


def pytest_collection_modifyitems(items):
    if not modes.PORTABLE:
        return
    mark = pytest.mark.xfail(reason="portable mode: the threaded pool needs epoll and eventfd",
                             run=False)
    for item in items:
        if any(fnmatchcase(item.nodeid, pattern) for pattern in PORTABLE_FAILS_UNTIL_THREADED):
            item.add_marker(mark)
