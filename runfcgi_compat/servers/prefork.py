"""The prefork pool: a master process supervising worker processes.

Replaces flup's ``PreforkServer``, whose master slept in ``select()``
through SIGTERM (PEP 475), compared status bytes with a str (so every
worker looked idle and the pool never grew past maxspare), died on
SIGUSR1, ended on SIGHUP, and let every worker return through the
caller's stack.

How it works:

* Workers ``accept()`` on the shared listening socket (non-blocking, after
  a ``poll`` that also watches the worker's stop notice) and serve one
  connection at a time with the protocol handler.
* Each worker has a pipe to the master and writes one byte when its state
  changes: ``I`` idle, ``B`` busy.  A worker is busy for as long as it holds
  a connection, including an idle kept FastCGI connection, so kept
  connections make the pool grow instead of starving new ones.
* The master keeps between ``minspare`` and ``maxspare`` idle workers and
  never more than ``maxchildren`` in all.  While demand outruns the spares
  it starts workers in doubling bursts (1, 2, 4, ...); surplus workers are
  retired once they have been idle for ``settle_time``.  It sleeps in
  ``poll()`` on the worker pipes and a signal wake-up fd, so signals act at
  once.
* Workers load the app after fork, so a reload gives them fresh code.

Signals to the master:

* SIGTERM, SIGINT: graceful stop.  Workers finish the request they hold and
  exit; idle ones exit at once.  After ``graceful_timeout`` seconds (or a
  second SIGTERM/SIGINT) the rest are killed.  ``serve()`` then returns.
* SIGHUP: graceful reload.  Same pid, same listening socket; every worker is
  asked to finish and exit, and new workers (new code) take over.  An old
  worker holding a kept connection serves it for as long as the web server
  keeps using it and closes it once quiet (see ``base.wait_for_request``):
  closing a busy kept connection races with the next request, which nginx
  retries for GET but not for POST.
* SIGUSR1: reopen log files, in the master and every worker.
* SIGCHLD: wakes the master to replace dead workers.  Workers that die
  before they are ready (the app failed to load) are replaced with an
  exponential back-off up to ``max_boot_backoff`` seconds.

Workers never return into the caller's stack: they end with ``os._exit``.
"""
import errno
import os
import signal
import sys
import time

from .base import log
from .signals import STOP_SIGNALS, Notice, SignalBox, wait_readable

MASTER_SIGNALS = STOP_SIGNALS + (signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)
WORKER_SIGNALS = STOP_SIGNALS + (signal.SIGHUP, signal.SIGUSR1)

IDLE, BUSY = b"I", b"B"
STARTING = b"S"  # Master-side only: forked, app not loaded yet.

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BOOT_FAILED = 3

# Errors from accept() that concern one connection or a passing shortage,
# not the listening socket: log, pause briefly, go on.
TRANSIENT_ACCEPT_ERRORS = (errno.ECONNABORTED, errno.EMFILE, errno.ENFILE,
                           errno.ENOBUFS, errno.ENOMEM, errno.EPROTO, errno.EPERM)


class Worker:
    """The master's record of one worker process."""

    def __init__(self, pid, status_fd):
        self.pid = pid
        self.status_fd = status_fd
        self.state = STARTING
        self.retiring = False  # Asked to stop (shrink, reload or stop).
        self.ever_ready = False
        self.idle_since = 0.0

    def __repr__(self):
        return f"<Worker {self.pid} {self.state.decode()}{' retiring' if self.retiring else ''}>"


