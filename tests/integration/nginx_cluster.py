"""One real nginx balancing over several ``runfcgi`` backends, for the tests.

``nginx_balancer()`` renders the ``http { }`` snippet.  It takes the same
arguments as ``runfcgi_compat.frontends.nginx()`` where they overlap and
checks every value with ``frontends.backend()``, so it can move into
``runfcgi_compat.frontends`` (as a template) once the docs show it; until
then it lives here, where the failover test proves it.

``nginx_front`` is a fixture: ``nginx_front(tmp, site_text)`` starts nginx
from a temporary configuration on a free loopback port (through
``frontends.start_nginx``) and stops it by pid at the end of the test.
"""
import pytest

from runfcgi_compat.frontends import nginx_balancer  # noqa: F401  (re-exported for tests)
from tests.helpers import free_port
from tests.integration.frontends import start_nginx


@pytest.fixture
def nginx_front():
    """``start(tmp, site_text_for(listen)) -> (process, port)``; stopped by pid."""
    started = []

    def start(tmp, site_text_for):
        port = free_port()
        process = start_nginx(tmp, site_text_for(f"127.0.0.1:{port}"), port)
        started.append(process)
        return process, port

    yield start
    for process in started:
        process.stop()
