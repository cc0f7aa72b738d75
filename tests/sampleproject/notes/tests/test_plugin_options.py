"""The plugin's command-line options choose the deployment the fixtures start:
the fixture tests again, over SCGI to a prefork runfcgi behind lighttpd,
mounted under /app."""
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def test_fixture_tests_through_scgi_prefork_lighttpd_under_a_prefix():
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "pytest", "-q",
         "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         "--runfcgi-protocol=scgi", "--runfcgi-method=prefork",
         "--runfcgi-frontend=lighttpd", "--runfcgi-prefix=/app",
         "notes/tests/test_fixtures.py"],
        cwd=PROJECT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "8 passed" in output, output
