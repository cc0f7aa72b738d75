"""fcgi_whole: a FastCGI request cut from the read buffer in one pass.

The parser is checked against records built by ``runfcgi_compat.client`` (the
encoder the integration tests also use), and the two serving paths -- a
request that arrived whole, and one that arrived record by record through
flup's dispatch -- are checked to give the app the same environ.
"""
import json
import socket
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runfcgi_compat import client
from runfcgi_compat.servers.base import (
    check_start_py,
    encode_head_py,
)
from runfcgi_compat.servers.fcgi import MALFORMED, FCGIConnection
from runfcgi_compat.servers.fcgi_whole import (
    decode_params,
    decode_params_py,
    end_of_request,
    parse_whole,
    parse_whole_py,
    stdout_record,
    stdout_record_py,
)
from tests import modes

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


# Both parsers: the C one (when it was built) and the Python one.
PARSERS = [pytest.param(parse_whole_py, id="python")]
if parse_whole is not parse_whole_py:
    PARSERS.append(pytest.param(parse_whole, id="c"))


@pytest.mark.parametrize("parse", PARSERS)
def test_an_nginx_get_is_cut_whole(parse):
    data = request(flags=1) + b"next request"
    request_id, flags, params, body, end = parse(data, 0)
    assert (request_id, flags, body) == (1, 1, b"")
    assert params == EXPECTED
    assert data[end:] == b"next request"


@pytest.mark.parametrize("parse", PARSERS)
def test_a_body_that_arrived_with_the_request(parse):
    payload = bytes(range(256)) * 300  # two STDIN records
    _, _, params, body, end = parse(request(body=payload), 0)
    assert body == payload and params["REQUEST_METHOD"] == "GET"


@pytest.mark.parametrize("parse", PARSERS)
def test_parsing_starts_at_the_given_position(parse):
    data = b"12345" + request(request_id=7)
    request_id, _, params, _, end = parse(data, 5)
    assert request_id == 7 and params == EXPECTED and end == len(data)


@pytest.mark.parametrize("parse", PARSERS)
def test_every_incomplete_prefix_is_left_to_the_record_path(parse):
    data = request(body=b"abc")
    assert [n for n in range(len(data)) if parse(data[:n], 0) is not None] == []


@pytest.mark.parametrize("data", [
    begin(role=2) + fcgi_record(PARAMS) + fcgi_record(STDIN),          # authorizer
    begin() + fcgi_record(PARAMS, request_id=2) + fcgi_record(STDIN),  # another id
    begin() + fcgi_record(STDIN, b"x") + fcgi_record(STDIN),           # no PARAMS end
    begin() + fcgi_record(PARAMS) + fcgi_record(ABORT) + fcgi_record(STDIN),
    fcgi_record(9, b"GET_VALUES?") + request(),                        # not a BEGIN first
    b"\x02" + request()[1:],                                           # version 2
])
@pytest.mark.parametrize("parse", PARSERS)
def test_anything_unusual_is_left_to_the_record_path(parse, data):
    assert parse(data, 0) is None


@pytest.mark.parametrize("parse", PARSERS)
def test_a_pair_may_span_two_params_records(parse):
    pairs = client.encode_pairs({"HTTP_HOST": "example.org", "REQUEST_METHOD": "GET"})
    data = (begin() + fcgi_record(PARAMS, pairs[:7]) + fcgi_record(PARAMS, pairs[7:])
            + fcgi_record(PARAMS) + fcgi_record(STDIN))
    assert parse(data, 0)[2] == {"HTTP_HOST": "example.org", "REQUEST_METHOD": "GET"}


def outcome(call, *args):
    try:
        return call(*args)
    except MALFORMED:
        return "error"


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
    assert outcome(modes.wire().decode_params, data) == outcome(decode_params_py, data)


NAMES = st.sampled_from(["REQUEST_METHOD", "PATH_INFO", "HTTP_HOST", "HTTP_COOKIE", "X", ""])
PAIRS = st.dictionaries(st.one_of(NAMES, st.binary(max_size=140)),
                        st.one_of(st.binary(max_size=10), st.binary(min_size=120, max_size=300)),
                        max_size=8)


@settings(max_examples=300, deadline=None)
@given(PAIRS, st.binary(max_size=200), st.integers(1, 3), st.integers(0, 1),
       st.integers(0, 2**16 - 1), st.one_of(st.none(), st.integers(0, 2000)),
       st.binary(max_size=20))
