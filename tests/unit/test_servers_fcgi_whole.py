"""fcgi_whole: a FastCGI request cut from the read buffer in one pass.

The parser is checked against records built by ``runfcgi_compat.client`` (the
encoder the integration tests also use), and the two serving paths -- a
request that arrived whole, and one that arrived record by record through
flup's dispatch -- are checked to give the app the same environ.
"""
import json
import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runfcgi_compat import client
from runfcgi_compat.servers.fcgi import MALFORMED, FCGIConnection
from runfcgi_compat.servers.fcgi_whole import (
    decode_params,
    decode_params_py,
    end_of_request,
    parse_whole,
)

from .test_servers_protocols import echo_app, environ_app, fcgi_record

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT = 1, 2, 3, 4, 5, 6
NGINX_PARAMS = {
    "QUERY_STRING": "a=1", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
    "SCRIPT_NAME": "", "PATH_INFO": "/x", "REQUEST_URI": "/x?a=1", "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1", "SERVER_PORT": "80", "SERVER_NAME": "localhost",
    "HTTP_HOST": "example.org", "HTTP_X_CAFE": "café",
}
# What the app sees: latin-1 text of the raw (UTF-8) bytes, as from flup.
EXPECTED = dict(NGINX_PARAMS, HTTP_X_CAFE="caf\xc3\xa9")


def begin(request_id=1, role=1, flags=0):
    return fcgi_record(BEGIN, struct.pack("!HB5x", role, flags), request_id)


def request(params=NGINX_PARAMS, body=b"", request_id=1, flags=0):
    return (begin(request_id, flags=flags)
            + client._fcgi_params(params).replace(b"\x01\x04\x00\x01", struct.pack(
                "!BBH", 1, PARAMS, request_id))
            + client._fcgi_stream(STDIN, body, request_id))


def test_an_nginx_get_is_cut_whole():
    data = request(flags=1) + b"next request"
    request_id, flags, params, body, end = parse_whole(data, 0)
    assert (request_id, flags, body) == (1, 1, b"")
    assert params == EXPECTED
    assert data[end:] == b"next request"


def test_a_body_that_arrived_with_the_request():
    payload = bytes(range(256)) * 300  # two STDIN records
    _, _, params, body, end = parse_whole(request(body=payload), 0)
    assert body == payload and params["REQUEST_METHOD"] == "GET"


def test_parsing_starts_at_the_given_position():
    data = b"12345" + request(request_id=7)
    request_id, _, params, _, end = parse_whole(data, 5)
    assert request_id == 7 and params == EXPECTED and end == len(data)


def test_every_incomplete_prefix_is_left_to_the_record_path():
    data = request(body=b"abc")
    assert [n for n in range(len(data)) if parse_whole(data[:n], 0) is not None] == []


@pytest.mark.parametrize("data", [
    begin(role=2) + fcgi_record(PARAMS) + fcgi_record(STDIN),          # authorizer
    begin() + fcgi_record(PARAMS, request_id=2) + fcgi_record(STDIN),  # another id
    begin() + fcgi_record(STDIN, b"x") + fcgi_record(STDIN),           # no PARAMS end
    begin() + fcgi_record(PARAMS) + fcgi_record(ABORT) + fcgi_record(STDIN),
    fcgi_record(9, b"GET_VALUES?") + request(),                        # not a BEGIN first
    b"\x02" + request()[1:],                                           # version 2
])
def test_anything_unusual_is_left_to_the_record_path(data):
    assert parse_whole(data, 0) is None


def test_a_pair_may_span_two_params_records():
    pairs = client.encode_pairs({"HTTP_HOST": "example.org", "REQUEST_METHOD": "GET"})
    data = (begin() + fcgi_record(PARAMS, pairs[:7]) + fcgi_record(PARAMS, pairs[7:])
            + fcgi_record(PARAMS) + fcgi_record(STDIN))
    assert parse_whole(data, 0)[2] == {"HTTP_HOST": "example.org", "REQUEST_METHOD": "GET"}


# Both decoders: the C one (when it was built) and the Python one.
DECODERS = [pytest.param(decode_params_py, id="python")]
if decode_params is not decode_params_py:
    DECODERS.append(pytest.param(decode_params, id="c"))


@pytest.mark.parametrize("decode", DECODERS)
def test_long_names_and_values_use_four_byte_lengths(decode):
    params = {"X" * 200: "y" * 70000, "SHORT": "", "Z" * 127: "w" * 128}
    assert decode(client.encode_pairs(params)) == params


@pytest.mark.parametrize("decode", DECODERS)
def test_values_are_latin1_text_of_the_raw_bytes_as_flup_gives_them(decode):
    params = decode(client.encode_pairs({b"HTTP_X": "café".encode(), b"B": b"\xff\x00"}))
    assert params == {"HTTP_X": "caf\xc3\xa9", "B": "\xff\x00"}


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("data", [b"\x05", b"\x05\x01ab", b"\x85\x00\x00", b"\x01\x90abc",
                                  b"\x01\x80\x00\x00\x05ab"])
