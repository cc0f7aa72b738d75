"""Small blocking clients for FastCGI, SCGI and AJP13: the web server's side.

The test suite, the benchmark and ``manage.py runfcgi_ping`` use these to talk
to a running server exactly the way a web server would, with nothing but the
standard library:

* FastCGI and SCGI requests carry the CGI variables nginx's stock
  ``fastcgi_params`` would send, except that ``SCRIPT_NAME`` is empty and
  ``PATH_INFO`` holds the path (the set-up the docs recommend); pass
  ``params`` to send something else, e.g. ``{"PATH_INFO": None}`` to drop a
  variable and see what stock nginx causes.
* AJP13 requests look like Apache ``mod_proxy_ajp``'s: a raw, percent-encoded
  request URI, coded header names, and the body in 8 KiB packets handed out
  as the container asks for them.

Everything is blocking and single-threaded.  The whole request is written
before the answer is read, as web servers do; a server that answers early
and stops reading is handled (its answer is still read), but one that writes
a huge answer *without* reading the body and without closing would make the
client wait for ``timeout`` — a case none of the callers produce.

Every failure raises ``ClientError``, an ``OSError`` whose message is one
sentence naming the address, e.g. ``no server at 127.0.0.1:9000 (Connection
refused)``.
"""
import dataclasses
import http
import os
import socket
import struct
import time
import urllib.parse

__all__ = [
    "AJPConnection",
    "ClientError",
    "ConnectionClosed",
    "ProtocolError",
    "FastCGIConnection",
    "Response",
    "ajp_cping",
    "cgi_params",
    "describe_address",
    "get_values",
    "request",
]

PROTOCOLS = ("fcgi", "scgi", "ajp")


class ClientError(OSError):
    """A request that got no usable answer; the message is one sentence."""

    def __init__(self, message, address=None, cause=None):
        super().__init__(message)
        self.address = address
        if cause is not None and getattr(cause, "errno", None) is not None:
            self.errno = cause.errno


class ConnectionClosed(ClientError):
    """The server hung up before its answer was complete."""


class ProtocolError(ClientError):
    """The server answered, but not in the protocol spoken to it."""


@dataclasses.dataclass
class Response:
    status: int
    reason: str
    headers: list  # [(name, value), ...] as received, duplicates kept
    body: bytes
    stderr: bytes = b""  # FastCGI's FCGI_STDERR stream; empty for SCGI and AJP
    elapsed: float = 0.0  # seconds, from connecting (or sending) to the last byte

    @property
    def status_line(self):
        return f"{self.status} {self.reason}".rstrip()

    def header(self, name, default=None):
        """Return the first value of header ``name`` (any case), or ``default``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default


def request(address, protocol="fcgi", method="GET", path="/", query="",
            headers=None, body=b"", params=None, timeout=10.0, keep_conn=False,
            secret=None):
    """Send one request and return its ``Response``.

    ``address`` is a ``(host, port)`` pair or a UNIX socket path.  ``path``
    is the decoded URL path (``"/café/"``); ``query`` the raw query string.
    ``timeout`` bounds the connect and each read or write, in seconds.
    ``keep_conn`` sets FastCGI's FCGI_KEEP_CONN flag (the connection is
    closed here anyway; use ``FastCGIConnection`` to reuse one).  ``secret``
    is AJP's ``secret`` attribute (Apache's ``ProxyPass … secret=``).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of: {', '.join(PROTOCOLS)}.")
    started = time.perf_counter()
    if protocol == "fcgi":
        with FastCGIConnection(address, timeout) as conn:
            response = conn.request(method, path, query, headers, body, params,
                                    keep_conn=keep_conn)
    elif protocol == "scgi":
        response = _scgi_request(address, method, path, query, headers, body,
                                 params, timeout)
    else:
        with AJPConnection(address, timeout) as conn:
            response = conn.request(method, path, query, headers, body, params,
                                    secret=secret)
    response.elapsed = time.perf_counter() - started
    return response


