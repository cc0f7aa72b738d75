"""A project that cannot load fails the test class loudly, with the reason.

Each test runs a small test class of its own with unittest's runner and
reads what the runner reports, as a developer would see it.
"""
import io
import unittest

import pytest
from django.test.utils import override_settings

from runfcgi_compat.testing import FastCGILiveServerTestCase


def run_class(**attributes):
    """Run a one-test FastCGILiveServerTestCase; return the runner's report."""
    def test_never_runs(self):
        raise AssertionError("the live server should not have started")

    case = type("Broken", (FastCGILiveServerTestCase,),
                {"test_never_runs": test_never_runs, **attributes})
    output = io.StringIO()
    result = unittest.TextTestRunner(stream=output, verbosity=0).run(
        unittest.defaultTestLoader.loadTestsFromTestCase(case))
    assert not result.wasSuccessful()
    return output.getvalue()


def test_threaded_view_module_that_cannot_import():
    with override_settings(ROOT_URLCONF="notes.broken_urls"):
        report = run_class(frontend=None)
    assert "ERROR: setUpClass" in report
    assert "runfcgi cannot load the project" in report
    assert "cannot import name 'views_that_do_not_exist'" in report


def test_prefork_view_module_that_cannot_import(monkeypatch):
    monkeypatch.setenv("SAMPLE_ROOT_URLCONF", "notes.broken_urls")
    report = run_class(method="prefork", frontend=None)
    assert "runfcgi (fcgi, prefork) did not start" in report
    assert "cannot load the project's WSGI application" in report
    assert "cannot import name 'views_that_do_not_exist'" in report


def test_prefork_with_broken_settings(monkeypatch):
    monkeypatch.setenv("SAMPLE_BREAK_SETTINGS", "1")
    report = run_class(method="prefork", protocol="scgi", frontend=None)
    assert "runfcgi (scgi, prefork) did not start" in report
    assert "ValueError: the sample settings are broken on purpose" in report


def test_prefork_refuses_an_in_memory_database(monkeypatch):
    from django.db import connection

    monkeypatch.setattr(connection, "is_in_memory_db", lambda: True)
    report = run_class(method="prefork")
    assert "cannot open the in-memory SQLite test database of 'default'" in report
    assert "method='threaded'" in report


def test_missing_front_end_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("os.path.exists", lambda path: False)
    report = run_class()
    assert "frontend='nginx' needs the nginx program, which is not installed" in report
    assert "apt-get install nginx" in report


def test_missing_front_end_skips_when_asked(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("os.path.exists", lambda path: False)
    case = type("Skipping", (FastCGILiveServerTestCase,),
                {"skip_missing_frontend": True, "test_it": lambda self: None})
    result = unittest.TextTestRunner(stream=io.StringIO()).run(
        unittest.defaultTestLoader.loadTestsFromTestCase(case))
    assert result.wasSuccessful()
    assert "needs the nginx program" in result.skipped[0][1]


@pytest.mark.parametrize("attributes, message", [
    ({"protocol": "http"}, "protocol='http' is not one of: fcgi, scgi, ajp."),
    ({"method": "forked"}, "method='forked' is not one of: threaded, prefork."),
    ({"frontend": "iis"},
     "frontend='iis' is not one of: nginx, apache, lighttpd, caddy, haproxy, h2o"),
    ({"prefix": "app/"}, "prefix='app/' must start with '/'"),
    ({"frontend": "haproxy", "protocol": "ajp"},
     "protocol='ajp' cannot go through frontend='haproxy', which speaks only fcgi;"),
])
def test_bad_class_attribute_is_named(attributes, message):
    assert message in run_class(**attributes)
