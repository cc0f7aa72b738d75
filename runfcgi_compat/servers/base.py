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

The pools set attributes on a handler:

* ``on_request_done``: called after every request (prefork counts them for
  ``maxrequests``).
* ``hold``: a ``HoldPolicy``: how a read inside a request waits
  (``wait_mid_request``; prefork marks the worker stalled), and, for the
  prefork worker's old entry points (``handle_accepted`` and friends), how
  a connection between requests waits; the threaded pool calls the
  contract itself.
* ``stop_notice`` and ``drain_notice``: read only by those old entry
  points' ``wait_for_request``; no pool sets ``drain_notice`` now (a
  draining prefork worker passes its idle connection to the master).
"""
import errno
import ipaddress
import logging
import os
import socket
import struct
import sys
import time
import traceback

from . import speedups
from .environ import fix_environ
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


class Parked:
    """A connection between two requests that a hold policy handed back to
    its pool (the prefork worker's old entry points, see ProtocolHandler):
    ``conn`` is its Connection, for ``resume_connection`` once the peer has
    sent something.  Returned, never raised."""

    # Filled in by ProtocolHandler._hold; class defaults keep __init__ short.
    conn = sock = addr = None

    def __init__(self, first):
        self.first = first


# ``HoldPolicy.wait_for_request``'s answer when a stop or drain notice
# arrived: the handler decides again under the stopping rules.
NOTICE = "notice"

# ``serve_kept``'s answers (the pools' old entry points, see ProtocolHandler).
SERVED = "served"  # One request served; the connection is held as before.
CLOSED = "closed"  # The connection is closed.
RESUME = "resume"  # Part of a request has come: resume the connection to wait for the rest.


class HoldPolicy:
    """Hold the connection: the worker or thread waits with it.

    ``wait_for_request`` returns True (a request is arriving), False (close
    the connection), ``NOTICE`` or a ``Parked`` (park the connection), or
    raises ``Parked``.
    ``wait_mid_request`` waits for the peer's next bytes inside a request.
    """

    def wait_for_request(self, handler, sock, first, notices):
        ready = wait_readable([sock] + notices, handler.idle_timeout or None)
        if sock in ready:
            return True
        if ready:
            return NOTICE
        log.debug("%s: idle connection timed out after %ss",
                  handler.protocol, handler.idle_timeout)
        return False

    def wait_mid_request(self, handler, sock, parkable=False):
        """``parkable``: the app has not started, so ``Parked`` may be raised."""
        return bool(wait_readable([sock], handler.idle_timeout or None))


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


# -- allowed peers ------------------------------------------------------------


def parse_allowed_peers(networks):
    """Turn addresses or networks ("127.0.0.1", "10.0.0.0/8", "::1") into
    ``ip_network`` objects; None (or nothing usable) allows every peer.

    ``networks`` is a comma-separated string (FCGI_WEB_SERVER_ADDRS) or a
    sequence (the ``allow`` option, already validated).
    """
    if networks is None:
        return None
    if isinstance(networks, str):
        networks = networks.split(",")
    allowed = []
    for item in networks:
        item = str(item).strip().strip("[]")
        if not item:
            continue
        try:
            allowed.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            log.warning("allowed peers: ignoring %r, not an IP address or network", item)
    return allowed or None


def peer_allowed(family, addr, allowed):
    """Return True if a peer may talk to us.

    UNIX-socket peers are always allowed: file permissions guard the socket.
    An IPv4 peer reaching an IPv6 socket appears as ::ffff:a.b.c.d and
    matches the plain IPv4 entry.
    """
    if allowed is None or family not in (socket.AF_INET, socket.AF_INET6):
        return True
    try:
        peer = ipaddress.ip_address(str(addr[0]).split("%", 1)[0])
    except (ValueError, IndexError, TypeError):
        return False
    candidates = [peer]
    if getattr(peer, "ipv4_mapped", None) is not None:
        candidates.append(peer.ipv4_mapped)
    return any(ip.version == net.version and ip in net
               for ip in candidates for net in allowed)


def describe_peer(sock, addr):
    if sock.family == getattr(socket, "AF_UNIX", None):
        return "unix socket"
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError):
        return str(addr)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


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


def send_error(transport, status, body, headers=None):
    """Send a complete plain-text response of our own in one write."""
    if headers is None:
        headers = [("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(body)))]
    response = Response(transport)
    response.buffered = True
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
    # server is stopping (see wait_for_request).
    first_request_grace = 5.0
    # Draining (reload, maxrequests): a kept connection closes after this
    # many quiet seconds, and at its next idle moment after drain_timeout.
    drain_quiet = 1.0
    drain_timeout = 30.0
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
        # option, else FCGI_WEB_SERVER_ADDRS; None lets every peer in.
        self.allowed_peers = parse_allowed_peers(allowed_peers)
        self.stop_notice = None
        self.drain_notice = None
        self.drain_started = None
        self.on_request_done = None
        self.hold = HoldPolicy()
        # False: set TCP_NODELAY on each connection; see prepare_listener.
        self.nodelay_inherited = False
        self.nodelay_misses = 0

    def set_app(self, app):
        self.app = app

    # -- connection level

    def prepare_listener(self, listen_sock):
        """Set what accepted connections should inherit, once, on the listener.

        Linux copies TCP_NODELAY from a listening socket to the sockets it
        accepts, which saves a system call per connection.
        """
        # What a connection's socket object is built from (make_socket):
        # read once; socket.accept() converts them to enums twice per call.
        self.socket_args = (int(listen_sock.family), int(listen_sock.type), listen_sock.proto)
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
            if self.allowed_peers is not None and not peer_allowed(
                    conn._sock.family, addr, self.allowed_peers):
                log.warning("%s: connection from %s refused (not in FCGI_WEB_SERVER_ADDRS)",
                            self.protocol, describe_peer(conn._sock, addr))
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

    # -- the pools' old entry points, on top of the contract above, until
    # -- both pools call connect() and serve_next() themselves

    def handle_accepted(self, fd, addr):
        """Serve a connection accepted as a bare descriptor; as handle_connection."""
        # A web server writes its request right after connecting: read
        # first, wait only if it has not come.
        return self._hold(self.connect(fd, addr))

    def handle_connection(self, sock, addr):
        """Serve one accepted connection until it closes; never raise.

        Return None, or a ``Parked`` when the hold policy parked the
        connection: then it is still open, for ``resume_connection``.
        """
        return self._hold(self.connect(sock, addr))

    def serve_handed(self, fd, addr, fresh=True):
        """Serve a connection passed between processes while idle (prefork,
        see ``idle.py``; ``fresh``: no request served on it yet); as
        handle_connection."""
        conn = self.connect(fd, addr)
        if conn is not None:
            conn.fresh = fresh
        return self._hold(conn)

    def resume_connection(self, parked):
        """Go on serving a connection parked earlier (found readable)."""
        return self._hold(parked.conn)

    def serve_kept(self, parked):
        """Serve the next request on a held, readable kept connection:
        SERVED (held as before), CLOSED, or RESUME (part of a request came:
        ``resume_connection`` waits for the rest)."""
        conn = parked.conn
        if self.serve_next(conn) is CLOSE:
            return CLOSED
        return RESUME if conn.partial() else SERVED

    def _hold(self, conn):
        """Serve requests; between them ask the hold policy where to wait."""
        if conn is None:
            return None
        while self.serve_next(conn) is KEEP:
            if conn.ready():
                continue  # The next request may be here already.
            if conn.partial():
                # Part of a request is in this process: a prefork worker
                # cannot pass it on, so it waits here for the rest (bounded).
                if self.wait_for_data(conn):
                    continue
                self.connection_failed(conn, TimeoutError())
                conn.close()
                return None
            verdict = self.wait_for_request(conn, conn.fresh, returns_parked=True)
            if verdict is False:
                conn.close()
                return None
            if verdict is not True:
                verdict.conn = verdict.sock = conn
                verdict.addr = conn._addr
                return verdict
        return None

    def wait_for_request(self, sock, first, returns_parked=False):
        """Wait until ``sock`` has a request for us; False: close instead.

        When the hold policy parks the connection, return the ``Parked`` if
        ``returns_parked`` (the caller passes it on as the return value of
        its ``run``, up to ``_drive``), else raise it.

        Once a stop is requested an idle connection closes at once.  A fresh
        connection is different: the web server has just connected to send
        a request, which may not have arrived yet, and closing would fail
        it; its first request is still awaited for ``first_request_grace``
        seconds.  While draining, a kept connection in use stays open.
        """
        stop, drain = self.stop_notice, self.drain_notice
        stopping = stop is not None and stop.is_set()
        draining = drain is not None and drain.is_set()
        if stopping or draining:
            if first:
                return sock in wait_readable([sock], self.first_request_grace)
            if stopping or time.monotonic() - self.drain_started > self.drain_timeout:
                return False
            waiting_on = [sock] if stop is None else [sock, stop]
            return sock in wait_readable(waiting_on, self.drain_quiet)
        if drain is None:
            notices = [] if stop is None else [stop]
        else:
            notices = [drain] if stop is None else [stop, drain]
        verdict = self.hold.wait_for_request(self, sock, first, notices)
        if verdict is True or verdict is False:
            return verdict
        if verdict is NOTICE:  # A notice arrived while we waited: decide as above.
            return self.wait_for_request(sock, first, returns_parked)
        if returns_parked:
            return verdict
        raise verdict

    def wait_for_data(self, conn):
        """Inside a request: wait (bounded) for the peer's next bytes."""
        return self.hold.wait_mid_request(self, conn)

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

    def base_environ(self, environ, wsgi_input, errors=None):
        # wsgi.url_scheme is set by fix_environ.
        environ.update(self.wsgi_constants)
        environ["wsgi.input"] = wsgi_input
        environ["wsgi.errors"] = errors if errors is not None else sys.stderr
        fix_environ(environ, self.protocol)
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
            send_error(transport, status, body, headers)
        finally:
            if self.on_request_done is not None:
                self.on_request_done()
