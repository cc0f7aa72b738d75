"""Shared set-up: under tox, the code under test is the installed wheel; in the
portable mode, the tests expected to fail there are marked (see the end)."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("RUNFCGI_TEST_WHEEL"):
    # pytest put the checkout on sys.path to import the ``tests`` package;
    # drop it so ``import runfcgi_compat`` finds the wheel tox installed.
    sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != REPO]
    for name in [m for m in sys.modules if m.split(".")[0] == "runfcgi_compat"]:
        del sys.modules[name]

# The sample project has its own settings and pytest-django; its tox
# environment runs it (tests/sampleproject/pytest.ini).
collect_ignore = ["sampleproject"]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()


@pytest.fixture(scope="session")
def repo():
    return REPO
