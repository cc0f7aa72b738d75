"""The body of one prefork worker process, and how it holds a connection.

A worker accepts on the shared listening socket and serves one connection
at a time.  It keeps its state in the pool's ``Scoreboard`` (a plain memory
write, no system call) and writes to its pipe to the master only when the
master must act: once when the app has loaded, when it leaves the accept
loop while the pool is short of spare workers and may grow, and when every
worker is stuck waiting on a peer that stopped sending.

Holding a connection with no request in it (a fresh one whose first bytes
have not arrived, or a kept one between two requests) is where flup's
children starved the pool: 60 idle kept connections pinned 60 workers.  A
holding worker here also watches the listening socket.  When a connection
is waiting there and no worker is idle to take it, the holding worker
closes its idle connection and goes to accept the waiting one: the web
server opens a new connection for its next request (nginx, Apache and
lighttpd do so transparently).  A fresh connection gets ``first_byte_grace``
first, because the web server's request is normally already on its way.
"""
import errno
import os
import select
import signal
import time

from .base import NOTICE, HoldPolicy, log
from .scoreboard import BUSY, EXITING, FREE, HOLDING, IDLE, STALLED, STARTING
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


class WorkerHold(HoldPolicy):
    """Hold a connection, but never while new connections wait for a worker."""

    # Seconds a fresh connection may stay silent before the worker considers
    # giving it up; nginx writes its request right after connecting.
    first_byte_grace = 0.05
    # Seconds to leave a waiting connection to an idle worker before looking
    # at the listening socket again (it stays readable until accepted).
    recheck_delay = 0.01
    # Seconds without the peer's bytes, inside a request, after which the
    # worker counts as stalled on its peer (see PreforkPool._refuse_if_stuck).
    stall_mark = 0.1

    def __init__(self, worker):
        self.worker = worker
        self._poller = None
        self._sock_fd = -1
        self._listen_watched = False

    def _poller_for(self, sock, notices):
        """One poll object for the worker's life.

        The notices and the listening socket never change, only the held
        connection does: re-registering one descriptor is cheaper than
        building a poller per wait, which happens once per request on a
        kept connection.
        """
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            for notice in notices:
                poller.register(notice.fileno(), select.POLLIN)
            poller.register(self.worker.listen.fileno(), 0)  # See _watch_listen.
        fd = sock.fileno()
        if fd != self._sock_fd:
            if self._sock_fd >= 0:
                poller.unregister(self._sock_fd)
            poller.register(fd, select.POLLIN | select.POLLPRI)
            self._sock_fd = fd
        return poller

    def _watch_listen(self, poller, watch):
        if watch != self._listen_watched:
            poller.modify(self.worker.listen.fileno(), select.POLLIN if watch else 0)
            self._listen_watched = watch

    def wait_for_request(self, handler, sock, first, notices):
        worker = self.worker
        worker.mark(HOLDING)
        poller = self._poller_for(sock, notices)
        sock_fd, listen_fd = sock.fileno(), worker.listen.fileno()
        idle = handler.idle_timeout or None
        now = time.monotonic()
        deadline = None if idle is None else now + idle
        watch_from = now + self.first_byte_grace if first else now
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                log.debug("%s: idle connection timed out after %ss", handler.protocol, idle)
                return False
            watching = now >= watch_from
            limit = None if deadline is None else deadline - now
            if not watching:
                limit = watch_from - now if limit is None else min(limit, watch_from - now)
            self._watch_listen(poller, watching)
            ms = None if limit is None else int(limit * 1000 + 0.999)
            ready = [fd for fd, _ in poller.poll(ms)]
            if sock_fd in ready:
                worker.mark(BUSY)
                return True
            if not ready:
                continue
            if ready != [listen_fd] or worker.leaving():
                return NOTICE
            if not worker.help_coming():
                log.debug("prefork: worker %d gives up an idle connection: "
                          "new connections wait and no worker is free", os.getpid())
                return False
            watch_from = time.monotonic() + self.recheck_delay

    def wait_mid_request(self, handler, sock, parkable=False):
        # The hot path is the first poll, as before: the peer's bytes are
        # normally there already.
        timeout = handler.idle_timeout or None
        first = self.stall_mark if timeout is None else min(self.stall_mark, timeout)
        if wait_readable([sock], first):
            return True
        if timeout is not None and timeout <= first:
            return False
        self.worker.mark(STALLED)
        self.worker.wake_if_all_stalled()
        try:
            rest = None if timeout is None else timeout - first
            return bool(wait_readable([sock], rest))
        finally:
            self.worker.mark(BUSY)


