import os
from pathlib import Path

import pytest

import runfcgi_compat


@pytest.mark.skipif(not os.environ.get("RUNFCGI_TEST_WHEEL"), reason="only under tox")
def test_the_installed_wheel_is_under_test(repo):
    location = Path(runfcgi_compat.__file__).resolve()
    assert "site-packages" in location.parts and (repo / "runfcgi_compat") not in location.parents