class PreforkPool:
    # Seconds the master waits for busy workers after SIGTERM before it
    # kills them.
    graceful_timeout = 30.0
    # Longest pause between two attempts to start a worker that keeps
    # failing at start-up.
    max_boot_backoff = 5.0
    first_boot_backoff = 0.1
    # Most workers started in one go when the pool runs short of idle ones;
    # the burst doubles while the shortage lasts.
    max_spawn_burst = 32
    # Seconds a surplus worker stays idle before it is retired, and a
    # shortage must be over before the spawn burst resets.
    settle_time = 1.0

    def __init__(self, handler, load_app, *, maxspare, minspare, maxchildren,
                 maxrequests=0, on_reopen_logs=None):
        self.handler = handler
        self.load_app = load_app
        self.maxspare = maxspare
        self.minspare = min(minspare, maxspare)
        self.maxchildren = maxchildren
        self.maxrequests = maxrequests
        self.on_reopen_logs = on_reopen_logs
        self.workers = {}  # pid -> Worker

    # -- master --------------------------------------------------------------

    def serve(self, listen_sock):
        """Run the pool on ``listen_sock`` until a graceful stop; return None."""
        self._listen = listen_sock
        self._master_pid = os.getpid()
        self._box = SignalBox(MASTER_SIGNALS)
        self._stopping = False
        self._force = False
        self._deadline = None
        self._boot_failures = 0
        self._next_spawn_at = 0.0
        self._burst = 1
        self._last_shortage = 0.0
        was_blocking = listen_sock.getblocking()
        # Workers poll, then accept; only one wins each connection, the
        # others must get EAGAIN instead of blocking.
        listen_sock.setblocking(False)
        self._box.install()
        try:
            self._run()
        finally:
            if self.workers:  # Only after an unexpected error in the master.
                self._kill_all()
            self._box.restore()
            self._box.close()
            listen_sock.setblocking(was_blocking)

    def _run(self):
        while True:
            for signum in self._box.drain():
                self._on_signal(signum)
            self._reap()
            if self._stopping:
                if not self.workers:
                    log.info("prefork: all workers stopped")
                    return
                if self._force or time.monotonic() >= self._deadline:
                    self._kill_all()
                    return
            else:
                self._adjust_pool()
            self._wait_for_events()

    def _wait_for_events(self):
        timeout = None
        now = time.monotonic()
        if self._stopping:
            timeout = max(0.0, self._deadline - now)
        else:
            wakeup = self._next_wakeup(now)
            if wakeup is not None:
                timeout = max(0.0, wakeup - now)
        # A ceiling, in case a SIGCHLD was coalesced with another one.
        timeout = 1.0 if timeout is None else min(timeout, 1.0)
        fds = [self._box] + [w.status_fd for w in self.workers.values()
                             if w.status_fd is not None]
        for fd in wait_readable(fds, timeout):
            if fd is not self._box:
                self._read_status(fd)

    def _on_signal(self, signum):
        if signum in STOP_SIGNALS:
            if self._stopping:
                log.warning("prefork: second stop signal; killing the workers")
                self._force = True
            else:
                self._begin_stop(signum)
        elif signum == signal.SIGHUP:
            if not self._stopping:
                self._reload()
        elif signum == signal.SIGUSR1:
            self._reopen_logs()
            for worker in self.workers.values():
                self._signal(worker, signal.SIGUSR1)

    def _begin_stop(self, signum):
        log.info("prefork: %s received; stopping %d workers gracefully",
                 signal.Signals(signum).name, len(self.workers))
        self._stopping = True
        self._deadline = time.monotonic() + self.graceful_timeout
        for worker in self.workers.values():
            # Every worker, even one already draining after a reload.
            worker.retiring = True
            self._signal(worker, signal.SIGTERM)

    def _reload(self):
        log.info("prefork: SIGHUP received; replacing %d workers", len(self.workers))
        for worker in self.workers.values():
            # SIGHUP, not SIGTERM: finish gently (see base.wait_for_request).
            self._retire(worker, signal.SIGHUP)
        # Fresh code deserves a fresh start: forget old start-up failures.
        self._boot_failures = 0
        self._next_spawn_at = 0.0

    def _reopen_logs(self):
        if self.on_reopen_logs is None:
            return
        try:
            self.on_reopen_logs()
        except Exception:
            log.exception("prefork: reopening the log files failed")

    def _kill_all(self):
        if self.workers:
            log.warning("prefork: killing %d workers that did not stop in time: %s",
                        len(self.workers), ", ".join(str(p) for p in self.workers))
        for worker in self.workers.values():
            self._signal(worker, signal.SIGKILL)
        for pid in list(self.workers):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self._forget(self.workers[pid])

    # -- pool accounting

    def _adjust_pool(self):
        now = time.monotonic()
        current = [w for w in self.workers.values() if not w.retiring]
        idle = [w for w in current if w.state == IDLE]
        starting = sum(1 for w in current if w.state == STARTING)
        spare = len(idle) + starting
        if spare < self.minspare:
            self._last_shortage = now
            room = self.maxchildren - len(self.workers)
            if room > 0 and now >= self._next_spawn_at:
                count = min(room, max(self.minspare - spare, self._burst))
                for _ in range(count):
                    self._spawn()
                # Demand that outruns the spare workers grows the next burst
                # (1, 2, 4, ...) so a queue of slow requests is met quickly.
                self._burst = min(self._burst * 2, self.max_spawn_burst)
        elif now - self._last_shortage > self.settle_time:
            self._burst = 1
        # Shrink only workers idle for settle_time: a worker that has just
        # finished a request during a burst is likely needed again, and
        # killing it would only mean forking (and loading the app) anew.
        surplus = len(idle) - self.maxspare
        if surplus > 0:
            idle.sort(key=lambda w: w.idle_since)
            for worker in idle[:surplus]:
                if now - worker.idle_since >= self.settle_time:
                    self._retire(worker)

    def _next_wakeup(self, now):
        """When pool maintenance must run next without any event; None: never."""
        times = []
        if self._next_spawn_at > now:
            times.append(self._next_spawn_at)
        idle = [w.idle_since for w in self.workers.values()
                if w.state == IDLE and not w.retiring]
        if len(idle) > self.maxspare:
            times.append(min(idle) + self.settle_time)
        return min(times) if times else None

    def _retire(self, worker, signum=signal.SIGTERM):
        if not worker.retiring:
            worker.retiring = True
            self._signal(worker, signum)

    def _signal(self, worker, signum):
        try:
            os.kill(worker.pid, signum)
        except ProcessLookupError:
            pass

    def _read_status(self, fd):
        worker = next((w for w in self.workers.values() if w.status_fd == fd), None)
        if worker is None:
            return
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self._set_state(worker, data[-1:])
        else:
            # EOF: the worker is exiting; SIGCHLD will follow.  Stop polling.
            self._close_status(worker)

    def _set_state(self, worker, state):
        if state == IDLE and worker.state != IDLE:
            worker.idle_since = time.monotonic()
        worker.state = state
        # Any report means the app loaded (IDLE then BUSY may arrive in one read).
        if not worker.ever_ready:
            worker.ever_ready = True
            self._boot_failures = 0
            self._next_spawn_at = 0.0

    def _close_status(self, worker):
        if worker.status_fd is not None:
            os.close(worker.status_fd)
            worker.status_fd = None

    def _forget(self, worker):
        self._close_status(worker)
        self.workers.pop(worker.pid, None)

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.get(pid)
            if worker is None:
                continue
            # The last bytes may still be in the pipe (ready, then died).
            if worker.status_fd is not None:
                self._read_status(worker.status_fd)
            self._forget(worker)
            self._log_exit(worker, status)

    def _log_exit(self, worker, status):
        code = os.waitstatus_to_exitcode(status)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        if worker.retiring and code in (EXIT_OK, -signal.SIGTERM, -signal.SIGKILL):
            log.debug("prefork: worker %d exited (%s)", worker.pid, how)
        elif not worker.ever_ready and not worker.retiring:
            self._boot_failures += 1
            delay = min(self.max_boot_backoff,
                        self.first_boot_backoff * 2 ** (self._boot_failures - 1))
            self._next_spawn_at = time.monotonic() + delay
            log.error("prefork: worker %d failed to start (%s); next attempt in %.1fs",
                      worker.pid, how, delay)
        elif code == EXIT_OK:
            log.debug("prefork: worker %d exited after its maxrequests", worker.pid)
        else:
            log.warning("prefork: worker %d died (%s); replacing it", worker.pid, how)

    def _spawn(self):
        read_fd, write_fd = os.pipe()
        # Block our signals across fork: until the child has installed its
        # own handlers, a signal would run the master's handler in the
        # child and write to the master's wake-up pipe.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(read_fd)
            os.close(write_fd)
            self._next_spawn_at = time.monotonic() + self.first_boot_backoff
            log.error("prefork: cannot start a worker: %s", exc)
            return
        if pid == 0:
            code = EXIT_ERROR
            try:
                os.close(read_fd)
                code = self._worker_main(write_fd, blocked)
            except BaseException:
                try:
                    log.exception("prefork: worker %d crashed", os.getpid())
                except BaseException:
                    pass
            finally:
                # Never return into the caller's stack (its cleanup code
                # belongs to the master).
                _flush_std_streams()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.workers[pid] = Worker(pid, read_fd)

    # -- worker --------------------------------------------------------------

    def _worker_main(self, status_fd, blocked_mask):
        """Body of a worker process; return its exit status."""
        # Shed the master's state: its wake-up fd, handlers and pipes.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self._box.close()
        for worker in self.workers.values():
            if worker.status_fd is not None:
                os.close(worker.status_fd)
        self.workers = {}
        handler = self.handler
        # stop: leave now (SIGTERM/SIGINT; kept connections close at once).
        # drain: leave gently (SIGHUP from a reload, maxrequests; see
        # base.wait_for_request).  Both end the accept loop.  They are set
        # inside the signal handler, because the main thread may be busy
        # serving a kept connection that waits on them.
        stop, drain = Notice(), Notice()

        def begin_drain():
            if not drain.is_set():
                handler.drain_started = time.monotonic()
                drain.set()

        box = SignalBox(WORKER_SIGNALS, also={signal.SIGTERM: stop.set,
                                              signal.SIGINT: stop.set,
                                              signal.SIGHUP: begin_drain})
        box.install()
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked_mask)

        if stop.is_set() or drain.is_set():
            return EXIT_OK
        try:
            app = self.load_app()
        except BaseException:
            log.exception("prefork: worker %d could not load the application", os.getpid())
            return EXIT_BOOT_FAILED

        served = 0

        def request_done():
            nonlocal served
            served += 1
            if self.maxrequests and served >= self.maxrequests:
                begin_drain()  # Finish this connection, then make way.

        handler.set_app(app)
        handler.stop_notice = stop
        handler.drain_notice = drain
        handler.on_request_done = request_done
        listen = self._listen
        master = self._master_pid

        def report(state):
            try:
                os.write(status_fd, state)
            except OSError:  # The master is gone: finish up and leave.
                stop.set()

        report(IDLE)
        while not (stop.is_set() or drain.is_set()):
            ready = wait_readable([listen, stop, drain, box], 1.0)
            for signum in box.drain():
                if signum == signal.SIGUSR1:
                    self._reopen_logs()
            if os.getppid() != master:
                log.warning("prefork: worker %d lost its master; exiting", os.getpid())
                break
            if stop.is_set() or drain.is_set() or listen not in ready:
                continue
            try:
                conn, addr = listen.accept()
            except (BlockingIOError, InterruptedError):
                continue  # Another worker won this connection.
            except OSError as exc:
                if exc.errno not in TRANSIENT_ACCEPT_ERRORS:
                    raise
                log.warning("prefork: accept() failed: %s", exc)
                wait_readable([stop], 0.5)
                continue
            report(BUSY)
            handler.handle_connection(conn, addr)
            report(IDLE)
        return EXIT_OK


def _flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