# -- addresses, sockets and errors -----------------------------------------------


def describe_address(address):
    """Return ``address`` as people write it: ``host:port``, ``[::1]:port`` or a path."""
    if isinstance(address, (str, bytes, os.PathLike)):
        return os.fsdecode(address)
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason_of(exc):
    """Return the plain-words part of an OS error: ``Connection refused``."""
    if isinstance(exc, socket.timeout):
        return "timed out"
    if getattr(exc, "errno", None):
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _connect(address, timeout):
    """Open a blocking socket to ``address``; raise ClientError if nobody answers."""
    where = describe_address(address)
    try:
        if isinstance(address, (str, bytes, os.PathLike)):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(os.fspath(address))
            except BaseException:
                sock.close()
                raise
        else:
            host, port = address
            sock = socket.create_connection((host, port), timeout)
            # Some requests go out in several writes (AJP body packets, a
            # kept FastCGI connection); without this a small write can wait
            # ~40 ms for the server's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except socket.gaierror as exc:
        raise ClientError(f"cannot resolve {where} ({exc.strerror})", address, exc) from None
    except socket.timeout as exc:
        raise ClientError(
            f"no server at {where} (no answer to connect within {timeout:g} s)",
            address, exc) from None
    except OSError as exc:
        raise ClientError(f"no server at {where} ({_reason_of(exc)})", address, exc) from None
    return sock


class _Channel:
    """A connected socket with exact reads and one-sentence errors."""

    def __init__(self, address, timeout):
        self.address = address
        self.where = describe_address(address)
        self.timeout = timeout
        self.sock = _connect(address, timeout)
        self._buffer = bytearray()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def check_open(self):
        if self.sock is None:
            raise ClientError(f"the connection to {self.where} is already closed",
                              self.address)

    def send(self, data):
        """Send ``data``; return False if the server stopped reading (closed)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        except socket.timeout as exc:
            raise self.error(
                f"did not read the request within {self.timeout:g} s", exc) from None
        except OSError as exc:
            raise self.error(f"failed while sending the request ({_reason_of(exc)})",
                             exc) from None
        return True

    def _fill(self, what):
        """Read more into the buffer; return False at end of stream."""
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout as exc:
            raise self.error(f"did not answer within {self.timeout:g} s ({what})",
                             exc) from None
        except ConnectionResetError as exc:
            # A server that closes with our bytes still unread resets instead.
            raise ConnectionClosed(f"{self.where} reset the connection while {what}",
                                   self.address, exc) from None
        except OSError as exc:
            raise self.error(f"failed while {what} ({_reason_of(exc)})", exc) from None
        self._buffer += chunk
        return bool(chunk)

    def read_exactly(self, size, what):
        """Return exactly ``size`` bytes; ``what`` names them in errors."""
        while len(self._buffer) < size:
            if not self._fill(what):
                raise ConnectionClosed(f"{self.where} closed the connection while {what}",
                                       self.address)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_to_end(self, what):
        while self._fill(what):
            pass
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def error(self, text, cause=None):
        return ClientError(f"{self.where} {text}", self.address, cause)

    def protocol_error(self, text):
        return ProtocolError(f"{self.where} {text}", self.address)


# -- CGI variables and CGI-style answers -----------------------------------------


def _as_bytes(value):
    """Encode a variable's value the way a web server passes it: raw UTF-8 bytes."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _request_uri(path, query):
    """Return the raw request URI a browser would send for a decoded path."""
    raw = urllib.parse.quote(_as_bytes(path), safe="/:@!$&'()*+,;=-._~")
    return f"{raw}?{query}" if query else raw


