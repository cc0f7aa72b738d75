"""Fixtures shared by the unit tests."""
import pytest

from tests.unit.peers import start_peer, stop_peer


@pytest.fixture(scope="module")
def fcgi_peer(tmp_path_factory):
    proc, address = start_peer("fcgi", str(tmp_path_factory.mktemp("fcgi")))
    yield address
    stop_peer(proc)


@pytest.fixture(scope="module")
def scgi_peer(tmp_path_factory):
    proc, address = start_peer("scgi", str(tmp_path_factory.mktemp("scgi")))
    yield address
    stop_peer(proc)


@pytest.fixture(scope="module")
def ajp_peer(tmp_path_factory):
    proc, address = start_peer("ajp", str(tmp_path_factory.mktemp("ajp")))
    yield address
    stop_peer(proc)
