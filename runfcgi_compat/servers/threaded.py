"""The threaded pool: one process, threads for the requests being served.

Replaces flup's ``ThreadedServer``/``ThreadPool``, whose shutdown hung on
any idle open connection, never timed idle connections out (60 idle kept
connections exhausted 50 threads), and used ``setDaemon``/``notifyAll``/
``currentThread`` (warnings on 3.13, errors under ``-W error``).

* The main thread waits in a selector on the listening socket, a signal
  wake-up fd and every *parked* connection, accepts, and queues work for
  the threads.  It stops accepting while all ``maxchildren`` threads are
  busy, so surplus connections wait in the kernel's backlog, not in our
  memory.
* Kept connections between two requests are *held* (``held.py``): as soon
  as a request is answered its connection goes into one ``epoll`` set,
  and a thread that has just finished a request takes the next one whose
  request has come and serves it, with no wake-up and no hand-off of the
  interpreter lock.  Under load one thread serves request after request,
  as a prefork worker does; a thread per kept connection, each sleeping
  on its own, cost a wake-up and a lock hand-off at every request (kept
  connections gained 1.1-1.3x over new ones then, 1.7x now; see
  bench/PROFILE.rst).  Only the thread that took one last goes on taking
  them, unless it has been inside a request for ``park_after`` seconds
  (a slow view): two threads taking turns would hand the lock to each
  other at every request.  When none is ready, one thread (the leader)
  waits for them, if no other is inside a request; otherwise the main thread
  watches them whenever no thread will (no leader, and no thread busy or
  none has taken one for ``park_after``).  So a request on a held
  connection waits at most about ``park_after`` behind slow views, and
  held connections are served in the order their requests come, however
  many there are: an idle one costs a descriptor, never a thread.
* A fresh connection that has sent nothing for ``park_after`` seconds is
  handed back to the main thread, which parks it in the selector and
  queues it again when the peer sends something; so is a FastCGI request
  whose records stop before the app has started.  A parked or held
  connection closes after the handler's ``idle_timeout``; if descriptors
  run out, the longest-idle goes first.
* Between ``minspare`` and ``maxspare`` idle threads are kept; a thread
  beyond ``maxspare`` leaves only after ``spare_linger`` idle seconds, so a
  burst does not start and end threads over and over.
* Fair shares when connections outnumber threads: while every thread is
  busy and a parked connection has become ready, or a new connection
  waits in the backlog, a fresh connection is parked at once instead of
  waited for.
* A thread that has finished with a connection tries ``accept()`` itself
  on the (non-blocking) listening socket before it goes back to wait for
  work (leader/follower): under load, connections go from the kernel to a
  thread with no hand-off through the main thread.
* ``maxrequests`` does not apply (as in Django 1.8's runfcgi): there is no
  process to recycle.

Signals (main thread):

* SIGTERM, SIGINT: graceful stop.  Accepting stops, idle connections are
  closed (a fresh one still gets the handler's ``first_request_grace`` to
  send its request), requests in progress finish; after
  ``graceful_timeout`` seconds (or a second SIGTERM/SIGINT) ``serve()``
  returns anyway and the remaining threads (daemon threads) die with the
  process.
* SIGHUP: logged and otherwise ignored (a documented no-op).  A reload
  needs a new process, and re-executing this one in place would need every
  thread drained first: a pause, not a reload.  Use ``method=prefork`` for
  reloads without downtime.
* SIGUSR1: reopen log files.
"""
import collections
import errno
import os
import queue
import select
import selectors
import signal
import threading
import time

from .base import CLOSED, NOTICE, SERVED, HoldPolicy, Parked, close_expired, close_quietly, log
from .held import HeldConnections
from .signals import STOP_SIGNALS, Notice, SignalBox, wait_readable

POOL_SIGNALS = STOP_SIGNALS + (signal.SIGHUP, signal.SIGUSR1)
# accept() errors that a closed parked connection can cure.
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


