"""The threaded pool's kept connections between two requests.

A kept connection whose request has been answered is *held* here at once:
a descriptor in one ``epoll`` set, armed for a single readiness report
(``EPOLLONESHOT``), so that exactly one thread takes it when the web
server sends its next request.  Whichever thread has just finished a
request takes the next ready connection itself (``take``) and serves it,
without sleeping, waking anyone or letting go of the interpreter lock; a
thread sleeps only when nothing is ready.  Under load one thread then
serves request after request, as a prefork worker does with the
connections it holds, where a thread per connection cost a wake-up and an
interpreter-lock hand-off per request (bench/PROFILE.rst).

Idle ones time out after the handler's ``idle_timeout``: the table keeps
them oldest first (each is taken out when it is served and put back at
the end), so the first one expires first.  Taking and holding happen in
any thread; the table is changed under a lock, and a connection belongs
to the one caller that popped it from the table.
"""
import functools
import select
import threading
import time

from .base import close_expired, close_quietly

try:
    from ._wire import epoll_arm, epoll_take
except ImportError:
    epoll_arm = epoll_take = None

# getattr: without epoll (the portable test mode, BSD, macOS) the servers
# package must still import; only the threaded pool needs this module.
ONE_REPORT = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLONESHOT", 0)


class HeldConnections:
    """Kept connections waiting for their next request; see the module."""

    def __init__(self, handler):
        self.handler = handler
        self._epoll = select.epoll()
        self._fd = self._epoll.fileno()
        if epoll_arm is not None:
            self._arm = functools.partial(epoll_arm, self._fd)
            self._take_fd = functools.partial(epoll_take, self._fd)
        self._lock = threading.Lock()
        self._table = {}  # fd -> (Parked, deadline); insertion order = age
        # Connections taken so far: the pool's main thread tells from it
        # whether the threads are still taking them (see ThreadedPool).
        self.taken = 0

    def __bool__(self):
        return bool(self._table)

    def __len__(self):
        return len(self._table)

    def fileno(self):
        """Readable while a held connection is ready (and not yet taken)."""
        return self._fd

    def hold(self, parked):
        idle = self.handler.idle_timeout
        fd = parked.sock.fileno()
        entry = (parked, time.monotonic() + idle if idle else None)
        with self._lock:
            self._table[fd] = entry
        # Into the table first: the moment it is armed, another thread may
        # take it.
        try:
            self._arm(fd)
        except (OSError, ValueError):
            # A stop's close_all closed it (or the set) meanwhile: nothing
            # to watch.  select.epoll lets go of the interpreter lock, which
            # makes this likely without the C module.
            with self._lock:
                if self._table.get(fd) is entry:
                    raise

    # Without the C module: the same calls, letting go of the lock.

    def _arm(self, fd):
        try:
            self._epoll.modify(fd, ONE_REPORT)
        except FileNotFoundError:  # New, or a closed one's number reused.
            self._epoll.register(fd, ONE_REPORT)

    def _take_fd(self):
        for fd, _ in self._epoll.poll(0, 1):
            return fd
        return -1

    def take(self):
        """A held connection whose peer has sent something, or None."""
        fd = self._take_fd()
        if fd < 0:
            return None
        with self._lock:
            entry = self._table.pop(fd, None)
        if entry is None:  # Closed meanwhile (expired, or stopping).
            return None
        self.taken += 1
        return entry[0]

    def next_deadline(self):
        """The monotonic time the oldest connection expires; None: never."""
        with self._lock:
            for _, deadline in self._table.values():
                return deadline
        return None

    def expire(self, now):
        """Close the connections idle past their deadline."""
        expired = []
        with self._lock:
            close_expired(self._table, now, lambda parked: expired.append(
                self._table.pop(parked.sock.fileno())[0]), self.handler)
        for parked in expired:
            close_quietly(parked.sock)

    def close_oldest(self):
        """Close the longest-idle connection; False if none is held."""
        with self._lock:
            if not self._table:
                return False
            parked, _ = self._table.pop(next(iter(self._table)))
        close_quietly(parked.sock)
        return True

    def close_all(self):
        with self._lock:
            entries = list(self._table.values())
            self._table.clear()
        for parked, _ in entries:
            close_quietly(parked.sock)

    def close(self):
        self.close_all()
        self._epoll.close()
