"""FastCGI over flup's record classes, with flup's Python 3 defects fixed.

What we keep from flup: record parsing and dispatch (``Connection``'s
``process_input`` and ``_do_*`` methods), the input streams, and the
request bookkeeping.  What we change, each in a subclass:

* Writing: flup sends every record with three ``send()`` calls and slices
  the remaining body (``data[n:]``) after each record, which is quadratic.
  ``FCGIConnection`` queues encoded records (memoryview slices, no copies)
  and sends them with one ``sendall`` per flush.
* FCGI_GET_VALUES: flup looks bytes names up among str keys and always
  answers nothing; our capability table has bytes keys.
* Malformed records (and HTTP sent to the FastCGI port) close the
  connection with one log line, instead of killing a prefork worker or
  leaving the connection hanging.
* FCGI_ABORT_REQUEST and a peer that hangs up stop the response.
* Parameters are limited to 1 MiB, and a repeated end of parameters no
  longer runs the app a second time, nested inside the first run.
* Kept connections (``fastcgi_keep_conn on``) wait for their next request
  with an idle timeout, and close at once when the server stops.
"""
import socket
import struct

from flup.server import fcgi_base
from flup.server.fcgi_base import (
    FCGI_HEADER_LEN, FCGI_Header, FCGI_REQUEST_COMPLETE, FCGI_RESPONDER,
    FCGI_STDERR, FCGI_STDOUT, FCGI_UNKNOWN_ROLE, FCGI_VERSION_1,
)

from .base import ClientGone, ProtocolError, ProtocolHandler, encode_head, log
from .signals import wait_readable

# Flush queued records once this many bytes are waiting: big enough to make
# syscalls rare, small enough that a huge body is never copied whole.
FLUSH_THRESHOLD = 256 * 1024

# nginx sends a few KiB of parameters; more than this is garbage or an
# attack, and flup would keep all of it in memory (as SCGI's limit).
MAX_PARAMS_BYTES = 1024 * 1024

# Errors flup's parsing raises on garbage (short BEGIN_REQUEST bodies,
# truncated name/value pairs).
MALFORMED = (struct.error, IndexError, ValueError, UnicodeDecodeError)


class RequestAborted(ClientGone):
    """FCGI_ABORT_REQUEST arrived, or the web server hung up."""


class FCGIOutputStream(fcgi_base.OutputStream):
    """FCGI_STDOUT/STDERR in linear time: memoryview slices, queued records."""

    def _write(self, data):
        view = memoryview(data)
        step = self._req.server.maxwrite - FCGI_HEADER_LEN
        for start in range(0, len(view), step):
            self._conn.queue_record(self._type, self._req.requestId,
                                    view[start:start + step])


class FCGIRequest(fcgi_base.Request):
    def __init__(self, conn, inputStreamClass, timeout):
        super().__init__(conn, inputStreamClass, timeout)
        self.params_size = 0
        self.params_done = False
        self.stdout = FCGIOutputStream(conn, self, FCGI_STDOUT)
        self.stderr = FCGIOutputStream(conn, self, FCGI_STDERR, buffered=True)

    def run(self):
        """Run the app, then end the request (flup's run minus its bugs)."""
        # Raises only when the connection is lost: then no END_REQUEST.
        protocol_status, app_status = self.server.handler(self)
        self.stdout.close()
        self.stderr.close()
        self._end(app_status, protocol_status)


class FCGITransport:
    """The ``base.Response`` transport for one FastCGI request."""

    def __init__(self, req):
        self.req = req

    def _check_abort(self):
        if self.req._conn.poll_for_abort(self.req):
            raise RequestAborted("request aborted by the web server")

    def send_head_and_body(self, status, headers, body):
        self._check_abort()
        self.req.stdout.write(encode_head(status, headers))
        if body:
            self.req.stdout.write(body)

    def send_body(self, body):
        self._check_abort()
        self.req.stdout.write(body)

    def flush(self):
        self.req._conn.flush()


