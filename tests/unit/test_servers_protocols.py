"""Protocol handlers in-process, over real loopback and UNIX sockets.

Each test serves every accepted connection through the handler's contract
(``connect``, ``serve_next``) in a thread of its own, and talks to it with
``runfcgi_compat.client`` or raw records, the way a web server would.
"""
import json
import logging
import socket
import struct
import sys
import threading
import time

import pytest

from runfcgi_compat import client
from runfcgi_compat.servers.base import NODELAY_SAMPLES
from runfcgi_compat.servers.fcgi import FastCGIHandler

LOGGER = "runfcgi_compat"


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def echo_app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def environ_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    keys = sorted(k for k in environ if isinstance(environ[k], str))
    return [json.dumps({k: environ[k] for k in keys}).encode()]


def failing_app(environ, start_response):
    raise ValueError("secret detail of the failure")


@pytest.fixture
def writes(monkeypatch):
    """Count the connections' writes (each is one ``send_all``)."""
    from runfcgi_compat.servers import base

    calls = []
    real = base.send_all

    def counting(fd, data, timeout):
        calls.append(len(data))
        return real(fd, data, timeout)

    monkeypatch.setattr(base, "send_all", counting)
    return calls


def fcgi_record(rec_type, content=b"", request_id=1):
    padding = -len(content) & 7
    return struct.pack("!BBHHBx", 1, rec_type, request_id, len(content), padding) \
        + content + b"\0" * padding


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def read_until_closed(sock):
    sock.settimeout(10)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # Closed with unread input: also closed.
            return data
        if not chunk:
            return data
        data += chunk


# -- all protocols ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_get_and_post(serve, protocol):
    address, _ = serve(protocol, echo_app)
    body = bytes(range(256)) * 4096  # 1 MiB, several records/packets
    response = client.request(address, protocol, method="POST", path="/echo", body=body)
    assert (response.status, response.body) == (200, body)
    assert client.request(address, protocol).status == 200


@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_head_gets_the_head_only(serve, protocol):
    """RFC 3875 4.3.2: no body in the answer to HEAD (HAProxy's FastCGI
    answers the client 502 when one comes); the app still runs whole."""
    closed = []

    class Body:
        def __iter__(self):
            return iter([b"first", b"second"])

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
        return Body()

    address, _ = serve(protocol, app)
    response = client.request(address, protocol, method="HEAD")
    assert (response.status, response.body) == (200, b"")
    assert response.header("Content-Length") == "11"
    assert closed == [True]
    assert client.request(address, protocol).body == b"firstsecond"
    for app_ in (failing_app, hello_app):
        address, _ = serve(protocol, app_)
        assert client.request(address, protocol, method="HEAD").body == b""


@pytest.mark.parametrize("family", ["unix", "ipv6"])
@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_unix_and_ipv6_peers(serve, protocol, family, tmp_path):
    if family == "ipv6" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    fam = socket.AF_UNIX if family == "unix" else socket.AF_INET6
    address, _ = serve(protocol, hello_app, family=fam, tmp_dir=tmp_path)
    response = client.request(address, protocol)
    assert (response.status, response.body) == (200, b"hello")


@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_an_exception_gives_a_plain_500(serve, protocol, caplog):
    address, _ = serve(protocol, failing_app)
    with caplog.at_level(logging.ERROR, LOGGER):
        response = client.request(address, protocol)
    assert response.status == 500  # AJP too: flup said "200 Internal Server Error"
    assert b"secret detail" not in response.body
    assert any("secret detail" in (r.exc_text or "") for r in caplog.records)


@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_debug_shows_a_traceback_without_cgitb(serve, protocol, monkeypatch):
    monkeypatch.setitem(sys.modules, "cgitb", None)  # import cgitb would fail
    address, _ = serve(protocol, failing_app, debug=True)
    response = client.request(address, protocol)
    assert response.status == 500
    assert b"ValueError: secret detail of the failure" in response.body
    assert b"Traceback" in response.body


