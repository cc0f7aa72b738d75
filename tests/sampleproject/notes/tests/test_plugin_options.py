"""The plugin's command-line options choose the deployment the fixtures start:
the fixture tests again, mounted under /app, over SCGI to a prefork runfcgi
behind lighttpd, and behind h2o."""
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("options", [
    ["--runfcgi-protocol=scgi", "--runfcgi-method=prefork", "--runfcgi-frontend=lighttpd"],
    # h2o sends SCRIPT_NAME "": the fixture sets FORCE_SCRIPT_NAME to the prefix.
    ["--runfcgi-method=prefork", "--runfcgi-frontend=h2o"],
], ids=["scgi-prefork-lighttpd", "fcgi-prefork-h2o"])
def test_fixture_tests_through_other_deployments_under_a_prefix(options):
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "pytest", "-q",
         "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         *options, "--runfcgi-prefix=/app", "notes/tests/test_fixtures.py"],
        cwd=PROJECT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "8 passed" in output, output
