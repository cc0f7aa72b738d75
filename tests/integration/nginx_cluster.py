"""One real nginx in front of ``runfcgi``, for the soak test.

``nginx_front`` is a fixture: ``nginx_front(tmp, site_text)`` starts nginx
from a temporary configuration on a free loopback port (through
``frontends.start_nginx``) and stops it by pid at the end of the test.
"""
import pytest

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
