"""pytest plugin: runfcgi behind a real web server, as pytest-django fixtures.

Registered through the ``pytest11`` entry point, so installing
runfcgi_compat is enough.  The fixtures are shaped like pytest-django's:

* ``runfcgi_live_server`` (session): like ``live_server``, a web server in
  front of runfcgi; ``.url`` and ``str()`` give its URL.  A test that uses
  it gets ``transactional_db``, as ``live_server`` tests do.
* ``runfcgi_client`` (per test): a ``FastCGIClient`` that talks to runfcgi
  over the protocol itself, no web server needed.

``--runfcgi-protocol``, ``--runfcgi-method``, ``--runfcgi-frontend``,
``--runfcgi-prefix`` and ``--runfcgi-https`` choose the deployment;
``--runfcgi-skip-missing`` (or RUNFCGI_TESTING_SKIP_MISSING=1) skips the
tests instead of failing them when the web server is not installed.

Without pytest-django the plugin adds its options and nothing else: its
fixtures then fail with a sentence saying pytest-django is needed.
Nothing here imports Django until a fixture is used.
"""
import pytest

PROTOCOLS = ("fcgi", "scgi", "ajp")
METHODS = ("threaded", "prefork")


def pytest_addoption(parser):
    group = parser.getgroup("runfcgi", "runfcgi_compat live server (runfcgi_live_server)")
    group.addoption("--runfcgi-protocol", choices=PROTOCOLS, default="fcgi",
                    help="protocol between the web server and runfcgi (default: fcgi)")
    group.addoption("--runfcgi-method", choices=METHODS, default="threaded",
                    help="threaded runs inside the test process; prefork in a child "
                         "process, which needs a test database file or server "
                         "(default: threaded)")
    group.addoption("--runfcgi-frontend", default="nginx", metavar="NAME",
                    help="web server in front: nginx, apache, lighttpd, caddy, haproxy or h2o; "
                         "none for runfcgi alone (default: nginx)")
    group.addoption("--runfcgi-prefix", default="", metavar="PATH",
                    help="mount the site under PATH, e.g. /app (default: the root)")
    group.addoption("--runfcgi-https", action="store_true", default=False,
                    help="the web server serves https:// with a throwaway certificate")
    group.addoption("--runfcgi-skip-missing", action="store_true", default=False,
                    help="skip, instead of fail, when the web server is not installed")


def _require_pytest_django(request):
    if not request.config.pluginmanager.hasplugin("django"):
        pytest.fail("the runfcgi_live_server and runfcgi_client fixtures need "
                    "pytest-django (pip install pytest-django)", pytrace=False)


def _start(request, frontend):
    from django.conf import settings
    from django.db import connections

    from runfcgi_compat.testing import LiveServer, LiveServerError
    from runfcgi_compat.testing.live import skip_missing_default
    from runfcgi_compat.testing.webservers import FRONTENDS, FrontEndMissing

    option = request.config.getoption
    # The project's static files, as StaticLiveServerTestCase serves them,
    # from a front end that serves files (HAProxy does not).
    serves_files = frontend in FRONTENDS and FRONTENDS[frontend].serves_files
    static = ("collect" if serves_files and "django.contrib.staticfiles" in
              settings.INSTALLED_APPS else "root")
    try:
        server = LiveServer(protocol=option("runfcgi_protocol"),
                            method=option("runfcgi_method"), frontend=frontend,
                            prefix=option("runfcgi_prefix"), https=option("runfcgi_https"),
                            static=static)
        server.check_frontend()
    except FrontEndMissing as exc:
        if option("runfcgi_skip_missing") or skip_missing_default():
            pytest.skip(str(exc))
        pytest.fail(str(exc), pytrace=False)
    except LiveServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    with _settings_for(server):
        try:
            server.start(connections)
        except LiveServerError as exc:
            pytest.fail(str(exc), pytrace=False)
    return server


def _settings_for(server):
    """The settings a test served by ``server`` runs with (and its child starts with)."""
    from django.test.utils import modify_settings, override_settings

    changes = [modify_settings(ALLOWED_HOSTS={"append": server.host})]
    if server.settings_changes:
        changes.append(override_settings(**server.settings_changes))
    return _Together(changes)


class _Together:
    """Several settings changes entered and left as one."""

    def __init__(self, changes):
        self.changes = changes

    def __enter__(self):
        for change in self.changes:
            change.enable()

    def __exit__(self, *exc_info):
        for change in reversed(self.changes):
            change.disable()


@pytest.fixture(scope="session")
def runfcgi_live_server(request):
    """A web server in front of runfcgi for the session; ``.url`` is its URL."""
    _require_pytest_django(request)
    request.getfixturevalue("django_db_setup")
    frontend = request.config.getoption("runfcgi_frontend")
    with request.getfixturevalue("django_db_blocker").unblock():
        server = _start(request, None if frontend.lower() == "none" else frontend)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _runfcgi_backend(request):
    """runfcgi alone, for ``runfcgi_client`` in tests without the live server."""
    _require_pytest_django(request)
    request.getfixturevalue("django_db_setup")
    with request.getfixturevalue("django_db_blocker").unblock():
        server = _start(request, None)
    yield server
    server.stop()


@pytest.fixture
def runfcgi_client(request):
    """A ``FastCGIClient`` talking to runfcgi over the protocol; cookies are kept
    for the test.  It uses the live server's runfcgi when the test has one."""
    _require_pytest_django(request)
    if "runfcgi_live_server" in request.fixturenames:
        return request.getfixturevalue("runfcgi_live_server").client()
    return request.getfixturevalue("_runfcgi_backend").client()


FIXTURES = ("runfcgi_live_server", "runfcgi_client")


def _uses_fixtures(names):
    return any(name in names for name in FIXTURES)


def pytest_collection_modifyitems(config, items):
    """Run a test that uses the fixtures in a transactional database (unless
    its own ``django_db`` mark says otherwise), as ``live_server`` tests run:
    runfcgi's threads and processes see only committed data."""
    if not config.pluginmanager.hasplugin("django"):
        return
    for item in items:
        if (_uses_fixtures(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("django_db") is None):
            item.add_marker(pytest.mark.django_db(transaction=True))


@pytest.fixture(autouse=True)
def _runfcgi_live_server_helper(request):
    """Give a test that uses the fixtures the live server's settings (its
    host in ALLOWED_HOSTS), as pytest-django's ``_live_server_helper`` does."""
    names = request.fixturenames
    if not _uses_fixtures(names):
        yield
        return
    _require_pytest_django(request)
    server = request.getfixturevalue(
        "runfcgi_live_server" if "runfcgi_live_server" in names else "_runfcgi_backend")
    with _settings_for(server):
        yield
