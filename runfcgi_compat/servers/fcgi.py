"""FastCGI over flup's record classes, with flup's Python 3 defects fixed.

What we keep from flup: record parsing and dispatch (``Connection``'s
``process_input`` and ``_do_*`` methods), the input streams, and the
request bookkeeping.  What we change, each in a subclass:

* The common case skips flup's per-record objects: a request whose records
  (down to the empty FCGI_STDIN) are all in the read buffer -- nginx's GET,
  a small POST -- is cut in one pass and served at once (``fcgi_whole``).
  Everything else goes record by record through flup's dispatch.  In a
  prefork worker the commonest of those requests do not even enter the
  connection's request loop (``fcgi_lane``).

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
* Kept connections (``fastcgi_keep_conn on``) wait for their next request
  with an idle timeout, and close at once when the server stops.
"""
import io
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
    ClientGone,
    Parked,
    ProtocolError,
    ProtocolHandler,
    encode_head,
    log,
    read_some,
    recv_now,
    send_all,
)
from .fcgi_lane import lane_open, serve_fresh, serve_kept
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
# Flush queued records once this many bytes are waiting: big enough to make
# syscalls rare, small enough that a huge body is never copied whole.
FLUSH_THRESHOLD = 256 * 1024

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
        # While the app runs, a wait for more input cannot park the
        # connection (see ThreadHold): the app's stack is in the way.
        self._conn.in_app = True
        try:
            protocol_status, app_status = self.server.handler(self)
        finally:
            self._conn.in_app = False
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


class WholeTransport:
    """The ``base.Response`` transport for a request served by ``_serve_whole``."""

    def __init__(self, conn, request_id):
        self.conn = conn
        self.request_id = request_id

    def send_head_and_body(self, status, headers, body):
        # No abort check here: the request has just arrived whole, and most
        # responses are this one write.
        record = stdout_record(self.request_id, status, headers, body)
        if record is not None:
            self.conn.queue_encoded(record)
            return
        head = encode_head(status, headers)
        if body and len(body) < 8192:
            self.conn.queue_stream(FCGI_STDOUT, self.request_id, head + body)
            return
        self.conn.queue_stream(FCGI_STDOUT, self.request_id, head)
        if body:
            self.conn.queue_stream(FCGI_STDOUT, self.request_id, body)

    def send_body(self, body):
        if self.conn.whole_request_aborted(self.request_id):
            raise RequestAborted("request aborted by the web server")
        self.conn.queue_stream(FCGI_STDOUT, self.request_id, body)

    def flush(self):
        self.conn.flush()


