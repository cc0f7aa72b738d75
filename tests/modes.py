"""Which way this test run goes: the portable mode or a normal cell.

The portable mode (``RUNFCGI_PORTABLE=1``, tox's ``*-portable`` cell) hides
epoll, eventfd and the C module from every Python process of its
environment (tests/portable/sitecustomize.py).  A normal tox cell installs
the wheel, which has the C module whenever a C compiler built it.
"""
import os
import shutil
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PORTABLE = os.environ.get("RUNFCGI_PORTABLE") == "1"
CI = os.environ.get("CI") == "true"
WHEEL = bool(os.environ.get("RUNFCGI_TEST_WHEEL"))


def c_compiler():
    """The C compiler Python's own build used (as setuptools calls it), else
    ``cc``; None when neither is installed."""
    for words in ((sysconfig.get_config_var("CC") or "cc").split(), ["cc"]):
        path = shutil.which(words[0])
        if path:
            return [path, *words[1:]]
    return None


def skip_or_fail(reason):
    """Skip for want of a tool; under CI=true a missing tool fails the test."""
    if CI:
        pytest.fail(reason)
    pytest.skip(reason)


def wire():
    """The C module; skip in the portable mode, where it is hidden.

    Elsewhere it must be there when a compiler could build it: a missing
    module then fails (outside tox, a checkout without an in-place build
    skips).
    """
    if PORTABLE:
        pytest.skip("the portable mode runs without the C module")
    try:
        from runfcgi_compat.servers import _wire
    except ImportError:
        if c_compiler() is None:
            skip_or_fail("no C compiler: the C module was not built")
        if not (WHEEL or CI):
            pytest.skip("the C module is not built in this checkout (tox builds the wheel)")
        raise
    return _wire
