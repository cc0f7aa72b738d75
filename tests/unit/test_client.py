"""Tests for runfcgi_compat.client, against real flup servers.

The peers are flup's own FastCGI, SCGI and AJP servers running a tiny echo
application in a child process: a second, independent implementation of each
protocol, so a test passes only if the client speaks it the way flup (and the
web servers flup was written for) understand it.  They are test partners, not
the code under test, which is why the FastCGI one is flup's single-threaded
server and nothing here starts runfcgi itself.
"""
import errno
import hashlib
import json
import os
import socket
import threading

import pytest

from runfcgi_compat import client
from tests.helpers import free_port
from tests.unit.peers import start_peer, stop_peer


@pytest.fixture(params=["fcgi", "scgi", "ajp"])
def peer(request):
    """A (protocol, address) pair with a flup server of that protocol behind it."""
    return request.param, request.getfixturevalue(f"{request.param}_peer")


def echo(protocol, address, **kwargs):
    response = client.request(address, protocol, **kwargs)
    assert response.status == 200, response
    return json.loads(response.body)


# -- one request in each protocol -----------------------------------------------------


def test_get(peer):
    protocol, address = peer
    response = client.request(address, protocol, path="/hello/")
    assert (response.status, response.reason) == (200, "OK")
    assert response.header("content-type") == "application/json"
    assert response.stderr == b""
    assert 0 < response.elapsed < 10
    environ = json.loads(response.body)
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/hello/"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["HTTP_HOST"] == "localhost"
    assert environ["body_length"] == 0


def test_query_string(peer):
    protocol, address = peer
    environ = echo(protocol, address, path="/search/", query="q=caf%C3%A9&page=2")
    assert environ["QUERY_STRING"] == "q=caf%C3%A9&page=2"
    if protocol == "ajp":
        # mod_proxy_ajp sends the query as an attribute, not in req_uri.
        assert environ["REQUEST_URI"] == "/search/"
    else:
        assert environ["REQUEST_URI"] == "/search/?q=caf%C3%A9&page=2"


