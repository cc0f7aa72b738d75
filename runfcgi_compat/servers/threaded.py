"""The threaded pool: one process, a main thread that waits, threads that serve.

The shape of gunicorn's gthread worker and of waitress, which operators
know.  It replaces flup's ``ThreadedServer``/``ThreadPool``, whose shutdown
hung on any idle open connection, which never timed idle connections out
(60 idle kept connections exhausted 50 threads), and which used
``setDaemon``/``notifyAll``/``currentThread`` (errors under ``-W error``).

* The main thread owns one ``selectors.DefaultSelector`` (epoll on Linux,
  kqueue on the BSDs and macOS, poll elsewhere) and everything in it: the
  listening socket, every *idle* connection -- a kept one between two
  requests, a fresh one whose first request has not arrived, a FastCGI
  request whose records stopped before the app started -- and the signal
  box's pipe, which the worker threads also write to when the main thread
  must look at something (the wake-up).  It accepts new connections and,
  when an idle connection becomes readable, takes it out of the selector;
  either way the connection goes into the work queue.
* Worker threads take connections from the queue and serve them
  (``_serve``: the pool's one use of the protocol handler, through its
  contract ``connect``/``serve_next``, see base.py).  When a connection
  has no request in progress, its thread serves the next one at once only
  if it is already buffered or already arrived (a poll that never waits),
  and nothing else is waiting for a thread; otherwise it hands the
  connection back to the main thread and takes the next work.  An idle
  connection never holds a thread.
* At most ``maxchildren`` threads.  The main thread accepts only while a
  thread is free for the new connection, so surplus connections wait in
  the kernel's backlog, not in our memory.  Idle connections whose
  request arrives are queued even when every thread is busy; while
  anything is queued, or a new connection waits in the backlog, threads
  hand their connection back after every request instead of serving it
  again, so busy kept connections take turns with waiting ones.  The main
  thread accepts before it queues idle connections that became readable
  in the same turn, so a busy kept connection cannot take every free
  slot from the backlog.
* Idle connections sit in one table, oldest first (``IdleConnections``),
  which the main thread sweeps every turn: one closes after the handler's
  ``idle_timeout``; when ``accept()`` runs out of descriptors the
  longest-idle one is closed to make room.
* Between ``minspare`` and ``maxspare`` idle threads are kept: the main
  thread starts threads up to ``minspare`` idle ones, and retires those
  that stayed idle beyond ``maxspare`` through a whole ``spare_linger``
  window, so a burst does not start and end threads over and over.
* Shared state (the thread counts, the queued work count, the connections
  handed back, the counters of ``stats()``) is under one lock; the
  selector, the idle table and the listening socket belong to the main
  thread alone.  Tests drive the main thread one ``turn()`` at a time with
  a fake ``clock``.
* ``maxrequests`` does not apply (as in Django 1.8's runfcgi): there is no
  process to recycle.

Signals (main thread):

* SIGTERM, SIGINT: graceful stop.  Accepting stops, idle kept connections
  are closed (a fresh one, or one whose request stopped half-way, still
  gets the handler's ``first_request_grace`` to send the rest), requests
  in progress finish; after ``graceful_timeout`` seconds (or a second
  SIGTERM/SIGINT) ``serve()`` returns anyway and the remaining threads
  (daemon threads) die with the process.
* SIGHUP: logged and otherwise ignored (a documented no-op).  A reload
  needs a new process, and re-executing this one in place would need every
  thread drained first: a pause, not a reload.  Use ``method=prefork`` for
  reloads without downtime.
* SIGUSR1: reopen log files.
"""
import collections
import errno
import queue
import selectors
import signal
import threading
import time

from .base import KEEP, close_quietly, log
from .signals import STOP_SIGNALS, Notice, SignalBox, reopen_logs

POOL_SIGNALS = STOP_SIGNALS + (signal.SIGHUP, signal.SIGUSR1)
# accept() errors that closing an idle connection can cure.
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
# accept() errors that concern one connection only: try the next.
CONNECTION_ERRORS = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM)

