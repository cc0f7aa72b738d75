"""The body of one prefork worker process, and how it holds connections.

A worker accepts on the shared listening socket and serves one request at
a time.  It keeps its state in the pool's ``Scoreboard`` (a plain memory
write, no system call) and writes to its pipe to the master only when the
master must act: once when the app has loaded, when it leaves the accept
loop while the pool is short of spare workers and may grow, and when every
worker is stuck waiting on a peer that stopped sending.

Holding a connection with no request in it (a kept one between two
requests, or a fresh one whose first bytes have not arrived) is where
flup's children starved the pool: 60 idle kept connections pinned 60
workers.  Here a worker *holds* any number of such connections, a
descriptor each, and watches them in one poll together with the listening
socket; whatever is ready (a held connection with a request, a new
connection in the backlog) is served in turn.  An idle kept connection
costs a descriptor, never a worker, and the web server can keep as many
connections as it runs requests at once: with nginx's ``fastcgi_keep_conn``
and more concurrent requests than workers, a worker that could keep only
one connection had to close it whenever new ones waited, and half of the
requests paid for a new connection.

The price: a request that arrives on a held connection waits while its
worker runs another request to its end (no other process can read that
connection).  With views that take seconds, run more workers than the web
server keeps connections, or the threaded method, or no kept connections.
"""
import collections
import errno
import os
import select
import signal
import time

from . import orphan
from .base import NOTICE, SERVED, HoldPolicy, Parked, close_expired, close_quietly, log
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

LISTEN = -1  # In the ready queue: accept a connection.
WATCH = select.POLLIN | select.POLLPRI


