"""What the three protocol handlers share.

A protocol handler keeps one contract with the pools (``connect`` and
``serve_next``, see ProtocolHandler; docs/architecture.rst): it serves the
next request on a connection and says whether the connection stays open;
the pool alone decides where an idle connection waits.  It is built from
flup's protocol classes, but the WSGI side (start_response, the response
loop, error pages) is ours for all three protocols, because flup's version
is where most defects live: it imports ``cgitb`` (removed in Python 3.13)
for debug pages, writes large bodies in quadratic time, sends AJP errors
with status 200, and rebuilds PATH_INFO before we can see what the web
server really sent.

The pools may set two things on a handler:

* ``on_request_done``: called after every request (prefork counts them for
  ``maxrequests``).
* ``wait_for_data``: how a read inside a request waits for the peer; the
  prefork worker's own marks the worker stalled while it waits.
"""
import errno
import logging
import os
import socket
import struct
import sys
import time
import traceback

from .. import peers
from . import speedups
from .body import request_body
from .environ import content_length, fix_environ
from .signals import wait_readable, wait_writable

log = logging.getLogger("runfcgi_compat")

# Errors that mean "the web server (or its client) went away": worth one log
# line, never a traceback.
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class ClientGone(Exception):
    """The peer closed or aborted the request; stop writing the response."""


class ResponseAbandoned(ClientGone):
    """The app failed after the response started; already logged."""


class ProtocolError(Exception):
    """The peer sent something we cannot parse; the connection is closed."""


def is_client_gone(exc):
    if isinstance(exc, (ClientGone,) + CLIENT_GONE):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET)


# -- raw reads and writes ------------------------------------------------------------
#
# On a socket with a timeout CPython polls before every recv() and send(),
# so each costs two system calls.  Accepted sockets keep their timeout (it
# bounds reads and writes for code that uses the socket object), but the
# protocols' own reads and writes go through the descriptor: one call, and
# a poll only when the kernel says the call would block.
#
# With the optional C module (``_wire.c``) those calls never block and keep
# the interpreter lock: os.read and os.write release it around every call,
# and in the threaded server each release handed the lock to another thread
# and cost a wait to get it back, three times per kept request.

recv_now = speedups.pick("recv_now", os.read)
send_now = speedups.pick("send_now", os.write)