@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_tcp_nodelay_on_accepted_sockets(serve, protocol):
    seen = []

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    address, handler = serve(protocol, app)
    original = handler.connect

    def spy(sock, addr):
        conn = original(sock, addr)
        seen.append(conn._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return conn

    handler.connect = spy
    client.request(address, protocol)
    client.request(address, protocol)
    assert seen == [1, 1]
    # Copied from the listener (Linux): no setsockopt per connection.
    assert handler.nodelay_inherited is True


@pytest.mark.parametrize("allowed, expect_served", [
    ("127.0.0.1", True), ("10.0.0.1, ::1", False), ("", True)])
@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_fcgi_web_server_addrs(serve, protocol, allowed, expect_served, monkeypatch):
    monkeypatch.setenv("FCGI_WEB_SERVER_ADDRS", allowed)
    address, _ = serve(protocol, hello_app)
    if expect_served:
        assert client.request(address, protocol).status == 200
    else:
        with pytest.raises(client.ClientError):
            client.request(address, protocol)


def test_unix_peers_are_always_allowed(serve, monkeypatch, tmp_path):
    monkeypatch.setenv("FCGI_WEB_SERVER_ADDRS", "10.0.0.1")
    address, _ = serve("scgi", hello_app, family=socket.AF_UNIX, tmp_dir=tmp_path)
    assert client.request(address, "scgi").status == 200


FCGI_GET = (fcgi_record(1, struct.pack("!HB5x", 1, 0))
            + fcgi_record(4, client.encode_pairs({"REQUEST_METHOD": "GET"}))
            + fcgi_record(4) + fcgi_record(5))
SCGI_HEAD = b"CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00"
SCGI_GET = b"%d:%s," % (len(SCGI_HEAD), SCGI_HEAD)


@pytest.mark.parametrize("protocol, request_bytes", [("fcgi", FCGI_GET), ("scgi", SCGI_GET)])
def test_client_abort_is_one_log_line(serve, protocol, request_bytes, caplog):
    def big_stream(environ, start_response):
        start_response("200 OK", [])
        for _ in range(2000):
            yield b"x" * 65536

    address, _ = serve(protocol, big_stream)
    with caplog.at_level(logging.INFO, LOGGER):
        sock = socket.create_connection(address)
        sock.sendall(request_bytes)
        sock.recv(1024)
        # Close with a reset, as a web server does when its client left.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        wait_for(lambda: [r for r in caplog.records if r.name == LOGGER])
    ours = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelname for r in ours] == ["INFO"]
    assert ours[0].exc_info is None
    assert "went away" in ours[0].getMessage()


@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_failure_after_the_response_started_breaks_the_connection(serve, caplog, protocol):
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"first"
        raise RuntimeError("late failure")

    address, _ = serve(protocol, app)
    with caplog.at_level(logging.INFO, LOGGER):
        # No end marker, and for SCGI (whose end marker is the close) a
        # reset: the web server must see a broken response, not a short one.
        with pytest.raises(client.ClientError):
            client.request(address, protocol)
        wait_for(lambda: [r for r in caplog.records if r.name == LOGGER])
    ours = [r for r in caplog.records if r.name == LOGGER]
    assert len(ours) == 1 and "late failure" in ours[0].exc_text


# -- FastCGI --------------------------------------------------------------------


@pytest.mark.parametrize("protocol, partial", [
    ("fcgi", FCGI_GET[:20]), ("scgi", SCGI_GET[:10]), ("fcgi", FCGI_GET[:-8])])
def test_a_peer_stalled_mid_request_is_cut_off(serve, caplog, protocol, partial):
    def reading_app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b""]

    address, _ = serve(protocol, reading_app, idle_timeout=0.2)
    with caplog.at_level(logging.INFO, LOGGER):
        sock = socket.create_connection(address)
        sock.sendall(partial)  # ... and nothing more, without closing.
        # Closed (at most after an error answer), instead of held forever.
        assert b"200 OK" not in read_until_closed(sock)
        sock.close()


def test_fcgi_get_values_is_answered(serve):
    address, _ = serve("fcgi", hello_app)
    assert client.get_values(address) == {
        "FCGI_MAX_CONNS": "7", "FCGI_MAX_REQS": "7", "FCGI_MPXS_CONNS": "0"}


