"""FastCGI over flup's record classes, with flup's Python 3 defects fixed.

What we keep from flup: record parsing and dispatch (``Connection``'s
``process_input`` and ``_do_*`` methods), the input streams, and the
request bookkeeping.  What we change, each in a subclass:

* One connection class serves every request, two ways that give the app
  the same environ: a request whose records (down to the empty
  FCGI_STDIN) are all in the read buffer -- nginx's GET, a small POST --
  is cut in one pass and served at once, skipping flup's per-record
  objects (``fcgi_whole``); everything else goes record by record through
  flup's dispatch.

* Writing: flup sends every record with three ``send()`` calls and slices
  the remaining body (``data[n:]``) after each record, which is quadratic.
  ``FCGIConnection`` queues encoded records (memoryview slices, no copies)
  and sends them with one write per flush.
* Reading: flup polls (``select``), then reads each record's header, body
  and padding with separate ``recv`` calls, each preceded by another poll:
  about twenty system calls for a GET.  We read whatever has arrived (up
  to 64 KiB) into a buffer and cut records from it: usually one read per
  request.  The socket is polled only when a read would block.
* FCGI_GET_VALUES: flup looks bytes names up among str keys and always
  answers nothing; our capability table has bytes keys.
* Malformed records (and HTTP sent to the FastCGI port) close the
  connection with one log line, instead of killing a prefork worker or
  leaving the connection hanging.
* FCGI_ABORT_REQUEST and a peer that hangs up stop the response.
* Parameters are limited to 1 MiB, and a repeated end of parameters no
  longer runs the app a second time, nested inside the first run.
* Kept connections (``fastcgi_keep_conn on``) are handed back to the pool
  after each request (``serve`` returns KEEP), which alone decides where
  they wait, for how long, and when a stop closes them.
"""
import struct

from flup.server import fcgi_base
from flup.server.fcgi_base import (
    FCGI_ABORT_REQUEST,
    FCGI_BEGIN_REQUEST,
    FCGI_DATA,
    FCGI_GET_VALUES,
    FCGI_HEADER_LEN,
    FCGI_KEEP_CONN,
    FCGI_NULL_REQUEST_ID,
    FCGI_PARAMS,
    FCGI_REQUEST_COMPLETE,
    FCGI_RESPONDER,
    FCGI_STDERR,
    FCGI_STDIN,
    FCGI_STDOUT,
    FCGI_UNKNOWN_ROLE,
    FCGI_VERSION_1,
    FCGI_Header,
    Record,
)

from .base import (
    CLOSE,
    KEEP,
    ClientGone,
    Connection,
    ProtocolError,
    ProtocolHandler,
    encode_head,
    log,
)
from .fcgi_whole import (
    MALFORMED,
    MAX_CONTENT,
    PADDING,
    READ_SIZE,
    end_of_request,
    parse_whole,
    stdout_record,
)
from .signals import wait_readable

HEADER = struct.Struct(FCGI_Header)

# nginx sends a few KiB of parameters; more than this is garbage or an
# attack, and flup would keep all of it in memory (as SCGI's limit).
MAX_PARAMS_BYTES = 1024 * 1024



class RequestAborted(ClientGone):
    """FCGI_ABORT_REQUEST arrived, or the web server hung up."""


class FCGIOutputStream(fcgi_base.OutputStream):
    """FCGI_STDOUT/STDERR in linear time: memoryview slices, queued records."""

    def _write(self, data):
        self._conn.queue_stream(self._type, self._req.requestId, data)


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
    """The ``base.Response`` transport for a request read record by record."""

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


