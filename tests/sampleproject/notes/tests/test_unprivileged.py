"""The test case and the fixture work for a user who is not root, as CI
services commonly run: when these tests run as root, they run a few of the
project's tests again as ``nobody``."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def allow_traversal(path):
    """Let other users pass through (never list) the directories above ``path``:
    a checkout or a tox directory may sit in a private one (mkdtemp's 0700)."""
    path = os.path.realpath(path)
    while path not in ("/", ""):
        mode = os.stat(path).st_mode
        if not mode & 0o001:
            os.chmod(path, (mode & 0o7777) | 0o001)
        path = os.path.dirname(path)


def run_unprivileged(*argv):
    """Run ``python argv...`` in the project as nobody (if root); return its output."""
    command = [sys.executable, *argv]
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.fail("runuser (Debian package util-linux) is needed to run as nobody")
        import runfcgi_compat

        for path in (sys.executable, sys.prefix, sys.base_prefix, *sys.path,
                     runfcgi_compat.__file__, PROJECT):
            if path and os.path.exists(path):
                allow_traversal(path)
        command = [runuser, "-u", "nobody", "--", *command]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HOME="/tmp")
    env.pop("SAMPLE_TEST_DATABASE", None)
    done = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_test_case_as_nobody():
    output = run_unprivileged(
        "-W", "error", "manage.py", "test",
        "notes.tests.test_live.ThreadedFastCGIThroughNginx.test_post_form_with_csrf",
        "notes.tests.test_live.PreforkFastCGIThroughNginx"
        ".test_orm_write_then_read_through_the_web_server")
    assert "Ran 2 tests" in output and "\nOK" in output


def test_fixture_as_nobody():
    output = run_unprivileged(
        "-W", "error", "-m", "pytest", "-p", "no:cacheprovider", "-q",
        "notes/tests/test_fixtures.py::test_orm_write_then_read_through_the_web_server")
    assert "1 passed" in output
