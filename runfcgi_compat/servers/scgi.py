"""SCGI on top of flup's SCGI classes, with its defects fixed.

SCGI is simple (one netstring of headers, the body, a CGI-style response,
close), so little of flup's code survives here: flup's ``Connection`` is
subclassed but its ``run``/``processInput`` are replaced because they

* log one stderr line per request and a traceback for every client abort;
* trust the netstring length (10**12 made the server allocate until
  MemoryError) and read it one ``recv(1)`` at a time;
* give the app the raw socket file as ``wsgi.input``, where ``read()``
  without a size waits for an EOF the web server never sends;
* only allow 127.0.0.1 by default, which refuses IPv6 and makes no sense
  for UNIX sockets (the handler checks FCGI_WEB_SERVER_ADDRS instead).
"""
from flup.server import scgi_base

from .base import Parked, ProtocolError, ProtocolHandler, encode_head, read_some, send_all

# nginx and Apache send a few KiB of headers; anything far larger is garbage
# or an attack, and must not be allocated.
MAX_HEADER_BYTES = 1024 * 1024
FLUSH_THRESHOLD = 256 * 1024


READ_SIZE = 65536


class SocketReader:
    """A read buffer over the connection: one ``recv`` normally takes the
    whole request (netstring and body); more are made only when needed,
    each bounded by the handler's wait (``wait(sock)`` -> False: timeout)."""

    def __init__(self, sock, wait):
        self._sock = sock
        self._wait = wait
        self._buf = b""
        self._pos = 0
        self.eof = False

    def buffered(self):
        return len(self._buf) - self._pos

    def fill(self, need):
        """Have at least ``need`` unread bytes; False if EOF came first."""
        while len(self._buf) - self._pos < need:
            if self.eof:
                return False
            data = read_some(self._sock, max(READ_SIZE, need - self.buffered()), self._wait)
            if not data:
                self.eof = True
                return False
            self._buf = self._buf[self._pos:] + data if self._buf else data
            self._pos = 0
        return True

    def peek(self, size):
        return self._buf[self._pos:self._pos + size]

    def take(self, size):
        data = self._buf[self._pos:self._pos + size]
        self._pos += len(data)
        if self._pos == len(self._buf):
            self._buf, self._pos = b"", 0
        return data

    def read(self, size):
        """Up to ``size`` bytes, fewer only at EOF."""
        if self.buffered() >= size:
            return self.take(size)
        parts = [self.take(size)]
        left = size - len(parts[0])
        while left > 0 and not self.eof:
            data = read_some(self._sock, max(READ_SIZE, left), self._wait)
            if not data:
                self.eof = True
                break
            if len(data) > left:
                self._buf, self._pos = data, left
                data = data[:left]
            parts.append(data)
            left -= len(data)
        return b"".join(parts)

    def readline(self, size):
        """Up to ``size`` bytes, up to and including the first newline."""
        scanned = 0
        while True:
            available = self.buffered()
            end = self._buf.find(b"\n", self._pos + scanned, self._pos + min(available, size))
            if end >= 0:
                return self.take(end + 1 - self._pos)
            if available >= size or not self.fill(available + 1):
                return self.take(size)
            scanned = available


class LimitedInput:
    """``wsgi.input`` that ends after CONTENT_LENGTH bytes."""

    def __init__(self, rfile, length):
        self._rfile = rfile
        self._left = length

    def read(self, size=-1):
        if size is None or size < 0 or size > self._left:
            size = self._left
        data = self._rfile.read(size) if size else b""
        self._left -= len(data)
        return data

    def readline(self, size=-1):
        if size is None or size < 0 or size > self._left:
            size = self._left
        line = self._rfile.readline(size) if size else b""
        self._left -= len(line)
        return line

    def readlines(self, hint=-1):
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return iter(self.readline, b"")


def read_netstring(reader, limit):
    """Read ``<length>:<bytes>,`` from a ``SocketReader``; EOFError at EOF."""
    most = len(str(limit))
    while True:
        head = reader.peek(most + 1)
        colon = head.find(b":")
        if colon >= 0:
            digits = head[:colon]
            if digits and not digits.isdigit():
                raise ProtocolError(f"invalid SCGI netstring length {digits[:20]!r}")
            break
        if head and (not head.isdigit() or len(head) > most):
            raise ProtocolError(f"invalid SCGI netstring length {head[:20]!r}")
        if not reader.fill(len(head) + 1):
            if head:
                raise ProtocolError("connection closed inside the SCGI header length")
            raise EOFError
    if not digits:
        raise ProtocolError("empty SCGI netstring length")
    size = int(digits)
    if size > limit:
        raise ProtocolError(f"SCGI headers of {digits.decode()} bytes (limit {limit})")
    reader.take(colon + 1)
    if not reader.fill(size + 1):
        if reader.buffered() < size:
            raise ProtocolError("connection closed inside the SCGI headers")
        raise ProtocolError("SCGI netstring does not end with ','")
    data = reader.take(size)
    if reader.take(1) != b",":
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
    def __init__(self, sock):
        self._sock = sock
        self._outbox = []
        self._size = 0

    def send_head_and_body(self, status, headers, body):
        self._outbox.append(encode_head(status, headers))
        self.send_body(body)

    def send_body(self, body):
        if body:
            self._outbox.append(body)
            self._size += len(body)
            if self._size >= FLUSH_THRESHOLD:
                self.flush()

    def flush(self):
        if self._outbox:
            data = b"".join(self._outbox)
            self._outbox, self._size = [], 0
            send_all(self._sock, data)


class SCGIConnection(scgi_base.Connection):
    """One request per connection."""

    def run(self):
        try:
            if not self.server.wait_for_request(self._sock, first=True):
                return
        except Parked as exc:
            exc.conn = self  # Nothing read yet: run() starts again later.
            raise
        try:
            self.processInput()
        except EOFError:
            return

    def processInput(self):
        sock = self._sock
        reader = SocketReader(sock, self.server.wait_for_data)
        environ = parse_headers(read_netstring(reader, MAX_HEADER_BYTES))
        try:
            length = int(environ["CONTENT_LENGTH"])
            if length < 0:
                raise ValueError
        except KeyError:
            raise ProtocolError("SCGI request without CONTENT_LENGTH") from None
        except ValueError:
            raise ProtocolError(
                f"invalid CONTENT_LENGTH {environ['CONTENT_LENGTH']!r}") from None
        body = LimitedInput(reader, length)
        environ = self.server.base_environ(environ, body)
        transport = SCGITransport(sock)
        self.server.serve_request(environ, transport)
        transport.flush()
        if reader.eof or (body._left == 0 and not reader.buffered()):
            # The whole request was read (or the peer has closed): nothing
            # unread can turn close() into a reset under the response.
            sock.close()
        else:
            # The end of the response is our EOF; wait for the peer's so
            # unread body bytes do not reset the connection under it.
            self.server.linger_close(sock)


class SCGIHandler(ProtocolHandler, scgi_base.BaseSCGIServer):
    protocol = "scgi"

    def __init__(self, *, debug=False, multithreaded=False, multiprocess=True, max_conns=1,
                 allowed_peers=None):
        scgi_base.BaseSCGIServer.__init__(
            self, None, multithreaded=multithreaded, multiprocess=multiprocess,
            bindAddress=None, allowedServers=None, debug=debug,
        )
        self.setup_handler(debug=debug, multithreaded=multithreaded,
                           multiprocess=multiprocess, max_conns=max_conns,
                           allowed_peers=allowed_peers)

    def run_connection(self, sock, addr):
        SCGIConnection(sock, addr, self, None).run()