class ThreadHold(HoldPolicy):
    """Wait briefly with a fresh connection, then park it with the main thread.

    ``crowded()`` says whether others are waiting for a thread; then the
    connection is parked at once, so that threads take turns.  With
    ``hold_kept`` a kept connection between requests is parked at once
    too, for the pool's held set, unless this thread is resuming it
    because the held set found it ready (``resuming``).
    """

    def __init__(self, park_after, crowded=bool, hold_kept=False):
        self.park_after = park_after
        self.crowded = crowded  # The default, bool(), is False: never crowded.
        # Kept connections go to the pool's held set as soon as a request
        # is answered (see held.py), not after park_after.
        self.hold_kept = hold_kept
        self._ms = max(0, int(park_after * 1000 + 0.999))
        # Each thread's poller, kept from one request to the next: building
        # one per wait (with its registrations) was a tenth of the threaded
        # server's Python time with kept connections.
        self._local = threading.local()

    def resuming(self, sock):
        """This thread resumes held ``sock``, found readable; None: done."""
        self._local.ready = sock

    def wait_for_request(self, handler, sock, first, notices):
        local = self._local
        if self.hold_kept and not first:
            if getattr(local, "ready", None) is sock:
                local.ready = None
                return True  # Resumed from the held set: its bytes are here.
            return Parked(first)
        if self.crowded():
            return Parked(first)
        poller = getattr(local, "poller", None)
        if poller is None or local.notices != notices:
            poller = local.poller = select.poll()
            for notice in notices:
                poller.register(notice.fileno(), select.POLLIN)
            local.notices, local.fd = notices, None
        fd = sock.fileno()
        if local.fd != fd:
            if local.fd is not None:
                poller.unregister(local.fd)
            poller.register(fd, select.POLLIN | select.POLLPRI)
            local.fd = fd
        events = poller.poll(self._ms)
        for ready_fd, _ in events:
            if ready_fd == fd:
                return True
        if events:
            return NOTICE
        return Parked(first)

    def wait_mid_request(self, handler, sock, parkable=False):
        # A request whose parameters stop half-way has not reached the app
        # yet: park it like an idle connection, so stalled peers cannot
        # occupy the threads either.  Once the app runs, it must wait.
        if parkable:
            if wait_readable([sock], self.park_after):
                return True
            parked = Parked(False)
            parked.mid_request = True
            raise parked
        return super().wait_mid_request(handler, sock)