class WorkerHold(HoldPolicy):
    """Serve a ready connection at once, else hand it to the worker's loop.

    After a request (or on a fresh connection whose request has not
    arrived) the connection looks at everything the worker watches, in one
    poll.  If only this connection is ready -- the common case with one
    busy kept connection -- its next request is served at once, with no
    extra work.  If others are ready too, they are queued and this one is
    parked (a ``Parked`` returned) at the end of the queue, so no connection
    waits for another to go quiet.  If nothing is ready, it is parked and
    the loop waits for all of them.

    A fresh connection whose request has not arrived yet makes the worker
    stop accepting for up to ``first_byte_grace`` seconds.  The request is
    normally on its way; accepting meanwhile would let one worker collect a
    burst of new connections that other workers could serve (twenty slow
    requests arriving at once all queued behind the first).
    """

    # Seconds a fresh, silent connection keeps its worker from accepting.
    first_byte_grace = 0.05
    # Seconds a stalled request waits for its peer before the worker counts
    # as stalled (see PreforkPool._refuse_if_stuck).
    stall_mark = 0.1

    def __init__(self, worker):
        self.worker = worker

    def wait_for_request(self, handler, sock, first, notices):
        worker = self.worker
        resumed, worker.resumed = worker.resumed, None
        if resumed is not None and resumed == worker.served:
            # Taken from the ready queue (the poll saw it readable), and no
            # request has been served on it since: its bytes are waiting.
            worker.mark(BUSY)
            return True
        if first:
            worker.deafen(self.first_byte_grace)
        if worker.queue:
            return Parked(first)  # Others are ready: their turn first.
        worker.mark(HOLDING if first else IDLE)
        sock_ready, others, noticed = worker.look(sock)
        if noticed:
            return NOTICE
        if sock_ready and (first or not others):
            # A fresh connection's request goes first: the ones queued
            # behind it can only be served here, while the new one could
            # have gone to another worker.
            if first:
                worker.hear()
            worker.mark(BUSY)
            return True
        worker.queue.extend(others)
        if sock_ready:
            worker.queue.append(sock.fileno())
        return Parked(first)

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
        self.listen = listen = pool.listen_sock
        # FastCGI serves a held kept connection's next request in place.
        self._serve_kept = getattr(pool.handler, "serve_kept", None)
        # The descriptor-level accept that socket.accept() calls: the handler
        # builds the socket object (or serves the bare descriptor; see
        # ProtocolHandler.handle_accepted).
        self._accept = listen._accept
        self.board = pool.board
        self.slot = slot
        self._set_state = pool.board.setter(slot)
        self.status_fd = status_fd
        self.master = os.getpid() if pool.master_pid is None else pool.master_pid
        self.served = 0
        # stop: leave now (SIGTERM/SIGINT; kept connections close at once).
        # drain: leave gently (SIGHUP from a reload, maxrequests; see
        # base.wait_for_request).  Both end the accept loop.  They are set
        # inside the signal handler, because the main thread may be busy
        # serving a kept connection that waits on them.
        self.stop, self.drain = Notice(), Notice()
        # Connections held between two requests, oldest first (they share
        # one idle timeout, so the first one expires first):
        # fd -> (Parked, deadline).  ``queue``: what the polls found ready,
        # to serve in turn (held connections' fds, LISTEN).  ``resumed``:
        # the count of requests served when the connection being resumed
        # was taken from the queue (see WorkerHold.wait_for_request).
        self.held = {}
        self.queue = collections.deque()
        self.resumed = None
        self.poller = None
        self.box = None
        # While a fresh connection's request is awaited (see WorkerHold),
        # the listening socket is not watched, until this monotonic time.
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
            self.begin_drain()

    def _leave_idle(self):
        """Now holding a fresh connection: ask for more workers if spares ran
        out and there is room (the master sleeps otherwise)."""
        self.mark(HOLDING)
        states = self.board.snapshot()
        if FREE in states and states.count(IDLE) < self.pool.minspare:
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

    # -- held connections

    def _hold(self, parked):
        idle = self.handler.idle_timeout
        fd = parked.sock.fileno()
        self.held[fd] = (parked, time.monotonic() + idle if idle else None)
        self.poller.register(fd, WATCH)

    def _unhold(self, fd):
        entry = self.held.pop(fd, None)
        if entry is not None:
            self.poller.unregister(fd)
        return entry

    def _close_parked(self, parked):
        fd = parked.sock.fileno()
        close_quietly(parked.sock)
        self._forget(fd)

    def _forget(self, fd):
        """Stop holding the closed connection that was ``fd``."""
        self._unhold(fd)
        try:
            self.queue.remove(fd)  # Its number may soon be a new connection's.
        except ValueError:
            pass

    def _poll_ms(self, now):
        """Milliseconds the loop may sleep: at most a second (the check for a
        lost master), not past the oldest held connection's deadline nor
        the end of a deaf spell."""
        limit = 1.0
        if self.held:
            deadline = next(iter(self.held.values()))[1]
            if deadline is not None:
                limit = min(limit, deadline - now)
        if self.deaf_until:
            limit = min(limit, self.deaf_until - now)
        return int(max(0.0, limit) * 1000 + 0.999)

    def deafen(self, seconds):
        if not self.deaf_until:
            self.poller.modify(self.listen.fileno(), 0)
        self.deaf_until = time.monotonic() + seconds

    def hear(self):
        if self.deaf_until:
            self.deaf_until = 0.0
            self.poller.modify(self.listen.fileno(), select.POLLIN)

    def look(self, sock):
        """One poll of ``sock`` and everything the worker watches.

        Return ``(sock_ready, others, noticed)``: ``others`` are the held
        connections and LISTEN found ready, ``noticed`` a stop or drain.
        """
        poller = self.poller
        fd = sock.fileno()
        poller.register(fd, WATCH)
        try:
            events = poller.poll(self._poll_ms(time.monotonic()))
        finally:
            poller.unregister(fd)
        sock_ready = noticed = False
        others = []
        held, listen_fd, box_fd = self.held, self.listen.fileno(), self.box.fileno()
        for ready_fd, _ in events:
            if ready_fd == fd:
                sock_ready = True
            elif ready_fd in held:
                others.append(ready_fd)
            elif ready_fd == listen_fd:
                others.append(LISTEN)
            elif ready_fd == box_fd:
                self._handle_signals(self.box)
            else:
                noticed = True  # stop or drain
        return sock_ready, others, noticed

    # -- the loop

    def _serve(self, run, *args):
        try:
            parked = run(*args)
        finally:
            self.resumed = None
        if parked is not None:
            self._hold(parked)
        self.mark(HOLDING if self.deaf_until else IDLE)

    def _serve_held(self, fd):
        """Serve the next request on held kept connection ``fd`` in place
        (``serve_kept``); False: resume it instead."""
        entry = self.held.get(fd)
        if entry is None or entry[0].first:
            return False
        self.mark(BUSY)
        outcome = self._serve_kept(entry[0])
        if outcome == SERVED:
            # Held as before, idle from now: to the end of the oldest-first order.
            del self.held[fd]
            idle = self.handler.idle_timeout
            self.held[fd] = (entry[0], time.monotonic() + idle if idle else None)
        else:  # Closed already.
            self._forget(fd)
        self.mark(HOLDING if self.deaf_until else IDLE)
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
            if exc.errno in (errno.EMFILE, errno.ENFILE) and self.held:
                self._close_parked(next(iter(self.held.values()))[0])  # The oldest gives way.
                return True
            log.warning("prefork: accept() failed: %s", exc)
            wait_readable([self.stop], 0.5)
            return True
        self._leave_idle()
        self._serve(self.handler.handle_accepted, fd, addr)
        return True

    def _accept_loop(self, box):
        listen, stop, drain = self.listen, self.stop, self.drain
        # The descriptors of the listening socket and the notices never
        # change: one poller serves the whole loop, and held connections
        # are added to it and removed as they come and go.
        poller = self.poller = select.poll()
        for item in (listen, stop, drain, box):
            poller.register(item.fileno(), select.POLLIN)
        self.box = box
        listen_fd, box_fd = listen.fileno(), box.fileno()
        held, queue = self.held, self.queue
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
                        break
                if self.deaf_until and now >= self.deaf_until:
                    self.hear()  # That fresh connection is still silent.
                    self.mark(IDLE)
                if queue:
                    item = queue.popleft()
                    if item == LISTEN:
                        if not self.deaf_until:
                            self._accept_one()
                        continue
                    if self._serve_kept is not None and self._serve_held(item):
                        continue
                    entry = self._unhold(item)
                    if entry is not None:
                        if entry[0].first:
                            self.hear()  # Its request has arrived.
                        self.mark(BUSY)
                        self.resumed = self.served
                        self._serve(self.handler.resume_connection, entry[0])
                    continue
                # Accept before polling: under load the next connection is
                # usually waiting, and the poll was a fifth of the cost of a
                # request.  Not while connections are held: they would wait
                # behind the backlog.
                if not held and not self.deaf_until and self._accept_one():
                    continue
                if held:
                    close_expired(held, now, self._close_parked, self.handler)
                for fd, _ in poller.poll(self._poll_ms(now)):
                    if fd == listen_fd:
                        queue.append(LISTEN)
                    elif fd == box_fd:
                        self._handle_signals(box)
                    elif fd in held:
                        queue.append(fd)
        finally:
            queue.clear()
            self._finish_held()

    def _finish_held(self):
        """Leaving: idle held connections close; in use ones are drained.

        On a stop, a fresh connection still gets its first request's grace
        (see ProtocolHandler.wait_for_request) and kept ones close at once.
        On a drain, held connections are served while the web server keeps
        using them, until all were quiet for ``drain_quiet`` seconds or
        ``drain_timeout`` has passed.
        """
        handler, held, stop = self.handler, self.held, self.stop
        started = time.monotonic()
        while held:
            if stop.is_set():
                self._finish_fresh()
                return
            if time.monotonic() - (handler.drain_started or started) > handler.drain_timeout:
                break
            socks = [parked.sock for parked, _ in held.values()]
            ready = wait_readable(socks + [stop], handler.drain_quiet)
            if not ready:
                break
            for sock in ready:
                entry = None if sock is stop else self._unhold(sock.fileno())
                if entry is not None:
                    self.mark(BUSY)
                    self._serve(handler.resume_connection, entry[0])
        for fd in list(held):
            close_quietly(self._unhold(fd)[0].sock)

    def _finish_fresh(self):
        """Stopping: kept connections close; fresh ones whose request is
        still on its way get ``first_request_grace`` seconds, all together."""
        handler, fresh = self.handler, {}
        for fd in list(self.held):
            parked = self._unhold(fd)[0]
            if parked.first:
                fresh[parked.sock] = parked
            else:
                close_quietly(parked.sock)
        deadline = time.monotonic() + handler.first_request_grace
        while fresh:
            ready = wait_readable(list(fresh), max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            for sock in ready:
                self._serve(handler.resume_connection, fresh.pop(sock))
        for sock in fresh:
            close_quietly(sock)
