"""Pure pieces of the servers package: tables, peers, WSGI glue, parsers, signals."""
import io
import logging
import os
import signal
import socket
import struct
import sys

import pytest

from runfcgi_compat.options import from_mapping
from runfcgi_compat.servers import PROTOCOLS, base, make_server, pool_class, protocol_class
from runfcgi_compat.servers.ajp import AJPHandler, AJPRequest, parse_forward_request
from runfcgi_compat.servers.base import (
    ProtocolError,
    Response,
    error_page,
)
from runfcgi_compat.servers.body import LimitedInput
from runfcgi_compat.servers.prefork import PreforkPool
from runfcgi_compat.servers.scgi import (
    SCGIConnection,
    SCGIHandler,
    parse_headers,
    read_netstring,
)
from runfcgi_compat.servers.signals import Notice, SignalBox, reopen_logs, wait_readable
from runfcgi_compat.servers.threaded import ThreadedPool
from tests import modes

# -- make_server -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
@pytest.mark.parametrize("method", ["prefork", "threaded"])
def test_make_server_picks_from_the_tables(protocol, method):
    options = from_mapping({"protocol": protocol, "method": method, "maxspare": 7,
                            "minspare": 3, "maxchildren": 9, "maxrequests": 4})
    reopen = object()
    server = make_server(options, lambda: None, on_reopen_logs=reopen)
    assert type(server) is pool_class(method)
    assert type(server.handler) is protocol_class(protocol)
    assert (server.maxspare, server.minspare, server.maxchildren) == (7, 3, 9)
    assert server.on_reopen_logs is reopen
    assert server.handler.wsgi_multithread is (method == "threaded")
    assert server.handler.wsgi_multiprocess is (method == "prefork")


def test_prefork_keeps_maxrequests_threaded_ignores_it():
    options = from_mapping({"maxrequests": 4})
    assert make_server(options, lambda: None).maxrequests == 4
    assert not hasattr(make_server(from_mapping({"method": "threaded"}), lambda: None),
                       "maxrequests")


def test_pools_have_tunable_class_defaults():
    assert PreforkPool.graceful_timeout == ThreadedPool.graceful_timeout == 30.0
    assert 1 <= PreforkPool.max_boot_backoff <= 10
    assert all(protocol_class(name).idle_timeout == 60.0 for name in PROTOCOLS)


def test_make_server_applies_allow_and_timeouts(monkeypatch):
    monkeypatch.setenv("FCGI_WEB_SERVER_ADDRS", "10.0.0.1")
    server = make_server(from_mapping({"allow": "192.0.2.0/24", "idletimeout": 7,
                                       "gracetimeout": 3}), lambda: None)
    assert [str(n) for n in server.handler.allowed_peers] == ["192.0.2.0/24"]
    assert server.handler.idle_timeout == 7
    assert server.graceful_timeout == 3
    assert protocol_class("fcgi").idle_timeout == 60.0  # Class default untouched.


def test_make_server_falls_back_to_fcgi_web_server_addrs(monkeypatch):
    monkeypatch.setenv("FCGI_WEB_SERVER_ADDRS", "10.0.0.1")
    server = make_server(from_mapping({"idletimeout": 0}), lambda: None)
    assert [str(n) for n in server.handler.allowed_peers] == ["10.0.0.1/32"]
    assert server.handler.idle_timeout is None  # 0: never


def test_make_server_passes_the_ajp_secret():
    server = make_server(from_mapping({"protocol": "ajp", "ajpsecret": "s3cret"}), lambda: None)
    assert server.handler.required_secret == "s3cret"
    assert AJPHandler.required_secret is None  # Class default untouched.
    assert make_server(from_mapping({"protocol": "ajp"}), lambda: None).handler \
        .required_secret is None


def test_load_app_is_not_called_by_make_server():
    def load_app():
        raise AssertionError("called too early")
    make_server(from_mapping({}), load_app)


# -- WSGI glue -----------------------------------------------------------------------


class RecordingTransport:
    def __init__(self):
        self.calls = []

    def send_head_and_body(self, status, headers, body):
        self.calls.append(("head", status, headers, body))

    def send_body(self, body):
        self.calls.append(("body", body))

    def flush(self):
        self.calls.append(("flush",))


def test_headers_wait_for_the_first_body_bytes():
    transport = RecordingTransport()
    response = Response(transport)
    response.start_response("200 OK", [("A", "b")])
    assert transport.calls == []
    response.write(b"x")
    assert transport.calls[0] == ("head", "200 OK", [("A", "b")], b"x")


