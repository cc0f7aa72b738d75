"""fcgi_lane: a fresh connection's one whole request, served on the bare descriptor,
and a held kept connection's next request, served in place.

The servers here hand the handler bare descriptors (``accepted=True``), as a
prefork worker does.  Whether a request stayed in the lane is seen from
``make_socket``: the lane never builds a socket object, and builds one the
moment it hands a request over to a connection of ours.
"""
import logging
import os
import socket
import struct
import time

import pytest

from runfcgi_compat.servers import fcgi_lane
from runfcgi_compat.servers.base import Parked
from runfcgi_compat.servers.fcgi import FastCGIHandler, FCGIConnection
from runfcgi_compat.servers.signals import wait_readable

from .test_servers_fcgi_whole import NGINX_PARAMS, environ_of, read_response, request
from .test_servers_protocols import environ_app, fcgi_record, wait_for

pytestmark = pytest.mark.skipif(not fcgi_lane.lane_open, reason="the C module was not built")

ABORT = 2


@pytest.fixture
def lane_server(serve, monkeypatch):
    """serve(app) -> (address, handler, made): ``made`` counts socket objects built."""

    def start(app, family=socket.AF_INET, **attrs):
        address, handler = serve("fcgi", app, family=family, accepted=True, **attrs)
        # The server accepts once the connection is made, usually before the
        # test client has sent its request; in production nginx's request is
        # normally there by then.  Hand over each descriptor once readable.
        serve_fd = handler.handle_accepted
        monkeypatch.setattr(handler, "handle_accepted",
                            lambda fd, addr: wait_readable([fd], 5) and serve_fd(fd, addr))
        made = []
        original = handler.make_socket
        monkeypatch.setattr(handler, "make_socket",
                            lambda fd: made.append(fd) or original(fd))
        if family == socket.AF_INET:
            # The first TCP connection learns whether TCP_NODELAY is copied
            # from the listener; the lane opens after that.
            prime(address)
            assert handler.nodelay_inherited is True
        return address, handler, made

    return start


