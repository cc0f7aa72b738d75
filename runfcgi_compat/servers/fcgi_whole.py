"""FastCGI's common case in one pass: a request that arrived whole.

Web servers send a GET, and most small POSTs, as one burst: BEGIN_REQUEST,
the PARAMS records, an empty PARAMS record, the STDIN records and an empty
STDIN record.  When all of it is already in the connection's read buffer
there is nothing to wait for and nothing to stream, so ``parse_whole``
cuts it in one pass over the buffer, and the connection runs the app
without building flup's per-record objects (a ``Record`` per record, a
``Request`` with four streams, a dict update per parameter): that
bookkeeping cost about as much as Django's own request handling.

Everything else -- a request still arriving, a body larger than one read,
another role, a second request id, management records -- returns None and
takes flup's record-by-record path (``fcgi.FCGIConnection.process_input``),
which handles every case.  The two paths give the app the same environ.

``parse_whole``, ``decode_params`` and ``stdout_record`` are C
(``_wire.c``) when the optional module serves, and their Python twins
(``*_py``) otherwise (``speedups.py`` decides); property tests hold each
pair to the same results (tests/unit/test_wire.py lists every pair).
"""
import struct

from flup.server.fcgi_base import (
    FCGI_BEGIN_REQUEST,
    FCGI_END_REQUEST,
    FCGI_HEADER_LEN,
    FCGI_PARAMS,
    FCGI_REQUEST_COMPLETE,
    FCGI_RESPONDER,
    FCGI_STDIN,
    FCGI_STDOUT,
    FCGI_VERSION_1,
    FCGI_EndRequestBody,
    FCGI_Header,
)

from . import speedups
from .base import encode_head_py

HEADER = struct.Struct(FCGI_Header)
# One read takes all nginx sends for a typical request (a few KiB of
# parameters and the body records) and at most one 64 KiB record more.
READ_SIZE = 65536 + 256 + FCGI_HEADER_LEN
# Errors flup's parsing (and parse_whole) raise on garbage: short
# BEGIN_REQUEST bodies, truncated name/value pairs.
MALFORMED = (struct.error, IndexError, ValueError, UnicodeDecodeError)
BEGIN_BODY = struct.Struct("!HB5x")
LONG_LENGTH = struct.Struct("!L")

# The largest record content that needs no padding (a multiple of 8).
MAX_CONTENT = 65528
PADDING = [b"\0" * n for n in range(8)]


def parse_whole_py(buf, pos):
    """Cut a whole responder request from ``buf`` at ``pos``.

    Return ``(request_id, flags, params, body, next_pos)``, ``params`` a
    dict of latin-1 str as flup makes it, ``body`` bytes; or None when the
    request is not simple and whole (see the module's docstring).  Raise
    ValueError, IndexError or struct.error for a name-value pair that runs
    past the end of the parameters.
    """
    end = len(buf)
    if end - pos < 2 * FCGI_HEADER_LEN:
        return None
    version, kind, request_id, length, padding = HEADER.unpack_from(buf, pos)
    if version != FCGI_VERSION_1 or kind != FCGI_BEGIN_REQUEST or length != 8:
        return None
    role, flags = BEGIN_BODY.unpack_from(buf, pos + FCGI_HEADER_LEN)
    if role != FCGI_RESPONDER:
        return None
    pos += FCGI_HEADER_LEN + 8 + padding
    params, body = [], []
    stream, chunks = FCGI_PARAMS, params
    while True:
        if end - pos < FCGI_HEADER_LEN:
            return None
        _, kind, record_id, length, padding = HEADER.unpack_from(buf, pos)
        if kind != stream or record_id != request_id:
            return None
        start = pos + FCGI_HEADER_LEN
        pos = start + length + padding
        if pos > end:
            return None
        if length:
            chunks.append(buf[start:start + length])
        elif stream == FCGI_PARAMS:
            stream, chunks = FCGI_STDIN, body
        else:
            break
    return request_id, flags, decode_params_py(b"".join(params)), b"".join(body), pos


def decode_params_py(data):
    """Decode FastCGI name-value pairs (which may span records) into a dict.

    Lengths are read from the bytes; names and values are sliced from the
    whole block decoded once as latin-1 (one character per byte), which is
    what flup does pair by pair.  Raise ValueError, IndexError or
    struct.error when a pair runs past the end.
    """
    text = data.decode("latin-1")
    unpack_long = LONG_LENGTH.unpack_from
    params = {}
    pos, end = 0, len(data)
    while pos < end:
        name_len = data[pos]
        value_len = data[pos + 1]
        if name_len < 128 and value_len < 128:  # Nearly always.
            pos += 2
        else:
            if name_len & 128:
                name_len = unpack_long(data, pos)[0] & 0x7FFFFFFF
                pos += 4
            else:
                pos += 1
            value_len = data[pos]
            if value_len & 128:
                value_len = unpack_long(data, pos)[0] & 0x7FFFFFFF
                pos += 4
            else:
                pos += 1
        value_start = pos + name_len
        pos = value_start + value_len
        params[text[value_start - name_len:value_start]] = text[value_start:pos]
    if pos != end:
        raise ValueError("a name-value pair runs past the end of the parameters")
    return params


def stdout_record_py(request_id, status, headers, body):
    """One FCGI_STDOUT record holding the response head and ``body``.

    Return None when they do not fit in one record (MAX_CONTENT): the
    caller frames them separately then.
    """
    content = encode_head_py(status, headers) + body
    length = len(content)
    if length > MAX_CONTENT:
        return None
    padding = -length & 7
    return (HEADER.pack(FCGI_VERSION_1, FCGI_STDOUT, request_id, length, padding)
            + content + PADDING[padding])


# The same in C, built when a compiler was at hand (``_wire.c``): these
# loops were most of the server's own instructions per request
# (bench/PROFILE.rst).
decode_params = speedups.pick("decode_params", decode_params_py)
parse_whole = speedups.pick("parse_whole", parse_whole_py)
stdout_record = speedups.pick("stdout_record", stdout_record_py)


_END_CACHE = {}


def end_of_request(request_id, app_status=0):
    """The empty FCGI_STDOUT record and FCGI_END_REQUEST, as one bytes."""
    key = (request_id, app_status)
    cached = _END_CACHE.get(key)
    if cached is None:
        cached = (HEADER.pack(FCGI_VERSION_1, FCGI_STDOUT, request_id, 0, 0)
                  + HEADER.pack(FCGI_VERSION_1, FCGI_END_REQUEST, request_id, 8, 0)
                  + struct.pack(FCGI_EndRequestBody, app_status, FCGI_REQUEST_COMPLETE))
        if len(_END_CACHE) < 64:
            _END_CACHE[key] = cached
    return cached