def test_start_response_checks_its_arguments():
    response = Response(RecordingTransport())
    with pytest.raises(AssertionError):
        response.start_response(b"200 OK", [])
    with pytest.raises(AssertionError):
        response.start_response("200 OK", [("A", 1)])
    response.start_response("200 OK", [])
    with pytest.raises(AssertionError):
        response.start_response("200 OK", [])


def test_start_response_with_exc_info_reraises_once_headers_are_sent():
    response = Response(RecordingTransport())
    response.start_response("200 OK", [])
    try:
        raise KeyError("k")
    except KeyError:
        info = sys.exc_info()
    response.start_response("500 Oops", [], info)  # Allowed: nothing sent yet.
    response.write(b"x")
    with pytest.raises(KeyError):
        response.start_response("500 Oops", [], info)


def test_error_page_without_debug_hides_the_exception():
    try:
        raise ValueError("private")
    except ValueError:
        status, headers, body = error_page(False, sys.exc_info())
    assert status.startswith("500 ")
    assert b"private" not in body
    assert ("Content-Length", str(len(body))) in headers


def test_error_page_with_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setitem(sys.modules, "cgitb", None)
    try:
        raise ValueError("visible")
    except ValueError:
        _, _, body = error_page(True, sys.exc_info())
    assert b"ValueError: visible" in body and b"Traceback" in body


# -- SCGI parsing ------------------------------------------------------------------------


@pytest.fixture
def socket_reader():
    """Make an SCGI connection whose peer sent ``data``, then EOF."""
    from runfcgi_compat.servers.scgi import SCGIConnection, SCGIHandler

    opened = []

    def make(data):
        ours, theirs = socket.socketpair()
        opened.append(ours)
        theirs.sendall(data)
        theirs.close()
        ours.settimeout(5)
        return SCGIConnection(SCGIHandler(), ours.fileno(), "", ours)

    yield make
    for sock in opened:
        sock.close()


def test_netstring_and_headers(socket_reader):
    rfile = socket_reader(b"24:CONTENT_LENGTH\x003\x00SCGI\x001\x00,abc")
    headers = parse_headers(read_netstring(rfile, 1000))
    assert headers == {"CONTENT_LENGTH": "3", "SCGI": "1"}
    assert LimitedInput(rfile, 3).read() == b"abc"


@pytest.mark.parametrize("data", [
    b"99999999999999:", b"12x:", b":", b"5:ab", b"2:ab;", b"3:a\x00b,"])
def test_bad_netstrings_are_protocol_errors(data, socket_reader):
    with pytest.raises(ProtocolError):
        parse_headers(read_netstring(socket_reader(data), 1000))


def test_netstring_at_eof_is_eof(socket_reader):
    with pytest.raises(EOFError):
        read_netstring(socket_reader(b""), 1000)


def test_limited_input_lines():
    stream = LimitedInput(io.BytesIO(b"a\nb\nc\nNOT MINE"), 6)
    assert stream.readline() == b"a\n"
    assert list(stream) == [b"b\n", b"c\n"]
    assert stream.read(5) == b""


# -- AJP parsing -------------------------------------------------------------------------


def ajp_string(value):
    return struct.pack(">H", len(value)) + value + b"\0"


def forward_request(method_code=2, attributes=b""):
    return (bytes([2, method_code]) + ajp_string(b"HTTP/1.1") + ajp_string(b"/a%20b")
            + ajp_string(b"127.0.0.1") + ajp_string(b"") + ajp_string(b"example.org")
            + struct.pack(">HBH", 443, 1, 1) + b"\xa0\x0b" + ajp_string(b"example.org")
            + attributes + b"\xff")


class FakeConn:
    server = AJPHandler()


def test_ajp_forward_request_with_secret_and_stored_method():
    req = AJPRequest(FakeConn())
    attributes = (b"\x0c" + ajp_string(b"s3cret") + b"\x0d" + ajp_string(b"PATCH")
                  + b"\x05" + ajp_string(b"q=1") + b"\x0a" + ajp_string(b"AJP_X")
                  + ajp_string(b"y") + b"\x0b" + struct.pack(">H", 256))
    parse_forward_request(req, forward_request(0xFF, attributes))
    env = req.environ
    assert env["REQUEST_METHOD"] == "PATCH"
    assert env["REQUEST_URI"] == "/a%20b"
    assert env["HTTPS"] == "on" and env["SERVER_PORT"] == "443"
    assert env["HTTP_HOST"] == "example.org"
    assert env["QUERY_STRING"] == "q=1" and env["AJP_X"] == "y"
    assert env["SSL_KEY_SIZE"] == "256"
    assert "s3cret" not in env.values()