def cgi_params(method="GET", path="/", query="", headers=None, body=b"", params=None):
    """Return the CGI variables for a request, as ``{name: bytes}``.

    They follow nginx's stock ``fastcgi_params`` with ``SCRIPT_NAME`` empty and
    ``PATH_INFO`` set to the path; ``params`` then adds or replaces variables,
    and a value of ``None`` removes one.
    """
    query = _as_bytes(query).decode("latin-1")
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "runfcgi_compat-client",
        "REQUEST_METHOD": method.upper(),
        "REQUEST_SCHEME": "http",
        "SCRIPT_NAME": "",
        "PATH_INFO": _as_bytes(path),
        "DOCUMENT_URI": _as_bytes(path),
        "QUERY_STRING": query,
        "REQUEST_URI": _request_uri(path, query),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "localhost",
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": str(len(body)) if body else "",
    }
    names_given = set()
    for name, value in _header_pairs(headers):
        key = name.upper().replace("-", "_")
        names_given.add(key)
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            env[key] = value
        else:
            # Repeated headers are joined as nginx joins them (cookies with ";").
            cgi_name = f"HTTP_{key}"
            joiner = "; " if key == "COOKIE" else ", "
            env[cgi_name] = f"{env[cgi_name]}{joiner}{value}" if cgi_name in env else value
    params = params or {}
    for name, value in params.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    if "HOST" not in names_given and "HTTP_HOST" not in params:
        env["HTTP_HOST"] = env.get("SERVER_NAME", "localhost")
    return {name: _as_bytes(value) for name, value in env.items()}


def _header_pairs(headers):
    """Accept headers as a dict or as (name, value) pairs."""
    if headers is None:
        return []
    if hasattr(headers, "items"):
        return list(headers.items())
    return list(headers)


def _parse_cgi_response(data, where="the server"):
    """Split a CGI-style answer into (status, reason, headers, body).

    The status comes from a ``Status:`` header (200 if absent, 302 if there is
    only a ``Location``), or from an ``HTTP/1.x`` status line, which SCGI
    servers may send instead.
    """
    end = data.find(b"\r\n\r\n")
    skip = 4
    bare = data.find(b"\n\n")
    if bare != -1 and (end == -1 or bare < end):
        end, skip = bare, 2
    if end == -1:
        raise ProtocolError(f"{where} sent an answer with no end of headers "
                            f"({len(data)} bytes: {data[:60]!r})")
    head = data[:end].decode("latin-1")
    body = data[end + skip:]
    lines = head.replace("\r\n", "\n").split("\n")
    status = reason = None
    if lines and lines[0].startswith("HTTP/"):
        status, reason = _split_status(lines.pop(0).split(" ", 1)[-1], where)
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ProtocolError(f"{where} sent a malformed header line: {line!r}")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            status, reason = _split_status(value, where)
        else:
            headers.append((name, value))
    if status is None:
        has_location = any(name.lower() == "location" for name, _ in headers)
        status, reason = (302, "Found") if has_location else (200, "OK")
    return status, reason, headers, body


def _split_status(text, where):
    code, _, reason = text.strip().partition(" ")
    if not (len(code) == 3 and code.isdigit()):
        raise ProtocolError(f"{where} sent a bad status: {text!r}")
    status = int(code)
    if not reason:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    return status, reason.strip()


# -- FastCGI ---------------------------------------------------------------------

FCGI_VERSION = 1
FCGI_BEGIN_REQUEST = 1
FCGI_ABORT_REQUEST = 2
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_DATA = 8
FCGI_GET_VALUES = 9
FCGI_GET_VALUES_RESULT = 10
FCGI_UNKNOWN_TYPE = 11
FCGI_RESPONDER = 1
FCGI_KEEP_CONN = 1
FCGI_MAX_CONTENT = 65535
FCGI_STDIN_CHUNK = 65528  # the largest multiple of 8 that fits in one record
FCGI_HEADER = struct.Struct(">BBHHBx")  # version, type, request id, length, padding

# FCGI_END_REQUEST's protocolStatus values other than FCGI_REQUEST_COMPLETE (0).
FCGI_REFUSALS = {
    1: "FCGI_CANT_MPX_CONN: it cannot take a second request on this connection",
    2: "FCGI_OVERLOADED: it is out of resources",
    3: "FCGI_UNKNOWN_ROLE: it does not play the responder role",
}


