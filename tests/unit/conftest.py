"""Fixtures shared by the unit tests."""
import socket
import threading

import pytest

from runfcgi_compat.options import from_mapping, peer_allowlist
from runfcgi_compat.servers import protocol_class
from runfcgi_compat.servers.base import KEEP
from runfcgi_compat.servers.signals import wait_readable
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


@pytest.fixture
def pairs():
    """``pairs() -> (sock, peer)``: connected socket pairs, closed at the end."""
    made = []

    def make():
        pair = socket.socketpair()
        made.extend(pair)
        return pair

    yield make
    for sock in made:
        sock.close()  # Twice is harmless: a test may close one itself.


def serve_until_closed(handler, sock, addr):
    """Serve one connection through the handler's contract, in a thread of
    its own: a pool's work without its scheduling.  Between requests it
    waits for the next, up to the handler's idle timeout."""
    conn = handler.connect(sock, addr)
    while conn is not None and handler.serve_next(conn) is KEEP:
        if not conn.ready() and not wait_readable([conn], handler.idle_timeout or None):
            conn.close()
            return


@pytest.fixture
def serve():
    """Start in-process servers: ``serve(protocol, app, ...) -> (address, handler)``."""
    running = []

    def start(protocol, app, family=socket.AF_INET, debug=False,
              tmp_dir=None, accepted=False, **attrs):
        # accepted: connect bare descriptors, as a prefork worker does;
        # else socket objects, as the threaded pool.
        # The allow list as make_server resolves it (FCGI_WEB_SERVER_ADDRS here).
        handler = protocol_class(protocol)(debug=debug, multithreaded=True,
                                           multiprocess=False, max_conns=7,
                                           allowed_peers=peer_allowlist(from_mapping({})))
        for name, value in attrs.items():
            setattr(handler, name, value)
        handler.set_app(app)
        listen = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_UNIX:
            address = str(tmp_dir / "s.sock")
            listen.bind(address)
        else:
            listen.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
            address = listen.getsockname()[:2]
        listen.listen(16)
        handler.prepare_listener(listen)  # As the pools do.
        stop = threading.Event()

        def accept_loop():
            while not stop.is_set():
                if not wait_readable([listen], 0.05):
                    continue
                args = listen._accept() if accepted else listen.accept()
                threading.Thread(target=serve_until_closed, args=(handler, *args),
                                 daemon=True).start()

        thread = threading.Thread(target=accept_loop, daemon=True)
        thread.start()
        running.append((stop, thread, listen))
        return address, handler

    yield start
    for stop, thread, listen in running:
        stop.set()
        thread.join(5)
        listen.close()
