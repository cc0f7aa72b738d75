"""The threaded pool: one process, one thread per connection being served.

Replaces flup's ``ThreadedServer``/``ThreadPool``, whose shutdown hung on
any idle open connection, never timed idle connections out (60 idle kept
connections exhausted 50 threads), and used ``setDaemon``/``notifyAll``/
``currentThread`` (warnings on 3.13, errors under ``-W error``).

* The main thread waits in ``poll()`` on the listening socket and a signal
  wake-up fd, accepts, and queues the connection for a worker thread.  It
  stops accepting while all ``maxchildren`` threads are busy, so surplus
  connections wait in the kernel's backlog, not in our memory.
* Between ``minspare`` and ``maxspare`` idle threads are kept.
* A kept connection waits for its next request at most the handler's
  ``idle_timeout`` seconds, and closes at once when the server stops.
* ``maxrequests`` does not apply (as in Django 1.8's runfcgi): there is no
  process to recycle.

Signals (main thread):

* SIGTERM, SIGINT: graceful stop.  Accepting stops, idle connections are
  closed, requests in progress finish; after ``graceful_timeout`` seconds
  (or a second SIGTERM/SIGINT) ``serve()`` returns anyway and the remaining
  threads (daemon threads) die with the process.
* SIGHUP: logged and otherwise ignored.  A reload needs a new process,
  which only a restart gives safely here: re-executing in place would
  repeat the start-up (daemonizing, pidfile) that the runner owns.  Use
  ``method=prefork`` for reloads without downtime.
* SIGUSR1: reopen log files.
"""
import collections
import signal
import threading
import time

from .base import log
from .signals import STOP_SIGNALS, Notice, SignalBox, wait_readable

POOL_SIGNALS = STOP_SIGNALS + (signal.SIGHUP, signal.SIGUSR1)


class ThreadedPool:
    # Seconds to let requests in progress finish after SIGTERM.
    graceful_timeout = 30.0

    def __init__(self, handler, load_app, *, maxspare, minspare, maxchildren,
                 maxrequests=0, on_reopen_logs=None):
        self.handler = handler
        self.load_app = load_app
        self.maxspare = maxspare
        self.minspare = min(minspare, maxspare, maxchildren)
        self.maxchildren = maxchildren
        self.on_reopen_logs = on_reopen_logs
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._threads = set()
        self._idle = 0
        self._stopping = False

    def serve(self, listen_sock):
        """Serve on ``listen_sock`` until a graceful stop; return None."""
        self.handler.set_app(self.load_app())
        self._stop = Notice()
        self.handler.stop_notice = self._stop
        self._box = SignalBox(POOL_SIGNALS)
        was_blocking = listen_sock.getblocking()
        listen_sock.setblocking(False)
        self._box.install()
        try:
            self._accept_loop(listen_sock)
            self._drain()
        finally:
            self._box.restore()
            self._box.close()
            listen_sock.setblocking(was_blocking)

    # -- main thread

    def _accept_loop(self, listen_sock):
        while True:
            for signum in self._box.drain():
                if signum in STOP_SIGNALS:
                    log.info("threaded: %s received; stopping gracefully",
                             signal.Signals(signum).name)
                    return
                if signum == signal.SIGHUP:
                    log.warning("threaded: SIGHUP ignored; restart the process to "
                                "load new code (method=prefork reloads on SIGHUP)")
                elif signum == signal.SIGUSR1:
                    self._reopen_logs()
            with self._cond:
                self._keep_spare_threads()
                can_accept = self._free_slots() > 0
            waiting_on = [self._box, listen_sock] if can_accept else [self._box]
            if listen_sock not in wait_readable(waiting_on):
                continue
            try:
                conn, addr = listen_sock.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                log.warning("threaded: accept() failed: %s", exc)
                wait_readable([self._box], 0.5)
                continue
            self._dispatch(conn, addr)

    def _free_slots(self):
        """Connections we can take now: idle threads, or room for new ones."""
        return self._idle - len(self._queue) + (self.maxchildren - len(self._threads))

    def _dispatch(self, conn, addr):
        with self._cond:
            self._queue.append((conn, addr))
            if self._idle < len(self._queue) and len(self._threads) < self.maxchildren:
                self._start_thread()
            self._cond.notify()

    def _keep_spare_threads(self):
        while self._idle < self.minspare and len(self._threads) < self.maxchildren:
            if not self._start_thread():
                break

    def _start_thread(self):
        """Start one worker thread; return False if the OS refused."""
        # Called with self._cond held.  Daemon threads: a request still
        # running after the graceful timeout must not keep the process alive.
        thread = threading.Thread(target=self._worker, name="runfcgi-worker", daemon=True)
        self._threads.add(thread)
        self._idle += 1
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": limits reached.
            self._threads.discard(thread)
            self._idle -= 1
            log.error("threaded: cannot start a thread: %s", exc)
            return False
        return True

    def _drain(self):
        """Stop: close idle connections, wait (bounded) for busy ones."""
        self._stop.set()
        deadline = time.monotonic() + self.graceful_timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        while True:
            with self._cond:
                busy = len(self._threads)
            if not busy:
                log.info("threaded: all connections closed")
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("threaded: %d connections still busy after %ss; exiting anyway",
                            busy, self.graceful_timeout)
                return
            ready = wait_readable([self._box], remaining)
            if ready and any(s in STOP_SIGNALS for s in self._box.drain()):
                log.warning("threaded: second stop signal; exiting now")
                return

    def _reopen_logs(self):
        if self.on_reopen_logs is None:
            return
        try:
            self.on_reopen_logs()
        except Exception:
            log.exception("threaded: reopening the log files failed")

    # -- worker threads

    def _worker(self):
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._queue:
                    if self._stopping or self._idle > self.maxspare:
                        self._idle -= 1
                        self._threads.discard(me)
                        self._box.wake()  # Capacity or drain state changed.
                        return
                    self._cond.wait()
                conn, addr = self._queue.popleft()
                self._idle -= 1
            try:
                self.handler.handle_connection(conn, addr)
            finally:
                with self._cond:
                    self._idle += 1
                self._box.wake()
