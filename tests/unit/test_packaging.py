"""What the package says about itself: under test, one version, honest classifiers.

The built sdist and wheel themselves are checked by scripts/check-dist (tox -e dist).
"""
import configparser
import os
import re
from importlib import metadata
from pathlib import Path

import pytest

import runfcgi_compat

# The Python versions each Django release supports, within our range
# (Django's own release notes); tox must run the unit tests on every pair.
DJANGO_PYTHONS = {
    "4.2": {"3.10", "3.11", "3.12"},
    "5.2": {"3.10", "3.11", "3.12", "3.13"},
    "6.0": {"3.12", "3.13"},
    "6.1": {"3.12", "3.13"},
}


@pytest.mark.skipif(not os.environ.get("RUNFCGI_TEST_WHEEL"), reason="only under tox")
def test_the_installed_wheel_is_under_test(repo):
    location = Path(runfcgi_compat.__file__).resolve()
    assert "site-packages" in location.parts and (repo / "runfcgi_compat") not in location.parents


def test_one_version_string():
    assert metadata.version("runfcgi-compat") == runfcgi_compat.__version__


def expand(word):
    """tox's braces: ``py{310,311}-x`` -> ``py310-x``, ``py311-x``."""
    brace = re.search(r"\{([^}]*)\}", word)
    if not brace:
        return [word]
    return [name for choice in brace.group(1).split(",")
            for name in expand(word[:brace.start()] + choice + word[brace.end():])]


def tox_envs(repo):
    config = configparser.ConfigParser(interpolation=None)
    config.read(repo / "tox.ini")
    words = re.findall(r"(?:[^,\s{]|\{[^}]*\})+", config["tox"]["envlist"])
    return [name for word in words for name in expand(word)]


def pairs(envs):
    """{(python, django)} of the Python x Django cells among ``envs``."""
    found = set()
    for env in envs:
        cell = re.fullmatch(r"py3(\d+)-django(\d)(\d)(?:-\w+)?", env)
        if cell:
            found.add((f"3.{cell[1]}", f"{cell[2]}.{cell[3]}"))
    return found


def test_tox_runs_the_unit_tests_on_every_supported_pair(repo):
    supported = {(python, django) for django, pythons in DJANGO_PYTHONS.items()
                 for python in pythons}
    envs = tox_envs(repo)
    assert pairs(envs) == supported
    # The integration tests (the cells without a "-unit") once per Django version.
    full = [env for env in envs if re.fullmatch(r"py3\d+-django\d\d", env)]
    assert sorted(django for _, django in pairs(full)) == sorted(DJANGO_PYTHONS)
    assert "py312-django52-portable" in envs


def test_classifiers_claim_what_tox_tests(repo):
    classifiers = metadata.metadata("runfcgi-compat").get_all("Classifier")
    pythons = {c.rsplit(" :: ", 1)[1] for c in classifiers
               if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    djangos = {c.rsplit(" :: ", 1)[1] for c in classifiers
               if c.startswith("Framework :: Django :: ")}
    tested = pairs(tox_envs(repo))
    assert pythons == {python for python, _ in tested}
    assert djangos == {django for _, django in tested}
    requires = metadata.metadata("runfcgi-compat")["Requires-Python"]
    assert requires == f">={min(pythons, key=lambda v: tuple(map(int, v.split('.'))))}"
