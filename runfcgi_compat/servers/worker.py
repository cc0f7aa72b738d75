"""The body of one prefork worker process, and its one idle connection.

A worker serves one request at a time.  It keeps its state in the pool's
``Scoreboard`` (a plain memory write, no system call) and writes to its
pipe to the master only when the master must act: once when the app has
loaded, when it leaves the accept loop while the pool is short of spare
workers and may grow, and when every worker is stuck waiting on a peer
that stopped sending.

Between two requests a worker keeps at most one idle connection, its
*own*: the one it has just served (a kept connection, or a fresh one whose
first bytes are on their way).  While free it waits in one poll on that
connection, the listening socket, the pool's channel of connections whose
next request has arrived (``idle.py``), its stop and drain notices and its
signals, and then serves, in this order:

1. its own connection, if its next request has arrived;
2. a connection from the channel;
3. a new connection from the listening socket.

Before it serves 2 or 3 it passes its own connection to the master, which
watches it from then on.  So a request never waits for another request in
the same worker: a request on an idle connection is read by the worker
that keeps it (free, by definition) or by the master.  An idle connection
costs a descriptor in the master, never a worker, and the web server can
keep as many connections as it runs requests at once.

A fresh connection whose request has not arrived yet makes the worker
stop accepting for up to ``first_byte_grace`` seconds: the
request is normally on its way, and accepting meanwhile would only pass
connections to the master and back.

A worker serves a connection through the handler's contract
(``connect``, then ``serve_next`` while a request has come; see
base.ProtocolHandler): the worker alone decides where the connection
waits next.

Leaving: on a drain (SIGHUP, ``maxrequests``) the worker passes its own
connection to the master and exits, so a kept connection stays open for
the next workers.  On a stop (SIGTERM) a kept one closes at once; a fresh
one, and fresh ones the master passes on as it stops, get their first
request's grace, all together.
"""
import errno
import os
import selectors
import signal
import time

from . import orphan
from .base import KEEP, log
from .idle import hand_over, recv_conn
from .scoreboard import BUSY, EXITING, FREE, HOLDING, IDLE, STALLED
from .signals import STOP_SIGNALS, Notice, SignalBox, wait_readable

WORKER_SIGNALS = STOP_SIGNALS + (signal.SIGHUP, signal.SIGUSR1)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BOOT_FAILED = 3

# Errors from accept() that concern one connection or a passing shortage,
# not the listening socket: log, pause briefly, go on.
TRANSIENT_ACCEPT_ERRORS = (errno.ECONNABORTED, errno.EMFILE, errno.ENFILE,
                           errno.ENOBUFS, errno.ENOMEM, errno.EPROTO, errno.EPERM)

READY = b"R"  # the app has loaded
WAKE = b"!"  # look at the scoreboard now

# What a worker's wait found (bits; the data of its selector's keys).
OWN = 1  # its own idle connection is readable
PASSED = 2  # the channel has a connection whose request has arrived
LISTEN = 4  # the listening socket has a new connection
NOTICE = 8  # stop or drain
SIGNALLED = 16  # a signal arrived (handled in the wait)


