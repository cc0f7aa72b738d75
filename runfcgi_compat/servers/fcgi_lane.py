"""Two short ways through FastCGI's commonest requests, for a prefork worker.

``serve_fresh``: a fresh connection's one request, served on its bare
descriptor.  ``serve_kept``: the next request on a kept connection the
worker holds, served without resuming the connection's request loop.

Behind nginx without ``fastcgi_keep_conn`` every request is a new
connection that carries one whole request and closes after the response.
The general path builds a socket object for it (CPython checks the
descriptor with ``getsockname``, and the timeout costs an ``ioctl``), then
flup's Connection, then runs its request loop: two system calls and about
as many Python steps as the request itself takes in the server.  Here the
worker's accepted descriptor is read at once; when the read holds exactly
one whole request that does not keep the connection, the app runs on it
and the response goes out with one write, then the descriptor is closed.

The reads and writes are the C module's ``recv_now``/``send_now``, which
never block (MSG_DONTWAIT), so the descriptor can stay in blocking mode;
without the C module the lane is closed and the general path serves.

A kept connection (``fastcgi_keep_conn on``) held by a worker between
requests: when the worker's poll finds it readable and the read holds
exactly one whole request that keeps the connection, the request is served
on the connection and it stays held, as it was.  Resuming the connection's
request loop instead -- out of the hold, into ``run()``, its wait, and back
into the hold as a ``Parked`` -- cost a third as much as the request's own
server work.

Anything else leaves the lane for the general path, with what was read:
nothing yet, part of a request, a kept connection, a pipelined second
request.  A request in the lane moves to a connection of ours
(``FastCGIHandler.adopt``) the moment it needs one: a streamed response
(its chunks are flushed as they come, and the web server's abort is
watched), a response the socket did not take whole, or an error to log.
"""
import io
import os

from flup.server.fcgi_base import FCGI_KEEP_CONN

from .base import recv_now, send_all, send_now
from .fcgi_whole import MALFORMED, READ_SIZE, end_of_request, parse_whole, stdout_record

# The lane needs reads and writes that never block on a blocking socket.
lane_open = recv_now is not os.read


def serve_fresh(handler, fd, addr):
    """Serve the connection just accepted as ``fd``; as handle_connection."""
    try:
        data = recv_now(fd, READ_SIZE)
    except BlockingIOError:
        data = None  # Not here yet: the general path waits for it.
    except OSError:
        data = None  # Reset already: the general path reports it.
    if data == b"":
        os.close(fd)  # The web server gave up before sending anything.
        return None
    parsed = None
    if data is not None:
        try:
            parsed = parse_whole(data, 0)
        except MALFORMED:
            pass  # The general path reports it.
    if parsed is None or parsed[4] != len(data) or parsed[1] & FCGI_KEEP_CONN:
        return handler.serve_read(fd, addr, data)
    request_id, _, params, body, _ = parsed
    lane = Lane(handler, fd, addr, data, request_id)
    try:
        environ = handler.base_environ(params, io.BytesIO(body))
        handler.serve_whole(environ, lane)
        lane.end()
    except Exception as exc:
        handler.connection_failed(lane.socket(), addr, exc)
    finally:
        lane.close()
    return None


# serve_kept's answers.
SERVED = "served"  # One request served; the connection is held as before.
CLOSED = "closed"  # The connection is closed (the peer left, or it failed).
RESUME = "resume"  # Not the usual case: resume the connection (what was read is buffered).


def serve_kept(parked):
    """Serve the next request on the held, readable connection ``parked``
    (a ``Parked`` between two requests); return SERVED, CLOSED or RESUME."""
    conn, sock = parked.conn, parked.sock
    handler = conn.server
    try:
        data = recv_now(sock.fileno(), READ_SIZE)
    except BlockingIOError:
        return SERVED  # Nothing after all: still held, still idle.
    except OSError as exc:
        handler.connection_failed(sock, parked.addr, exc)
        sock.close()
        return CLOSED
    if not data:
        sock.close()  # The web server closed its end: the usual way out.
        return CLOSED
    conn._inbuf, conn._inpos = data, 0
    try:
        parsed = parse_whole(data, 0)
    except MALFORMED:
        return RESUME  # The general path reports it.
    if parsed is None or parsed[4] != len(data) or not parsed[1] & FCGI_KEEP_CONN:
        return RESUME
    try:
        conn.serve_parsed(parsed)
    except Exception as exc:
        handler.connection_failed(sock, parked.addr, exc)
        sock.close()
        return CLOSED
    return SERVED


class Lane:
    """The transport (see base.Response) of a request in the lane."""

    __slots__ = ("handler", "fd", "addr", "data", "request_id", "record", "sock", "conn",
                 "whole")

    def __init__(self, handler, fd, addr, data, request_id):
        self.handler = handler
        self.fd = fd
        self.addr = addr
        self.data = data
        self.request_id = request_id
        self.record = None  # The response so far: one FCGI_STDOUT record.
        self.sock = None
        self.conn = None
        self.whole = None  # Once adopted: the connection's WholeTransport.

    def send_head_and_body(self, status, headers, body):
        if self.whole is None:
            self.record = stdout_record(self.request_id, status, headers, body)
            if self.record is not None:
                return
            self._adopt()  # Larger than one record.
        self.whole.send_head_and_body(status, headers, body)

    def send_body(self, body):
        if self.whole is None:
            self._adopt()
        self.whole.send_body(body)

    def flush(self):
        # Only a streamed response flushes before its end.
        if self.whole is None:
            self._adopt()
        self.whole.flush()

    def end(self):
        if self.whole is not None:
            self.conn.end_whole(self.request_id, keep=False)
            return
        out = end_of_request(self.request_id)
        if self.record is not None:
            out = self.record + out
        try:
            sent = send_now(self.fd, out)
        except BlockingIOError:
            sent = 0
        if sent != len(out):
            send_all(self.socket(), out[sent:])

    def socket(self):
        """The connection's socket object, made when first needed."""
        if self.sock is None:
            self.sock = self.handler.make_socket(self.fd)
        return self.sock

    def _adopt(self):
        self.whole = self.handler.adopt(self.socket(), self.addr, self.data, self.request_id)
        self.conn = self.whole.conn
        if self.record is not None:
            self.conn.queue_encoded(self.record)
            self.record = None

    def close(self):
        if self.sock is not None:
            self.sock.close()  # Closed already when adopted; closing twice is harmless.
        else:
            os.close(self.fd)