@pytest.mark.parametrize("garbage", [
    fcgi_record(1, b"\x00"),                          # short BEGIN_REQUEST body
    fcgi_record(1, struct.pack("!HB5x", 1, 0)) + fcgi_record(4, b"\x85abc"),  # bad pair
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",           # HTTP to the FastCGI port
])
def test_fcgi_malformed_input_closes_with_one_log_line(serve, caplog, garbage):
    address, _ = serve("fcgi", hello_app)
    with caplog.at_level(logging.INFO, LOGGER):
        sock = socket.create_connection(address)
        sock.sendall(garbage)
        assert read_until_closed(sock) == b""
        sock.close()
        wait_for(lambda: [r for r in caplog.records if r.name == LOGGER])
    ours = [r for r in caplog.records if r.name == LOGGER]
    assert len(ours) == 1 and ours[0].levelname == "WARNING" and not ours[0].exc_info
    # And the next connection is served.
    assert client.request(address, "fcgi").status == 200


def test_fcgi_abort_request_ends_a_streaming_response(serve):
    proceed = threading.Event()
    closed = threading.Event()

    class Stream:
        def __iter__(self):
            yield b"one"
            proceed.wait(10)
            for _ in range(1000):
                yield b"more"

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [])
        return Stream()

    address, _ = serve("fcgi", app)
    sock = socket.create_connection(address)
    sock.sendall(fcgi_record(1, struct.pack("!HB5x", 1, 1))  # keep the connection
                 + fcgi_record(4, client.encode_pairs({"REQUEST_METHOD": "GET"}))
                 + fcgi_record(4) + fcgi_record(5))
    sock.settimeout(10)
    first = sock.recv(8)
    assert first[1] == 6  # FCGI_STDOUT
    sock.sendall(fcgi_record(2))  # FCGI_ABORT_REQUEST
    proceed.set()
    assert closed.wait(10)
    data = b""
    while struct.pack("!BBH", 1, 3, 1) not in data:  # FCGI_END_REQUEST for id 1
        data += sock.recv(65536)
    assert data.count(b"more") < 1000
    sock.close()


def test_fcgi_small_response_is_one_write(serve, writes):
    address, _ = serve("fcgi", hello_app)
    with client.FastCGIConnection(address) as conn:
        for _ in range(3):
            assert conn.request(path="/", keep_conn=True).body == b"hello"
    assert len(writes) == 3


def test_fcgi_large_body_is_written_in_linear_time(serve, writes):
    # Structural check, no clock: the body goes out as memoryview slices of
    # the app's own buffer (no per-record copy of the rest), in batches.
    size = 20 * 1024 * 1024

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"y" * size]

    address, _ = serve("fcgi", app)
    response = client.request(address, "fcgi", timeout=60)
    assert len(response.body) == size
    assert len(writes) < size // (128 * 1024)


def test_fcgi_kept_connection_closes_when_idle_too_long(serve):
    address, _ = serve("fcgi", hello_app, idle_timeout=0.2)
    with client.FastCGIConnection(address) as conn:
        assert conn.request(path="/", keep_conn=True).status == 200
        assert read_until_closed(conn._channel.sock) == b""


@pytest.mark.parametrize("size", [10, 300_000])  # Whole in the buffer; record by record.
def test_fcgi_body_ending_short_of_content_length_never_reaches_the_app_whole(serve, size):
    """The FastCGI specification: compare what came on FCGI_STDIN with
    CONTENT_LENGTH and abort when they differ (body.BodyCut)."""
    seen = []

    def app(environ, start_response):
        seen.append(len(environ["wsgi.input"].read()))
        start_response("200 OK", [])
        return [b"whole"]

    address, _ = serve("fcgi", app)
    with pytest.raises(client.ClientError):
        client.request(address, "fcgi", method="POST", body=b"x" * size,
                       params={"CONTENT_LENGTH": str(size + 100)})
    assert seen == []


def test_fcgi_repeated_end_of_params_runs_the_app_once(serve):
    calls = []

    def app(environ, start_response):
        calls.append(1)
        environ["wsgi.input"].read()  # Dispatches the records that follow.
        start_response("200 OK", [])
        return [b"once"]

    address, _ = serve("fcgi", app)
    sock = socket.create_connection(address)
    sock.sendall(fcgi_record(1, struct.pack("!HB5x", 1, 0))
                 + fcgi_record(4, client.encode_pairs({"REQUEST_METHOD": "GET"}))
                 + fcgi_record(4) * 3 + fcgi_record(5))
    data = read_until_closed(sock)
    sock.close()
    assert data.count(b"Status: 200 OK") == 1 and calls == [1]


