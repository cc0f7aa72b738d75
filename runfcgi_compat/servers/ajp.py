"""AJP 1.3 on top of flup's AJP classes, with its defects fixed.

Kept from flup: packet reading, the string/header decoders, the request
body stream (GET_BODY round trips) and the request's environ setters.
Changed, each in a subclass:

* The forward-request parser understands every attribute Apache sends,
  including ``secret`` (0x0C, sent when ``ProxyPass ... secret=`` is set;
  flup dropped the connection) and ``stored_method`` (0x0D).  The secret
  is never put in the environ.  With ``required_secret`` (the ``ajpsecret``
  option) a request without that secret is answered 403 and its connection
  closed, with one warning; without it any secret is accepted.
* An empty body packet ends the request body, as the AJP spec says (flup
  treated it as an error and dropped the connection).
* An exception that escapes the app is answered with status 500; flup sent
  "200 Internal Server Error".
* Writing: flup sends each packet with two ``send()`` calls and slices the
  remaining body after each packet (quadratic).  We queue packets built
  from memoryview slices and send them with one ``sendall`` per flush.
* Accepted UNIX and IPv6 sockets work (flup formatted ``addr[1]`` as a
  port and bound IPv4 only); no per-request log lines; client aborts are
  one log line.
* Kept connections wait for their next request with an idle timeout and
  close at once when the server stops.
"""
import hmac
import struct

from flup.server import ajp_base
from flup.server.ajp_base import (
    CONTAINER_PREFIX,
    PKTTYPE_CPING,
    PKTTYPE_END_RESPONSE,
    PKTTYPE_FWD_REQ,
    PKTTYPE_GET_BODY,
    PKTTYPE_PING,
    PKTTYPE_SEND_BODY,
    PKTTYPE_SEND_HEADERS,
    PKTTYPE_SHUTDOWN,
    SERVER_PREFIX,
    attributeTable,
    decodeRequestHeader,
    decodeString,
    encodeResponseHeader,
    encodeString,
    methodTable,
)

from .base import (
    CLOSE,
    KEEP,
    Connection,
    ProtocolError,
    ProtocolHandler,
    describe_peer,
    log,
)

# Largest body chunk in one packet: 8 KiB packet - 4 header - 3 type and
# length - 1 trailing NUL (Apache's default max_packet_size is 8 KiB).
MAX_CHUNK = 8192 - 4 - 3 - 1

# The largest body chunk a web server may send for one GET_BODY_CHUNK:
# Apache's ProxyIOBufferSize is at most 64 KiB (AJP_MAX_BUFFER_SZ), minus
# the 4-byte header and the 2-byte length.
MAX_PEER_CHUNK = 65536 - 6
# GET_BODY_CHUNK requests kept in flight while reading a request body.
BODY_WINDOW = 16
READ_SIZE = 65536 + 4

ATTR_NAMED = 0x0A
ATTR_SSL_KEY_SIZE = 0x0B
ATTR_SECRET = 0x0C
ATTR_STORED_METHOD = 0x0D
ATTR_END = 0xFF


def parse_forward_request(req, data):
    """Fill ``req`` (an AJPRequest) from a FORWARD_REQUEST packet body."""
    code = data[1]
    if 0 < code < len(methodTable):
        req.setMethod(methodTable[code])
    elif code == 0xFF:
        req.setMethod(b"GET")  # Replaced by the stored_method attribute.
    else:
        raise ProtocolError(f"unknown AJP method code {code}")
    pos = 2
    for setter in (req.setProtocol, req.setRequestURI, req.setRemoteAddr,
                   req.setRemoteHost, req.setServerName):
        value, pos = decodeString(data, pos)
        setter(value)
    port, is_ssl, header_count = struct.unpack(">HBH", data[pos:pos + 5])
    pos += 5
    req.setServerPort(port)
    req.setIsSSL(is_ssl != 0)
    for _ in range(header_count):
        name, value, pos = decodeRequestHeader(data, pos)
        req.addHeader(name, value)
    while True:
        code = data[pos]
        pos += 1
        if code == ATTR_END:
            break
        if code == ATTR_SSL_KEY_SIZE:
            (size,) = struct.unpack(">H", data[pos:pos + 2])
            pos += 2
            req.environ["SSL_KEY_SIZE"] = str(size)
            continue
        if code == ATTR_NAMED:
            name, pos = decodeString(data, pos)
        elif 0 < code < len(attributeTable) and attributeTable[code]:
            name = attributeTable[code]
        elif code not in (ATTR_SECRET, ATTR_STORED_METHOD):
            raise ProtocolError(f"unknown AJP request attribute 0x{code:02x}")
        value, pos = decodeString(data, pos)
        if code == ATTR_SECRET:
            # Proves the peer is our Apache; never show it to the app.
            req.secret = value
            continue
        if code == ATTR_STORED_METHOD:
            req.setMethod(value)
            continue
        req.addAttribute(name, value)


