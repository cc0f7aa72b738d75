"""Idle connections in the prefork pool: a worker keeps one, the master the rest.

An idle connection is one with no request in it: a kept connection between
two requests (nginx's ``fastcgi_keep_conn``, Apache's AJP), or a fresh one
whose first bytes have not arrived.  Its next request must never wait
behind another request, so it must never sit where only a busy worker can
read it.  The rule:

* A worker keeps at most one idle connection, its *own*: the one it has
  just served.  While free it watches it together with the listening
  socket and the pool's channel, and serves its next request at once.
* Before a worker serves anything else (a new connection, or one from the
  channel), it passes its own connection to the master (``send_conn``).
* The master (``IdleKeeper``) watches every connection passed to it, with
  the same idle timeout.  When one becomes readable, the master passes it
  back through the channel, where whichever worker is free takes it first,
  as workers take new connections from the listening socket.

The channel is one UNIX datagram socket pair made before the first fork:
workers send to the master's end and receive from theirs, the master the
other way round.  A message carries one descriptor (``SCM_RIGHTS``) and
``(first, addr, stopping)``: whether the connection is fresh, its peer's
address for log lines, and whether the pool is stopping (the master then
passes on its fresh connections, readable or not, for the workers to give
them their first request's grace).  Datagrams keep messages whole, and each one is received by
exactly one worker.  Both ends are non-blocking: a worker that finds the
channel empty goes back to its poll, like one that loses a race to accept.
"""
import collections
import marshal
import os
import resource
import selectors
import socket
import struct
import time

from .base import close_quietly, log
from .signals import wait_writable

# Messages are tiny: a flag and an address.
MESSAGE_SIZE = 1024
FD = struct.Struct("i")
# Received descriptors must not leak into programs the app runs; Linux sets
# close-on-exec in the same call, elsewhere it costs one more.
CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
# Descriptors the master keeps for everything but idle connections (its
# pipes to the workers, the channel, logs, the app's own files).
RESERVED_FDS = 64


def fd_room(reserved):
    """How many idle connections fit under the descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - reserved)


def open_channel():
    """The pool's channel: ``(master_end, workers_end)``, both non-blocking."""
    ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for end in ends:
        end.setblocking(False)
    return ends


def send_conn(channel, fd, first, addr, stopping=False):
    """Pass connection ``fd`` through ``channel``; the caller still closes
    its own copy.  Raise BlockingIOError when the channel is full."""
    channel.sendmsg([marshal.dumps((first, addr, stopping))],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, FD.pack(fd))])