def _fcgi_record(record_type, content=b"", request_id=1):
    """Return one record, padded to a multiple of 8 bytes as nginx pads them."""
    padding = -len(content) % 8
    return (FCGI_HEADER.pack(FCGI_VERSION, record_type, request_id, len(content), padding)
            + content + b"\0" * padding)


def _fcgi_stream(record_type, data, request_id=1, chunk=FCGI_STDIN_CHUNK):
    """Return ``data`` as records of at most ``chunk`` bytes, then the empty one."""
    records = [_fcgi_record(record_type, data[start:start + chunk], request_id)
               for start in range(0, len(data), chunk)]
    records.append(_fcgi_record(record_type, b"", request_id))
    return b"".join(records)


def _fcgi_params(env):
    """Return the PARAMS stream for ``env``, each pair whole in one record if it fits.

    The spec lets a pair run on into the next record, but some servers (flup
    1.0.3 among them) decode each record alone and cut such a pair short, so
    only a pair too long for any record is split.
    """
    records, batch = [], b""
    for name, value in env.items():
        pair = encode_pairs({name: value})
        if batch and len(batch) + len(pair) > FCGI_MAX_CONTENT:
            records.append(_fcgi_record(FCGI_PARAMS, batch))
            batch = b""
        batch += pair
        while len(batch) > FCGI_MAX_CONTENT:
            records.append(_fcgi_record(FCGI_PARAMS, batch[:FCGI_MAX_CONTENT]))
            batch = batch[FCGI_MAX_CONTENT:]
    if batch:
        records.append(_fcgi_record(FCGI_PARAMS, batch))
    records.append(_fcgi_record(FCGI_PARAMS))
    return b"".join(records)


def _fcgi_length(size):
    # Lengths below 128 take one byte; others four, with the top bit set.
    return bytes([size]) if size < 128 else struct.pack(">I", size | 0x80000000)


def encode_pairs(pairs):
    """Encode ``{name: value}`` as FastCGI name-value pairs (bytes or str)."""
    out = bytearray()
    for name, value in pairs.items():
        name, value = _as_bytes(name), _as_bytes(value)
        out += _fcgi_length(len(name)) + _fcgi_length(len(value)) + name + value
    return bytes(out)


def decode_pairs(data):
    """Decode FastCGI name-value pairs into ``{name: value}`` (str, latin-1)."""
    pairs, pos = {}, 0
    try:
        while pos < len(data):
            sizes = []
            for _ in range(2):
                if data[pos] < 128:
                    sizes.append(data[pos])
                    pos += 1
                else:
                    sizes.append(struct.unpack_from(">I", data, pos)[0] & 0x7FFFFFFF)
                    pos += 4
            name = data[pos:pos + sizes[0]]
            value = data[pos + sizes[0]:pos + sizes[0] + sizes[1]]
            if len(name) + len(value) != sizes[0] + sizes[1]:
                raise ValueError("a pair runs past the end of the record")
            pos += sizes[0] + sizes[1]
            pairs[name.decode("latin-1")] = value.decode("latin-1")
    except (IndexError, struct.error, ValueError) as exc:
        raise ValueError(f"bad name-value pairs: {exc}") from None
    return pairs


