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

from .base import Parked, ProtocolError, ProtocolHandler, encode_head, send_all

# nginx and Apache send a few KiB of headers; anything far larger is garbage
# or an attack, and must not be allocated.
MAX_HEADER_BYTES = 1024 * 1024
FLUSH_THRESHOLD = 256 * 1024


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


def read_netstring(rfile, limit):
    """Read ``<length>:<bytes>,`` from a buffered file; EOFError at EOF."""
    digits = b""
    while True:
        char = rfile.read(1)
        if not char:
            if digits:
                raise ProtocolError("connection closed inside the SCGI header length")
            raise EOFError
        if char == b":":
            break
        digits += char
        if not char.isdigit() or len(digits) > len(str(limit)):
            raise ProtocolError(f"invalid SCGI netstring length {digits[:20]!r}")
    if not digits:
        raise ProtocolError("empty SCGI netstring length")
    size = int(digits)
    if size > limit:
        raise ProtocolError(f"SCGI headers of {digits.decode()} bytes (limit {limit})")
    data = rfile.read(size)
    if len(data) < size:
        raise ProtocolError("connection closed inside the SCGI headers")
    if rfile.read(1) != b",":
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
        rfile = self._sock.makefile("rb")
        try:
            environ = parse_headers(read_netstring(rfile, MAX_HEADER_BYTES))
            try:
                length = int(environ["CONTENT_LENGTH"])
                if length < 0:
                    raise ValueError
            except KeyError:
                raise ProtocolError("SCGI request without CONTENT_LENGTH") from None
            except ValueError:
                raise ProtocolError(
                    f"invalid CONTENT_LENGTH {environ['CONTENT_LENGTH']!r}") from None
            environ = self.server.base_environ(environ, LimitedInput(rfile, length))
            transport = SCGITransport(self._sock)
            self.server.serve_request(environ, transport)
            transport.flush()
        finally:
            rfile.close()
        # The end of the response is our EOF; wait for the peer's so unread
        # body bytes do not reset the connection under the response.
        self.server.linger_close(self._sock)


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