# What the selector's keys carry, besides an idle connection.
LISTENER = "listener"
BOX = "box"


class IdleConnections:
    """The main thread's idle connections, oldest first, with deadlines.

    Every connection gets the same timeout when it is added, so the oldest
    expires first and a sweep stops at the first one still in time.
    """

    def __init__(self):
        self._table = collections.OrderedDict()  # fd -> (connection, deadline or None)

    def __len__(self):
        return len(self._table)

    def __iter__(self):
        return iter([conn for conn, _ in self._table.values()])

    def add(self, conn, deadline):
        fd = conn.fileno()
        self._table.pop(fd, None)
        self._table[fd] = (conn, deadline)

    def pop(self, fd):
        return self._table.pop(fd)[0]

    def oldest(self):
        """The longest-idle connection; None if there is none."""
        for conn, _ in self._table.values():
            return conn
        return None

    def next_deadline(self):
        for _, deadline in self._table.values():
            return deadline
        return None

    def expired(self, now):
        """Remove and return the connections whose deadline has passed."""
        gone = []
        while self._table:
            conn, deadline = next(iter(self._table.values()))
            if deadline is None or deadline > now:
                break
            self._table.popitem(last=False)
            gone.append(conn)
        return gone


class ThreadedPool:
    # Seconds to let requests in progress finish after SIGTERM.
    graceful_timeout = 30.0
    # Seconds an idle thread beyond ``maxspare`` stays before it leaves.
    spare_linger = 2.0
    # Seconds the main thread stops accepting after accept() failed in a
    # way no idle connection can cure.
    accept_pause = 0.5
    # The time the main thread's deadlines are measured in (tests: a fake).
    clock = staticmethod(time.monotonic)

    def __init__(self, handler, load_app, *, maxspare, minspare, maxchildren,
                 maxrequests=0, on_reopen_logs=None):
        self.handler = handler
        self.load_app = load_app
        self.maxspare = maxspare
        self.minspare = min(minspare, maxspare, maxchildren)
        self.maxchildren = maxchildren
        self.on_reopen_logs = on_reopen_logs
        self._work = queue.SimpleQueue()  # Connections for the threads; None: leave.
        self._lock = threading.Lock()
        # Under the lock:
        self._threads = 0  # Started and not yet left.
        self._idle = 0  # Threads waiting for work.
        self._queued = 0  # Connections in the work queue.
        self._leaving = 0  # Threads told to leave (a None each) and not gone yet.
        self._returned = []  # Connections handed back, for the main thread.
        self._backlog = False  # A new connection waits while no thread is free.
        self._full = False  # No thread is free: one that becomes free wakes the main thread.
        self._stopping = False
        # The main thread sleeps only if nothing changed since it looked:
        # a thread with news for it counts them, and wakes it if it sleeps.
        self._news = 0
        self._seen = 0  # _news when the main thread last looked.
        self._asleep = False  # The main thread is in select() (or about to be).
        self._woken = False  # A wake-up byte is on its way.
        self._fewest_spare = 0  # Fewest spare threads in this linger window.
        self._idle_connections = 0  # len(self._conns), as of the last turn.
        self._counts = dict.fromkeys(("accepted", "resumed", "returned", "again"), 0)
        # The main thread's alone:
        self._conns = IdleConnections()
        self._selector = None
        self._listen = None
        self._listening = False
        self._accept_after = None  # Accepting paused until then (accept_pause).
        self._window_end = 0.0  # End of the spare threads' linger window.

    # -- the main thread

    def serve(self, listen_sock):
        """Serve on ``listen_sock`` until a graceful stop; return None."""
        self.open(listen_sock)
        try:
            self._box.install()
            # The runner holds these until a handler exists (see runner.run).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, POOL_SIGNALS)
            while self.turn():
                pass
            self.finish()
        finally:
            self._box.restore()
            self.close()

    def stop(self):
        """Stop gracefully, as SIGTERM does, from any thread, once ``open()``
        has returned: for a pool whose ``turn()`` runs in a thread that no
        signal reaches (``runfcgi_compat.testing``'s live server)."""
        self._box.post(signal.SIGTERM)

    def open(self, listen_sock):
        """Load the app, start ``minspare`` threads and watch ``listen_sock``.

        ``serve()`` is ``open()``, ``turn()`` until a stop signal,
        ``finish()`` and ``close()``; tests call them one at a time.
        """
        handler = self.handler
        handler.set_app(self.load_app())
        self._stop = Notice()
        self._box = SignalBox(POOL_SIGNALS)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._box, selectors.EVENT_READ, BOX)
        self._was_blocking = listen_sock.getblocking()
        listen_sock.setblocking(False)
        handler.prepare_listener(listen_sock)
        self._listen = listen_sock
        now = self.clock()
        with self._lock:
            self._keep_spare_threads()
            self._fewest_spare = self._spare()
        self._window_end = now + self.spare_linger

    def turn(self, wait=None):
        """Wait for what comes next (at most ``wait`` seconds, if given)
        and act on it; False once a stop signal has arrived."""
        now = self.clock()
        self._take_returned(now)
        self._close_expired(now)
        with self._lock:
            if now >= self._window_end:
                self._retire_spare_threads(now)
            self._keep_spare_threads()
            free = self._free_slots()
            self._full = free <= 0
            if free > 0:
                self._backlog = False
            backlog = self._backlog
            lingering = self._threads > self.maxspare
        paused = self._accept_after is not None and now < self._accept_after
        self._watch_listener(not paused and (free > 0 or not backlog))
        deadlines = [self._conns.next_deadline(), self._accept_after if paused else None,
                     self._window_end if lingering else None]
        signals, listener, ready = self._wait(now, deadlines, wait)
        for signum in signals:
            if signum in STOP_SIGNALS:
                log.info("threaded: %s received; stopping gracefully",
                         signal.Signals(signum).name)
                self._dispatch(ready)
                return False
            if signum == signal.SIGHUP:
                log.warning("threaded: SIGHUP ignored; restart the process to "
                            "load new code (method=prefork reloads on SIGHUP)")
            elif signum == signal.SIGUSR1:
                self._reopen_logs()
        # New connections first: queued idle ones must not take every free
        # thread from the ones in the backlog (see the module docstring).
        if listener:
            self._accept()
        self._dispatch(ready)
        return True

    def finish(self):
        """The graceful stop: stop accepting, close idle kept connections,
        let requests in progress finish (bounded by ``graceful_timeout``).

        Fresh connections, and requests stalled half-way, get the handler's
        ``first_request_grace``: a web server that has just connected is
        about to send its request.
        """
        self._stop.set()
        self._watch_listener(False)
        now = self.clock()
        with self._lock:
            self._stopping = True
        grace = now + self.handler.first_request_grace
        for conn in self._conns:
            if conn.arriving():
                self._conns.add(conn, grace)
            else:
                self._close_idle(self._conns.pop(conn.fileno()))
        deadline = now + self.graceful_timeout
        while True:
            self._take_returned(now)
            self._close_expired(now)
            with self._lock:
                self._retire(self._spare())  # Idle threads leave.
                # A connection handed back since _take_returned above is
                # work left too: counting it, not returning, is what keeps
                # a request that arrives in that moment from being lost.
                busy = self._threads - self._idle + self._queued + len(self._returned)
            if not busy and not self._conns:
                log.info("threaded: all connections closed")
                return
            if now >= deadline:
                log.warning("threaded: %d connections still busy after %ss; exiting anyway",
                            busy, self.graceful_timeout)
                return
            signals, _, ready = self._wait(now, [deadline, self._conns.next_deadline()])
            self._dispatch(ready)
            if any(signum in STOP_SIGNALS for signum in signals):
                log.warning("threaded: second stop signal; exiting now")
                return
            now = self.clock()

    def close(self):
        """Close the idle connections and what ``open()`` made."""
        for conn in self._conns:
            self._close_idle(self._conns.pop(conn.fileno()))
        with self._lock:
            returned, self._returned = self._returned, []
        for conn in returned:
            close_quietly(conn)
        self._selector.close()
        self._box.close()
        self._listen.setblocking(self._was_blocking)

    def stats(self):
        """Counters and the pool's state now, from any thread (for tests).

        ``accepted``: new connections queued; ``resumed``: idle ones queued
        once readable; ``returned``: connections handed back by threads;
        ``again``: requests a thread served at once because they had
        already arrived (one buffered with the last is not counted);
        ``backlog``: a new connection waits for a free thread;
        ``idle_connections``: the main thread's, and those handed back to it.
        With a fake clock, ``idle_connections`` is as of the last turn.
        """
        with self._lock:
            return dict(self._counts, threads=self._threads, idle_threads=self._idle,
                        queued=self._queued, backlog=self._backlog,
                        idle_connections=self._idle_connections + len(self._returned))

    def _wait(self, now, deadlines, wait=None):
        """Sleep in the selector until something happens or the first of
        ``deadlines`` (None: none) passes; return (signals, whether the
        listener is readable, the idle connections that became readable)."""
        due = [d for d in deadlines if d is not None]
        timeout = max(0.0, min(due) - now) if due else None
        if wait is not None:
            timeout = wait if timeout is None else min(timeout, wait)
        with self._lock:
            if self._news != self._seen:
                timeout = 0  # Something changed since we looked: look again.
            else:
                self._asleep = True
        try:
            events = self._selector.select(timeout)
        finally:
            with self._lock:
                self._asleep = self._woken = False
        signals, listener, ready = [], False, []
        for key, _ in events:
            if key.data is LISTENER:
                listener = True
            elif key.data is BOX:
                signals = self._box.drain()
            else:
                self._selector.unregister(key.fd)
                ready.append(self._conns.pop(key.fd))
        with self._lock:
            self._idle_connections = len(self._conns)
        return signals, listener, ready

    def _watch_listener(self, want):
        if want and not self._listening:
            self._selector.register(self._listen, selectors.EVENT_READ, LISTENER)
        elif self._listening and not want:
            self._selector.unregister(self._listen)
        self._listening = want

    def _accept(self):
        """Accept new connections while a thread is free for them."""
        while True:
            with self._lock:
                if self._free_slots() <= 0:
                    self._backlog = True  # Maybe; the threads give way until we know.
                    return
            try:
                fd, addr = self._listen._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in CONNECTION_ERRORS:
                    continue
                oldest = self._conns.oldest()
                if exc.errno in OUT_OF_DESCRIPTORS and oldest is not None:
                    # The longest-idle connection is the least likely to be
                    # used again: its descriptor serves a waiting one better.
                    self._close_idle(self._conns.pop(oldest.fileno()))
                    continue
                log.warning("threaded: accept() failed: %s", exc)
                self._accept_after = self.clock() + self.accept_pause
                return
            self._queue((fd, addr), "accepted")

    def _dispatch(self, ready):
        for conn in ready:
            self._queue(conn, "resumed")

    def _queue(self, item, count):
        with self._lock:
            self._counts[count] += 1
            self._queued += 1
            spare = self._spare()
            self._fewest_spare = min(self._fewest_spare, spare)
            if spare < 0 and self._threads - self._leaving < self.maxchildren:
                self._start_thread()
        self._work.put(item)

    def _take_returned(self, now):
        """Watch the connections the threads handed back."""
        with self._lock:
            returned, self._returned = self._returned, []
            self._seen = self._news
        if not returned:
            return
        idle = self.handler.idle_timeout
        if self._stop.is_set():
            idle = self.handler.first_request_grace
        deadline = now + idle if idle else None
        for conn in returned:
            if self._stop.is_set() and not conn.arriving():
                close_quietly(conn)
                continue
            self._conns.add(conn, deadline)
            self._selector.register(conn.fileno(), selectors.EVENT_READ, conn)

    def _close_expired(self, now):
        for conn in self._conns.expired(now):
            log.debug("%s: idle connection timed out after %ss",
                      self.handler.protocol, self.handler.idle_timeout)
            self._close_idle(conn)

    def _close_idle(self, conn):
        """Close an idle connection already taken out of the table."""
        self._selector.unregister(conn.fileno())
        close_quietly(conn)

    def _reopen_logs(self):
        reopen_logs(self.on_reopen_logs, "threaded")

    # -- threads (the methods below are called with the lock held)

    def _free_slots(self):
        """Connections a thread could take now: idle threads with nothing
        queued for them, and room for new threads."""
        return self._spare() + self.maxchildren - (self._threads - self._leaving)

    def _spare(self):
        """Idle threads with nothing queued for them, and not leaving."""
        return self._idle - self._queued - self._leaving

    def _keep_spare_threads(self):
        while (self._spare() < self.minspare and not self._stopping
               and self._threads - self._leaving < self.maxchildren):
            if not self._start_thread():
                return

    def _retire_spare_threads(self, now):
        """End the linger window: threads that stayed spare beyond
        ``maxspare`` through all of it leave."""
        self._retire(self._fewest_spare - self.maxspare)
        self._fewest_spare = self._spare()
        self._window_end = now + self.spare_linger

    def _retire(self, count):
        for _ in range(count):
            self._leaving += 1
            self._work.put(None)

    def _start_thread(self):
        """Start one worker thread; return False if the OS refused."""
        # Daemon threads: a request still running after the graceful
        # timeout must not keep the process alive.
        thread = threading.Thread(target=self._worker, name="runfcgi-worker", daemon=True)
        self._threads += 1
        self._idle += 1
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": limits reached.
            self._threads -= 1
            self._idle -= 1
            log.error("threaded: cannot start a thread: %s", exc)
            return False
        return True

    # -- worker threads

    def _worker(self):
        lock, take = self._lock, self._work.get
        while True:
            item = take()
            with lock:
                self._idle -= 1
                if item is None:
                    self._leaving -= 1
                    self._threads -= 1
                    wake = self._wake_main(self._stopping)
                    break
                self._queued -= 1
            try:
                conn = self._serve(item)
            except Exception:  # A handler never raises; if one did, the thread lives on.
                log.exception("threaded: unexpected error serving a connection")
                conn = None
            with lock:
                self._idle += 1
                if conn is not None:
                    self._counts["returned"] += 1
                    self._returned.append(conn)
                # A connection to watch; a free thread for the backlog; or
                # one fewer to wait for.
                wake = self._wake_main(conn is not None or self._full or self._stopping)
            if wake:
                self._box.wake()
        if wake:
            self._box.wake()

    def _wake_main(self, news):
        """Tell the main thread if there is ``news``; return whether this
        thread must wake it (lock held)."""
        if not news:
            return False
        self._news += 1
        if self._asleep and not self._woken:
            self._woken = True
            return True
        return False

    def _serve(self, item):
        """Serve a connection (a new one is ``(fd, addr)``) while its
        requests have come; return it when it must wait for the next (None:
        closed).  All the pool knows of the protocol is this contract."""
        handler = self.handler
        conn = handler.connect(*item) if type(item) is tuple else item
        if conn is None:
            return None
        try:
            while handler.serve_next(conn) is KEEP:
                if conn.ready():
                    continue  # The next request was buffered with the last.
                if self._stop.is_set() and not conn.arriving():
                    close_quietly(conn)  # Stopping: a kept connection closes at once.
                    return None
                # A request on its way (a fresh connection's, or the rest of
                # one) is read at once if it has come; a kept connection's
                # next request only if nothing else waits for this thread.
                if not (conn.arrived() if conn.arriving() else self.serve_again(conn)):
                    return conn
        except BaseException:
            # A handler broke the contract (it never raises): the connection
            # is in no known state, and nobody else would ever close it.
            close_quietly(conn)
            raise
        return None

    def serve_again(self, conn):
        """Whether a thread may serve the next request on kept ``conn`` at
        once: nothing else waits for a thread, and the request is here."""
        with self._lock:
            if self._spare() < 0 or self._backlog:
                return False
        if not conn.arrived():
            return False
        with self._lock:
            self._counts["again"] += 1
        return True
