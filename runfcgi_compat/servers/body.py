"""``wsgi.input``: the request body as the app reads it, for every protocol.

PEP 3333 lets the app read up to CONTENT_LENGTH and no further, with
``read(size)``, ``read()``, ``readline(size)``, ``readlines(hint)`` and
iteration; ``wsgiref.validate`` checks the calls and that each returns
bytes.  What the protocols hand over does not keep that by itself:

* FastCGI's body (FCGI_STDIN) ends with its own empty record, which need
  not agree with CONTENT_LENGTH, and a server may send no CONTENT_LENGTH
  at all (or only the HTTP_CONTENT_LENGTH header, see ``environ.py``);
* flup's FastCGI and AJP streams return more than ``size`` bytes from
  ``readline(size)`` when the line is longer;
* SCGI's body is the rest of the connection, which never ends by itself.

So the body ends after CONTENT_LENGTH bytes, or, when the web server sent
no length, where the protocol says the body ends (FastCGI's empty
FCGI_STDIN record, AJP's empty body packet); SCGI always sends one.

A body that ends before CONTENT_LENGTH is broken, not short: the FastCGI
specification tells the application to compare the two and abort.  It
happens when a web server resends a request to another backend after the
first died mid-upload (Apache's mod_proxy_fcgi sent only the part the
dead one had not taken, under the whole CONTENT_LENGTH).  Such a body
raises ``BodyCut`` -- before the app runs when the body came whole, at the
read that finds the end otherwise -- and the server treats it as a peer
that went away: the connection breaks and the web server reports a failed
request, where the app would have seen a truncated form or upload.
"""
import io
import sys


class BodyCut(ConnectionAbortedError):
    """The request body ended before CONTENT_LENGTH bytes."""

    def __init__(self, length, got):
        super().__init__(f"the request body ended after {got} of its "
                         f"{length} bytes (CONTENT_LENGTH)")


def request_body(body, length):
    """Return the ``wsgi.input`` of a request.

    ``body`` is what the protocol has: bytes (the whole body, FastCGI read
    whole), or a stream whose ``read(n)`` returns n bytes, fewer only where
    the body ends.  ``length`` is CONTENT_LENGTH, or None.
    """
    if type(body) is bytes:
        if length is not None and length != len(body):
            if length > len(body):
                raise BodyCut(length, len(body))
            body = body[:length]
        return io.BytesIO(body)
    return LimitedInput(body, length)


class LimitedInput:
    """A body stream that ends after ``length`` bytes (None: where ``raw``
    ends), with lines cut here from what ``raw.read`` returns."""

    # readline takes at least this much from the stream at a time, and as
    # much again as it holds for a long line (linear, not quadratic).
    line_chunk = 8192

    def __init__(self, raw, length=None):
        self._raw = raw
        self._length = length
        self._left = length  # Not taken from raw yet; None: no limit.
        self._buf = b""  # Taken from raw by readline, not returned yet.

    def _take(self, size):
        """Up to ``size`` bytes (all, if negative) from raw, within the limit."""
        left = self._left
        if left is not None and (size < 0 or size > left):
            size = left
        if not size:
            return b""
        data = self._raw.read(size)
        if left is not None:
            if len(data) < size:  # raw ended before CONTENT_LENGTH.
                raise BodyCut(self._length, self._length - left + len(data))
            self._left = left - len(data)
        return data

    def read(self, size=-1):
        if size is None:
            size = -1
        buf = self._buf
        if not buf:
            return self._take(size)
        if 0 <= size <= len(buf):
            self._buf = buf[size:]
            return buf[:size]
        self._buf = b""
        return buf + self._take(size - len(buf) if size >= 0 else -1)

    def readline(self, size=-1):
        if size is None or size < 0:
            size = sys.maxsize
        buf, scanned = self._buf, 0
        while True:
            newline = buf.find(b"\n", scanned, size)
            if newline >= 0:
                end = newline + 1
                break
            if len(buf) >= size:
                end = size
                break
            scanned = len(buf)
            more = self._take(max(self.line_chunk, len(buf)))
            if not more:
                end = len(buf)
                break
            buf += more
        self._buf = buf[end:]
        return buf[:end]

    def readlines(self, hint=-1):
        if hint is None:
            hint = -1
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return iter(self.readline, b"")