def recv_conn(channel):
    """``(fd, first, addr, stopping)`` of the next connection in
    ``channel``; None if none is waiting."""
    while True:
        try:
            data, ancillary, flags, _ = channel.recvmsg(
                MESSAGE_SIZE, socket.CMSG_SPACE(FD.size), CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return None
        fds = [FD.unpack_from(item[2])[0] for item in ancillary
               if item[0] == socket.SOL_SOCKET and item[1] == socket.SCM_RIGHTS]
        if fds:
            break
        # The kernel could not give us the descriptor: it closed it.
        log.warning("prefork: an idle connection was lost in passing (%s)",
                    "out of file descriptors" if flags & socket.MSG_CTRUNC else "no descriptor")
    if not CMSG_CLOEXEC:
        os.set_inheritable(fds[0], False)
    return (fds[0],) + marshal.loads(data)


def hand_over(channel, sock, first, addr, patience):
    """Pass ``sock`` through ``channel`` and close our copy; False if it
    could not be passed (closed then).  A full channel (its reader busy or
    restarting) is waited on for up to ``patience`` seconds."""
    try:
        try:
            send_conn(channel, sock.fileno(), first, addr)
        except BlockingIOError:
            if not wait_writable(channel, patience):
                raise
            send_conn(channel, sock.fileno(), first, addr)
        return True
    except OSError as exc:
        log.warning("prefork: cannot pass an idle connection on (%s); closing it", exc)
        return False
    finally:
        close_quietly(sock)


class Idle:
    """One connection the master keeps."""

    __slots__ = ("sock", "first", "addr", "deadline")

    def __init__(self, sock, first, addr, deadline):
        self.sock, self.first, self.addr, self.deadline = sock, first, addr, deadline


class IdleKeeper:
    """The master's side: idle connections watched until their request comes.

    It registers the channel and every connection with the master's
    ``selector``; each key's data is the function to call when the key is
    readable (it returns False: the master's own turn need not run).

    Connections are kept oldest first (every one gets the same idle
    timeout, so the first one expires first).  One found readable is
    passed to the workers at once; if the channel is full (every worker
    busy for long), it waits in ``ready`` and is sent once the channel has
    room.  ``clock`` is the monotonic clock (a fake one in tests).
    """

    def __init__(self, selector, handler, channel=None, clock=time.monotonic, reserved=None):
        self.selector = selector
        self.handler = handler
        self.clock = clock
        # Most idle connections kept at once (None: no limit); ``reserved``:
        # descriptors left for the rest, by default RESERVED_FDS.
        self.room = fd_room(RESERVED_FDS if reserved is None else reserved)
        self.master_end, self.workers_end = channel or open_channel()
        self.conns = {}  # fd -> Idle, oldest first
        self.ready = collections.deque()  # Idle: readable, not yet sent
        self.stopping = False
        selector.register(self.master_end, selectors.EVENT_READ, self._on_channel)

    def __len__(self):
        return len(self.conns) + len(self.ready)

    # -- taking connections

    def _on_channel(self):
        self.receive()
        if self.ready:
            self._send_ready()
        return False

    def receive(self):
        """Take one connection a worker has passed, if any: one call, where
        reading until the channel is empty costs a second one (the selector
        reports the channel again while more are waiting)."""
        if self.room is not None and len(self.conns) >= self.room:
            # A descriptor the kernel cannot give us is a connection closed
            # unseen: the one idle longest gives way first.
            log.warning("prefork: %d idle connections, the most descriptors allow; "
                        "closing the oldest (raise the limit: ulimit -n)", len(self.conns))
            self._forget(next(iter(self.conns))).sock.close()
        got = recv_conn(self.master_end)
        if got is not None:
            self.keep(*got[:3])

    def keep(self, fd, first, addr, idle_for=None):
        """Watch connection ``fd`` until it is readable or idle too long
        (``idle_for`` seconds; None: the handler's idle timeout)."""
        sock = socket.socket(*self.handler.socket_args, fd)
        if self.stopping:
            if first:
                self._send(Idle(sock, first, addr, None))  # Its grace, in a worker.
            else:
                sock.close()
            return
        if idle_for is None:
            idle_for = self.handler.idle_timeout or None
        deadline = None if idle_for is None else self.clock() + idle_for
        idle = Idle(sock, first, addr, deadline)
        # Under load the next request is often there already: passed on at
        # once, the connection costs no registration and no second wake-up.
        if self._pass_if_readable(idle):
            return
        self.conns[fd] = idle
        self.selector.register(fd, selectors.EVENT_READ, lambda: self._on_readable(fd))

    # -- passing them back

    def _on_readable(self, fd):
        idle = self._forget(fd)
        if not self._pass_if_readable(idle):
            self._send(idle)  # Readable after all?  A worker will see.
        return False

    def _pass_if_readable(self, idle):
        """Pass ``idle`` on if its request has come, close it if its peer
        has closed; False (nothing done) if nothing has come."""
        try:
            gone = idle.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            gone = True
        if gone:
            # The web server closing a connection it no longer needs is the
            # commonest event here: seen by the master, it wakes no worker.
            idle.sock.close()
        else:
            self._send(idle)
        return True

    def _send(self, idle):
        if self.ready or not self._try_send(idle):
            self.ready.append(idle)
            self._watch_room(True)

    def _try_send(self, idle):
        """Pass ``idle`` to whichever worker takes it; False: the channel is full."""
        try:
            send_conn(self.master_end, idle.sock.fileno(), idle.first, idle.addr,
                      self.stopping)
        except BlockingIOError:
            return False
        except OSError as exc:
            log.warning("prefork: cannot pass a connection to the workers (%s); closing it", exc)
        idle.sock.close()
        return True

    def _send_ready(self):
        while self.ready and self._try_send(self.ready[0]):
            self.ready.popleft()
        if not self.ready:
            self._watch_room(False)

    def _watch_room(self, on):
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        self.selector.modify(self.master_end, events, self._on_channel)

    def _forget(self, fd):
        self.selector.unregister(fd)
        return self.conns.pop(fd)

    # -- time and the end

    def next_deadline(self):
        """When the oldest connection expires; None: never (or none kept)."""
        for idle in self.conns.values():
            return idle.deadline
        return None

    def expire(self, now=None):
        """Close the connections idle past their deadline."""
        now = self.clock() if now is None else now
        while self.conns:
            fd, idle = next(iter(self.conns.items()))
            if idle.deadline is None or idle.deadline > now:
                return
            log.debug("%s: idle connection timed out after %ss",
                      self.handler.protocol, self.handler.idle_timeout)
            self._forget(fd).sock.close()

    def stop(self):
        """The pool is stopping: kept connections close at once; fresh ones
        go to the workers, which give each its first request's grace."""
        self.stopping = True
        for fd in list(self.conns):
            idle = self._forget(fd)
            if idle.first:
                self._send(idle)
            else:
                idle.sock.close()

    def close(self):
        """Close every connection and the channel (the pool has ended)."""
        for fd in list(self.conns):
            self._forget(fd).sock.close()
        for idle in self.ready:
            idle.sock.close()
        self.ready.clear()
        self.selector.unregister(self.master_end)
        self.master_end.close()
        self.workers_end.close()

    def shed(self):
        """In a new worker: close the master's copies, touching nothing the
        master's selector shares with us (an epoll set survives fork)."""
        for idle in list(self.conns.values()) + list(self.ready):
            close_quietly(idle.sock)
        self.conns = {}
        self.ready = collections.deque()
        self.master_end.close()

    # -- across a reload's exec

    def reexec_state(self):
        """What the master's new image needs to keep serving these
        connections (see ``adopt``); makes their descriptors inheritable.

        The channel survives too: old workers pass their connections to the
        new image, and messages still in it reach the new workers.
        """
        now = self.clock()
        conns = [[fd, idle.first, _plain(idle.addr),
                  None if idle.deadline is None else max(0.0, idle.deadline - now)]
                 for fd, idle in self.conns.items()]
        # Readable ones are readable again in the new image's selector.
        conns += [[idle.sock.fileno(), idle.first, _plain(idle.addr), None]
                  for idle in self.ready]
        state = {"channel": [self.master_end.fileno(), self.workers_end.fileno()],
                 "conns": conns}
        self._set_inheritable(state, True)
        return {"idle": state}

    def reexec_failed(self):
        """The exec failed: the descriptors are ours alone again."""
        self._set_inheritable(self.reexec_state()["idle"], False)

    @staticmethod
    def _set_inheritable(state, on):
        for fd in state["channel"] + [conn[0] for conn in state["conns"]]:
            os.set_inheritable(fd, on)

    @classmethod
    def adopt(cls, state, selector, handler, clock=time.monotonic, reserved=None):
        """The keeper of the master's new image, from ``reexec_state()["idle"]``."""
        cls._set_inheritable(state, False)
        master_fd, workers_fd = state["channel"]
        channel = (socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM, 0, master_fd),
                   socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM, 0, workers_fd))
        keeper = cls(selector, handler, channel, clock, reserved)
        for fd, first, addr, idle_for in state["conns"]:
            keeper.keep(fd, first, tuple(addr) if isinstance(addr, list) else addr, idle_for)
        return keeper


def _plain(addr):
    """``addr`` as JSON can carry it (a list for a tuple; bytes as text)."""
    if isinstance(addr, bytes):
        return addr.decode("utf-8", "replace")
    return addr