def test_a_truncated_pair_is_an_error(decode, data):
    with pytest.raises(MALFORMED):
        decode(data)


@pytest.mark.parametrize("decode", DECODERS)
def test_a_later_pair_replaces_an_earlier_one(decode):
    data = client.encode_pairs({"A": "1"}) + client.encode_pairs({"A": "2", "": ""})
    assert decode(data) == {"A": "2", "": ""}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_c_decoder_agrees_with_the_python_one(data):
    if decode_params is decode_params_py:
        pytest.skip("the C decoder was not built")

    def outcome(decode):
        try:
            return decode(data)
        except MALFORMED:
            return "error"

    assert outcome(decode_params) == outcome(decode_params_py)


@pytest.mark.skipif(not os.environ.get("RUNFCGI_TEST_WHEEL"), reason="only under tox")
def test_the_installed_wheel_has_the_c_decoder():
    assert decode_params is not decode_params_py


def test_end_of_request_is_an_empty_stdout_then_end_request():
    data = end_of_request(3, app_status=1)
    assert data[:8] == struct.pack("!BBHHBx", 1, STDOUT, 3, 0, 0)
    assert data[8:] == struct.pack("!BBHHBx", 1, END, 3, 8, 0) + struct.pack("!LB3x", 1, 0)


# -- served: the whole path and flup's record path agree ---------------------------------


def read_response(sock):
    """Read one response (up to its END_REQUEST) from ``sock``; return stdout."""
    data, out = b"", b""
    while True:
        while len(data) >= 8:
            _, kind, _, length, padding = struct.unpack("!BBHHBx", data[:8])
            if len(data) < 8 + length + padding:
                break
            content, data = data[8:8 + length], data[8 + length + padding:]
            if kind == END:
                return out, data
            if kind == STDOUT:
                out += content
        chunk = sock.recv(65536)
        assert chunk, "connection closed before END_REQUEST"
        data += chunk


def environ_of(stdout):
    return json.loads(stdout.split(b"\r\n\r\n", 1)[1])


def test_the_whole_path_and_the_record_path_build_the_same_environ(serve):
    address, _ = serve("fcgi", environ_app)
    with socket.create_connection(address, timeout=10) as sock:
        # Whole: the request in one write, with the connection kept.
        sock.sendall(request(flags=1))
        whole, rest = read_response(sock)
        assert rest == b""
        # Record by record: without its end of STDIN the request is not
        # whole, so flup's dispatch starts the app at the end of PARAMS
        # (nothing to wait for, as a GET reads no body).
        data = request(flags=1)
        sock.sendall(data[:-8])
        by_records, _ = read_response(sock)
        sock.sendall(data[-8:])
    assert environ_of(whole) == environ_of(by_records)
    assert environ_of(whole)["PATH_INFO"] == "/x"
    assert environ_of(whole)["HTTP_X_CAFE"] == "caf\xc3\xa9"


def test_pipelined_requests_on_a_kept_connection_are_answered_in_order(serve):
    address, _ = serve("fcgi", environ_app)
    paths = [f"/p{n}" for n in range(5)]
    burst = b"".join(request(dict(NGINX_PARAMS, PATH_INFO=p, REQUEST_URI=p), flags=1)
                     for p in paths)
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(burst)
        seen, pending = [], b""
        for _ in paths:
            stdout, pending = read_response_from(sock, pending)
            seen.append(environ_of(stdout)["PATH_INFO"])
    assert seen == paths


def read_response_from(sock, pending):
    class Prefilled:
        def __init__(self):
            self.first = pending

        def recv(self, size):
            if self.first:
                data, self.first = self.first, b""
                return data
            return sock.recv(size)

    return read_response(Prefilled())


def test_a_small_post_body_arrives_whole(serve):
    address, _ = serve("fcgi", echo_app)
    body = b"field=value&other=" + b"x" * 3000
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request(dict(NGINX_PARAMS, REQUEST_METHOD="POST",
                                  CONTENT_LENGTH=str(len(body))), body=body))
        stdout, _ = read_response(sock)
    assert stdout.split(b"\r\n\r\n", 1)[1] == body


def test_every_request_on_a_kept_connection_takes_the_whole_path(serve, monkeypatch):
    # A kept connection waits for its next request with an empty buffer:
    # the request must be read before the whole path looks at it.
    record_path = []
    original = FCGIConnection.process_input
    monkeypatch.setattr(FCGIConnection, "process_input",
                        lambda self: record_path.append(1) or original(self))
    address, _ = serve("fcgi", environ_app)
    with socket.create_connection(address, timeout=10) as sock:
        for n in range(3):
            sock.sendall(request(dict(NGINX_PARAMS, PATH_INFO=f"/k{n}"), flags=1))
            stdout, rest = read_response(sock)
            assert (environ_of(stdout)["PATH_INFO"], rest) == (f"/k{n}", b"")
    assert record_path == []