def test_fcgi_parameters_are_bounded(serve, caplog):
    address, _ = serve("fcgi", hello_app)
    with caplog.at_level(logging.INFO, LOGGER):
        sock = socket.create_connection(address)
        try:
            sock.sendall(fcgi_record(1, struct.pack("!HB5x", 1, 0)))
            for number in range(40):  # 2.6 MB of distinct parameters
                pair = client.encode_pairs({f"HTTP_X_{number}": "v" * 65000})
                sock.sendall(fcgi_record(4, pair))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert b"Status:" not in read_until_closed(sock)
        sock.close()
        wait_for(lambda: [r for r in caplog.records if r.name == LOGGER])
    assert "parameters over" in caplog.records[-1].getMessage()


def test_fcgi_unknown_role_is_refused(serve):
    address, _ = serve("fcgi", hello_app)
    sock = socket.create_connection(address)
    sock.sendall(fcgi_record(1, struct.pack("!HB5x", 2, 0))  # FCGI_AUTHORIZER
                 + fcgi_record(4) + fcgi_record(5))
    data = read_until_closed(sock)
    sock.close()
    assert data[1] == 3 and data[8 + 4] == 3  # END_REQUEST, FCGI_UNKNOWN_ROLE


def test_fcgi_handler_class_is_flups():
    from flup.server.fcgi_base import BaseFCGIServer
    assert issubclass(FastCGIHandler, BaseFCGIServer)


# -- SCGI and AJP ----------------------------------------------------------------


def test_scgi_huge_header_length_is_refused_without_allocating(serve, caplog):
    address, _ = serve("scgi", hello_app)
    with caplog.at_level(logging.INFO, LOGGER):
        sock = socket.create_connection(address)
        sock.sendall(b"1000000000000:")
        assert read_until_closed(sock) == b""
        sock.close()
        wait_for(lambda: [r for r in caplog.records if r.name == LOGGER])
    assert any("netstring" in r.getMessage() or "SCGI headers" in r.getMessage()
               for r in caplog.records)


def test_scgi_input_read_without_size_stops_at_content_length(serve):
    def app(environ, start_response):
        data = environ["wsgi.input"].read()  # Must not wait for EOF.
        start_response("200 OK", [])
        return [data]

    address, _ = serve("scgi", app)
    assert client.request(address, "scgi", method="POST", body=b"abc").body == b"abc"


def test_ajp_secret_attribute_is_accepted_and_hidden(serve):
    address, _ = serve("ajp", environ_app)
    response = client.request(address, "ajp", secret="s3cret", path="/x", query="a=1")
    assert response.status == 200
    environ = json.loads(response.body)
    assert "s3cret" not in response.body.decode()
    assert environ["QUERY_STRING"] == "a=1"


def test_ajp_cping_and_kept_connection(serve):
    address, _ = serve("ajp", hello_app)
    with client.AJPConnection(address) as conn:
        conn.cping()
        for _ in range(3):
            assert conn.request(path="/").body == b"hello"


def test_ajp_stored_method(serve):
    address, _ = serve("ajp", environ_app)
    response = client.request(address, "ajp", method="PATCH")
    assert json.loads(response.body)["REQUEST_METHOD"] == "PATCH"


# -- AJP's secret (the ajpsecret option) ---------------------------------------------