class WorkerProcess:
    """One worker, after fork; ``run()`` returns its exit status."""

    def __init__(self, pool, slot, status_fd):
        self.pool = pool
        self.handler = pool.handler
        self.listen = pool.listen_sock
        self.board = pool.board
        self.slot = slot
        self.status_fd = status_fd
        self.master = os.getpid() if pool.master_pid is None else pool.master_pid
        self.served = 0
        # stop: leave now (SIGTERM/SIGINT; kept connections close at once).
        # drain: leave gently (SIGHUP from a reload, maxrequests; see
        # base.wait_for_request).  Both end the accept loop.  They are set
        # inside the signal handler, because the main thread may be busy
        # serving a kept connection that waits on them.
        self.stop, self.drain = Notice(), Notice()

    # -- the scoreboard and the pipe

    def mark(self, state):
        self.board.set(self.slot, state)

    def help_coming(self):
        """True if an idle or starting worker can take a waiting connection.

        A starting one is ready within milliseconds (the app's modules are
        imported already): waiting for it is cheaper than closing a kept
        connection, and it covers a reload, when only new workers accept.
        """
        states = self.board.snapshot()
        return IDLE in states or STARTING in states

    def leaving(self):
        return self.stop.is_set() or self.drain.is_set()

    def _tell_master(self, what):
        try:
            os.write(self.status_fd, what)
        except OSError:
            # The master is gone, or was replaced by a new image of itself
            # (a reload) that will ask us to finish: finish gently.
            self.begin_drain()

    def _leave_idle(self):
        """Now holding a fresh connection: ask for more workers if spares ran
        out and there is room (the master sleeps otherwise)."""
        self.mark(HOLDING)
        states = self.board.snapshot()
        if states.count(IDLE) < self.pool.minspare and FREE in states:
            self._tell_master(WAKE)

    def wake_if_all_stalled(self):
        states = self.board.snapshot().replace(FREE, b"")
        if states and states.count(STALLED) == len(states):
            self._tell_master(WAKE)

    def begin_drain(self):
        if not self.drain.is_set():
            self.handler.drain_started = time.monotonic()
            self.drain.set()

    # -- the process

    def run(self, blocked_mask):
        box = SignalBox(WORKER_SIGNALS, also={signal.SIGTERM: self.stop.set,
                                              signal.SIGINT: self.stop.set,
                                              signal.SIGHUP: self.begin_drain})
        box.install()
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked_mask)
        if self.stop.is_set() or self.drain.is_set():
            return EXIT_OK
        try:
            app = self.pool.load_app()
        except BaseException:
            log.exception("prefork: worker %d could not load the application", os.getpid())
            return EXIT_BOOT_FAILED
        handler = self.handler
        handler.set_app(app)
        handler.stop_notice = self.stop
        handler.drain_notice = self.drain
        handler.on_request_done = self._request_done
        handler.hold = WorkerHold(self)
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
            self.begin_drain()  # Finish this connection, then make way.

    def _handle_signals(self, box):
        # Stop and drain are set inside the handlers; SIGUSR1 is done here.
        for signum in box.drain():
            if signum == signal.SIGUSR1:
                self.pool._reopen_logs()

    def _accept_loop(self, box):
        listen, stop, drain = self.listen, self.stop, self.drain
        # Accept first, poll only when the backlog is empty: under load the
        # next connection is usually waiting, and the poll (with its
        # Python-level set-up) was a fifth of the cost of a request.  The
        # descriptors never change, so one poller serves the whole loop.
        poller = select.poll()
        for item in (listen, stop, drain, box):
            poller.register(item.fileno(), select.POLLIN)
        box_fd = box.fileno()
        check_master_at = 0.0
        while not (stop.is_set() or drain.is_set()):
            if box.has_pending():
                self._handle_signals(box)
            now = time.monotonic()
            if now >= check_master_at:  # At most once a second, busy or not.
                check_master_at = now + 1.0
                if os.getppid() != self.master:
                    log.warning("prefork: worker %d lost its master; exiting", os.getpid())
                    break
            try:
                conn, addr = listen.accept()
            except (BlockingIOError, InterruptedError):
                # Nothing waiting, or another worker won this connection.
                for fd, _ in poller.poll(1000):
                    if fd == box_fd:
                        self._handle_signals(box)
                continue
            except OSError as exc:
                if exc.errno not in TRANSIENT_ACCEPT_ERRORS:
                    raise
                log.warning("prefork: accept() failed: %s", exc)
                wait_readable([stop], 0.5)
                continue
            self._leave_idle()
            self.handler.handle_connection(conn, addr)
            self.mark(IDLE)