class FastCGIConnection:
    """One connection to a FastCGI server, reusable while ``keep_conn`` is set.

    ::

        with FastCGIConnection(("127.0.0.1", 3033)) as conn:
            first = conn.request(path="/a/")           # FCGI_KEEP_CONN set
            last = conn.request(path="/b/", keep_conn=False)

    Requests are sent one after another, never multiplexed, each with request
    id 1 as nginx does.
    """

    def __init__(self, address, timeout=10.0):
        self.address = address
        self.timeout = timeout
        self._channel = _Channel(address, timeout)
        self.requests_sent = 0
        self.closed_by_server = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self._channel.close()

    def request(self, method="GET", path="/", query="", headers=None, body=b"",
                params=None, keep_conn=True):
        """Send one request on this connection and return its ``Response``."""
        channel = self._channel
        if self.closed_by_server:
            raise channel.error("closed this connection after the last request "
                                "(send it with keep_conn=True to reuse it)")
        channel.check_open()
        started = time.perf_counter()
        body = _as_bytes(body)
        env = cgi_params(method, path, query, _header_pairs(headers), body, params)
        begin = struct.pack(">HB5x", FCGI_RESPONDER, FCGI_KEEP_CONN if keep_conn else 0)
        head = _fcgi_record(FCGI_BEGIN_REQUEST, begin) + _fcgi_params(env)
        self.requests_sent += 1
        if len(body) <= FCGI_STDIN_CHUNK:
            # Small requests go out in one write: one segment, one wake-up.
            channel.send(head + _fcgi_stream(FCGI_STDIN, body))
        elif channel.send(head):
            for start in range(0, len(body), FCGI_STDIN_CHUNK):
                piece = body[start:start + FCGI_STDIN_CHUNK]
                if not channel.send(_fcgi_record(FCGI_STDIN, piece)):
                    break  # It answered early and closed; read what it said.
            else:
                channel.send(_fcgi_record(FCGI_STDIN))
        response = self._read_response()
        if not keep_conn:
            self.closed_by_server = True
            self.close()
        response.elapsed = time.perf_counter() - started
        return response

    def _read_record(self, what):
        channel = self._channel
        header = channel.read_exactly(FCGI_HEADER.size, what)
        version, record_type, request_id, length, padding = FCGI_HEADER.unpack(header)
        if version != FCGI_VERSION:
            raise channel.protocol_error(f"sent something that is not a FastCGI record "
                                f"(first bytes {header!r}) while {what}")
        content = channel.read_exactly(length + padding, what)[:length]
        return record_type, request_id, content

    def _read_response(self):
        stdout, stderr = bytearray(), bytearray()
        channel = self._channel
        while True:
            record_type, request_id, content = self._read_record("reading the response")
            if record_type == FCGI_UNKNOWN_TYPE:
                raise channel.protocol_error("answered FCGI_UNKNOWN_TYPE: it does not "
                                    f"understand record type {content[:1]!r}")
            if request_id != 1:
                raise channel.protocol_error(f"sent a record for request id {request_id}, "
                                    "but only request 1 was sent")
            if record_type == FCGI_STDOUT:
                stdout += content
            elif record_type == FCGI_STDERR:
                stderr += content
            elif record_type == FCGI_END_REQUEST:
                if len(content) < 8:
                    raise channel.protocol_error("sent a short FCGI_END_REQUEST record")
                _app_status, protocol_status = struct.unpack_from(">IB", content)
                if protocol_status in FCGI_REFUSALS:
                    raise channel.error(
                        f"refused the request ({FCGI_REFUSALS[protocol_status]})")
                break
            else:
                raise channel.protocol_error(f"sent an unexpected record of type {record_type}")
        if not stdout:
            raise channel.protocol_error("ended the request without any output")
        status, reason, headers, body = _parse_cgi_response(bytes(stdout), channel.where)
        return Response(status, reason, headers, body, bytes(stderr))

    def get_values(self, names):
        """Ask FCGI_GET_VALUES for ``names``; return the ``{name: value}`` answered."""
        channel = self._channel
        channel.check_open()
        query = encode_pairs({name: b"" for name in names})
        channel.send(_fcgi_record(FCGI_GET_VALUES, query, request_id=0))
        record_type, request_id, content = self._read_record("reading FCGI_GET_VALUES_RESULT")
        if record_type != FCGI_GET_VALUES_RESULT or request_id != 0:
            raise channel.protocol_error(f"answered FCGI_GET_VALUES with a record of type "
                                f"{record_type} for request id {request_id}")
        try:
            return decode_pairs(content)
        except ValueError as exc:
            raise channel.protocol_error(f"sent {exc} in FCGI_GET_VALUES_RESULT") from None


