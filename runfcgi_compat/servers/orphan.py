"""A prefork worker whose master died: stop accepting at once, finish, exit.

When the master is killed (SIGKILL, the OOM killer) its workers live on.
Each still holds the listening socket, so a restarted runfcgi cannot bind
the port ("That port is already in use.") and the orphans go on accepting
connections no master supervises.  A worker's own check of ``getppid()``
runs only between requests, so a worker inside a long view kept the port
for as long as the view ran.

So on Linux each worker asks the kernel, right after fork, for a signal
when its parent dies (``prctl(PR_SET_PDEATHSIG)``), then checks once that
the master is still its parent (it may have died before the request).  The
handler, which may run at any point of the worker (inside a view, inside a
poll), does two things and nothing that could block or raise:

* it starts the worker's drain, as a reload's SIGHUP does: the request in
  progress finishes, held connections are finished gently, then the worker
  exits;
* it lets go of the listening socket *now*.  The descriptor cannot just be
  closed: the worker's loop may be polling it, and its number could be
  reused by the next connection.  Instead a stand-in (a listening UNIX
  socket with an abstract, unpublished name) is ``dup2``-ed over it: the
  worker's last reference to the real socket goes away, and its loop sees
  a socket that never has anything to accept until it leaves.  Once every
  orphan has done this the port is free.

The parent-death signal belongs to the thread that forked the worker: the
master forks from its main thread, and a reload's ``execve`` keeps both the
pid and that thread, so a reload never looks like death.  The handler also
checks ``getppid()``: a stray signal from elsewhere does nothing.

Elsewhere (no ``prctl``) the worker's loop notices the new parent at most a
second after the request it holds ends, lets go of the socket the same way
and leaves.
"""
import os
import signal
import socket
import sys

from . import speedups
from .base import log

SIGNAL = signal.SIGUSR2  # Not otherwise used by workers.
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _find_prctl():
    """prctl() through ctypes, for the Python twin; None where there is none.

    Only when the C module is absent: ctypes and libffi in the master cost
    every server about 0.5 MiB (bench/memory.py).
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _parent_death_signal_py(signum):
    """Ask the kernel to send ``signum`` when our parent dies; False if it
    cannot (not Linux, or prctl refused).  The Python twin of the C
    module's parent_death_signal."""
    if _prctl is None:
        return False
    return _prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


parent_death_signal = speedups.pick("parent_death_signal", _parent_death_signal_py)
# Looked up once in the master (every worker inherits it), for the twin only.
_prctl = _find_prctl() if parent_death_signal is _parent_death_signal_py else None


class Watch:
    """What one worker does when it finds its master gone: ``drain()``
    (start finishing, as on a reload's SIGHUP) and let go of ``listen``."""

    def __init__(self, listen, drain, master_pid):
        self.listen = listen
        self.drain = drain
        self.master_pid = master_pid
        self.orphaned = False

    def on_signal(self, signum, frame):
        self.check()

    def check(self):
        """If the master is gone: drain, and let go of the listening socket."""
        if self.orphaned or os.getppid() == self.master_pid:
            return
        self.orphaned = True
        self.drain()
        let_go(self.listen)


_watch = None


def watch(listen, drain, master_pid):
    """In a worker just forked: if ``master_pid`` dies, call ``drain()`` and
    let go of listening socket ``listen`` at once."""
    global _watch
    _watch = Watch(listen, drain, master_pid)
    signal.signal(SIGNAL, _watch.on_signal)
    parent_death_signal(SIGNAL)
    # The master may have died between fork and prctl: no signal then.
    _watch.check()
    return _watch


def report():
    """Log, once the worker is done, that it left because its master died.

    Not from the handler: it may run inside a write to stderr.  Never raises.
    """
    try:
        if _watch is not None and _watch.orphaned:
            log.warning("prefork: worker %d lost its master: it stopped accepting at "
                        "once, finished its requests and exits", os.getpid())
    except BaseException:
        pass


def let_go(sock):
    """Drop this process's hold on listening socket ``sock`` without closing
    its descriptor number (see the module docstring)."""
    fd = sock.fileno()
    if fd < 0:
        return
    try:
        stand_in = _stand_in()
    except OSError:
        return  # Then the socket goes when the worker exits.
    try:
        os.dup2(stand_in.fileno(), fd, inheritable=False)
    except OSError:
        pass
    finally:
        stand_in.close()


def _stand_in():
    """A socket that never has anything to read or accept."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("")  # Linux: an abstract name nobody is told.
        sock.listen(1)
    except OSError:
        # Elsewhere (only ever met after the loop stopped accepting): an
        # unbound datagram socket, which nothing can reach.
        sock.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Non-blocking like the socket it replaces (a flag of the open file,
    # so dup2 carries it): accept() says EAGAIN, never waits.
    sock.setblocking(False)
    return sock