def send_all(fd, data, timeout):
    """Send all of ``data`` on descriptor ``fd``; ``timeout`` bounds each stall."""
    if not data:
        return
    try:
        sent = send_now(fd, data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return  # Nearly always: a response fits in the socket's buffer.
    view = memoryview(data)[sent:]
    while view:
        try:
            sent = send_now(fd, view)
        except BlockingIOError:
            if not wait_writable(fd, timeout):
                raise TimeoutError("the peer stopped reading the response") from None
            continue
        view = view[sent:]


def describe_peer(sock, addr):
    if sock.family == getattr(socket, "AF_UNIX", None):
        return "unix socket"
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError):
        return str(addr)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def flush_std_streams():
    """Flush stdout and stderr, ignoring any error: before a fork (or an
    exit that skips Python's own clean-up), so no line is written twice
    or lost."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def close_quietly(sock):
    """Close a connection whose peer may already have gone."""
    try:
        sock.close()
    except OSError:
        pass


# -- the WSGI side --------------------------------------------------------------


def check_start_py(status, headers):
    """Raise AssertionError unless ``start_response``'s arguments are WSGI's."""
    if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit():
        raise AssertionError(f"invalid WSGI status {status!r}")
    if not isinstance(headers, list):
        raise AssertionError("WSGI response headers must be a list")
    for header in headers:
        if not (isinstance(header, tuple) and len(header) == 2
                and isinstance(header[0], str) and isinstance(header[1], str)):
            raise AssertionError(f"invalid WSGI header {header!r}")


# The same in C: with six headers, the checks were the costliest part of
# the WSGI glue (bench/PROFILE.rst).
check_start = speedups.pick("check_start", check_start_py)


class Response:
    """One WSGI response, written through a protocol-specific ``transport``.

    The transport implements ``send_head_and_body(status, headers, body)``,
    ``send_body(body)`` and ``flush()``.  Headers are held back until the
    first non-empty body chunk (PEP 3333) so that they travel with it.
    """

    # Class defaults: one response per request, so __init__ sets one thing.
    status = None
    headers = None
    headers_sent = False
    buffered = False  # True: flush once at the end, not per chunk.
    # True for a HEAD request: the head alone is sent (RFC 3875 4.3.2: the
    # script must not send a body; HAProxy answers 502 if it does, nginx and
    # Apache drop it).  The app still runs and its iterable is still closed.
    head_only = False

    def __init__(self, transport):
        self.transport = transport

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        check_start(status, headers)
        self.status, self.headers = status, headers
        return self.write

    def write(self, data):
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if self.head_only:
            if self.headers_sent:
                return
            data = b""
        try:
            if not self.headers_sent:
                self.headers_sent = True
                self.transport.send_head_and_body(self.status, self.headers, data)
            elif data:
                self.transport.send_body(data)
            if not self.buffered:
                self.transport.flush()
        except TimeoutError:
            # The peer stopped reading; not the app's error.
            raise ClientGone("timed out writing the response") from None

    def finish(self):
        """Send the head of an empty response; the protocol flushes the end
        of the response together with its own end-of-request marker."""
        if not self.headers_sent:
            self.write(b"")


def run_app(app, environ, response):
    """Call a WSGI app and stream its result into ``response``."""
    result = app(environ, response.start_response)
    try:
        # Django's HttpResponse says whether it is streamed; lists and
        # tuples are complete.  A complete body is sent with one flush, so
        # headers, body and the end-of-request record share one syscall.
        response.buffered = isinstance(result, (list, tuple)) or (
            getattr(result, "streaming", None) is False
        )
        for chunk in result:
            if chunk:
                response.write(chunk)
        response.finish()
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def error_page(debug, exc_info):
    """Return (status, headers, body) for an exception that escaped the app.

    With debug a plain-text traceback; never ``cgitb``, which Python 3.13
    removed (flup's debug page crashed the request there).
    """
    if debug:
        text = "".join(traceback.format_exception(*exc_info))
        body = ("Unhandled exception in the application:\n\n" + text).encode(
            "utf-8", "replace"
        )
        content_type = "text/plain; charset=utf-8"
    else:
        body = b"Internal Server Error\n"
        content_type = "text/plain; charset=utf-8"
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    return "500 Internal Server Error", headers, body


def missing_cgi_variables(environ):
    """Return the names of required CGI variables that are absent or empty.

    Only REQUEST_METHOD: Django (and every WSGI app) needs it before
    anything else, and all web servers send it.  SERVER_NAME and SERVER_PORT
    matter only without a Host header, when Django's ``get_host`` reports
    them itself; refusing them here would break test clients and apps that
    never look.
    """
    return [] if environ.get("REQUEST_METHOD") else ["REQUEST_METHOD"]


def send_error(transport, status, body, headers=None, *, head_only=False):
    """Send a complete plain-text response of our own in one write
    (its head alone with ``head_only``, the answer to a HEAD request)."""
    if headers is None:
        headers = [("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(body)))]
    response = Response(transport)
    response.buffered = True
    response.head_only = head_only
    response.start_response(status, headers)
    response.write(body)
    response.finish()


def encode_head_py(status, headers):
    """CGI-style response head shared by FastCGI and SCGI: bytes, latin-1.

    ``headers`` is a list of (name, value) str tuples.
    """
    lines = [f"Status: {status}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


encode_head = speedups.pick("encode_head", encode_head_py)  # The same in C (see fcgi_whole).


# -- connections ------------------------------------------------------------------

# What ``ProtocolHandler.serve_next`` says of a connection.
KEEP = "keep"  # Still open, no request in progress: the pool decides where it waits.
CLOSE = "close"  # Closed: the pool forgets it.

# Reads and writes never block when the C module is there (MSG_DONTWAIT);
# without it a descriptor must be in non-blocking mode.
NEVER_BLOCKS = recv_now is not os.read


class Connection:
    """One accepted connection: its descriptor, the bytes read and not yet
    parsed (``_inbuf`` from ``_inpos``) and the bytes waiting to be sent
    (``_outbox``).  FastCGI, SCGI and AJP build their connections on it;
    their flup base classes find ``server``, ``_addr`` and ``_sock`` where
    they look for them.

    A connection accepted as a bare descriptor (a prefork worker's accept)
    makes its socket object only when something needs one -- a wait, a
    half-close, a log line -- which a short request never does: the object
    cost several microseconds per request, a few per cent of the server's
    own work.
    """

    read_size = 65536
    # Flush queued output once this many bytes wait: big enough to make
    # system calls rare, small enough never to copy a huge body whole.
    flush_threshold = 256 * 1024

    # Class defaults, so that __init__ sets little: a connection is made
    # for nearly every request when the web server does not keep them.
    fresh = True  # No request has been served on it yet.
    # The buffered bytes were found short of a whole request, and nothing
    # has arrived since: only a wait can bring the rest.
    short = False
    closed = False
    peer_closed = False
    _inbuf = b""
    _inpos = 0
    _outbox_size = 0
    _timeout = None  # flup's per-request alarm: never used.

    def __init__(self, handler, fd, addr, sock=None):
        self.server = handler  # flup's name for it.
        self.fd = fd
        self._addr = addr
        if sock is not None:
            self._sock = sock
        self._outbox = []

    def __getattr__(self, name):
        # Reached only while ``_sock`` has not been made (see the class
        # docstring); every other attribute is set in __init__.
        if name != "_sock":
            raise AttributeError(name)
        sock = self._sock = self.server.make_socket(self.fd)
        return sock

    def fileno(self):
        return self.fd

    @property
    def addr(self):
        """The peer's address, as accept() gave it."""
        return self._addr

    # -- reading

    def buffered(self):
        """The count of bytes read and not yet parsed."""
        return len(self._inbuf) - self._inpos

    def ready(self):
        """True if bytes are buffered that may hold a request: the pool may
        call serve_next again at once, without waiting for the socket."""
        return self._inpos < len(self._inbuf) and not self.short

    def arrived(self):
        """Read what has arrived, without waiting; True if anything has (or
        the peer's end: the next serve_next closes).  With the C module the
        read keeps the interpreter lock, where a poll would let it go."""
        try:
            return self.read_now()
        except EOFError:
            return True
        except CLIENT_GONE:
            # Reset while kept idle (HAProxy drops spare connections so): as
            # good as closed.  The next read sees the end, and serve_next
            # closes the connection quietly.
            self.peer_closed = True
            return True

    def partial(self):
        """True when part of the next request has come (and is kept here)."""
        return self._inpos < len(self._inbuf)

    def arriving(self):
        """True while a request is on its way: a fresh connection's first,
        or one whose first bytes have come.  A stopping pool gives such a
        connection the handler's ``first_request_grace`` instead of closing
        it: its web server is sending a request."""
        return self.fresh or self.partial()

    def incomplete(self):
        """What serve() returns when the next request has not all come:
        KEEP, its bytes kept here for the next call."""
        self.short = True
        return KEEP

    def read_now(self, size=0):
        """Add what has arrived to the buffer, without waiting; False if
        nothing has.  EOFError when the peer has closed its end."""
        try:
            data = recv_now(self.fd, max(self.read_size, size))
        except BlockingIOError:
            return False
        if not data:
            self.peer_closed = True
            raise EOFError
        self.short = False
        pos = self._inpos
        if pos == len(self._inbuf):  # All parsed: the usual case, no copy.
            self._inbuf = data
        else:
            self._inbuf = (self._inbuf[pos:] if pos else self._inbuf) + data
        self._inpos = 0
        return True

    def fill(self, need):
        """Have at least ``need`` unread bytes, waiting for them inside a
        request (bounded by the idle timeout); EOFError at EOF."""
        while len(self._inbuf) - self._inpos < need:
            if not self.read_now(need - self.buffered()) and not self.server.wait_for_data(self):
                raise TimeoutError("the peer sent nothing in time")

    def take(self, size):
        """Up to ``size`` unread bytes from the buffer."""
        pos = self._inpos
        data = self._inbuf[pos:pos + size]
        self._inpos = pos + len(data)
        return data

    # -- writing

    def queue(self, data):
        """Send ``data`` with the next flush (at once past flush_threshold)."""
        self._outbox.append(data)
        self._outbox_size += len(data)
        if self._outbox_size >= self.flush_threshold:
            self.flush()

    def flush(self):
        if self._outbox:
            data = b"".join(self._outbox)
            self._outbox, self._outbox_size = [], 0
            send_all(self.fd, data, self.server.idle_timeout or None)

    # -- closing

    def close(self, linger=False):
        """Flush and close; ``linger``: first wait (bounded) for the peer's
        EOF, so request bytes we never read do not turn the close into a
        reset that cuts the end of the response."""
        if self.closed:
            return
        self.closed = True
        if self._outbox:
            try:
                self.flush()
            except OSError:
                pass
        if linger and not self.peer_closed:
            self.server.linger_close(self._sock)
        elif "_sock" in self.__dict__:
            self._sock.close()
        else:
            os.close(self.fd)

    def serve(self):
        """Serve the next request if it has come; return KEEP or CLOSE
        (closed then).  Each protocol's connection says how."""
        raise NotImplementedError


# -- the handler base -------------------------------------------------------------


# Connections that must show TCP_NODELAY missing before the handler decides
# the kernel does not copy it from the listener (see _set_nodelay).
NODELAY_SAMPLES = 16


class ProtocolHandler:
    """Mixin for the protocol handlers: peers, waiting, WSGI calls, errors."""

    protocol = None
    # Seconds a connection may sit idle waiting for its (next) request, and
    # the longest a read or write may make no progress within one (None or
    # 0: no limit).  nginx's `fastcgi_keep_conn on` and Apache's AJP keep
    # connections open; without a bound they pin workers/threads forever.
    idle_timeout = 60.0
    # Seconds a fresh connection may take to send its first request once the
    # server is stopping (the pools read it: see Connection.arriving).
    first_request_grace = 5.0
    # Seconds to wait for the peer's EOF after our half-close, so unread
    # request bytes do not turn close() into a reset that cuts the response.
    linger_timeout = 5.0

    def setup_handler(self, *, debug, multithreaded, multiprocess, max_conns,
                      allowed_peers=None):
        self.app = None
        self.debug = debug
        self.wsgi_multithread = multithreaded
        self.wsgi_multiprocess = multiprocess
        # The environ's entries that are the same on every request, added
        # with one update.
        self.wsgi_constants = {"wsgi.version": (1, 0), "wsgi.multithread": multithreaded,
                               "wsgi.multiprocess": multiprocess, "wsgi.run_once": False}
        self.max_conns = max_conns
        # Resolved once, by the caller (options.peer_allowlist): the allow
        # option, else FCGI_WEB_SERVER_ADDRS; "any"; or None (nothing set).
        # Who may connect is decided with the listening socket (peers.py).
        self.allowed_peers = allowed_peers
        self.peers = peers.rule_before_listening(allowed_peers)
        self.on_request_done = None
        # False: set TCP_NODELAY on each connection; see prepare_listener.
        self.nodelay_inherited = False
        self.nodelay_misses = 0

    def set_app(self, app):
        self.app = app

    # -- connection level

    def prepare_listener(self, listen_sock):
        """Look once at the listening socket: who may connect to it
        (``peers.decide``), and what accepted connections should inherit.

        Linux copies TCP_NODELAY from a listening socket to the sockets it
        accepts, which saves a system call per connection.
        """
        # What a connection's socket object is built from (make_socket):
        # read once; socket.accept() converts them to enums twice per call.
        self.socket_args = (int(listen_sock.family), int(listen_sock.type), listen_sock.proto)
        # Who may connect, from where the socket listens (protected mode).
        self.peers = peers.decide(listen_sock, self.allowed_peers)
        if listen_sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                listen_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                return
            self.nodelay_inherited = None  # Checked on the first connection.

    def make_socket(self, fd):
        """The socket object of a connection accepted as a bare descriptor,
        with the timeout that bounds its reads and writes."""
        sock = socket.socket(*self.socket_args, fd)
        sock.settimeout(self.idle_timeout or None)
        return sock

    # -- the contract with the pools

    def connect(self, sock, addr):
        """Return the ``Connection`` for an accepted socket, or for a bare
        descriptor (``sock`` an int, as a prefork worker accepts); None
        when the peer is not allowed (then it is closed)."""
        if type(sock) is int:
            fd, sock = sock, None
        else:
            fd = sock.fileno()
            # Bounds every read and write in the middle of a request: a peer
            # that stops sending or reading would pin us forever.
            sock.settimeout(self.idle_timeout or None)
        if not NEVER_BLOCKS:
            # os.read and os.write wait on a blocking descriptor: serve_next
            # must not.
            os.set_blocking(fd, False)
        conn = self.connection_class(self, fd, addr, sock)
        # An IP peer's address is a tuple, a UNIX socket peer's a str:
        # cheaper than the family, an enum built on every access.
        if type(addr) is tuple:
            if not self.nodelay_inherited:
                self._set_nodelay(conn._sock)
            if self.peers.checks and not self.peers.admits(addr):
                self.peers.refuse(self.protocol, describe_peer(conn._sock, addr), addr)
                conn.close()
                return None
        return conn

    def serve_next(self, conn):
        """Serve the next request on ``conn`` if it has come; return KEEP
        (open, no request in progress) or CLOSE (closed).  Never raise.

        The pool calls it when the connection is readable or ``ready()``.
        Nothing is waited for until the app runs: a request that has not
        come whole leaves KEEP, its bytes kept in ``conn``, for the pool to
        call again when more arrive.
        Inside the app, reads wait for the peer (``wait_for_data``).
        """
        try:
            return conn.serve()
        except EOFError:
            conn.close()  # The peer closed its end.
        except Exception as exc:
            self.connection_failed(conn, exc)
            conn.close()
        return CLOSE

    def _set_nodelay(self, sock):
        # Nagle + delayed ACK stalled every small write by ~40 ms.
        if self.nodelay_inherited is None:  # The listener has it: see if this kernel copies it.
            if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
                self.nodelay_inherited = True
                return
            # Not copied: the kernel does not, or this connection was in
            # the backlog before the listener had the option (a client
            # that connected while the server started).  Look again on the
            # next few connections before deciding.
            self.nodelay_misses += 1
            if self.nodelay_misses >= NODELAY_SAMPLES:
                self.nodelay_inherited = False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_failed(self, conn, exc):
        """Log why a connection ended early, as much as it deserves."""
        if isinstance(exc, ResponseAbandoned):
            # Already logged.  Reset rather than close: after a FIN, an SCGI
            # response without Content-Length would look complete to the web
            # server and to its client.
            try:
                conn._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
            except OSError:
                pass
            return
        peer = describe_peer(conn._sock, conn._addr)
        if isinstance(exc, ProtocolError):
            log.warning("%s: closing connection from %s: %s", self.protocol, peer, exc)
        elif isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since 3.10.
            log.info("%s: %s stalled for %ss; connection closed",
                     self.protocol, peer, self.idle_timeout)
        elif is_client_gone(exc):
            log.info("%s: %s went away: %s", self.protocol, peer, exc)
        else:
            log.error("%s: unexpected error on connection from %s",
                      self.protocol, peer, exc_info=exc)

    def wait_for_data(self, conn):
        """Inside a request: wait (bounded by the idle timeout) for the
        peer's next bytes; False if none came.  A pool may replace it on
        the handler (see the module docstring)."""
        return bool(wait_readable([conn], self.idle_timeout or None))

    def linger_close(self, sock):
        """Half-close, read until the peer's EOF (bounded), then close."""
        deadline = time.monotonic() + self.linger_timeout
        try:
            sock.shutdown(socket.SHUT_WR)
            while wait_readable([sock], max(0.0, deadline - time.monotonic())):
                if not sock.recv(65536):
                    break
        except OSError:
            pass
        finally:
            sock.close()

    # -- request level

    def base_environ(self, environ, body):
        """Make the params a web server sent into the request's WSGI environ.

        ``body`` is the request body as the protocol has it (see
        ``body.request_body``); the app reads it up to CONTENT_LENGTH.
        """
        environ.update(self.wsgi_constants)
        environ["wsgi.errors"] = sys.stderr
        fix_environ(environ, self.protocol)  # wsgi.url_scheme too.
        try:
            length = content_length(environ)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        environ["wsgi.input"] = request_body(body, length)
        return environ

    def serve_request(self, environ, transport):
        """Run the app for one request; send an error page if it fails.

        Raise ClientGone (or the OSError) when the peer is gone, and
        ResponseAbandoned when the app failed after the response started:
        the only honest thing left then is to break the connection.
        """
        missing = missing_cgi_variables(environ)
        if missing:
            # The web server's configuration is wrong (a hand-written
            # fastcgi_param list, a bad test client): a 400 and one line
            # that names what is missing, not Django's KeyError traceback.
            log.warning("%s: bad request for %s: the web server sent no %s",
                        self.protocol, environ.get("REQUEST_URI") or environ.get("PATH_INFO", "?"),
                        " or ".join(missing))
            try:
                send_error(transport, "400 Bad Request", b"Bad Request\n")
            finally:
                if self.on_request_done is not None:
                    self.on_request_done()
            return
        response = Response(transport)
        response.head_only = environ.get("REQUEST_METHOD") == "HEAD"
        try:
            run_app(self.app, environ, response)
        except Exception as exc:
            if is_client_gone(exc):
                raise
            where = "{} {}".format(environ.get("REQUEST_METHOD", "?"),
                                   environ.get("REQUEST_URI") or environ.get("PATH_INFO", ""))
            if response.headers_sent:
                log.exception("%s: exception after the response to %s started; "
                              "closing the connection", self.protocol, where)
                raise ResponseAbandoned("the application failed mid-response") from exc
            log.exception("%s: unhandled exception in the application for %s",
                          self.protocol, where)
            status, headers, body = error_page(self.debug, sys.exc_info())
            send_error(transport, status, body, headers, head_only=response.head_only)
        finally:
            if self.on_request_done is not None:
                self.on_request_done()