@pytest.mark.parametrize("data", [
    forward_request(attributes=b"\x42"),     # unknown attribute
    forward_request(method_code=0x70),       # unknown method
])
def test_ajp_bad_forward_requests_are_protocol_errors(data):
    with pytest.raises(ProtocolError):
        parse_forward_request(AJPRequest(FakeConn()), data)


# -- signals ------------------------------------------------------------------------------


def test_notice_is_readable_for_everyone_once_set():
    notice = Notice()
    try:
        assert wait_readable([notice], 0) == []
        notice.set()
        notice.set()
        assert notice.is_set()
        assert wait_readable([notice], 0) == [notice]
        assert wait_readable([notice], 0) == [notice]  # Level, not edge.
    finally:
        notice.close()


def test_signal_box_records_and_wakes_then_restores():
    before = signal.getsignal(signal.SIGUSR1)
    box = SignalBox([signal.SIGUSR1])
    box.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert wait_readable([box], 5) == [box]
        assert box.drain() == [signal.SIGUSR1]
        assert wait_readable([box], 0) == []
        box.wake()
        assert wait_readable([box], 0) == [box]
        assert box.drain() == []
    finally:
        box.restore()
        box.close()
    assert signal.getsignal(signal.SIGUSR1) == before


# -- raw reads and writes ----------------------------------------------------------

# Both versions: the C ones (never wait, keep the interpreter lock) when the
# module was built, and os.read/os.write otherwise.
RAW = [pytest.param((os.read, os.write), id="os")]
if base.recv_now is not os.read:
    RAW.append(pytest.param((base.recv_now, base.send_now), id="c"))


@pytest.mark.parametrize("raw", RAW)
def test_raw_reads_and_writes_on_a_non_blocking_socket(raw):
    recv_now, send_now = raw
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.setblocking(False)
        with pytest.raises(BlockingIOError):
            recv_now(ours.fileno(), 100)
        peer.sendall(b"request")
        assert recv_now(ours.fileno(), 100) == b"request"
        assert send_now(ours.fileno(), memoryview(b"response")) == 8
        assert peer.recv(100) == b"response"
        peer.close()
        assert recv_now(ours.fileno(), 100) == b""
        with pytest.raises(BrokenPipeError):
            send_now(ours.fileno(), b"late")


def test_the_c_read_never_waits_even_on_a_blocking_socket():
    recv_now = modes.wire().recv_now
    ours, peer = socket.socketpair()
    with ours, peer:
        assert ours.getblocking()
        with pytest.raises(BlockingIOError):
            recv_now(ours.fileno(), 100)  # os.read would hang here


def test_a_kept_connection_reset_by_its_peer_closes_quietly(caplog):
    """HAProxy resets spare idle connections: the threaded pool's look for a
    next request (``arrived``) must end the connection, not raise."""
    ours, peer = socket.socketpair()
    handler = SCGIHandler()
    with ours:
        ours.settimeout(5)
        conn = SCGIConnection(handler, ours.fileno(), "", ours)
        ours.sendall(b"unread")  # closing with unread data resets
        peer.close()
        assert conn.arrived() is True and conn.peer_closed
        with caplog.at_level(logging.DEBUG):
            assert handler.serve_next(conn) is base.CLOSE
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_fill_waits_only_when_nothing_has_arrived():
    ours, peer = socket.socketpair()
    waits = []
    handler = SCGIHandler()

    def wait(conn):
        waits.append(conn)
        peer.sendall(b"late")
        return True

    handler.wait_for_data = wait
    with ours, peer:
        ours.settimeout(5)
        conn = base.Connection(handler, ours.fileno(), "", ours)
        peer.sendall(b"early")
        conn.fill(5)
        assert waits == []
        conn.fill(9)
        assert waits == [conn]
        assert conn.take(100) == b"earlylate"


def test_a_partial_scgi_header_is_kept_until_the_rest_arrives(socket_reader):
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.settimeout(5)
        conn = SCGIConnection(SCGIHandler(), ours.fileno(), "", ours)
        peer.sendall(b"24:CONTENT_LE")
        assert read_netstring(conn, 1000) is None  # Never waits for the rest.
        peer.sendall(b"NGTH\x003\x00SCGI\x001\x00,")
        assert read_netstring(conn, 1000) == b"CONTENT_LENGTH\x003\x00SCGI\x001\x00"


def test_reopening_the_logs_logs_a_failure_and_goes_on(caplog):
    def broken():
        raise OSError("disk full")

    with caplog.at_level(logging.ERROR, "runfcgi_compat"):
        reopen_logs(broken, "prefork")
        reopen_logs(None, "threaded")  # Nothing to reopen: nothing happens.
    assert [record.getMessage() for record in caplog.records] == [
        "prefork: reopening the log files failed"]
