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
    PKTTYPE_END_RESPONSE,
    PKTTYPE_SEND_BODY,
    PKTTYPE_SEND_HEADERS,
    attributeTable,
    decodeRequestHeader,
    decodeString,
    encodeResponseHeader,
    encodeString,
    methodTable,
)

from .base import Parked, ProtocolError, ProtocolHandler, describe_peer, log, send_all

FLUSH_THRESHOLD = 256 * 1024
# Largest body chunk in one packet: 8 KiB packet - 4 header - 3 type and
# length - 1 trailing NUL (Apache's default max_packet_size is 8 KiB).
MAX_CHUNK = 8192 - 4 - 3 - 1

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


class AJPRequest(ajp_base.Request):
    def run(self):
        environ = self.server_handler.base_environ(self.environ, self.input)
        self.server_handler.serve_request(environ, AJPTransport(self._conn))
        # End of response; 1 = the connection may be reused.
        self._conn.queue_packet(PKTTYPE_END_RESPONSE, b"\x01")
        self._conn.flush()

    @property
    def server_handler(self):
        return self._conn.server


class AJPConnection(ajp_base.Connection):
    def __init__(self, sock, addr, server, timeout):
        super().__init__(sock, addr, server, timeout)
        self._outbox = []
        self._outbox_size = 0
        self._first = True

    def run(self):
        try:
            while True:
                self.processInput()
        except Parked as exc:
            exc.conn = self  # Still open: the pool resumes it with run().
            raise
        except EOFError:
            pass
        except ajp_base.ProtocolError as exc:
            raise ProtocolError(str(exc)) from None
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed AJP packet ({exc.__class__.__name__}: {exc})")

    def processInput(self):
        if self._request is None:
            # Between requests: idle timeout, and close at once on stop.
            if not self.server.wait_for_request(self._sock, self._first):
                raise EOFError
            self._first = False
        super().processInput()

    def _forwardRequest(self, pkt):
        req = self.server.requestClass(self)
        req.secret = None
        parse_forward_request(req, pkt.data)
        if not self._secret_matches(req.secret):
            self._refuse(req)
            raise EOFError  # Closes the connection (see run).
        self._request = req
        try:
            if req.input.bytesAvailForAdd():
                self.processInput()  # Apache sends the first body chunk unasked.
            req.run()
        finally:
            self._request = None

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
        self.flush()
        # Unread body packets must not turn the close into a reset.
        self.server.linger_close(self._sock)

    def _processBody(self, pkt):
        length = struct.unpack(">H", pkt.data[:2])[0] if pkt.length >= 2 else 0
        data = pkt.data[2:2 + length]
        stream = self._request.input
        if not data:
            # An empty body packet: the web server has no more body to send.
            stream.setDataLength(stream._avail)
            return
        stream.addData(data)

    def _shutdown(self, pkt):
        log.info("ajp: the web server sent a SHUTDOWN packet; ignored")

    def queue_packet(self, *parts):
        length = sum(len(part) for part in parts)
        self._outbox.append(CONTAINER_PREFIX + struct.pack(">H", length))
        self._outbox.extend(parts)
        self._outbox_size += 4 + length
        if self._outbox_size >= FLUSH_THRESHOLD:
            self.flush()

    def writePacket(self, pkt):
        # flup's callers (GET_BODY, CPONG) expect the packet on the wire now.
        self.queue_packet(pkt.data)
        self.flush()

    def flush(self):
        if self._outbox:
            data = b"".join(self._outbox)
            self._outbox, self._outbox_size = [], 0
            send_all(self._sock, data)


class AJPHandler(ProtocolHandler, ajp_base.BaseAJPServer):
    protocol = "ajp"
    requestClass = AJPRequest
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

    def run_connection(self, sock, addr):
        AJPConnection(sock, addr, self, None).run()