def prime(address):
    """One request through the general path, whatever the app answers."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request())
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass


def ask(address, data, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(data)
        stdout, rest = read_response(sock)
        assert rest == b""
        assert sock.recv(1) == b""  # Closed after the response.
    return stdout


def body_of(stdout):
    return stdout.split(b"\r\n\r\n", 1)[1]


def test_a_whole_request_stays_in_the_lane(lane_server):
    address, _, made = lane_server(environ_app)
    for n in range(3):
        stdout = ask(address, request(dict(NGINX_PARAMS, PATH_INFO=f"/n{n}",
                                           REQUEST_URI=f"/n{n}")))
        assert stdout.startswith(b"Status: 200 OK\r\n")
        assert environ_of(stdout)["PATH_INFO"] == f"/n{n}"
    assert made == []


def test_a_unix_socket_connection_is_in_the_lane_from_the_first(lane_server, tmp_path):
    address, _, made = lane_server(environ_app, family=socket.AF_UNIX, tmp_dir=tmp_path)
    stdout = ask(address, request(), family=socket.AF_UNIX)
    assert environ_of(stdout)["HTTP_X_CAFE"] == "caf\xc3\xa9"
    assert made == []


def test_the_lane_and_the_general_path_build_the_same_environ(serve, lane_server):
    address, _, _ = lane_server(environ_app)
    general, _ = serve("fcgi", environ_app)
    assert environ_of(ask(address, request())) == environ_of(ask(general, request()))


def streamed_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one,"
    yield b"two,"
    yield b"three"


def large_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"x" * 200_000]


@pytest.mark.parametrize("app, body", [(streamed_app, b"one,two,three"),
                                       (large_app, b"x" * 200_000)])
def test_a_streamed_or_large_response_moves_to_a_connection(lane_server, app, body):
    address, _, made = lane_server(app)
    assert body_of(ask(address, request())) == body
    assert len(made) == 1


def test_a_kept_connection_takes_the_general_path(lane_server):
    address, _, made = lane_server(environ_app)
    with socket.create_connection(address, timeout=10) as sock:
        for n in range(2):
            sock.sendall(request(dict(NGINX_PARAMS, PATH_INFO=f"/k{n}"), flags=1))
            stdout, rest = read_response(sock)
            assert (environ_of(stdout)["PATH_INFO"], rest) == (f"/k{n}", b"")
    assert len(made) == 1


def test_a_request_in_pieces_is_finished_by_the_general_path(lane_server):
    address, _, made = lane_server(environ_app)
    data = request()
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data[:20])
        wait_for(lambda: made)  # The lane read the first piece and handed it over.
        sock.sendall(data[20:])
        stdout, rest = read_response(sock)
    assert environ_of(stdout)["PATH_INFO"] == "/x"
    assert len(made) == 1


def test_an_abort_behind_the_request_takes_the_general_path(lane_server):
    address, _, made = lane_server(environ_app)
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request() + fcgi_record(ABORT, b""))
        stdout, _ = read_response(sock)
    assert stdout.startswith(b"Status: 200 OK\r\n")
    assert len(made) == 1


def test_a_peer_that_leaves_at_once_closes_the_descriptor(lane_server):
    address, _, _ = lane_server(environ_app)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        socket.create_connection(address, timeout=10).close()
    ask(address, request())  # Served after them: they were handled.
    deadline = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) == before


def failing_app(environ, start_response):
    raise ValueError("broken view")


def test_an_app_error_is_a_500_from_the_lane(lane_server, caplog):
    address, _, made = lane_server(failing_app)
    with caplog.at_level(logging.ERROR, logger="runfcgi"):
        stdout = ask(address, request())
    assert stdout.startswith(b"Status: 500 ")
    assert made == []
    assert any("unhandled exception in the application" in r.getMessage()
               for r in caplog.records)


def fails_mid_stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial"
    raise ValueError("broken mid-stream")


def test_an_error_mid_stream_breaks_the_connection(lane_server, caplog):
    address, _, _ = lane_server(fails_mid_stream)
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request())
        received = b""
        with pytest.raises(ConnectionResetError):
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    end_request = struct.pack("!BBH", 1, 3, 1)
    assert end_request not in received
    assert any("exception after the response to GET /x?a=1 started" in r.getMessage()
               for r in caplog.records)


# -- serve_kept: a held kept connection's next request ------------------------------------


@pytest.fixture
def held():
    """A kept connection as a prefork worker holds it between requests:
    ``held(app) -> (parked, peer)``."""
    made = []

    def hold(app):
        handler = FastCGIHandler()
        handler.set_app(app)
        ours, peer = socket.socketpair()
        ours.settimeout(10)
        peer.settimeout(10)
        conn = FCGIConnection(ours, "", handler, None)
        conn._first = False
        parked = Parked(False)
        parked.conn, parked.sock, parked.addr = conn, ours, ""
        made.append((ours, peer))
        return parked, peer

    yield hold
    for ours, peer in made:
        ours.close()
        peer.close()


def test_a_kept_request_is_served_and_the_connection_stays_held(held):
    parked, peer = held(environ_app)
    for n in range(3):
        peer.sendall(request(dict(NGINX_PARAMS, PATH_INFO=f"/k{n}"), flags=1))
        wait_readable([parked.sock], 5)
        assert fcgi_lane.serve_kept(parked) == fcgi_lane.SERVED
        stdout, rest = read_response(peer)
        assert (environ_of(stdout)["PATH_INFO"], rest) == (f"/k{n}", b"")
    assert parked.sock.fileno() != -1


def test_nothing_to_read_leaves_the_connection_held(held):
    parked, _ = held(environ_app)
    assert fcgi_lane.serve_kept(parked) == fcgi_lane.SERVED
    assert parked.conn._inbuf == b""


def test_a_peer_that_closed_its_end_closes_the_connection(held):
    parked, peer = held(environ_app)
    peer.close()
    assert fcgi_lane.serve_kept(parked) == fcgi_lane.CLOSED
    assert parked.sock.fileno() == -1


@pytest.mark.parametrize("data", [
    request(flags=0),  # The last request: the connection closes after it.
    request(flags=1) + request(dict(NGINX_PARAMS, PATH_INFO="/second"), flags=1),
    request(flags=1)[:-8],  # Its end of STDIN still on the way.
], ids=["not kept", "pipelined", "unfinished"])
def test_anything_else_is_resumed_with_what_was_read(held, data):
    parked, peer = held(environ_app)
    handler = parked.conn.server
    peer.sendall(data)
    wait_readable([parked.sock], 5)
    assert fcgi_lane.serve_kept(parked) == fcgi_lane.RESUME
    assert parked.conn._inbuf == data
    if data.endswith(request(flags=1)[-8:]):
        # Resumed, the general path serves what was read.
        peer.shutdown(socket.SHUT_WR)
        handler.resume_connection(parked)
        stdout, rest = read_response(peer)
        assert environ_of(stdout)["PATH_INFO"] == "/x"


def test_an_app_error_mid_stream_closes_a_kept_connection(held, caplog):
    parked, peer = held(fails_mid_stream)
    peer.sendall(request(flags=1))
    wait_readable([parked.sock], 5)
    assert fcgi_lane.serve_kept(parked) == fcgi_lane.CLOSED
    assert parked.sock.fileno() == -1
    assert any("exception after the response" in r.getMessage() for r in caplog.records)