class FCGIConnection(fcgi_base.Connection):
    """One web-server connection: flup's dispatch, our waiting and writing."""

    def __init__(self, sock, addr, server, timeout):
        super().__init__(sock, addr, server, timeout)
        self._outbox = []
        self._outbox_size = 0
        self._closed = False
        self.peer_closed = False

    # -- reading

    def run(self):
        self._keepGoing = True
        first = True
        try:
            while self._keepGoing:
                if not self._requests:
                    # Between requests: this is where an idle kept connection
                    # times out, and where a stop closes it.  Nothing is
                    # unread, so a plain close cannot reset anything.
                    if not self.server.wait_for_request(self._sock, first):
                        break
                    self._check_version()
                    first = False
                self.process_input()
        except EOFError:
            pass
        except MALFORMED as exc:
            raise ProtocolError(f"malformed FastCGI record ({exc.__class__.__name__}: {exc})")
        finally:
            self._close(linger=False)

    def process_input(self):
        # In the middle of a request (more params or stdin to come), flup
        # polls every second forever; a peer that stalls there would pin us.
        timeout = self.server.idle_timeout or None
        if self._requests and not wait_readable([self._sock], timeout):
            raise TimeoutError(f"no data from the web server for {timeout}s mid-request")
        super().process_input()

    def _do_params(self, inrec):
        req = self._requests.get(inrec.requestId)
        if req is None or req.params_done:
            # After the end of the parameters, flup would start the request
            # again, nested inside the running one (stdin reads dispatch
            # records): a repeated end-of-params is ignored.
            return
        req.params_size += inrec.contentLength
        if req.params_size > MAX_PARAMS_BYTES:
            raise ProtocolError(f"FastCGI parameters over {MAX_PARAMS_BYTES} bytes")
        if not inrec.contentLength:
            req.params_done = True
        super()._do_params(inrec)

    def _check_version(self):
        # A record starts with version 1.  Anything else is most often an
        # HTTP request sent to the FastCGI port (proxy_pass instead of
        # fastcgi_pass), which flup would read as a record of random length
        # and then wait for forever.
        first_byte = self._sock.recv(1, socket.MSG_PEEK)
        if first_byte and first_byte[0] != FCGI_VERSION_1:
            raise ProtocolError(
                f"not a FastCGI record (first bytes {self._sock.recv(16, socket.MSG_PEEK)!r};"
                " is the web server speaking HTTP to this port?)"
            )

    def poll_for_abort(self, req):
        """While a response is written, read any record the peer sent.

        Return True when the request was aborted or the peer hung up.
        """
        if req.aborted:
            return True
        if wait_readable([self._sock], 0):
            try:
                # Dispatches FCGI_ABORT_REQUEST (sets req.aborted) or more
                # stdin the app did not read.
                self.process_input()
            except EOFError:
                self.peer_closed = True
                req.aborted = True
        return req.aborted

    # -- writing

    def queue_record(self, rec_type, request_id, content=b""):
        length = len(content)
        padding = -length & 7
        self._outbox.append(struct.pack(FCGI_Header, FCGI_VERSION_1, rec_type,
                                        request_id, length, padding))
        if length:
            self._outbox.append(content)
        if padding:
            self._outbox.append(b"\0" * padding)
        self._outbox_size += FCGI_HEADER_LEN + length + padding
        if self._outbox_size >= FLUSH_THRESHOLD:
            self.flush()

    def writeRecord(self, rec):
        # flup calls this for END_REQUEST, GET_VALUES_RESULT, UNKNOWN_TYPE
        # and end-of-stream records.  Stream records wait for the next flush
        # so the end of a response travels with its END_REQUEST.
        self.queue_record(rec.type, rec.requestId, rec.contentData[:rec.contentLength])
        if rec.type not in (FCGI_STDOUT, FCGI_STDERR):
            self.flush()

    def flush(self):
        if not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox = []
        self._outbox_size = 0
        self._sock.sendall(data)

    # -- closing

    def _cleanupSocket(self):
        # flup calls this after a request without FCGI_KEEP_CONN; its version
        # waits for the peer's EOF with no timeout.  Ours is bounded, and
        # still needed: stdin the app did not read would turn close() into a
        # reset that can destroy the end of the response.
        self._close(linger=not self.peer_closed)

    def _close(self, linger):
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        except OSError:
            pass
        if linger:
            self.server.linger_close(self._sock)
        else:
            self._sock.close()


class FastCGIHandler(ProtocolHandler, fcgi_base.BaseFCGIServer):
    """FastCGI responder: flup's server class used only for its tables."""

    protocol = "fcgi"
    request_class = FCGIRequest

    def __init__(self, *, debug=False, multithreaded=False, multiprocess=True, max_conns=1,
                 allowed_peers=None):
        fcgi_base.BaseFCGIServer.__init__(
            self, None, multithreaded=multithreaded, multiprocess=multiprocess,
            debug=debug, roles=(FCGI_RESPONDER,),
        )
        self.setup_handler(debug=debug, multithreaded=multithreaded,
                           multiprocess=multiprocess, max_conns=max_conns,
                           allowed_peers=allowed_peers)
        # Bytes keys: names arrive as bytes in FCGI_GET_VALUES.
        self.capability = {
            b"FCGI_MAX_CONNS": max_conns,
            b"FCGI_MAX_REQS": max_conns,
            b"FCGI_MPXS_CONNS": 0,
        }

    def run_connection(self, sock, addr):
        FCGIConnection(sock, addr, self, None).run()

    def handler(self, req):
        """flup's per-request hook: build the environ and run the app."""
        if req.role not in self.roles:
            return FCGI_UNKNOWN_ROLE, 0
        if req.aborted:  # Aborted before its parameters were complete.
            return FCGI_REQUEST_COMPLETE, 1
        environ = self.base_environ(req.params, req.stdin)
        try:
            self.serve_request(environ, FCGITransport(req))
        except RequestAborted:
            if req._conn.peer_closed:
                raise
            log.info("fcgi: request %s aborted by the web server", req.requestId)
        return FCGI_REQUEST_COMPLETE, 0
