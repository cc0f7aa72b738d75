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
import collections
import errno
import os
import signal
import time

from .base import NOTICE, HoldPolicy, Parked, log
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
    """Hold several connections; serve them and new ones in turn.

    Between two requests a connection is *held*: the worker watches it
    together with its other held connections and the listening socket, in
    one poll.  If only this connection is ready (the common case with one
    busy kept connection) it is served again at once.  If others are ready
    too (held connections with a request, or new connections waiting in the
    backlog) this one is parked at the end of the worker's queue and the
    others are served first, so no connection waits for another to go
    quiet.  An idle held connection costs a descriptor, never a worker.
    """

    # Seconds without the peer's bytes, inside a request, after which the
    # worker counts as stalled on its peer (see PreforkPool._refuse_if_stuck).
    stall_mark = 0.1

    def __init__(self, worker):
        self.worker = worker

    def wait_for_request(self, handler, sock, first, notices):
        worker = self.worker
        idle = handler.idle_timeout or None
        if worker.resumed:
            # Taken from the queue because the poll saw it readable.
            worker.resumed = False
            worker.mark(BUSY)
            return True
        now = time.monotonic()
        deadline = None if idle is None else now + idle
        if worker.queue:
            # Others are ready and waiting for their turn: park this one
            # (without a look: the worker's next poll will see it).
            raise worker.park(first, deadline)
        worker.mark(HOLDING)
        held = worker.held
        fds = [sock] + notices + [worker.listen]
        if held:
            fds += [entry[0].sock for entry in held.values()]
        nearest = worker.next_deadline(deadline)
        limit = None if nearest is None else max(0.0, nearest - now)
        ready = wait_readable(fds, limit)
        if len(ready) == 1 and ready[0] is sock:
            worker.mark(BUSY)
            return True
        if not ready:
            if deadline is not None and time.monotonic() >= deadline:
                log.debug("%s: idle connection timed out after %ss", handler.protocol, idle)
                return False
            raise worker.park(first, deadline)
        queue = worker.queue
        noticed = False
        sock_ready = False
        for item in ready:
            if item is sock:
                sock_ready = True
            elif item is worker.listen:
                queue.append(item)
            elif isinstance(item, Notice):
                noticed = True
            else:
                queue.append(item.fileno())
        if noticed:
            return NOTICE
        if sock_ready:
            queue.append(sock.fileno())
        raise worker.park(first, deadline)

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
        # Connections held between two requests: fd -> (Parked, deadline),
        # and what is ready to be served next, in turn: held connections'
        # fds and the listening socket.
        self.held = {}
        self.queue = collections.deque()
        self.resumed = False  # The connection being resumed was seen readable.

    # -- the scoreboard and the pipe

    def mark(self, state):
        self.board.set(self.slot, state)

    def park(self, first, deadline):
        parked = Parked(first)
        parked.deadline = deadline
        return parked

    def next_deadline(self, deadline=None):
        """The earliest idle deadline of ``deadline`` and the held ones."""
        for _, other in self.held.values():
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def _hold(self, parked):
        self.held[parked.sock.fileno()] = (parked, parked.deadline)

    def _close_held(self, fd):
        entry = self.held.pop(fd, None)
        if entry is not None:
            try:
                entry[0].sock.close()
            except OSError:
                pass

    def _expire_held(self):
        if not self.held:
            return
        now = time.monotonic()
        for fd, (_, deadline) in list(self.held.items()):
            if deadline is not None and deadline <= now:
                log.debug("%s: idle connection timed out after %ss",
                          self.handler.protocol, self.handler.idle_timeout)
                self._close_held(fd)

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

    def _serve(self, serve, *args):
        parked = serve(*args)
        if parked is not None:
            self._hold(parked)
        self.mark(IDLE)

    def _accept_loop(self, box):
        listen, stop, drain = self.listen, self.stop, self.drain
        held, queue = self.held, self.queue
        try:
            while not (stop.is_set() or drain.is_set()):
                if not queue:
                    nearest = self.next_deadline()
                    limit = 1.0 if nearest is None else min(1.0, max(0.0, nearest - time.monotonic()))
                    fds = [listen, stop, drain, box]
                    if held:
                        fds += [entry[0].sock for entry in held.values()]
                    ready = wait_readable(fds, limit)
                    for signum in box.drain():
                        if signum == signal.SIGUSR1:
                            self.pool._reopen_logs()
                    if os.getppid() != self.master:
                        log.warning("prefork: worker %d lost its master; exiting", os.getpid())
                        break
                    if stop.is_set() or drain.is_set():
                        continue
                    for item in ready:
                        if item is listen:
                            queue.append(item)
                        elif item is not stop and item is not drain and item is not box:
                            queue.append(item.fileno())
                    self._expire_held()
                    continue
                item = queue.popleft()
                if item is not listen:
                    entry = held.pop(item, None)
                    if entry is not None:
                        self.mark(BUSY)
                        self.resumed = True
                        try:
                            self._serve(self.handler.resume_connection, entry[0])
                        finally:
                            self.resumed = False
                    continue
                try:
                    conn, addr = listen.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # Another worker won this connection.
                except OSError as exc:
                    if exc.errno not in TRANSIENT_ACCEPT_ERRORS:
                        raise
                    if exc.errno in (errno.EMFILE, errno.ENFILE) and held:
                        # The longest-held connection gives way.
                        self._close_held(next(iter(held)))
                        continue
                    log.warning("prefork: accept() failed: %s", exc)
                    wait_readable([stop], 0.5)
                    continue
                self._leave_idle()
                self._serve(self.handler.handle_connection, conn, addr)
        finally:
            queue.clear()
            self._finish_held()

    def _finish_held(self):
        """Leaving: close idle held connections; serve those in use (drain)."""
        handler, held, stop = self.handler, self.held, self.stop
        started = time.monotonic()
        while held:
            if stop.is_set():
                # A fresh connection still gets its first-request grace
                # (see ProtocolHandler.wait_for_request); idle ones close.
                for fd, (parked, _) in list(held.items()):
                    if parked.first:
                        del held[fd]
                        self._serve(handler.resume_connection, parked)
                    else:
                        self._close_held(fd)
                continue
            drained_for = time.monotonic() - (handler.drain_started or started)
            if drained_for > handler.drain_timeout:
                for fd in list(held):
                    self._close_held(fd)
                return
            socks = [entry[0].sock for entry in held.values()]
            ready = wait_readable(socks + [stop], handler.drain_quiet)
            if not ready:
                for fd in list(held):
                    self._close_held(fd)
                return
            for item in ready:
                if item is stop:
                    continue
                entry = held.pop(item.fileno(), None)
                if entry is not None:
                    self.mark(BUSY)
                    self._serve(handler.resume_connection, entry[0])