def test_post_with_a_1_mib_body(peer):
    protocol, address = peer
    body = os.urandom(1 << 20)
    environ = echo(protocol, address, method="POST", path="/upload/", body=body,
                   headers={"Content-Type": "application/octet-stream"})
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["CONTENT_TYPE"] == "application/octet-stream"
    assert environ["CONTENT_LENGTH"] == str(len(body))
    assert environ["body_length"] == len(body)
    assert environ["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_non_ascii_path(peer):
    protocol, address = peer
    environ = echo(protocol, address, path="/café/ü/")
    if protocol == "ajp":
        # AJP has no PATH_INFO: the raw URI travels, as Apache sends it.
        assert environ["REQUEST_URI"] == "/caf%C3%A9/%C3%BC/"
    else:
        # Sent as raw UTF-8 like nginx; PEP 3333 servers hand it over as latin-1.
        assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/ü/"
        assert environ["REQUEST_URI"] == "/caf%C3%A9/%C3%BC/"


def test_request_headers_become_cgi_variables(peer):
    protocol, address = peer
    environ = echo(protocol, address, headers=[("Host", "example.com"), ("X-Test", "yes"),
                                               ("User-Agent", "pytest")])
    assert environ["HTTP_HOST"] == "example.com"
    assert environ["HTTP_X_TEST"] == "yes"
    assert environ["HTTP_USER_AGENT"] == "pytest"


def test_params_switch_on_https(peer):
    protocol, address = peer
    environ = echo(protocol, address, params={"HTTPS": "on"})
    assert environ["wsgi.url_scheme"] == "https"


def test_response_keeps_repeated_headers_in_order(peer):
    protocol, address = peer
    response = client.request(address, protocol)
    assert [v for n, v in response.headers if n.lower() == "set-cookie"] == ["a=1", "b=2"]


def test_error_status_is_a_response_not_an_exception(peer):
    protocol, address = peer
    response = client.request(address, protocol, path="/status/404")
    assert (response.status, response.reason, response.body) == (404, "Not Found",
                                                                   b"status page\n")
    assert response.status_line == "404 Not Found"


def test_large_response_arrives_whole(peer):
    protocol, address = peer
    response = client.request(address, protocol, path="/big/")
    assert response.body == bytes(range(256)) * 1200


def test_connection_refused(peer):
    protocol, _ = peer
    port = free_port()
    with pytest.raises(client.ClientError) as caught:
        client.request(("127.0.0.1", port), protocol)
    assert str(caught.value) == f"no server at 127.0.0.1:{port} (Connection refused)"
    assert isinstance(caught.value, OSError)
    assert caught.value.errno == errno.ECONNREFUSED


# -- FastCGI ----------------------------------------------------------------------------


def test_fastcgi_stderr_is_kept_apart(fcgi_peer):
    response = client.request(fcgi_peer, "fcgi", path="/stderr/")
    assert response.status == 200
    assert response.stderr == b"written to wsgi.errors\n"


@pytest.mark.parametrize("protocol", ["fcgi", "scgi"])
def test_headers_longer_than_one_params_record(protocol, fcgi_peer, scgi_peer):
    # Over 64 KiB of variables: FastCGI needs several PARAMS records.  (One
    # pair longer than a record must be split, and flup cuts such a pair short.)
    address = fcgi_peer if protocol == "fcgi" else scgi_peer
    headers = {f"X-Long-{n}": str(n) * 30000 for n in range(3)}
    environ = echo(protocol, address, headers=headers)
    assert [environ[f"HTTP_X_LONG_{n}"] for n in range(3)] == list(headers.values())


def test_params_can_remove_a_variable(fcgi_peer):
    environ = echo("fcgi", fcgi_peer, params={"DOCUMENT_URI": None, "X_EXTRA": "1"})
    assert "DOCUMENT_URI" not in environ
    assert environ["X_EXTRA"] == "1"


def test_kept_connection_carries_several_requests(fcgi_peer):
    with client.FastCGIConnection(fcgi_peer) as conn:
        first = conn.request(path="/one/")
        second = conn.request(path="/two/", keep_conn=False)
        assert json.loads(first.body)["PATH_INFO"] == "/one/"
        assert json.loads(second.body)["PATH_INFO"] == "/two/"
        assert conn.requests_sent == 2
        with pytest.raises(client.ClientError, match="closed this connection"):
            conn.request()
    with pytest.raises(client.ClientError, match="is already closed"):
        conn.get_values(["FCGI_MAX_CONNS"])


def test_get_values_returns_a_dict(fcgi_peer):
    # flup 1.0.3 answers FCGI_GET_VALUES with nothing at all; only the shape
    # of the answer is the client's business.
    assert isinstance(client.get_values(fcgi_peer, ["FCGI_MPXS_CONNS"]), dict)


def test_unix_socket(tmp_path):
    path = str(tmp_path / "fcgi.sock")
    proc, _ = start_peer("fcgi", str(tmp_path), address=path)
    try:
        environ = echo("fcgi", path, path="/over/unix/")
    finally:
        stop_peer(proc)
    assert environ["PATH_INFO"] == "/over/unix/"


def test_missing_unix_socket(tmp_path):
    path = str(tmp_path / "nothing.sock")
    with pytest.raises(client.ClientError) as caught:
        client.request(path)
    assert str(caught.value) == f"no server at {path} (No such file or directory)"


# -- AJP13 -------------------------------------------------------------------------------


def test_ajp_cping(ajp_peer):
    assert client.ajp_cping(ajp_peer) is True


def test_ajp_cping_to_something_else_is_false(http_server):
    assert client.ajp_cping(http_server) is False


def test_ajp_connection_is_reused(ajp_peer):
    with client.AJPConnection(ajp_peer) as conn:
        assert conn.request(path="/one/").status == 200
        assert conn.cping() is True
        response = conn.request(method="POST", body=b"x" * 20000)
    assert json.loads(response.body)["body_length"] == 20000


def test_ajp_params_become_request_attributes(ajp_peer):
    environ = echo("ajp", ajp_peer, params={"AJP_REMOTE_PORT": "4711"})
    assert environ["AJP_REMOTE_PORT"] == "4711"


def test_ajp_headers_too_large_for_one_packet(ajp_peer):
    with pytest.raises(client.ClientError, match=r"more than fit in one AJP packet \(8188\)"):
        client.request(ajp_peer, "ajp", headers={"X-Long": "y" * 9000})


# -- servers that do not answer as they should -------------------------------------------


@pytest.fixture
def silent_server():
    """A socket that accepts connections (in the backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        yield listener.getsockname()


@pytest.fixture
def http_server():
    """A one-shot server that answers like an HTTP server, whatever it is sent."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield listener.getsockname()
    listener.close()
    thread.join(timeout=5)


@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_timeout(protocol, silent_server):
    host, port = silent_server
    with pytest.raises(client.ClientError) as caught:
        client.request(silent_server, protocol, timeout=0.2)
    assert str(caught.value) == f"{host}:{port} did not answer within 0.2 s (reading the response)"


@pytest.mark.parametrize("protocol, message", [
    ("fcgi", "sent something that is not a FastCGI record"),
    ("ajp", "sent something that is not an AJP packet"),
])
def test_an_http_server_is_a_protocol_error(protocol, message, http_server):
    with pytest.raises(client.ProtocolError, match=message):
        client.request(http_server, protocol, timeout=5)


def test_scgi_accepts_an_http_status_line(http_server):
    response = client.request(http_server, "scgi", timeout=5)
    assert (response.status, response.reason) == (400, "Bad Request")


def test_a_server_that_hangs_up_is_an_error(ajp_peer):
    # flup's AJP server hangs up at once on bytes without AJP's magic.
    with pytest.raises(client.ConnectionClosed,
                       match="(closed|reset) the connection while reading the response"):
        client.request(ajp_peer, "fcgi")


def test_unknown_protocol():
    with pytest.raises(ValueError, match="protocol='http' is not one of"):
        client.request(("127.0.0.1", 1), "http")


# -- the pieces, without a server ----------------------------------------------------------


@pytest.mark.parametrize("data, expected", [
    (b"Status: 201 Created\r\nX-A: 1\r\n\r\nbody", (201, "Created", [("X-A", "1")], b"body")),
    (b"Content-Type: text/plain\r\n\r\n", (200, "OK", [("Content-Type", "text/plain")], b"")),
    (b"Location: /next/\r\n\r\n", (302, "Found", [("Location", "/next/")], b"")),
    (b"Status: 418\n\nteapot", (418, "I'm a Teapot", [], b"teapot")),
    (b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n",
     (503, "Service Unavailable", [("Retry-After", "1")], b"")),
])
def test_parse_cgi_response(data, expected):
    assert client._parse_cgi_response(data) == expected


@pytest.mark.parametrize("data, message", [
    (b"Status: 200 OK\r\n", "no end of headers"),
    (b"Status: OK\r\n\r\n", "bad status"),
    (b"no colon here\r\n\r\n", "malformed header line"),
])
def test_parse_cgi_response_rejects(data, message):
    with pytest.raises(client.ProtocolError, match=message):
        client._parse_cgi_response(data)


def test_name_value_pairs_round_trip():
    pairs = {"A": "", "SHORT": "x" * 127, "LONG": "y" * 128, "HUGE": "z" * 70000}
    encoded = client.encode_pairs(pairs)
    assert encoded.startswith(b"\x01\x00A")
    assert b"\x05\x7fSHORT" in encoded and b"\x04\x80\x00\x00\x80LONG" in encoded
    assert client.decode_pairs(encoded) == pairs


def record_lengths(stream):
    lengths = []
    while stream:
        _, _, _, length, padding = client.FCGI_HEADER.unpack_from(stream)
        lengths.append(length)
        stream = stream[8 + length + padding:]
    return lengths


def test_stdin_stream_is_cut_into_records_that_fit():
    stream = client._fcgi_stream(client.FCGI_STDIN, b"p" * 140000)
    assert record_lengths(stream) == [65528, 65528, 140000 - 2 * 65528, 0]


def test_params_records_keep_pairs_whole_when_they_fit():
    env = {"A": "a" * 40000, "B": "b" * 40000, "C": "c" * 70000}
    pair = len(client.encode_pairs({"A": "a" * 40000}))  # 40006 bytes
    stream = client._fcgi_params(env)
    assert record_lengths(stream) == [pair, pair, 65535, 70006 - 65535, 0]


def test_cgi_params_look_like_nginx():
    env = client.cgi_params("post", "/café/", "a=1", [("Content-Type", "text/plain")], b"abc")
    assert env["REQUEST_METHOD"] == b"POST"
    assert env["SCRIPT_NAME"] == b""
    assert env["PATH_INFO"] == "/café/".encode()
    assert env["REQUEST_URI"] == b"/caf%C3%A9/?a=1"
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == (b"text/plain", b"3")
    assert "HTTP_CONTENT_TYPE" not in env
    assert env["SERVER_PROTOCOL"] == b"HTTP/1.1"


def test_describe_address():
    assert client.describe_address(("127.0.0.1", 3033)) == "127.0.0.1:3033"
    assert client.describe_address(("::1", 3033)) == "[::1]:3033"
    assert client.describe_address("/run/site.sock") == "/run/site.sock"