class FCGIConnection(Connection, fcgi_base.Connection):
    """One web-server connection: our reading, waiting and writing around
    flup's record dispatch.

    ``serve`` takes the next request one of two ways, which give the app
    the same environ: whole, when all its records are in the read buffer
    (``fcgi_whole``: a GET or a small POST, nearly every request), else
    record by record through flup's dispatch (``process_input``).  For a
    request served whole the connection is the response's transport
    (``send_head_and_body``, ``send_body``, ``flush``); for one read record
    by record, ``FCGITransport``.
    """

    read_size = READ_SIZE
    # flup's __init__ is not called (it would make ``_sock``, see
    # base.Connection); what its methods use has a class default here, so a
    # connection costs one __init__.  ``_requests`` is made by the record
    # path, the only one that uses it.
    _requests = None
    _keepGoing = True
    _stdin_ended = False
    ended = 0  # Requests ended on this connection.
    request_id = None  # The request being served whole.

    def serve(self):
        if self._inpos == len(self._inbuf) and not self.read_now():
            return KEEP  # Nothing has come yet.
        try:
            # The request at the head of the buffer, if it arrived whole
            # (see fcgi_whole) and no request read record by record is
            # under way; else the record path.
            parsed = None if self._requests else parse_whole(self._inbuf, self._inpos)
        except MALFORMED:
            parsed = None  # The record path reports it.
        try:
            if parsed is None:
                return self._serve_records()
        except MALFORMED as exc:
            raise ProtocolError(
                f"malformed FastCGI record ({exc.__class__.__name__}: {exc})") from None
        request_id, flags, params, body, self._inpos = parsed
        self._stdin_ended = True
        self.request_id = request_id
        handler = self.server
        handler.serve_whole(handler.base_environ(params, body), self)
        # The end of the response travels with it: one write.
        self._outbox.append(end_of_request(request_id))
        self.flush()
        self.ended += 1
        self.fresh = False
        if flags & FCGI_KEEP_CONN:
            return KEEP
        self._keepGoing = False
        self.close()  # All of the request was read: nothing can reset.
        return CLOSE

    # -- the transport (see base.Response) of a request served whole

    def send_head_and_body(self, status, headers, body):
        # No abort check here: the request has just arrived whole, and most
        # responses are this one write.
        record = stdout_record(self.request_id, status, headers, body)
        if record is not None:
            self._outbox.append(record)  # Under flush_threshold: no check.
            return
        head = encode_head(status, headers)
        if body and len(body) < 8192:
            self.queue_stream(FCGI_STDOUT, self.request_id, head + body)
            return
        self.queue_stream(FCGI_STDOUT, self.request_id, head)
        if body:
            self.queue_stream(FCGI_STDOUT, self.request_id, body)

    def send_body(self, body):
        if self.whole_request_aborted(self.request_id):
            raise RequestAborted("request aborted by the web server")
        self.queue_stream(FCGI_STDOUT, self.request_id, body)

    def partial(self):
        # Records of a request already dispatched (its parameters so far)
        # are part of it too.
        return bool(self._requests) or Connection.partial(self)

    def _serve_records(self):
        """Dispatch the buffered records until a request has ended.  Until
        its app runs, only what has arrived is read: when a record is not
        all there, it is left for the pool to wait for (``incomplete``)."""
        if self._requests is None:
            self._requests = {}
        ended = self.ended
        while self.ended == ended and self._keepGoing:
            if not self._requests and self.buffered():
                self._check_version()
            if not self._has_record():
                if not self.read_now():
                    return self.incomplete()
                continue
            self.process_input()
        return KEEP if self._keepGoing else CLOSE

    def process_input(self):
        """Read one record and dispatch it (flup's dispatch, our reading)."""
        rec = self._read_record()
        kind = rec.type
        if kind == FCGI_STDIN:
            self._do_stdin(rec)
        elif kind == FCGI_PARAMS:
            self._do_params(rec)
        elif kind == FCGI_BEGIN_REQUEST:
            self._do_begin_request(rec)
        elif kind == FCGI_ABORT_REQUEST:
            self._do_abort_request(rec)
        elif kind == FCGI_GET_VALUES:
            self._do_get_values(rec)
        elif kind == FCGI_DATA:
            self._do_data(rec)
        elif rec.requestId == FCGI_NULL_REQUEST_ID:
            self._do_unknown_type(rec)

    def end_request(self, req, appStatus=0, protocolStatus=FCGI_REQUEST_COMPLETE,
                    remove=True):
        if remove:  # Not a second request refused while one runs.
            self.ended += 1
            self.fresh = False
        super().end_request(req, appStatus, protocolStatus, remove)

    def whole_request_aborted(self, request_id):
        """``poll_for_abort`` for a request served whole.

        All of its input has been read; what can still come is its
        FCGI_ABORT_REQUEST, or the peer hanging up.
        """
        if self.peer_closed:
            return True
        try:
            self.read_now()
        except EOFError:
            return True
        if self._has_record():
            _, kind, record_id, length, padding = HEADER.unpack_from(self._inbuf, self._inpos)
            if kind == FCGI_ABORT_REQUEST and record_id == request_id:
                self._inpos += FCGI_HEADER_LEN + length + padding
                return True
        return False

    def _read_record(self):
        self.fill(FCGI_HEADER_LEN)
        version, kind, request_id, length, padding = HEADER.unpack_from(
            self._inbuf, self._inpos)
        self.fill(FCGI_HEADER_LEN + length + padding)
        rec = Record(kind, request_id)
        rec.version, rec.contentLength, rec.paddingLength = version, length, padding
        start = self._inpos + FCGI_HEADER_LEN
        rec.contentData = self._inbuf[start:start + length]
        self._inpos = start + length + padding
        return rec

    def _has_record(self):
        """True if a whole record is already buffered."""
        unread = len(self._inbuf) - self._inpos
        if unread < FCGI_HEADER_LEN:
            return False
        _, _, _, length, padding = HEADER.unpack_from(self._inbuf, self._inpos)
        return unread >= FCGI_HEADER_LEN + length + padding

    def _do_begin_request(self, inrec):
        self._stdin_ended = False
        super()._do_begin_request(inrec)

    def _do_stdin(self, inrec):
        if not inrec.contentLength:
            self._stdin_ended = True
        super()._do_stdin(inrec)

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
        first_bytes = bytes(self._inbuf[self._inpos:self._inpos + 16])
        if first_bytes[0] != FCGI_VERSION_1:
            raise ProtocolError(
                f"not a FastCGI record (first bytes {first_bytes!r};"
                " is the web server speaking HTTP to this port?)"
            )

    def poll_for_abort(self, req):
        """While a response is written, read any record the peer sent.

        Return True when the request was aborted or the peer hung up.
        """
        if req.aborted:
            return True
        if self._has_record() or wait_readable([self.fd], 0):
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
        self.queue(HEADER.pack(FCGI_VERSION_1, rec_type, request_id, length, padding))
        if length:
            self.queue(content)
        if padding:
            self.queue(PADDING[padding])

    def queue_stream(self, rec_type, request_id, data):
        """Queue ``data`` as STDOUT/STDERR records: memoryview slices, no copy."""
        if len(data) <= MAX_CONTENT:
            if data:
                self.queue_record(rec_type, request_id, data)
            return
        view = memoryview(data)
        for start in range(0, len(view), MAX_CONTENT):
            self.queue_record(rec_type, request_id, view[start:start + MAX_CONTENT])

    def writeRecord(self, rec):
        # flup calls this for END_REQUEST, GET_VALUES_RESULT, UNKNOWN_TYPE
        # and end-of-stream records.  Stream records wait for the next flush
        # so the end of a response travels with its END_REQUEST.
        self.queue_record(rec.type, rec.requestId, rec.contentData[:rec.contentLength])
        if rec.type not in (FCGI_STDOUT, FCGI_STDERR):
            self.flush()

    # -- closing

    def _cleanupSocket(self):
        # flup calls this after a request without FCGI_KEEP_CONN; its version
        # waits for the peer's EOF with no timeout.  Ours is bounded, and
        # still needed: stdin the app did not read would turn close() into a
        # reset that can destroy the end of the response.  When the whole
        # request (down to its empty FCGI_STDIN) has been read and nothing
        # more is buffered, the web server sends nothing more: plain close.
        read_all = self._stdin_ended and self._inpos == len(self._inbuf)
        self.close(linger=not read_all)


class FastCGIHandler(ProtocolHandler, fcgi_base.BaseFCGIServer):
    """FastCGI responder: flup's server class used only for its tables."""

    protocol = "fcgi"
    request_class = FCGIRequest
    connection_class = FCGIConnection

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

    def serve_whole(self, environ, conn):
        """serve_request for a request read whole (``conn`` is its
        transport); the web server's FCGI_ABORT_REQUEST ends it quietly,
        its hanging up is passed on."""
        try:
            self.serve_request(environ, conn)
        except RequestAborted:
            if conn.peer_closed:
                raise
            log.info("fcgi: request %s aborted by the web server", conn.request_id)

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