def test_the_c_parser_agrees_with_the_python_one(pairs, body, split, flags, request_id, cut,
                                                 tail):
    c_parse = modes.wire().parse_whole
    encoded = client.encode_pairs(pairs)
    size = max(1, len(encoded) // split)
    data = begin(request_id, flags=flags)
    for start in range(0, len(encoded), size):
        data += fcgi_record(PARAMS, encoded[start:start + size], request_id)
    data += fcgi_record(PARAMS, b"", request_id) + client._fcgi_stream(STDIN, body, request_id)
    data = (data + tail)[:cut]
    assert outcome(c_parse, data, 0) == outcome(parse_whole_py, data, 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 20))
def test_the_c_parser_agrees_on_random_bytes(data, pos):
    data = begin() + data
    assert outcome(modes.wire().parse_whole, data, pos) == outcome(parse_whole_py, data, pos)


TEXT = st.text(st.characters(max_codepoint=300), max_size=20)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.lists(st.tuples(TEXT, TEXT), max_size=6))
def test_the_c_head_encoder_agrees_with_the_python_one(status, headers):
    c_encode = modes.wire().encode_head

    def encoded(encode):
        try:
            return encode(status, headers)
        except UnicodeEncodeError:
            return "error"

    assert encoded(c_encode) == encoded(encode_head_py)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), TEXT, st.lists(st.tuples(TEXT, TEXT), max_size=6),
       st.binary(max_size=100) | st.sampled_from([b"x" * 65500, b"y" * 65600]))
def test_the_c_stdout_record_agrees_with_the_python_one(request_id, status, headers, body):
    c_record = modes.wire().stdout_record

    def encoded(encode):
        try:
            return encode(request_id, status, headers, body)
        except UnicodeEncodeError:
            return "error"

    assert encoded(c_record) == encoded(stdout_record_py)


@pytest.mark.parametrize("encode", [stdout_record_py, stdout_record])
def test_a_stdout_record_frames_head_and_body(encode):
    record = encode(7, "200 OK", [("A", "b")], b"body")
    content = b"Status: 200 OK\r\nA: b\r\n\r\nbody"
    assert record == (struct.pack("!BBHHBx", 1, STDOUT, 7, len(content), -len(content) & 7)
                      + content + b"\0" * (-len(content) & 7))
    assert encode(7, "200 OK", [], b"x" * 65528) is None  # Needs a second record.


WSGI_STARTS = st.one_of(
    st.tuples(st.one_of(TEXT, st.binary(max_size=5), st.none()),
              st.one_of(st.lists(st.one_of(st.tuples(TEXT, TEXT), st.tuples(TEXT), st.integers(),
                                           st.tuples(TEXT, st.integers())), max_size=3),
                        st.tuples(st.tuples(TEXT, TEXT)))),
    st.tuples(st.from_regex(r"\A[0-9]{3} [A-Za-z ]{0,10}\Z"), st.lists(st.tuples(TEXT, TEXT))))


@settings(max_examples=300, deadline=None)
@given(WSGI_STARTS)
def test_the_c_start_checks_agree_with_the_python_ones(start):
    c_check = modes.wire().check_start

    def checked(check):
        try:
            return check(*start)
        except AssertionError as exc:
            return str(exc)

    assert checked(c_check) == checked(check_start_py)


@pytest.mark.parametrize("decode", DECODERS)
def test_a_repeated_name_gets_each_requests_own_value(decode):
    first = decode(client.encode_pairs({"REMOTE_PORT": "50000", "HTTP_HOST": "a"}))
    second = decode(client.encode_pairs({"REMOTE_PORT": "50001", "HTTP_HOST": "a"}))
    third = decode(client.encode_pairs({"REMOTE_PORT": "5000", "HTTP_HOST": "ab"}))
    assert (first, second, third) == (
        {"REMOTE_PORT": "50000", "HTTP_HOST": "a"},
        {"REMOTE_PORT": "50001", "HTTP_HOST": "a"},
        {"REMOTE_PORT": "5000", "HTTP_HOST": "ab"})


def test_usual_names_are_the_interned_strings_django_looks_up():
    pairs = client.encode_pairs({"PATH_INFO": "/", "HTTP_X_MADE_UP": "1"})
    params = modes.wire().decode_params(pairs)
    names = {name: name for name in params}
    assert names["PATH_INFO"] is "PATH_INFO"  # noqa: F632 - identity is the point
    assert names["HTTP_X_MADE_UP"] is not sys.intern("HTTP_X_MADE_UP")


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