class AJPTransport:
    def __init__(self, conn):
        self.conn = conn

    def send_head_and_body(self, status, headers, body):
        encoded = [encodeResponseHeader(name.encode("latin-1"), value.encode("latin-1"))
                   for name, value in headers]
        self.conn.queue_packet(
            PKTTYPE_SEND_HEADERS, struct.pack(">H", int(status[:3])),
            encodeString(status[4:].encode("latin-1")),
            struct.pack(">H", len(encoded)), *encoded,
        )
        if body:
            self.send_body(body)

    def send_body(self, body):
        view = memoryview(body)
        for start in range(0, len(view), MAX_CHUNK):
            chunk = view[start:start + MAX_CHUNK]
            self.conn.queue_packet(PKTTYPE_SEND_BODY, struct.pack(">H", len(chunk)),
                                   chunk, b"\0")

    def flush(self):
        self.conn.flush()


class AJPInputStream(ajp_base.InputStream):
    """flup's body stream, asking for several body chunks ahead.

    flup asked for one chunk (8 KiB through Apache) and waited for it: an
    8 MiB upload took 1024 round trips.  The web server answers the
    GET_BODY_CHUNK requests in order, so several may be in flight; never
    more than the body can fill even if every answer is as large as a web
    server may make it, because a request past the end of the body is
    answered with an empty packet (and, past the request, would be read as
    the next request).
    """

    def __init__(self, conn):
        super().__init__(conn)
        self.asked = 0  # GET_BODY_CHUNK requests not answered yet.

    def _waitForData(self):
        missing = self.bytesAvailForAdd()
        assert missing > 0
        safe = min(BODY_WINDOW, -(-missing // MAX_PEER_CHUNK))
        more = max(safe - self.asked, 0 if self.asked else 1)
        if more:
            ask = PKTTYPE_GET_BODY + struct.pack(">H", min(missing, 0xFFFF))
            for _ in range(more):
                self._conn.queue_packet(ask)
            self._conn.flush()
            self.asked += more
        self._conn.read_body_packet()


class AJPRequest(ajp_base.Request):
    def __init__(self, conn):
        super().__init__(conn)
        self.input = AJPInputStream(conn)

    def run(self):
        environ = self.server_handler.base_environ(self.environ, self.input)
        self.server_handler.serve_request(environ, AJPTransport(self._conn))
        # End of response; 1 = the connection may be reused.
        self._conn.queue_packet(PKTTYPE_END_RESPONSE, b"\x01")
        self._conn.flush()

    @property
    def server_handler(self):
        return self._conn.server


class AJPConnection(Connection, ajp_base.Connection):
    read_size = READ_SIZE
    logger = log  # flup's _cping logs through it.
    _request = None  # The request being served (flup's name).

    def serve(self):
        """Answer the packets that have arrived until a request has been
        served (KEEP: Apache keeps AJP connections), or nothing more is
        here (KEEP)."""
        try:
            while True:
                if not self._has_packet():
                    if not self.read_now():
                        return self.incomplete()
                    continue
                data = self._read_packet()
                if not data:
                    raise ProtocolError("unexpected empty AJP packet")
                kind = data[0]
                if kind == PKTTYPE_FWD_REQ:
                    return self._forwardRequest(_Packet(data))
                if kind == PKTTYPE_SHUTDOWN:
                    self._shutdown(data)
                elif kind == PKTTYPE_CPING:
                    self._cping(None)
                elif kind != PKTTYPE_PING:
                    raise ProtocolError(f"unknown AJP packet type {kind}")
        except ajp_base.ProtocolError as exc:
            raise ProtocolError(str(exc)) from None
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed AJP packet ({exc.__class__.__name__}: {exc})")

    def read_body_packet(self):
        self._processBody(self._read_packet())

    def _has_packet(self):
        """True if a whole packet is already buffered."""
        pos, unread = self._inpos, self.buffered()
        if unread < 4:
            return False
        if self._inbuf[pos:pos + 2] != SERVER_PREFIX:
            raise ProtocolError("invalid AJP packet header")
        (length,) = struct.unpack_from(">H", self._inbuf, pos + 2)
        return unread >= 4 + length

    def _read_packet(self):
        """The next packet's payload (inside a request, waiting for it)."""
        self.fill(4)
        pos = self._inpos
        if self._inbuf[pos:pos + 2] != SERVER_PREFIX:
            raise ProtocolError("invalid AJP packet header")
        (length,) = struct.unpack_from(">H", self._inbuf, pos + 2)
        self.fill(4 + length)
        pos = self._inpos
        data = self._inbuf[pos + 4:pos + 4 + length]
        self._inpos = pos + 4 + length
        return data

    def _forwardRequest(self, pkt):
        req = self.server.requestClass(self)
        req.secret = None
        parse_forward_request(req, pkt.data)
        if not self._secret_matches(req.secret):
            self._refuse(req)
            return CLOSE
        self._request = req
        try:
            if req.input.bytesAvailForAdd():
                self.read_body_packet()  # Apache sends the first body chunk unasked.
            req.run()
            # Answers to body requests still in flight (the app did not read
            # the whole body) must not be taken for the next request.
            while req.input.asked:
                self.read_body_packet()
        finally:
            self._request = None
        self.fresh = False
        return KEEP

    def _secret_matches(self, given):
        expected = self.server.required_secret
        if expected is None:
            return True
        if given is None:
            return False
        # Constant time: the comparison must not tell how much was right.
        return hmac.compare_digest(given, expected.encode("latin-1"))

    def _refuse(self, req):
        why = "without the" if req.secret is None else "with a wrong"
        log.warning("ajp: request from %s refused: it came %s secret (ajpsecret)",
                    describe_peer(self._sock, self._addr), why)
        body = b"Forbidden\n"
        AJPTransport(self).send_head_and_body(
            "403 Forbidden", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))], body)
        self.queue_packet(PKTTYPE_END_RESPONSE, b"\x00")  # 0: do not reuse.
        # Unread body packets must not turn the close into a reset.
        self.close(linger=True)

    def _processBody(self, payload):
        length = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 0
        data = payload[2:2 + length]
        stream = self._request.input
        if stream.asked:
            stream.asked -= 1
        if not data:
            # An empty body packet: the web server has no more body to send.
            stream.setDataLength(stream._avail)
            return
        stream.addData(data)

    def _shutdown(self, pkt):
        log.info("ajp: the web server sent a SHUTDOWN packet; ignored")

    def queue_packet(self, *parts):
        self.queue(CONTAINER_PREFIX + struct.pack(">H", sum(len(part) for part in parts)))
        for part in parts:
            self.queue(part)

    def writePacket(self, pkt):
        # flup's callers (GET_BODY, CPONG) expect the packet on the wire now.
        self.queue_packet(pkt.data)
        self.flush()


class _Packet:
    """What flup's parsers expect: ``data`` and ``length``."""

    __slots__ = ("data", "length")

    def __init__(self, data):
        self.data = data
        self.length = len(data)


class AJPHandler(ProtocolHandler, ajp_base.BaseAJPServer):
    protocol = "ajp"
    requestClass = AJPRequest
    connection_class = AJPConnection
    # The ``ajpsecret`` option: requests must carry this secret attribute.
    required_secret = None

    def __init__(self, *, debug=False, multithreaded=False, multiprocess=True, max_conns=1,
                 allowed_peers=None):
        ajp_base.BaseAJPServer.__init__(
            self, None, multithreaded=multithreaded, multiprocess=multiprocess,
            bindAddress=None, allowedServers=None, debug=debug,
        )
        self.setup_handler(debug=debug, multithreaded=multithreaded,
                           multiprocess=multiprocess, max_conns=max_conns,
                           allowed_peers=allowed_peers)
