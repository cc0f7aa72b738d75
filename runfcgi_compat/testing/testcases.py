"""Django test cases whose live server is runfcgi behind a real web server.

``FastCGILiveServerTestCase`` is a drop-in for Django's
``LiveServerTestCase``: a ``TransactionTestCase`` whose class gets a
``live_server_url``, started in ``setUpClass`` and stopped after the class.
Only the server differs: a real web server (nginx unless ``frontend`` says
otherwise) in front of runfcgi, so the tests run the deployment path.
"""
import unittest

from django.db import connections
from django.test import TransactionTestCase
from django.test.utils import modify_settings, override_settings
from django.utils.functional import classproperty

from .live import LiveServer, LiveServerError, skip_missing_default
from .webservers import FrontEndMissing


class FastCGILiveServerTestCase(TransactionTestCase):
    """``LiveServerTestCase`` served through a web server and runfcgi.

    Class attributes choose the deployment: ``protocol`` (fcgi, scgi, ajp),
    ``method`` (threaded runs inside the test process and shares its
    test database; prefork runs in a child process and needs a database
    file or server), ``frontend`` (nginx, apache, lighttpd, caddy, haproxy,
    h2o; None: runfcgi alone, for ``fcgi_client``), ``prefix`` (mount
    point, e.g. "/app"),
    ``https`` (the front end serves TLS with a throwaway certificate).
    """

    protocol = "fcgi"
    method = "threaded"
    frontend = "nginx"
    prefix = ""
    https = False
    host = "localhost"
    port = 0  # The front end's port on 127.0.0.1; 0: a free one.
    # Skip the class (instead of failing it) when the front end is not
    # installed; RUNFCGI_TESTING_SKIP_MISSING=1 in the environment does too.
    skip_missing_frontend = False
    # LiveServerTestCase serves STATIC_ROOT; so does the front end here.
    static = "root"

    @classproperty
    def live_server_url(cls):
        return cls.live_server.url

    @classproperty
    def allowed_host(cls):
        return cls.host

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        server = LiveServer(protocol=cls.protocol, method=cls.method, frontend=cls.frontend,
                            prefix=cls.prefix, https=cls.https, host=cls.host,
                            port=cls.port, static=cls.static)
        try:
            server.check_frontend()
        except FrontEndMissing as exc:
            if cls.skip_missing_frontend or skip_missing_default():
                raise unittest.SkipTest(str(exc)) from None
            raise
        cls._enable(modify_settings(ALLOWED_HOSTS={"append": cls.allowed_host}))
        if server.settings_changes:
            cls._enable(override_settings(**server.settings_changes))
        server.start(connections)
        cls.addClassCleanup(server.stop)
        cls.live_server = server

    @classmethod
    def _enable(cls, change):
        # What Python 3.11's enterClassContext does, for 3.10 too.
        change.enable()
        cls.addClassCleanup(change.disable)

    def setUp(self):
        super().setUp()
        self.fcgi_client = self.live_server.client()


class StaticFastCGILiveServerTestCase(FastCGILiveServerTestCase):
    """``StaticLiveServerTestCase`` behind a web server: the project's static
    files (every finder's, as ``collectstatic`` gathers them) are served by
    the front end at ``STATIC_URL``, as in production."""

    static = "collect"


__all__ = [
    "FastCGILiveServerTestCase",
    "FrontEndMissing",
    "LiveServerError",
    "StaticFastCGILiveServerTestCase",
]