class ThreadedPool:
    # Seconds to let requests in progress finish after SIGTERM.
    graceful_timeout = 30.0
    # Seconds a thread waits on a quiet connection before parking it.  Under
    # load the next request on a kept connection follows within a fraction
    # of a millisecond and never leaves the thread; a longer wait would let
    # idle connections hold threads again.
    park_after = 0.005
    # Seconds an idle thread beyond ``maxspare`` waits before it ends.
    spare_linger = 2.0

    def __init__(self, handler, load_app, *, maxspare, minspare, maxchildren,
                 maxrequests=0, on_reopen_logs=None):
        self.handler = handler
        self.load_app = load_app
        self.maxspare = maxspare
        self.minspare = min(minspare, maxspare, maxchildren)
        self.maxchildren = maxchildren
        self.on_reopen_logs = on_reopen_logs
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()  # (handler method, argument...); None: leave
        self._queued = 0  # Work items put and not yet taken.
        self._leaving = 0  # None items put (stopping) and not yet taken.
        self._listen = None
        self._accepting = False  # Threads may accept() themselves.
        self._paused = False  # No thread is free: the main thread does not accept.
        # New connections wait in the backlog while no thread is free: busy
        # threads give up their kept connections for them (see _crowded).
        self._backlog = False
        self._returned = collections.deque()  # Parked, from the threads
        self._parked = {}  # fd -> (Parked, deadline); insertion order = age
        self._held = None  # Kept connections between requests (held.py).
        # A thread waits for the held connections' next request (_lead).
        self._leader = False
        # Threads inside a request; only when none is may a thread lead.
        self._serving = 0
        # The thread that took a held connection last, and when (_take_held).
        self._taker = None
        self._taken_at = 0.0
        # The main thread sleeps without looking at the held connections:
        # whoever leaves them unwatched must wake it (see _watch_held).
        self._main_long = False
        self._threads = set()
        self._idle = 0
        self._stopping = False

    def serve(self, listen_sock):
        """Serve on ``listen_sock`` until a graceful stop; return None."""
        self.handler.set_app(self.load_app())
        self._stop = Notice()
        self.handler.stop_notice = self._stop
        self.handler.hold = ThreadHold(self.park_after, self._crowded, hold_kept=True)
        self._serve_kept = getattr(self.handler, "serve_kept", None)
        self._held = HeldConnections(self.handler)
        self._bell = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._box = SignalBox(POOL_SIGNALS)
        self._selector = selectors.DefaultSelector()
        was_blocking = listen_sock.getblocking()
        listen_sock.setblocking(False)
        self.handler.prepare_listener(listen_sock)
        self._listen = listen_sock
        # The leader's poll (one thread at a time): the held connections,
        # new connections, the bell (_dispatch) and the stop.
        self._leader_poll = select.poll()
        for fd in (self._held.fileno(), listen_sock.fileno(), self._bell, self._stop.fileno()):
            self._leader_poll.register(fd, select.POLLIN)
        self._box.install()
        # The runner holds these until a handler exists (see runner.run).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, POOL_SIGNALS)
        try:
            self._selector.register(self._box, selectors.EVENT_READ)
            self._accept_loop(listen_sock)
            self._drain()
        finally:
            for parked, _ in list(self._parked.values()):
                self._close_parked(parked)
            self._held.close()
            os.close(self._bell)
            self._selector.close()
            self._box.restore()
            self._box.close()
            listen_sock.setblocking(was_blocking)

    # -- main thread

    def _accept_loop(self, listen_sock):
        listening = False
        watching_held = False
        # The held set's take count when we last saw it change, and when.
        self._taken_seen = (0, time.monotonic())
        while True:
            for signum in self._box.drain():
                if signum in STOP_SIGNALS:
                    log.info("threaded: %s received; stopping gracefully",
                             signal.Signals(signum).name)
                    self._accepting = False
                    self._backlog = False
                    self._watch(listen_sock, False, listening)
                    return
                if signum == signal.SIGHUP:
                    log.warning("threaded: SIGHUP ignored; restart the process to "
                                "load new code (method=prefork reloads on SIGHUP)")
                elif signum == signal.SIGUSR1:
                    self._reopen_logs()
            self._park_returned()
            with self._lock:
                self._keep_spare_threads()
                can_accept = self._free_slots() > 0
                self._accepting = True
                self._paused = not can_accept
            # While no thread is free the listener is still watched, to
            # notice a new connection waiting; once one is, the threads
            # accept it (see _worker) and the listener rests until then.
            listening = self._watch(listen_sock, can_accept or not self._backlog, listening)
            timeout = self._next_expiry()
            watch, soon = self._watch_held()
            if soon is not None:
                timeout = soon if timeout is None else min(timeout, soon)
            watching_held = self._watch(self._held, watch, watching_held)
            for key, _ in self._selector.select(timeout):
                if key.fileobj is listen_sock:
                    if can_accept:
                        self._accept(listen_sock)
                    else:
                        self._backlog = True
                elif key.fileobj is self._held:
                    # A leader, if one has come since we looked, takes it:
                    # we stop watching on the next turn of the loop.
                    if not self._leader:
                        self._dispatch_held()
                elif key.fileobj is not self._box:
                    self._unpark(key.fd)
            self._main_long = False
            self._expire_parked()

    def _watch(self, fileobj, want, watched):
        """(Un)register ``fileobj`` in the selector as ``want`` says; return it."""
        if want and not watched:
            self._selector.register(fileobj, selectors.EVENT_READ)
        elif watched and not want:
            self._selector.unregister(fileobj)
        return want

    def _accept(self, listen_sock):
        try:
            conn, addr = listen_sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                # The longest-parked connection is the least likely to be
                # used again: its descriptor serves a waiting one better.
                if self._parked:
                    self._close_parked(self._parked[next(iter(self._parked))][0])
                    return
                if self._held.close_oldest():
                    return
            log.warning("threaded: accept() failed: %s", exc)
            wait_readable([self._box], 0.5)
            return
        self._dispatch(self.handler.handle_connection, conn, addr)

    def _watch_held(self):
        """Whether the main thread must watch the held connections now, and
        in how many seconds to look again (None: only when woken).

        Threads take them while they serve requests, and one of them (the
        leader) waits for them; the main thread watches them only when no
        thread will: no leader, and no thread busy, or none has taken one
        for ``park_after`` seconds (every busy thread is inside a long
        request).  Without a leader it looks again every ``park_after``.
        """
        held = self._held
        # Set before reading _leader: a leader that leaves after the read
        # sees it and wakes us (see _lead).
        self._main_long = True
        if self._leader:
            return False, None
        busy = len(self._threads) > self._idle
        # Nothing held now is not enough to sleep: a busy thread may hold
        # one and go on to a long request (once kept connections are used).
        if not held and not (busy and held.taken):
            return False, None
        self._main_long = False
        now = time.monotonic()
        taken, since = self._taken_seen
        if held.taken != taken:
            self._taken_seen = taken, since = held.taken, now
        quiet = now - since
        if quiet >= self.park_after or not busy:
            return True, None
        return False, self.park_after - quiet

    def _dispatch_held(self):
        """Hand the ready held connections to threads (see _watch_held)."""
        while True:
            parked = self._held.take()
            if parked is None:
                return
            self._dispatch(self._serve_held, parked)

    def _park_returned(self):
        """Watch the connections threads handed back (see ThreadHold)."""
        while self._returned:
            parked = self._returned.popleft()
            if self._stop.is_set() and not parked.first:
                self._close_parked(parked)
                continue
            fd = parked.sock.fileno()
            idle = self.handler.idle_timeout
            if self._stop.is_set():
                idle = self.handler.first_request_grace
            deadline = None if not idle else time.monotonic() + idle
            self._parked[fd] = (parked, deadline)
            self._selector.register(fd, selectors.EVENT_READ)

    def _unpark(self, fd):
        parked, _ = self._parked.pop(fd)
        self._selector.unregister(fd)
        self._dispatch(self.handler.resume_connection, parked)

    def _next_expiry(self):
        """Seconds until the oldest parked or held connection times out;
        None: none."""
        first = self._held.next_deadline()
        for _, deadline in self._parked.values():
            if deadline is not None:
                first = deadline if first is None else min(first, deadline)
                break
        return None if first is None else max(0.0, first - time.monotonic())

    def _expire_parked(self):
        now = time.monotonic()
        close_expired(self._parked, now, self._close_parked, self.handler)
        self._held.expire(now)

    def _close_parked(self, parked):
        fd = parked.sock.fileno()
        if self._parked.pop(fd, None) is not None:
            self._selector.unregister(fd)
        close_quietly(parked.sock)

    def _crowded(self):
        """Whether work waits for a thread (read without the lock: a stale
        answer costs one park too many, or one request's delay)."""
        return self._backlog or self._free_slots() < 0

    def _free_slots(self):
        """Connections we can take now: idle threads, or room for new ones."""
        return self._idle - self._queued + (self.maxchildren - len(self._threads))

    def _dispatch(self, *work):
        ring = False
        with self._lock:
            self._queued += 1
            leaving = self._leaving
            if self._idle - leaving < self._queued:
                if len(self._threads) - leaving < self.maxchildren:
                    self._start_thread()
                else:
                    # Every thread is busy: the leader, if any, only waits.
                    ring = self._leader
        self._queue.put(work)
        if ring:
            os.eventfd_write(self._bell, 1)

    def _keep_spare_threads(self):
        while self._idle < self.minspare and len(self._threads) < self.maxchildren:
            if not self._start_thread():
                break

    def _start_thread(self):
        """Start one worker thread; return False if the OS refused."""
        # Called with self._lock held.  Daemon threads: a request still
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
        """Stop: close idle connections, wait (bounded) for busy ones.

        Parked fresh connections keep their first-request grace: a web
        server that has just connected is about to send a request.
        """
        self._stop.set()
        self._accepting = False
        deadline = time.monotonic() + self.graceful_timeout
        with self._lock:
            self._stopping = True
            # Wake the idle threads; one None each.  Busy ones leave when
            # they find nothing queued.
            count = max(0, self._idle - self._queued - self._leaving)
            self._leaving += count
        for _ in range(count):
            self._queue.put(None)
        self._held.close_all()
        for parked, _ in list(self._parked.values()):
            if not parked.first:
                self._close_parked(parked)
            else:
                self._parked[parked.sock.fileno()] = (
                    parked, time.monotonic() + self.handler.first_request_grace)
        while True:
            self._park_returned()
            self._held.close_all()  # Kept ones a thread held meanwhile.
            self._expire_parked()
            with self._lock:
                busy = len(self._threads)
            if not busy and not self._parked:
                log.info("threaded: all connections closed")
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("threaded: %d connections still busy after %ss; exiting anyway",
                            busy, self.graceful_timeout)
                return
            expiry = self._next_expiry()
            timeout = remaining if expiry is None else min(remaining, expiry)
            for key, _ in self._selector.select(timeout):
                if key.fileobj is not self._box:
                    self._unpark(key.fd)
            if any(s in STOP_SIGNALS for s in self._box.drain()):
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
        lock, get = self._lock, self._queue.get
        handle = self.handler.handle_connection
        held, serve_held, stop = self._held, self._serve_held, self._stop
        while True:
            if self._stopping:
                with lock:
                    if self._queued <= 0:
                        self._leave(me)
                        break
            try:
                work = get(timeout=self.spare_linger)
            except queue.Empty:
                with lock:
                    leave = self._stopping or self._idle > self.maxspare
                    if leave:
                        self._leave(me)
                if leave:
                    break
                continue
            with lock:
                if work is None:
                    self._leaving -= 1
                    self._leave(me)
                    break
                self._queued -= 1
                self._idle -= 1
            wake = False
            try:
                while work is not None:
                    serve, *args = work
                    work = None
                    with lock:
                        self._serving += 1
                    parked = serve(*args)  # Never raises.
                    with lock:
                        self._serving -= 1
                    if parked is not None:
                        if parked.first or parked.mid_request:
                            self._returned.append(parked)
                            wake = True
                        elif stop.is_set():
                            close_quietly(parked.sock)
                        else:
                            held.hold(parked)
                    if held:
                        # The next held connection whose request has come,
                        # served at once by this thread (see held.py).
                        parked = self._take_held(me)
                        if parked is not None:
                            work = (serve_held, parked)
                            continue
                    # Leader/follower: take the next connection ourselves.
                    if self._accepting:
                        try:
                            conn, addr = self._listen.accept()
                        except OSError:
                            # None waiting (or an error the main thread handles).
                            # The backlog is empty: once woken (below, as it is
                            # paused), the main thread watches the listener again.
                            self._backlog = False
                        else:
                            work = (handle, conn, addr)
                    if work is None and held:
                        work = self._lead(me)
            finally:
                with lock:
                    self._idle += 1
                    # Held connections left with nobody to take them (no
                    # leader, no thread busy): the main thread watches them.
                    wake = wake or self._paused or self._stopping or (
                        held and not self._leader and (
                            self._main_long or len(self._threads) <= self._idle))
                if wake:
                    self._box.wake()
        self._box.wake()  # Capacity or drain state changed.

    def _take_held(self, me, leading=False):
        """The next held connection with a request, for this thread; None.

        None when another thread has taken one within ``park_after``: it is
        serving them, and two threads serving them would only hand the
        interpreter lock to each other at every request.  A thread busy
        for longer (a slow view, waiting on a database) no longer counts,
        and others take its turns.  None too while a leader waits: it is
        woken by every request anyway, and takes them.
        """
        now = time.monotonic()
        if not leading and (self._leader or (
                self._taker is not me and now - self._taken_at < self.park_after)):
            return None
        parked = self._held.take()
        if parked is not None:
            self._taker, self._taken_at = me, now
        return parked

    def _serve_held(self, parked):
        """Serve the next request on a held connection; as handle_connection."""
        if self._serve_kept is not None:
            outcome = self._serve_kept(parked)  # In place, no resume.
            if outcome == SERVED:
                return parked
            if outcome == CLOSED:
                return None
        hold = self.handler.hold
        hold.resuming(parked.sock)
        try:
            return self.handler.resume_connection(parked)
        finally:
            hold.resuming(None)

    def _lead(self, me):
        """Wait for the held connections' next request, as the one thread
        that does (leader/follower); return the work found, or None.

        Not while another thread serves a request: it takes the next held
        connection itself when it is done, and a leader would be woken for
        every request that came meanwhile.  Nor when no other thread could
        take the main thread's work: then the main thread watches the held
        connections itself.  The leader also takes new connections, and
        gives up on the bell (work queued that only it could take) and on a
        stop.
        """
        with self._lock:
            if (self._leader or self._stopping or self._free_slots() <= 0
                    or self._serving):
                return None
            self._leader = True
        held_fd, listen_fd = self._held.fileno(), self._listen.fileno()
        try:
            while not self._stop.is_set():
                events = self._leader_poll.poll(self.spare_linger * 1000)
                if not events:
                    return None
                for fd, _ in events:
                    if fd == held_fd:
                        parked = self._take_held(me, leading=True)
                        if parked is not None:
                            return (self._serve_held, parked)
                    elif fd == listen_fd:
                        if not self._accepting:
                            return None  # Starting or stopping: not ours yet.
                        try:
                            conn, addr = self._listen.accept()
                        except OSError:
                            continue
                        return (self.handler.handle_connection, conn, addr)
                    elif fd == self._bell:
                        try:
                            os.eventfd_read(self._bell)
                        except BlockingIOError:
                            pass
                        return None
            return None
        finally:
            self._leader = False
            if self._main_long:
                self._box.wake()

    def _leave(self, me):
        # Called with self._lock held.
        self._idle -= 1
        self._threads.discard(me)