def get_values(address, names=("FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"),
               timeout=10.0):
    """Return the server's answer to FCGI_GET_VALUES as ``{name: value}``.

    Servers answer only the names they know; the answer may be empty.
    """
    with FastCGIConnection(address, timeout) as conn:
        return conn.get_values(names)


# -- SCGI ------------------------------------------------------------------------


def _scgi_request(address, method, path, query, headers, body, params, timeout):
    body = _as_bytes(body)
    env = cgi_params(method, path, query, _header_pairs(headers), body, params)
    # SCGI wants CONTENT_LENGTH first, always present, and SCGI=1.
    env.pop("CONTENT_LENGTH", None)
    env.pop("SCGI", None)
    items = [(b"CONTENT_LENGTH", str(len(body)).encode()), (b"SCGI", b"1")]
    items += [(name.encode("latin-1"), value) for name, value in env.items()]
    block = b"".join(name + b"\0" + value + b"\0" for name, value in items)
    channel = _Channel(address, timeout)
    try:
        channel.send(b"%d:%s," % (len(block), block) + body)
        # The server closes the connection to mark the end of the answer.
        data = channel.read_to_end("reading the response")
    finally:
        channel.close()
    if not data:
        raise ConnectionClosed(f"{channel.where} closed the connection without answering",
                               address)
    status, reason, response_headers, response_body = _parse_cgi_response(
        data, channel.where)
    return Response(status, reason, response_headers, response_body)


# -- AJP13 -----------------------------------------------------------------------

AJP_TO_CONTAINER = b"\x12\x34"  # packets from the web server start with 0x1234
AJP_FROM_CONTAINER = b"AB"  # and packets from the container with "AB"
AJP_MAX_PACKET = 8192
AJP_MAX_PAYLOAD = AJP_MAX_PACKET - 4
AJP_MAX_DATA = AJP_MAX_PAYLOAD - 2  # a body packet spends 2 bytes on its own length

AJP_FORWARD_REQUEST = 2
AJP_CPING = 10
AJP_SEND_BODY_CHUNK = 3
AJP_SEND_HEADERS = 4
AJP_END_RESPONSE = 5
AJP_GET_BODY_CHUNK = 6
AJP_CPONG = 9

AJP_METHODS = {
    name: code for code, name in enumerate(
        "OPTIONS GET HEAD POST PUT DELETE TRACE PROPFIND PROPPATCH MKCOL COPY MOVE "
        "LOCK UNLOCK ACL REPORT VERSION-CONTROL CHECKIN CHECKOUT UNCHECKOUT SEARCH "
        "MKWORKSPACE UPDATE LABEL MERGE BASELINE-CONTROL MKACTIVITY".split(), start=1)
}
AJP_STORED_METHOD = 0xFF  # any other method: its name goes in attribute 0x0D

AJP_REQUEST_HEADERS = {
    name: 0xA000 + code for code, name in enumerate(
        "accept accept-charset accept-encoding accept-language authorization "
        "connection content-type content-length cookie cookie2 host pragma "
        "referer user-agent".split(), start=1)
}
AJP_RESPONSE_HEADERS = {
    0xA000 + code: name for code, name in enumerate(
        "Content-Type Content-Language Content-Length Date Last-Modified Location "
        "Set-Cookie Set-Cookie2 Servlet-Engine Status WWW-Authenticate".split(), start=1)
}

AJP_ATTRIBUTE_QUERY_STRING = 0x05
AJP_ATTRIBUTE_REQ_ATTRIBUTE = 0x0A  # a named attribute: name, then value
AJP_ATTRIBUTE_SECRET = 0x0C
AJP_ATTRIBUTE_STORED_METHOD = 0x0D
AJP_ATTRIBUTES_END = 0xFF