class WorkerProcess:
    """One worker, after fork; ``run()`` returns its exit status."""

    # Seconds a worker waits for room in the channel to the master (full
    # only while the master does not read, as during a reload's exec).
    hand_over_patience = 10.0
    # Seconds a fresh, silent connection keeps its worker from accepting.
    first_byte_grace = 0.05
    # Seconds a stalled request waits for its peer before the worker counts
    # as stalled (see PreforkPool._refuse_if_stuck).
    stall_mark = 0.1

    def __init__(self, pool, slot, status_fd):
        self.pool = pool
        self.handler = pool.handler
        self.listen = listen = pool.listen_sock
        self.channel = pool.keeper.workers_end
        # The descriptor-level accept that socket.accept() calls: the
        # handler makes a socket object only if one is needed (see
        # base.Connection).
        self._accept = listen._accept
        self.board = pool.board
        self.slot = slot
        self._set_state = pool.board.setter(slot)
        self.status_fd = status_fd
        self.master = os.getpid() if pool.master_pid is None else pool.master_pid
        self.served = 0
        # stop: leave now (SIGTERM/SIGINT; kept connections close at once).
        # drain: leave gently (SIGHUP from a reload, maxrequests: the own
        # connection goes to the master).  Both end the accept loop.  They
        # are set inside the signal handler, because the main thread may be
        # busy in a request.
        self.stop, self.drain = Notice(), Notice()
        # The own idle connection (None: none, or being served), the
        # descriptor registered for it (-1: none) and when it expires.
        self.own = None
        self.own_fd = -1
        self.own_deadline = None
        # Fresh connections passed on by a stopping master: (fd, addr).
        self.late = []
        self.selector = None
        self.box = None
        # While a fresh connection's request is awaited (see _keep), the
        # listening socket is not watched, until this monotonic time.
        self.deaf_until = 0.0

    # -- the scoreboard and the pipe

    def mark(self, state):
        self._set_state(state[0])

    def _tell_master(self, what):
        try:
            os.write(self.status_fd, what)
        except OSError:
            # The master is gone, or was replaced by a new image of itself
            # (a reload) that will ask us to finish: finish gently.
            self.drain.set()

    def _leave_idle(self):
        """Now busy with a connection: ask for more workers if spares ran
        out and there is room (the master sleeps otherwise)."""
        self.mark(HOLDING)
        states = self.board.snapshot()
        if FREE in states and states.count(IDLE) < self.pool.minspare:
            self._tell_master(WAKE)

    def wake_if_all_stalled(self):
        states = self.board.snapshot().replace(FREE, b"")
        if states and states.count(STALLED) == len(states):
            self._tell_master(WAKE)

    # -- the process

    def run(self, blocked_mask):
        box = SignalBox(WORKER_SIGNALS, also={signal.SIGTERM: self.stop.set,
                                              signal.SIGINT: self.stop.set,
                                              signal.SIGHUP: self.drain.set})
        box.install()
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked_mask)
        if self.stop.is_set() or self.drain.is_set():
            return EXIT_OK
        return self.serve(box)

    def serve(self, box):
        """Load the app and serve until told to leave; ``box``: the signals."""
        try:
            app = self.pool.load_app()
        except BaseException:
            log.exception("prefork: worker %d could not load the application", os.getpid())
            return EXIT_BOOT_FAILED
        handler = self.handler
        handler.set_app(app)
        handler.on_request_done = self._request_done
        handler.wait_for_data = self.wait_for_data
        self.mark(IDLE)
        self._tell_master(READY)
        try:
            self._accept_loop(box)
        finally:
            self.mark(EXITING)
        return EXIT_OK

    def _request_done(self):
        self.served += 1
        if self.pool.maxrequests and self.served >= self.pool.maxrequests:
            self.drain.set()  # Finish this request, then make way.

    def _handle_signals(self, box):
        # Stop and drain are set inside the handlers; SIGUSR1 is done here.
        for signum in box.drain():
            if signum == signal.SIGUSR1:
                self.pool._reopen_logs()

    # -- serving

    def _serve(self, conn):
        """Serve what has come on ``conn`` (None: refused, closed already);
        if it stays open, it becomes the own connection."""
        if conn is not None and self._serve_ready(conn):
            self._keep(conn)
        else:
            self.mark(HOLDING if self.deaf_until else IDLE)

    def _serve_ready(self, conn):
        """Serve the requests that have come on ``conn``, through the
        handler's contract; True if it is open and idle after, False if
        closed."""
        handler = self.handler
        while handler.serve_next(conn) is KEEP:
            if conn.ready():
                continue  # The next request is buffered already.
            if not conn.partial():
                return True
            # Part of a request is in this process, and bytes read cannot be
            # passed to another: wait here for the rest (bounded).
            if not self.wait_for_data(conn):
                handler.connection_failed(conn, TimeoutError())
                conn.close()
                return False
        return False

    def wait_for_data(self, conn):
        """Inside a request: wait (bounded by the idle timeout) for the
        peer's next bytes.  The handler calls it (set in ``serve``): a wait
        longer than ``stall_mark`` marks this worker stalled, so the master
        can tell a pool of stuck workers from a busy one."""
        # The first poll is the hot path: the peer's bytes are normally there.
        timeout = self.handler.idle_timeout or None
        first = self.stall_mark if timeout is None else min(self.stall_mark, timeout)
        if wait_readable([conn], first):
            return True
        if timeout is not None and timeout <= first:
            return False
        self.mark(STALLED)
        self.wake_if_all_stalled()
        try:
            rest = None if timeout is None else timeout - first
            return bool(wait_readable([conn], rest))
        finally:
            self.mark(BUSY)

    # -- the own connection

    def _keep(self, conn):
        """``conn`` is open with no request in it: it becomes the own
        connection, watched in the worker's poll."""
        self.own = conn
        fd = conn.fd
        if fd != self.own_fd:
            self._unwatch_own()
            self.selector.register(fd, selectors.EVENT_READ, OWN)
            self.own_fd = fd
        idle = self.handler.idle_timeout
        self.own_deadline = time.monotonic() + idle if idle else None
        if conn.fresh:
            # Its first request is normally on its way: accepting meanwhile
            # would only pass this connection to the master and back.
            self.deafen(self.first_byte_grace)
            self.mark(HOLDING)
        else:
            self.mark(IDLE)

    def _unwatch_own(self):
        if self.own_fd >= 0:
            self.selector.unregister(self.own_fd)
            self.own_fd = -1

    def _drop_own(self):
        """Stop watching the own connection; return it (or None)."""
        own, self.own = self.own, None
        self._unwatch_own()
        if own is not None and own.fresh:
            self.hear()
        return own

    def _pass_own(self):
        """Pass the own connection to the master, before serving another."""
        own = self._drop_own()
        if own is not None:
            hand_over(self.channel, own, own.fresh, own.addr, self.hand_over_patience)

    def _close_own(self):
        own = self._drop_own()
        if own is not None:
            own.close()

    def _serve_own(self):
        """The own connection is readable: serve it (its request has come)."""
        own = self._drop_own()
        self.mark(BUSY)
        self._serve(own)

    # -- waiting

    def _timeout(self, now):
        """Seconds the worker may sleep: at most one (the check for a lost
        master), not past its own connection's deadline nor the end of a
        deaf spell."""
        limit = 1.0
        if self.own_fd >= 0 and self.own_deadline is not None:
            limit = min(limit, self.own_deadline - now)
        if self.deaf_until:
            limit = min(limit, self.deaf_until - now)
        return max(0.0, limit)

    def wait(self):
        """One poll of everything the worker watches; return what it found."""
        found = 0
        for key, _ in self.selector.select(self._timeout(time.monotonic())):
            found |= key.data
        if found & SIGNALLED:
            self._handle_signals(self.box)
        return found

    def deafen(self, seconds):
        if not self.deaf_until:
            self.selector.unregister(self.listen)
        self.deaf_until = time.monotonic() + seconds

    def hear(self):
        if self.deaf_until:
            self.deaf_until = 0.0
            self.selector.register(self.listen, selectors.EVENT_READ, LISTEN)

    # -- the loop

    def _take_passed(self):
        """Serve a connection from the channel; False if another worker
        took it first."""
        got = recv_conn(self.channel)
        if got is None:
            return False
        fd, first, addr, stopping = got
        if stopping:
            # The pool is stopping (our SIGTERM is on its way): a fresh
            # connection for the grace of _finish_fresh, not to pass back.
            self.stop.set()
            self.late.append((fd, addr))
            return True
        self._pass_own()
        self._leave_idle()
        conn = self.handler.connect(fd, addr)
        if conn is not None:
            conn.fresh = first
        self._serve(conn)
        return True

    def _accept_one(self):
        """Accept and serve one connection; False if none was waiting."""
        try:
            fd, addr = self._accept()
        except (BlockingIOError, InterruptedError):
            return False  # Nothing waiting, or another worker won it.
        except OSError as exc:
            if exc.errno not in TRANSIENT_ACCEPT_ERRORS:
                raise
            if exc.errno in (errno.EMFILE, errno.ENFILE) and self.own is not None:
                self._pass_own()  # That frees a descriptor here.
                return True
            log.warning("prefork: accept() failed: %s", exc)
            wait_readable([self.stop], 0.5)
            return True
        self._pass_own()
        self._leave_idle()
        self._serve(self.handler.connect(fd, addr))
        return True

    def _accept_loop(self, box):
        listen, stop, drain = self.listen, self.stop, self.drain
        # The descriptors of the listening socket, the channel and the
        # notices never change: one selector serves the whole loop, and the
        # own connection is added and removed as it comes and goes.  poll(),
        # not epoll or kqueue: for half a dozen descriptors, one of which
        # changes whenever a connection moves, it needs no system call to
        # add or remove one.
        selector = self.selector = selectors.PollSelector()
        for item, what in ((listen, LISTEN), (self.channel, PASSED), (stop, NOTICE),
                           (drain, NOTICE), (box, SIGNALLED)):
            selector.register(item, selectors.EVENT_READ, what)
        self.box = box
        check_master_at = 0.0
        try:
            while not (stop.is_set() or drain.is_set()):
                if box.has_pending():
                    self._handle_signals(box)
                now = time.monotonic()
                if now >= check_master_at:  # At most once a second, busy or not.
                    check_master_at = now + 1.0
                    if os.getppid() != self.master:
                        log.warning("prefork: worker %d lost its master; exiting", os.getpid())
                        orphan.let_go(listen)  # Where no signal told us (orphan.py).
                        stop.set()
                        break
                if self.deaf_until and now >= self.deaf_until:
                    self.hear()  # That fresh connection is still silent.
                    self.mark(IDLE)
                if self.own is not None and self.own_deadline is not None \
                        and now >= self.own_deadline:
                    log.debug("%s: idle connection timed out after %ss",
                              self.handler.protocol, self.handler.idle_timeout)
                    self._close_own()
                # Accept before polling: under load the next connection is
                # usually waiting, and the poll was a fifth of the cost of a
                # request.  Not with an own connection: its next request
                # comes first.
                if self.own is None and not self.deaf_until and self._accept_one():
                    continue
                found = self.wait()
                if found & OWN and self.own is not None:
                    self._serve_own()
                elif found & PASSED and self._take_passed():
                    pass
                elif found & LISTEN and not self.deaf_until:
                    self._accept_one()
        finally:
            self._finish()
            selector.close()

    def _finish(self):
        """A worker serves a connection through the handler's contract
(``connect``, then ``serve_next`` while a request has come; see
base.ProtocolHandler): the worker alone decides where the connection
waits next.

Leaving: on a drain the own connection goes to the master; on a
        stop a kept one closes and fresh ones get their grace."""
        if not self.stop.is_set():
            self._pass_own()
            return
        own = self._drop_own()
        if own is not None and not own.fresh:
            own.close()
            own = None
        self._finish_fresh(own)

    def _finish_fresh(self, own):
        """Stopping: fresh connections whose request is still on its way get
        ``first_request_grace`` seconds, all together: the own one (if
        fresh) and those the master passes on as it stops."""
        waiting = {} if own is None else {own.fd: own}
        channel = self.channel.fileno()
        deadline = time.monotonic() + self.handler.first_request_grace
        while True:
            self._take_late(waiting)
            if not waiting:
                break
            # The channel too: the master may pass on more meanwhile.
            ready = wait_readable(list(waiting) + [channel],
                                  max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            for fd in ready:
                if fd == channel:
                    continue
                conn = waiting.pop(fd)
                self.mark(BUSY)
                if self._serve_ready(conn):
                    conn.close()  # Stopping: it closes after this request.
                self.mark(IDLE)
        for conn in waiting.values():
            conn.close()

    def _take_late(self, waiting):
        """Add the connections passed on by the stopping master to ``waiting``."""
        while True:
            got = recv_conn(self.channel)
            if got is None:
                break
            # Not passed as stopping: passed before the stop, its request
            # has arrived (served, then closed as the stop says).
            self.late.append((got[0], got[2]))
        for fd, addr in self.late:
            conn = self.handler.connect(fd, addr)
            if conn is not None:
                waiting[fd] = conn
        self.late = []
