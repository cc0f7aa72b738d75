"""Signal plumbing shared by the pools.

flup's master set a flag in its signal handlers and then went back to sleep
in ``select()``; since PEP 475 Python retries an interrupted ``select()``, so
the flag was only read when the next request woke the master.  Everything
here exists to avoid that: a signal must always make some file descriptor
readable, and the loops wait on that descriptor.

* ``SignalBox`` records which signals arrived and, through
  ``signal.set_wakeup_fd``, makes its pipe readable at the C level, before
  any Python code runs.  Loops poll its ``fileno()`` and then ``drain()`` it.
* ``Notice`` is a one-shot flag that is also a readable descriptor once set.
  Code that waits on sockets (an idle kept connection, a worker waiting to
  accept) polls it too, so "stop" interrupts waiting but never work.
"""
import logging
import os
import select
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _nonblocking_pipe():
    # os.pipe() descriptors are already non-inheritable (close-on-exec).
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def _close_quietly(*fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Notice:
    """A flag that, once set, stays readable for every poller forever."""

    def __init__(self):
        self._read_fd, self._write_fd = _nonblocking_pipe()
        self._set = False

    def set(self):
        """Set the flag; safe to call from a signal handler or any thread."""
        if self._set:
            return
        self._set = True
        try:
            # Never read back: the byte keeps the pipe readable (level
            # triggered), so any number of threads can wait on it.
            os.write(self._write_fd, b"!")
        except OSError:
            pass

    def is_set(self):
        return self._set

    def fileno(self):
        return self._read_fd

    def close(self):
        _close_quietly(self._read_fd, self._write_fd)


class SignalBox:
    """Turn signals into (a) a list of signal numbers and (b) a readable fd.

    ``also`` maps a signal number to a callable run inside the handler
    itself, for the few things that must happen even while the main thread
    is busy (a worker sets its stop ``Notice`` this way).
    """

    def __init__(self, signums, also=None):
        self.signums = tuple(signums)
        self._also = dict(also or {})
        self._read_fd, self._write_fd = _nonblocking_pipe()
        self._pending = []
        self._old_handlers = {}
        self._old_wakeup_fd = None

    def install(self):
        """Install the handlers (main thread only) and the wake-up fd."""
        self._old_wakeup_fd = signal.set_wakeup_fd(
            self._write_fd, warn_on_full_buffer=False
        )
        for signum in self.signums:
            self._old_handlers[signum] = signal.signal(signum, self._record)

    def _record(self, signum, frame):
        self._pending.append(signum)
        action = self._also.get(signum)
        if action is not None:
            action()

    def fileno(self):
        return self._read_fd

    def has_pending(self):
        """True if signals arrived since the last ``drain`` (no system call)."""
        return bool(self._pending)

    def post(self, signum):
        """Record ``signum`` as if it had arrived, from any thread.

        For a pool run in a thread other than the main one (the live
        server of ``runfcgi_compat.testing``), which no signal reaches.
        """
        self._pending.append(signum)
        self.wake()

    def wake(self):
        """Make the box readable from another thread (no signal implied)."""
        try:
            os.write(self._write_fd, b"\0")
        except OSError:
            pass  # Full pipe: the reader is already due to wake up.

    def drain(self):
        """Empty the pipe and return the signals received since last time."""
        while True:
            try:
                if not os.read(self._read_fd, 4096):
                    break
            except (BlockingIOError, InterruptedError):
                break
        # Swap rather than clear: a handler running between the two steps
        # appends to the list we already hold.
        received, self._pending = self._pending, []
        return received

    def restore(self):
        """Put back the handlers and wake-up fd found by ``install``."""
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._old_handlers = {}
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None

    def close(self):
        _close_quietly(self._read_fd, self._write_fd)


def wait_readable(fds, timeout=None):
    """Return the subset of ``fds`` (ints or objects with fileno) readable
    within ``timeout`` seconds (None: wait forever).

    poll() rather than select(): a busy prefork master can hold more than
    FD_SETSIZE (1024) descriptors.
    """
    poller = select.poll()
    by_fd = {}
    for item in fds:
        fd = item if isinstance(item, int) else item.fileno()
        by_fd[fd] = item
        poller.register(fd, select.POLLIN | select.POLLPRI)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    ready = poller.poll(ms)
    # POLLHUP/POLLERR count as readable: the following read reports it.
    return [by_fd[fd] for fd, _ in ready]


def wait_writable(sock, timeout=None):
    """Return True if ``sock`` (an int or an object with fileno) can take
    more bytes within ``timeout`` seconds."""
    poller = select.poll()
    poller.register(sock if isinstance(sock, int) else sock.fileno(), select.POLLOUT)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return bool(poller.poll(ms))


def reopen_logs(callback, pool):
    """SIGUSR1's work in ``pool`` ("prefork", "threaded"): call ``callback``
    (None: nothing to reopen); a failure is logged, never raised."""
    if callback is None:
        return
    try:
        callback()
    except Exception:
        logging.getLogger("runfcgi_compat").exception(
            "%s: reopening the log files failed", pool)