def warnings_of(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_ajp_request_with_the_required_secret_is_served(serve, caplog):
    address, _ = serve("ajp", hello_app, required_secret="s3cret")
    with caplog.at_level(logging.INFO, LOGGER):
        response = client.request(address, "ajp", secret="s3cret")
    assert (response.status, response.body) == (200, b"hello")
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("secret", [None, "wrong", "s3cre", "s3cret-and-more"])
def test_ajp_request_without_the_required_secret_is_refused(serve, caplog, secret):
    address, _ = serve("ajp", hello_app, required_secret="s3cret")
    with caplog.at_level(logging.INFO, LOGGER):
        with client.AJPConnection(address) as conn:
            response = conn.request(secret=secret)
            assert not conn.reusable  # The connection is closed after the 403.
    assert (response.status, response.body) == (403, b"Forbidden\n")
    wait_for(lambda: warnings_of(caplog))
    [warning] = warnings_of(caplog)
    why = "without the secret" if secret is None else "with a wrong secret"
    assert why in warning.getMessage()
    assert "s3cret" not in warning.getMessage()


def test_ajp_without_a_required_secret_accepts_any(serve):
    address, _ = serve("ajp", hello_app)
    for secret in (None, "anything"):
        assert client.request(address, "ajp", secret=secret).status == 200


def test_ajp_empty_body_packet_short_of_content_length_breaks_the_request(serve):
    # Content-Length says 20, the web server sends 5 bytes and then an empty
    # body packet: a cut body (body.BodyCut), never 5 bytes passed off as
    # the whole; the server closes the connection and serves the next.
    address, _ = serve("ajp", echo_app)
    with client.AJPConnection(address) as conn, pytest.raises(client.ClientError):
        conn.request(method="POST", body=b"hello", headers=[("Content-Length", "20")])
    with client.AJPConnection(address) as conn:
        response = conn.request(method="POST", body=b"hello")
        assert (response.status, response.body) == (200, b"hello")


# -- requests the web server got wrong ------------------------------------------------


@pytest.mark.parametrize("protocol", ["fcgi", "scgi"])
def test_request_without_request_method_is_a_400_and_one_warning(serve, protocol, caplog):
    address, _ = serve(protocol, hello_app)
    with caplog.at_level(logging.INFO, LOGGER):
        response = client.request(address, protocol, path="/no-method",
                                  params={"REQUEST_METHOD": None})
    assert (response.status, response.body) == (400, b"Bad Request\n")
    wait_for(lambda: warnings_of(caplog))
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "/no-method" in warning.getMessage()
    assert "REQUEST_METHOD" in warning.getMessage()
    assert warning.exc_info is None
    assert client.request(address, protocol).status == 200


def test_scgi_reader_reads_lines_and_sizes_across_recvs():
    from runfcgi_compat.servers.body import LimitedInput
    from runfcgi_compat.servers.scgi import (
        SCGIConnection,
        SCGIHandler,
        read_netstring,
    )

    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5)
        theirs.sendall(b"5:ab\0c\0,line one\nli")
        conn = SCGIConnection(SCGIHandler(), ours.fileno(), "", ours)
        assert read_netstring(conn, 100) == b"ab\0c\0"
        body = LimitedInput(conn, 30)

        def later():
            time.sleep(0.05)
            theirs.sendall(b"ne two\n0123456789xyz")
            theirs.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=later)
        sender.start()
        assert body.readline() == b"line one\n"
        assert body.readline() == b"line two\n"
        assert body.read(4) == b"0123"
        assert body.read() == b"456789xy"
        assert body.read() == b""
        sender.join()
        assert conn.read(10) == b"z"
        assert conn.peer_closed


@pytest.mark.parametrize("read_body", [True, False])
def test_ajp_large_body_with_body_requests_in_flight(serve, read_body):
    # Several GET_BODY_CHUNK requests are in flight; answers the app did not
    # wait for are drained before the next request on the connection.
    address, _ = serve("ajp", echo_app if read_body else hello_app)
    body = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: 129 packets.
    with client.AJPConnection(address) as conn:
        response = conn.request(method="POST", body=body)
        assert response.status == 200
        if read_body:
            assert response.body == body
        assert conn.request(path="/").status == 200  # Still the same connection.


def test_nodelay_missing_on_early_connections_is_looked_at_again():
    # A connection already in the backlog when the listener got TCP_NODELAY
    # does not have it; that must not decide for every later connection.
    handler = FastCGIHandler()
    plain = socket.create_server(("127.0.0.1", 0))  # Without TCP_NODELAY.
    with plain, socket.create_server(("127.0.0.1", 0)) as listener:
        handler.prepare_listener(listener)
        assert handler.nodelay_inherited is None
        with socket.create_connection(plain.getsockname()):
            early, _ = plain.accept()
            with early:
                handler._set_nodelay(early)
                assert early.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert handler.nodelay_inherited is None  # Not decided yet.
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with socket.create_connection(plain.getsockname()):
            later, _ = plain.accept()
            with later:
                handler._set_nodelay(later)
        assert handler.nodelay_inherited is True


