"""The pytest plugin without pytest-django (as in this suite's own runs): it
adds its options, stays quiet, and its fixtures say what they need."""
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest


def plugin_args():
    """Load the plugin by name unless the installed entry point already does."""
    names = {entry.value for entry in metadata.entry_points(group="pytest11")}
    return [] if "runfcgi_compat.pytest_plugin" in names else ["-p",
                                                              "runfcgi_compat.pytest_plugin"]


def run_pytest(tmp_path, *args):
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "pytest", "-p", "no:django",
         "-p", "no:hypothesispytest",  # Its start-up costs seconds; unused here.
         "-p", "no:cacheprovider", *plugin_args(), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def test_quiet_without_pytest_django(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    code, output = run_pytest(tmp_path, "-q", "-W", "error")
    assert code == 0, output
    assert "1 passed" in output and "warning" not in output.lower()


def test_fixture_says_it_needs_pytest_django(tmp_path):
    (tmp_path / "test_live.py").write_text(textwrap.dedent("""\
        def test_live(runfcgi_live_server):
            pass

        def test_client(runfcgi_client):
            pass
        """))
    code, output = run_pytest(tmp_path, "-q")
    assert code == 1, output
    # Each error is the message alone on its line (its line in the short
    # summary holds it too when the terminal is wide enough).
    message = ("the runfcgi_live_server and runfcgi_client fixtures need pytest-django "
               "(pip install pytest-django)")
    assert output.splitlines().count(message) == 2, output
    assert "2 errors" in output or "2 failed" in output


def test_options_are_listed_in_help(tmp_path):
    code, output = run_pytest(tmp_path, "--help")
    assert code == 0, output
    for option in ("--runfcgi-protocol={fcgi,scgi,ajp}", "--runfcgi-method={threaded,prefork}",
                   "--runfcgi-frontend=NAME", "--runfcgi-prefix=PATH", "--runfcgi-https",
                   "--runfcgi-skip-missing"):
        assert option in output


@pytest.mark.skipif(not os.environ.get("RUNFCGI_TEST_WHEEL"), reason="only under tox")
def test_the_wheel_registers_the_plugin():
    entries = {entry.name: entry.value for entry in metadata.entry_points(group="pytest11")}
    assert entries.get("runfcgi_compat") == "runfcgi_compat.pytest_plugin"
