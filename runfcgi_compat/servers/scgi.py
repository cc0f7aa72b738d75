"""SCGI on top of flup's SCGI classes, with its defects fixed.

SCGI is simple (one netstring of headers, the body, a CGI-style response,
close), so little of flup's code survives here: flup's ``Connection`` is
subclassed but its ``run``/``processInput`` are replaced because they

* log one stderr line per request and a traceback for every client abort;
* trust the netstring length (10**12 made the server allocate until
  MemoryError) and read it one ``recv(1)`` at a time;
* give the app the raw socket file as ``wsgi.input``, where ``read()``
  without a size waits for an EOF the web server never sends (ours ends
  after CONTENT_LENGTH bytes: ``body.LimitedInput``);
* only allow 127.0.0.1 by default, which refuses IPv6 and makes no sense
  for UNIX sockets (the handler applies ``peers.py``'s rule instead, the
  same for the three protocols).
"""
from flup.server import scgi_base

from .base import CLOSE, Connection, ProtocolError, ProtocolHandler, encode_head

# nginx and Apache send a few KiB of headers; anything far larger is garbage
# or an attack, and must not be allocated.
MAX_HEADER_BYTES = 1024 * 1024


def read_netstring(conn, limit):
    """Cut ``<length>:<bytes>,`` from what has arrived on ``SCGIConnection``
    ``conn``; None until all of it has.  EOFError at EOF before any byte."""
    most = len(str(limit))
    while True:
        head = conn.peek(most + 1)
        colon = head.find(b":")
        if colon >= 0:
            digits = head[:colon]
            if digits and not digits.isdigit():
                raise ProtocolError(f"invalid SCGI netstring length {digits[:20]!r}")
            break
        if head and (not head.isdigit() or len(head) > most):
            raise ProtocolError(f"invalid SCGI netstring length {head[:20]!r}")
        if not conn.gather(len(head) + 1, "the SCGI header length" if head else None):
            return None
    if not digits:
        raise ProtocolError("empty SCGI netstring length")
    size = int(digits)
    if size > limit:
        raise ProtocolError(f"SCGI headers of {digits.decode()} bytes (limit {limit})")
    if not conn.gather(colon + 1 + size + 1, "the SCGI headers"):
        return None
    conn.take(colon + 1)
    data = conn.take(size)
    if conn.take(1) != b",":
        raise ProtocolError("SCGI netstring does not end with ','")
    return data


def parse_headers(data):
    """Split ``name NUL value NUL ...`` into a dict of latin-1 strings."""
    if data and not data.endswith(b"\0"):
        raise ProtocolError("SCGI headers do not end with a NUL byte")
    items = data.split(b"\0")[:-1]
    if len(items) % 2:
        raise ProtocolError("odd number of SCGI header fields")
    return {items[i].decode("latin-1"): items[i + 1].decode("latin-1")
            for i in range(0, len(items), 2)}


class SCGITransport:
    def __init__(self, conn):
        self.conn = conn

    def send_head_and_body(self, status, headers, body):
        self.conn.queue(encode_head(status, headers))
        self.send_body(body)

    def send_body(self, body):
        if body:
            self.conn.queue(body)

    def flush(self):
        self.conn.flush()


class SCGIConnection(Connection, scgi_base.Connection):
    """One request per connection."""

    def serve(self):
        header = read_netstring(self, MAX_HEADER_BYTES)
        if header is None:
            return self.incomplete()
        environ = parse_headers(header)
        if not environ.get("CONTENT_LENGTH"):
            # SCGI's one required header ("0" without a body): without it the
            # body would be the rest of the connection.  base_environ checks
            # that it is a length.
            raise ProtocolError("SCGI request without CONTENT_LENGTH")
        environ = self.server.base_environ(environ, self)
        body = environ["wsgi.input"]  # Ends after CONTENT_LENGTH bytes.
        self.server.serve_request(environ, SCGITransport(self))
        # The end of the response is our EOF.  Unless the whole request was
        # read (or the peer has closed), wait for the peer's, so unread body
        # bytes do not reset the connection under the response.
        self.close(linger=not (body._left == 0 and not self.buffered()))
        return CLOSE

    # -- reading, for read_netstring and the body (body.LimitedInput)

    def peek(self, size):
        return self._inbuf[self._inpos:self._inpos + size]

    def gather(self, need, inside=None):
        """True once ``need`` unread bytes have arrived, False while they
        have not: never waits.  At EOF: EOFError, or a ProtocolError naming
        where the request was cut (``inside``)."""
        try:
            while self.buffered() < need:
                if not self.read_now(need - self.buffered()):
                    return False
        except EOFError:
            if inside is None:
                raise
            raise ProtocolError(f"connection closed inside {inside}") from None
        return True

    def _more(self, size):
        """Wait (bounded) for more bytes inside the request; False at EOF."""
        if self.peer_closed:
            return False
        try:
            self.fill(self.buffered() + 1)
        except EOFError:
            return False
        return True

    def read(self, size):
        """Up to ``size`` bytes, fewer only at EOF."""
        parts = []
        while size > 0 and (self.buffered() or self._more(size)):
            part = self.take(size)
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def readline(self, size):
        """Up to ``size`` bytes, up to and including the first newline."""
        scanned = 0
        while True:
            available = self.buffered()
            end = self._inbuf.find(b"\n", self._inpos + scanned,
                                   self._inpos + min(available, size))
            if end >= 0:
                return self.take(end + 1 - self._inpos)
            if available >= size or not self._more(size):
                return self.take(size)
            scanned = available


class SCGIHandler(ProtocolHandler, scgi_base.BaseSCGIServer):
    protocol = "scgi"
    connection_class = SCGIConnection

    def __init__(self, *, debug=False, multithreaded=False, multiprocess=True, max_conns=1,
                 allowed_peers=None):
        scgi_base.BaseSCGIServer.__init__(
            self, None, multithreaded=multithreaded, multiprocess=multiprocess,
            bindAddress=None, allowedServers=None, debug=debug,
        )
        self.setup_handler(debug=debug, multithreaded=multithreaded,
                           multiprocess=multiprocess, max_conns=max_conns,
                           allowed_peers=allowed_peers)