# CGI variables that are fields of the forward request; any other variable in
# ``params`` is sent as a named request attribute, as mod_proxy_ajp sends AJP_*.
AJP_FIELDS = {"REQUEST_METHOD", "SERVER_PROTOCOL", "REQUEST_URI", "REMOTE_ADDR",
              "REMOTE_HOST", "SERVER_NAME", "SERVER_PORT", "HTTPS", "QUERY_STRING"}


def _ajp_string(value):
    if value is None:
        return b"\xff\xff"  # AJP's null string
    data = _as_bytes(value)
    return struct.pack(">H", len(data)) + data + b"\0"


def _ajp_packet(payload):
    return AJP_TO_CONTAINER + struct.pack(">H", len(payload)) + payload


class AJPConnection:
    """One AJP13 connection; like Apache's, it can carry requests one after another."""

    def __init__(self, address, timeout=10.0):
        self.address = address
        self.timeout = timeout
        self._channel = _Channel(address, timeout)
        self.reusable = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self._channel.close()

    def cping(self):
        """Send CPING; return True if the container answers CPONG."""
        self._channel.check_open()
        if not self._channel.send(_ajp_packet(bytes([AJP_CPING]))):
            return False
        try:
            packet_type, _ = self._read_packet("waiting for CPONG")
        except (ConnectionClosed, ProtocolError):
            return False
        return packet_type == AJP_CPONG

    def request(self, method="GET", path="/", query="", headers=None, body=b"",
                params=None, secret=None):
        """Send one forward request and return its ``Response``."""
        channel = self._channel
        if not self.reusable:
            raise channel.error("said at END_RESPONSE that this connection "
                                "cannot be reused")
        channel.check_open()
        started = time.perf_counter()
        body = _as_bytes(body)
        forward = self._forward_request(method, path, query, _header_pairs(headers),
                                        body, params or {}, secret)
        # The first body packet follows the request unasked; the rest go out
        # only as the container asks for them with GET_BODY_CHUNK.
        first, sent = b"", 0
        if body:
            first = body[:AJP_MAX_DATA]
            sent = len(first)
            first = _ajp_packet(struct.pack(">H", len(first)) + first)
        channel.send(forward + first)
        try:
            response = self._read_response(body, sent)
        except struct.error:
            raise channel.protocol_error("sent a truncated AJP packet") from None
        response.elapsed = time.perf_counter() - started
        return response

    def _read_response(self, body, sent):
        """Read packets up to END_RESPONSE, handing out the body as asked."""
        channel = self._channel
        status = reason = None
        headers, chunks = [], []
        while True:
            packet_type, payload = self._read_packet("reading the response")
            if packet_type == AJP_SEND_HEADERS:
                status, reason, headers = self._parse_headers(payload)
            elif packet_type == AJP_SEND_BODY_CHUNK:
                (size,) = struct.unpack_from(">H", payload, 1)
                chunks.append(payload[3:3 + size])
            elif packet_type == AJP_GET_BODY_CHUNK:
                (wanted,) = struct.unpack_from(">H", payload, 1)
                piece = body[sent:sent + min(wanted, AJP_MAX_DATA)]
                sent += len(piece)
                # An empty data packet tells the container the body is over.
                channel.send(_ajp_packet(struct.pack(">H", len(piece)) + piece
                                         if piece else b""))
            elif packet_type == AJP_END_RESPONSE:
                self.reusable = payload[1:2] == b"\x01"
                break
            else:
                raise channel.protocol_error(
                    f"sent an unexpected AJP packet of type {packet_type}")
        if status is None:
            raise channel.protocol_error("ended the response without sending headers")
        return Response(status, reason, headers, b"".join(chunks))

    def _forward_request(self, method, path, query, headers, body, params, secret):
        method = method.upper()
        fields = {
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_HOST": None, "SERVER_NAME": "localhost", "SERVER_PORT": "80",
            "HTTPS": "", "QUERY_STRING": query,
            "REQUEST_URI": _request_uri(path, "")}
        fields.update((name, value) for name, value in params.items() if name in AJP_FIELDS)
        code = AJP_METHODS.get(method, AJP_STORED_METHOD)
        out = bytearray([AJP_FORWARD_REQUEST, code])
        for name in ("SERVER_PROTOCOL", "REQUEST_URI", "REMOTE_ADDR", "REMOTE_HOST",
                     "SERVER_NAME"):
            out += _ajp_string(fields[name])
        out += struct.pack(">H?", int(fields["SERVER_PORT"]),
                           str(fields["HTTPS"]).lower() in ("on", "1"))

        headers = list(headers)
        names = {name.lower() for name, _ in headers}
        if "host" not in names:
            headers.insert(0, ("Host", fields["SERVER_NAME"]))
        if "content-length" not in names and (body or method in ("POST", "PUT", "PATCH")):
            headers.append(("Content-Length", str(len(body))))
        out += struct.pack(">H", len(headers))
        for name, value in headers:
            coded = AJP_REQUEST_HEADERS.get(name.lower())
            out += struct.pack(">H", coded) if coded else _ajp_string(name)
            out += _ajp_string(value)

        if fields["QUERY_STRING"]:
            out += bytes([AJP_ATTRIBUTE_QUERY_STRING]) + _ajp_string(fields["QUERY_STRING"])
        if code == AJP_STORED_METHOD:
            out += bytes([AJP_ATTRIBUTE_STORED_METHOD]) + _ajp_string(method)
        if secret is not None:
            out += bytes([AJP_ATTRIBUTE_SECRET]) + _ajp_string(secret)
        for name, value in params.items():
            if name not in AJP_FIELDS and value is not None:
                out += (bytes([AJP_ATTRIBUTE_REQ_ATTRIBUTE]) + _ajp_string(name)
                        + _ajp_string(value))
        out.append(AJP_ATTRIBUTES_END)
        if len(out) > AJP_MAX_PAYLOAD:
            raise ClientError(
                f"the request's headers take {len(out)} bytes, more than fit in "
                f"one AJP packet ({AJP_MAX_PAYLOAD}); send fewer or shorter headers",
                self.address)
        return _ajp_packet(bytes(out))

    def _read_packet(self, what):
        channel = self._channel
        header = channel.read_exactly(4, what)
        if header[:2] != AJP_FROM_CONTAINER:
            raise channel.protocol_error(f"sent something that is not an AJP packet "
                                f"(first bytes {header!r}) while {what}")
        (size,) = struct.unpack_from(">H", header, 2)
        if size == 0:
            raise channel.protocol_error(f"sent an empty AJP packet while {what}")
        payload = channel.read_exactly(size, what)
        return payload[0], payload

    def _parse_headers(self, payload):
        """Decode SEND_HEADERS into (status, reason, [(name, value), ...])."""
        pos = 1

        def string():
            nonlocal pos
            (size,) = struct.unpack_from(">H", payload, pos)
            pos += 2
            if size == 0xFFFF:
                return ""
            text = payload[pos:pos + size].decode("latin-1")
            pos += size + 1  # the string's trailing NUL
            return text

        try:
            (status,) = struct.unpack_from(">H", payload, pos)
            pos += 2
            reason = string()
            (count,) = struct.unpack_from(">H", payload, pos)
            pos += 2
            headers = []
            for _ in range(count):
                (coded,) = struct.unpack_from(">H", payload, pos)
                if coded in AJP_RESPONSE_HEADERS:
                    name = AJP_RESPONSE_HEADERS[coded]
                    pos += 2
                else:
                    name = string()
                headers.append((name, string()))
        except struct.error:
            raise self._channel.protocol_error("sent a truncated SEND_HEADERS packet") from None
        if not reason:
            reason = _split_status(str(status), self._channel.where)[1]
        return status, reason, headers


def ajp_cping(address, timeout=10.0):
    """Return True if an AJP13 container at ``address`` answers CPING with CPONG.

    Return False if something else answers there (or it hangs up); raise
    ClientError if nothing listens or it does not answer within ``timeout``.
    """
    with AJPConnection(address, timeout) as conn:
        return conn.cping()

