"""Test a Django project as deployed: behind a web server, through runfcgi.

* ``FastCGILiveServerTestCase`` / ``StaticFastCGILiveServerTestCase``:
  drop-ins for Django's ``LiveServerTestCase`` / ``StaticLiveServerTestCase``.
* ``FastCGIClient``: Django's test client, over FastCGI, SCGI or AJP.
* ``LiveServer``: what both start, for other test runners; the pytest
  plugin (``runfcgi_compat.pytest_plugin``) builds its fixtures on it.

The test cases are imported on first use, so that importing this package
does not need Django's settings.
"""
from .backend import LiveServerError
from .client import FastCGIClient
from .live import LiveServer
from .webservers import FrontEndMissing

__all__ = [
    "FastCGIClient",
    "FastCGILiveServerTestCase",
    "FrontEndMissing",
    "LiveServer",
    "LiveServerError",
    "StaticFastCGILiveServerTestCase",
]


def __getattr__(name):
    if name in ("FastCGILiveServerTestCase", "StaticFastCGILiveServerTestCase"):
        from . import testcases

        return getattr(testcases, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