def test_nodelay_never_copied_is_set_on_every_connection():
    handler = FastCGIHandler()
    handler.nodelay_inherited = None
    with socket.create_server(("127.0.0.1", 0)) as plain:
        for _ in range(NODELAY_SAMPLES):
            with socket.create_connection(plain.getsockname()):
                conn, _ = plain.accept()
                with conn:
                    handler._set_nodelay(conn)
                    assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert handler.nodelay_inherited is False


# -- PEP 3333: what wsgiref.validate checks, over every protocol -----------------------


def reading_app(environ, start_response):
    """Read the body every way PEP 3333 allows; show what the app saw."""
    body = environ["wsgi.input"]
    first = body.readline()
    second = body.readline(4)
    some = body.read(3)
    lines = body.readlines()
    start_response("200 OK", [("Content-Type", "application/json")])
    seen = {key: environ.get(key) for key in ("CONTENT_TYPE", "CONTENT_LENGTH",
                                                "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH",
                                                "SERVER_NAME", "SERVER_PORT")}
    seen["body"] = [part.decode("latin-1") for part in [first, second, some, *lines]]
    seen["rest"] = body.read(10).decode("latin-1")
    seen["types"] = sorted({type(value).__name__ for key, value in environ.items()
                            if "." not in key})
    return [json.dumps(seen).encode()]


@pytest.mark.parametrize("size", [30, 300_000], ids=["whole", "records"])
@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_wsgiref_validate_finds_nothing(serve, protocol, size):
    from wsgiref.validate import validator

    # -W error: a WSGIWarning fails the request too.
    address, _ = serve(protocol, validator(reading_app))
    body = b"line one\nline two\n" + b"x" * (size - 18)
    # nginx and Caddy repeat the headers as HTTP_* params, here with values
    # that differ from the web server's own.
    params = {"HTTP_CONTENT_TYPE": "text/html", "HTTP_CONTENT_LENGTH": "999"}
    response = client.request(address, protocol, method="POST", path="/v", body=body,
                              headers={"Content-Type": "text/plain"},
                              params=None if protocol == "ajp" else params)
    assert response.status == 200, response.body[:2000]
    seen = json.loads(response.body)
    assert seen.pop("body") == ["line one\n", "line", " tw", "o\n", "x" * (size - 18)]
    assert seen == {"CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": str(size),
                    "HTTP_CONTENT_TYPE": None, "HTTP_CONTENT_LENGTH": None,
                    "SERVER_NAME": "localhost", "SERVER_PORT": "80", "rest": "",
                    "types": ["str"]}


@pytest.mark.parametrize("size", [10, 300_000], ids=["whole", "records"])
@pytest.mark.parametrize("params, expected", [
    ({"CONTENT_LENGTH": "5"}, 5),  # Less than FCGI_STDIN holds: the app gets 5.
    ({"CONTENT_LENGTH": None, "HTTP_CONTENT_LENGTH": "7"}, 7),  # Only the header: it counts.
    ({"CONTENT_LENGTH": None}, None),  # None at all: FCGI_STDIN's end ends the body.
], ids=["content-length", "header-only", "none"])
def test_fcgi_body_ends_at_content_length(serve, params, expected, size):
    def app(environ, start_response):
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(len(data)).encode(), b" ", environ.get("CONTENT_LENGTH", "-").encode()]

    address, _ = serve("fcgi", app)
    body = b"z" * size
    response = client.request(address, "fcgi", method="POST", body=body, params=params)
    length = size if expected is None else expected
    assert response.body == f"{length} {expected or '-'}".encode()


@pytest.mark.parametrize("protocol", ["fcgi", "ajp"])
def test_content_length_that_is_not_a_length_closes_the_connection(serve, protocol, caplog):
    address, _ = serve(protocol, hello_app)
    with pytest.raises(client.ClientError):
        client.request(address, protocol, method="POST", body=b"abc",
                       headers={"Content-Length": "x"} if protocol == "ajp" else None,
                       params=None if protocol == "ajp" else {"CONTENT_LENGTH": "x"})
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.getMessage().startswith(f"{protocol}: closing connection from 127.0.0.1:")
    assert warning.getMessage().endswith({
        "fcgi": ": invalid CONTENT_LENGTH 'x'",
        "ajp": ": malformed AJP packet (ValueError: invalid literal for int() with base 10: b'x')",
    }[protocol])
    assert client.request(address, protocol).status == 200