class FCGIConnection(fcgi_base.Connection):
    """One web-server connection: flup's dispatch, our waiting and writing."""

    def __init__(self, sock, addr, server, timeout):
        super().__init__(sock, addr, server, timeout)
        self._outbox = []
        self._outbox_size = 0
        self._closed = False
        self._first = True
        self.peer_closed = False
        self._inbuf = b""  # Read but not yet parsed, from _inpos on.
        self._inpos = 0
        self._stdin_ended = False
        self.in_app = False

    # -- reading

    def run(self):
        """Serve requests until the connection ends (return None), or park
        it: return or raise ``Parked``.

        Called again after a park: the state between two requests is only
        the socket and ``_first``.
        """
        self._keepGoing = True
        parked = False
        try:
            while self._keepGoing:
                if not self._requests:
                    # Between requests: this is where an idle kept connection
                    # times out, and where a stop closes it.  Nothing is
                    # unread, so a plain close cannot reset anything.
                    # Bytes already buffered or already arrived are a
                    # request on its way (a client may pipeline): only an
                    # empty socket waits.
                    if self._inpos == len(self._inbuf) and not (
                            self._first and self._read_arrived()):
                        verdict = self.server.wait_for_request(self._sock, self._first, True)
                        if verdict is not True:
                            if not verdict:
                                break
                            parked = True
                            verdict.conn = self
                            return verdict
                        self._read_now()  # It is arriving; usually all there.
                    self._first = False
                    if self._inpos == len(self._inbuf):
                        self._fill(1)
                    if self._serve_whole():
                        continue
                    self._check_version()
                self.process_input()
        except Parked as exc:
            parked = True
            exc.conn = self
            raise
        except EOFError:
            pass
        except MALFORMED as exc:
            raise ProtocolError(f"malformed FastCGI record ({exc.__class__.__name__}: {exc})")
        finally:
            if not parked:
                self._close(linger=False)

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

    def _read_arrived(self):
        """Read what has already arrived, without waiting; False if nothing.

        Only on a fresh connection, where it saves a poll: a web server
        writes its request right after connecting.  On a kept connection the
        next request is normally a round trip away, so the read would only
        add a system call.  A socket with no timeout blocks, so it always
        waits in ``wait_for_request`` (which also watches for a stop).
        """
        if not self._first or self._sock.gettimeout() is None:
            return False
        return self._read_now()

    def _read_now(self):
        """Read what has arrived into the empty buffer, without waiting;
        False if nothing has."""
        try:
            data = recv_now(self._sock.fileno(), READ_SIZE)
        except BlockingIOError:
            return False
        if not data:
            raise EOFError
        self._inbuf, self._inpos = data, 0
        return True

    def _serve_whole(self):
        """Serve the request at the head of the buffer if it arrived whole.

        Return False, having consumed nothing, when it did not (see
        ``fcgi_whole``): flup's record-by-record path takes it then.
        """
        try:
            parsed = parse_whole(self._inbuf, self._inpos)
        except MALFORMED:
            return False  # flup's path reports it.
        if parsed is None:
            return False
        self.serve_parsed(parsed)
        return True

    def serve_parsed(self, parsed):
        """Serve a request ``parse_whole`` cut from the head of the buffer."""
        request_id, flags, params, body, self._inpos = parsed
        self._stdin_ended = True
        handler = self.server
        environ = handler.base_environ(params, io.BytesIO(body))
        handler.serve_whole(environ, WholeTransport(self, request_id))
        self.end_whole(request_id, keep=flags & FCGI_KEEP_CONN)

    def end_whole(self, request_id, keep):
        """End a request served whole: its FCGI_END_REQUEST, and the close
        unless the web server keeps the connection."""
        self._outbox.append(end_of_request(request_id))
        self.flush()
        if not keep:
            self._keepGoing = False
            self._cleanupSocket()

    def adopt_whole(self, data):
        """Take over a connection whose one request, ``data`` (all of it,
        down to its empty FCGI_STDIN), was read and is being served on the
        bare descriptor (``fcgi_lane``)."""
        self._first = False
        self._stdin_ended = True
        self._inbuf, self._inpos = data, len(data)

    def whole_request_aborted(self, request_id):
        """``poll_for_abort`` for a request served by ``_serve_whole``.

        All of its input has been read; what can still come is its
        FCGI_ABORT_REQUEST, or the peer hanging up.
        """
        if self.peer_closed:
            return True
        if wait_readable([self._sock], 0):
            try:
                data = recv_now(self._sock.fileno(), READ_SIZE)
            except BlockingIOError:
                data = None
            if data == b"":
                self.peer_closed = True
                return True
            if data:
                self._buffer(data)
        if self._has_record():
            _, kind, record_id, length, padding = HEADER.unpack_from(self._inbuf, self._inpos)
            if kind == FCGI_ABORT_REQUEST and record_id == request_id:
                self._inpos += FCGI_HEADER_LEN + length + padding
                return True
        return False

    def _fill(self, need):
        """Have at least ``need`` unread bytes in the buffer; EOFError at EOF.

        Waiting for them is bounded by the idle timeout (in the middle of a
        request flup polled every second forever: a stalled peer pinned us).
        """
        while len(self._inbuf) - self._inpos < need:
            data = read_some(self._sock, max(READ_SIZE, need), self._wait_for_data)
            if not data:
                raise EOFError
            self._buffer(data)

    def _buffer(self, data):
        """Append freshly read bytes to the unread part of the buffer."""
        inpos = self._inpos
        if inpos == len(self._inbuf):  # All read: the usual case, no copy.
            self._inbuf = data
        else:
            self._inbuf = self._inbuf[inpos:] + data if inpos else self._inbuf + data
        self._inpos = 0

    def _wait_for_data(self, sock):
        return self.server.wait_for_data(sock, parkable=not self.in_app)

    def _read_record(self):
        self._fill(FCGI_HEADER_LEN)
        version, kind, request_id, length, padding = HEADER.unpack_from(
            self._inbuf, self._inpos)
        self._fill(FCGI_HEADER_LEN + length + padding)
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
        if self._has_record() or wait_readable([self._sock], 0):
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
        self._outbox.append(HEADER.pack(FCGI_VERSION_1, rec_type, request_id, length, padding))
        if length:
            self._outbox.append(content)
        if padding:
            self._outbox.append(PADDING[padding])
        self._outbox_size += FCGI_HEADER_LEN + length + padding
        if self._outbox_size >= FLUSH_THRESHOLD:
            self.flush()

    def queue_encoded(self, records):
        """Queue records encoded already (``stdout_record``)."""
        self._outbox.append(records)
        self._outbox_size += len(records)
        if self._outbox_size >= FLUSH_THRESHOLD:
            self.flush()

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

    def flush(self):
        if not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox = []
        self._outbox_size = 0
        send_all(self._sock, data)

    # -- closing

    def _cleanupSocket(self):
        # flup calls this after a request without FCGI_KEEP_CONN; its version
        # waits for the peer's EOF with no timeout.  Ours is bounded, and
        # still needed: stdin the app did not read would turn close() into a
        # reset that can destroy the end of the response.  When the whole
        # request (down to its empty FCGI_STDIN) has been read and nothing
        # more is buffered, the web server sends nothing more: plain close.
        read_all = self._stdin_ended and self._inpos == len(self._inbuf)
        self._close(linger=not (self.peer_closed or read_all))

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

    def handle_accepted(self, fd, addr):
        # The lane needs nothing the general path does first: no allowed
        # peers to check, and TCP_NODELAY inherited (or a UNIX socket).
        if lane_open and self.allowed_peers is None and (
                type(addr) is not tuple or self.nodelay_inherited):
            return serve_fresh(self, fd, addr)
        return super().handle_accepted(fd, addr)

    def serve_whole(self, environ, transport):
        """serve_request for a request read whole (``transport``: a
        WholeTransport or a lane); the web server's FCGI_ABORT_REQUEST ends
        it quietly, its hanging up is passed on."""
        try:
            self.serve_request(environ, transport)
        except RequestAborted:
            if transport.conn.peer_closed:
                raise
            log.info("fcgi: request %s aborted by the web server", transport.request_id)

    def adopt(self, sock, addr, data, request_id):
        """The transport for a request the lane began, on a connection of
        ours from now on (see fcgi_lane)."""
        conn = FCGIConnection(sock, addr, self, None)
        conn.adopt_whole(data)
        return WholeTransport(conn, request_id)

    def serve_kept(self, parked):
        """A held kept connection's next request (see fcgi_lane.serve_kept)."""
        return serve_kept(parked)

    def serve_read(self, fd, addr, data):
        """The general path for a connection the lane read ``data`` from
        (not one whole request; possibly nothing yet)."""
        sock = self.make_socket(fd)

        def start():
            conn = FCGIConnection(sock, addr, self, None)
            if data:
                conn._inbuf = data
            return conn.run()

        return self._drive(sock, addr, start)

    def run_connection(self, sock, addr):
        return FCGIConnection(sock, addr, self, None).run()

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
