"""threaded.ThreadedPool: the main thread's selector, the worker threads, hand-backs.

The pool runs in the test's thread one ``turn()`` at a time, over real
loopback connections, with a fake clock for its deadlines.  Its handler is
a toy line protocol (``LineHandler``) that keeps the protocols' contract
with the pools (``connect``, ``serve_next`` -> KEEP | CLOSE, see base.py),
and whose app can be held inside a request (``LineApp.gate``) for as long
as a test needs.
"""
import errno
import logging
import socket
import threading
import time

import pytest

from runfcgi_compat.servers.base import CLOSE, KEEP
from runfcgi_compat.servers.threaded import IdleConnections, ThreadedPool
from tests.unit.clock import FakeClock

LIMIT = 10.0  # Seconds any one wait may take before the test fails.


class LineApp:
    """Answers each line with ``<line>!``; records the order it saw them."""

    def __init__(self):
        self.seen = []
        self.gates = {}  # line -> Event the request waits for
        self.started = {}  # line -> Event set once the request runs

    def gate(self, line):
        """Hold the request ``line`` until ``release(line)``."""
        self.gates[line] = threading.Event()
        self.started[line] = threading.Event()

    def release(self, line):
        self.gates[line].set()

    def wait_started(self, line):
        assert self.started[line].wait(LIMIT), f"request {line!r} never started"

    def __call__(self, line):
        self.seen.append(line)
        if line in self.gates:
            self.started[line].set()
            assert self.gates[line].wait(LIMIT)
        return line + b"!\n"


class LineConnection:
    def __init__(self, sock):
        self.sock = sock
        self.fresh = True
        self.buffer = b""

    def fileno(self):
        return self.sock.fileno()

    def ready(self):
        return b"\n" in self.buffer

    def arrived(self):
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True  # As good as the end, as base.Connection says.
        if not data:
            return True  # The end: serve_next closes.
        self.buffer += data
        return True

    def arriving(self):
        # Half a line counts, as a FastCGI request whose records stopped.
        return self.fresh or bool(self.buffer)

    def close(self):
        self.sock.close()


class LineHandler:
    """A toy protocol: one line per request, kept connections."""

    protocol = "line"
    idle_timeout = 60.0
    first_request_grace = 5.0

    def __init__(self):
        self.app = None
        # (inside, go) Events: the next serve_next that reads half a line
        # sets ``inside`` and waits for ``go`` before it returns.
        self.pause = None

    def set_app(self, app):
        self.app = app

    def prepare_listener(self, listen_sock):
        pass

    def connect(self, fd, addr):
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)  # serve_next never waits for a request.
        return LineConnection(sock)

    def serve_next(self, conn):
        try:
            if b"\n" not in conn.buffer:
                try:
                    data = conn.sock.recv(4096)
                except BlockingIOError:
                    return KEEP  # Not here yet: the pool waits for it.
                if not data:
                    conn.close()
                    return CLOSE
                conn.buffer += data
                if b"\n" not in conn.buffer:
                    self._paused()
                    return KEEP
            line, conn.buffer = conn.buffer.split(b"\n", 1)
            conn.fresh = False
            conn.sock.setblocking(True)
            conn.sock.sendall(self.app(line))
            conn.sock.setblocking(False)
            return KEEP
        except OSError:
            conn.close()
            return CLOSE

    def _paused(self):
        if self.pause is not None:
            (inside, go), self.pause = self.pause, None
            inside.set()
            assert go.wait(LIMIT), "never let go"


@pytest.fixture
def pools():
    """``pools(**limits) -> (pool, app, address)``: an opened pool, closed at the end."""
    made = []

    def make(maxchildren=4, maxspare=4, minspare=1, cls=ThreadedPool, **attrs):
        app = LineApp()
        pool = cls(LineHandler(), lambda: app, maxspare=maxspare, minspare=minspare,
                            maxchildren=maxchildren)
        pool.clock = FakeClock()
        for name, value in attrs.items():
            setattr(pool, name, value)
        listen = socket.socket()
        listen.bind(("127.0.0.1", 0))
        listen.listen(16)
        pool.open(listen)
        made.append((pool, app, listen))
        return pool, app, listen.getsockname()

    yield make
    for pool, app, listen in made:
        for gate in app.gates.values():
            gate.set()
        # Real time from here: the threads' requests end, they leave.
        pool.clock, pool.graceful_timeout = time.monotonic, LIMIT
        try:
            pool.finish()
            # One snapshot: a thread that leaves between two calls of stats()
            # lowers both counts, and two calls saw "2 == 1".
            stats = pool.stats()
            assert stats["threads"] == stats["idle_threads"]  # Leaving.
        finally:
            pool.close()
            listen.close()


@pytest.fixture
def clients():
    """``clients(address) -> socket``: connected, closed at the end."""
    made = []

    def connect(address):
        sock = socket.create_connection(address, timeout=LIMIT)
        made.append(sock)
        return sock

    yield connect
    for sock in made:
        sock.close()


def turn_until(pool, done, what="the condition"):
    """Run the main thread's turns until ``done()``; fail after LIMIT seconds."""
    deadline = time.monotonic() + LIMIT
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pool.turn(wait=0.05)


def wait_until(done, what):
    """Wait in real time for ``done()``, set by another thread; fail after LIMIT."""
    deadline = time.monotonic() + LIMIT
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def stat(pool, name):
    return pool.stats()[name]


def ask(pool, sock, line):
    """Send ``line`` on ``sock``, run turns until its answer, return it."""
    sock.sendall(line + b"\n")
    return answer(pool, sock)


def answer(pool, sock):
    got = []
    sock.setblocking(False)
    try:
        def arrived():
            try:
                got.append(sock.recv(4096))
            except BlockingIOError:
                return False
            return True
        turn_until(pool, arrived, "an answer")
    finally:
        sock.setblocking(True)
    return got[0]


def closed_by_server(sock):
    """True if the server has closed ``sock`` (its end read), else False; never waits."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True  # Closed with our request unread.
    finally:
        sock.setblocking(True)


def idle_connections(pool, address, clients, count):
    """``count`` new connections, each having served one request, idle now."""
    conns, before = [], stat(pool, "idle_connections")
    for _ in range(count):
        conns.append(clients(address))
        assert ask(pool, conns[-1], b"x") == b"x!\n"
        turn_until(pool, lambda: settled(pool, before + len(conns)),
                   "the connection handed back")
        pool.turn(wait=0)  # Taken in: its idle time starts now.
    return conns


def settled(pool, idle_connections):
    """Every thread idle and ``idle_connections`` handed back to the main thread."""
    stats = pool.stats()
    return (stats["idle_connections"] == idle_connections and stats["queued"] == 0
            and stats["idle_threads"] == stats["threads"])


# -- serving and handing back ------------------------------------------------------


def test_a_kept_connection_goes_back_to_the_main_thread_between_requests(pools, clients):
    pool, _, address = pools()
    conns = []
    for _ in range(3):
        conns.append(clients(address))
        assert ask(pool, conns[-1], b"a") == b"a!\n"
    turn_until(pool, lambda: settled(pool, 3), "three idle connections")
    # Three idle connections, no thread held by any of them.
    assert stat(pool, "returned") == 3
    for conn in conns:
        assert ask(pool, conn, b"b") == b"b!\n"
    stats = pool.stats()
    assert (stats["accepted"], stats["resumed"]) == (3, 3)


def test_a_request_that_has_already_arrived_is_served_by_the_same_thread(pools, clients):
    pool, app, address = pools()
    conn = clients(address)
    app.gate(b"a")
    conn.sendall(b"a\n")
    turn_until(pool, lambda: app.started[b"a"].is_set(), "the first request")
    conn.sendall(b"b\n")  # Arrives while the thread is inside "a".
    app.release(b"a")
    assert answer(pool, conn).startswith(b"a!\n")
    turn_until(pool, lambda: settled(pool, 1), "the connection back, idle")
    stats = pool.stats()
    assert app.seen == [b"a", b"b"]
    # "b" was served at once, not queued by the main thread after a hand-back.
    assert (stats["again"], stats["returned"], stats["resumed"]) == (1, 1, 0)


def test_a_buffered_request_is_served_without_asking_anyone(pools, clients):
    pool, app, address = pools()
    conn = clients(address)
    conn.sendall(b"a\nb\n")  # Both in one read: the second is buffered.
    received = b""
    while received.count(b"\n") < 2:
        received += answer(pool, conn)
    assert received == b"a!\nb!\n"
    turn_until(pool, lambda: settled(pool, 1), "the connection back, idle")
    stats = pool.stats()
    assert (stats["again"], stats["returned"], stats["resumed"]) == (0, 1, 0)


def test_a_fresh_connection_without_its_request_waits_in_the_main_thread(pools, clients):
    pool, app, address = pools(maxchildren=1, maxspare=1)
    silent = clients(address)
    turn_until(pool, lambda: settled(pool, 1), "the silent connection handed back")
    # The one thread is free for others meanwhile.
    assert ask(pool, clients(address), b"other") == b"other!\n"
    assert ask(pool, silent, b"late") == b"late!\n"
    assert stat(pool, "resumed") == 1


@pytest.mark.parametrize("waiting", ["new connection", "idle kept connection"])
def test_a_busy_kept_connection_takes_turns_with_one_that_waits(pools, clients, waiting):
    # One thread.  Its kept connection's next request is there when the
    # current one ends, but another connection waits for the thread: the
    # busy one is handed back and served after the waiting one.
    pool, app, address = pools(maxchildren=1, maxspare=1)
    busy = clients(address)
    if waiting == "idle kept connection":
        other = clients(address)
        assert ask(pool, other, b"hello") == b"hello!\n"
    app.gate(b"a")
    busy.sendall(b"a\n")
    turn_until(pool, lambda: app.started[b"a"].is_set(), "the busy request")
    if waiting == "new connection":
        other = clients(address)
    other.sendall(b"o\n")
    if waiting == "new connection":
        turn_until(pool, lambda: stat(pool, "backlog"), "the new connection seen waiting")
    else:
        turn_until(pool, lambda: stat(pool, "queued") == 1, "the kept connection queued")
    busy.sendall(b"a2\n")
    app.release(b"a")
    turn_until(pool, lambda: b"a2" in app.seen, "all three requests")
    assert app.seen[-3:] == [b"a", b"o", b"a2"]
    assert stat(pool, "again") == 0


def test_no_more_than_maxchildren_connections_are_taken_at_once(pools, clients):
    pool, app, address = pools(maxchildren=2, maxspare=2)
    for line in (b"1", b"2", b"3"):
        app.gate(line)
        clients(address).sendall(line + b"\n")
    turn_until(pool, lambda: app.started[b"1"].is_set() and app.started[b"2"].is_set(),
               "two requests running")
    turn_until(pool, lambda: stat(pool, "backlog"), "the third seen in the backlog")
    stats = pool.stats()
    assert (stats["accepted"], stats["threads"]) == (2, 2)
    assert not app.started[b"3"].is_set()
    app.release(b"1")
    turn_until(pool, lambda: app.started[b"3"].is_set(), "the third request")
    assert stat(pool, "threads") == 2


def test_a_handler_that_raises_gets_its_connection_closed(pools, clients, caplog):
    # The contract says a handler never raises; if one does, the thread
    # lives on and the connection is closed, not left for the collector.
    pool, app, address = pools(maxchildren=1, maxspare=1)
    conn = clients(address)
    assert ask(pool, conn, b"a") == b"a!\n"
    turn_until(pool, lambda: settled(pool, 1), "the connection back, idle")

    def broken(conn):
        raise RuntimeError("a handler bug")

    pool.handler.serve_next = broken
    conn.sendall(b"b\n")
    turn_until(pool, lambda: closed_by_server(conn), "the connection closed")
    turn_until(pool, lambda: settled(pool, 0), "the thread free again")
    assert "unexpected error serving a connection" in caplog.text
    assert stat(pool, "threads") == 1


# -- deadlines -------------------------------------------------------------------------


def test_idle_connections_expire_oldest_first(pools, clients):
    pool, _, address = pools()
    pool.handler.idle_timeout = 10.0
    conns = []
    for _ in range(3):  # Handed back at 1000, 1001, 1002.
        conns += idle_connections(pool, address, clients, 1)
        pool.clock.now += 1.0
    pool.clock.now = 1010.5
    pool.turn(wait=0)
    assert [closed_by_server(conn) for conn in conns] == [True, False, False]
    pool.clock.now = 1012.0
    pool.turn(wait=0)
    assert [closed_by_server(conn) for conn in conns[1:]] == [True, True]
    assert stat(pool, "idle_connections") == 0


def test_a_connection_used_again_starts_its_idle_time_again(pools, clients):
    pool, _, address = pools()
    pool.handler.idle_timeout = 10.0
    first, second = idle_connections(pool, address, clients, 2)
    pool.clock.now += 5.0
    assert ask(pool, first, b"again") == b"again!\n"
    turn_until(pool, lambda: settled(pool, 2), "both handed back")
    pool.turn(wait=0)
    pool.clock.now += 6.0  # The second is 11 s idle, the first 6 s.
    pool.turn(wait=0)
    assert (closed_by_server(first), closed_by_server(second)) == (False, True)


class FullListener:
    """A listening socket whose accept() runs out of descriptors ``failures`` times."""

    def __init__(self, sock, failures):
        self.sock = sock
        self.failures = failures

    def _accept(self):
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.sock._accept()

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_out_of_descriptors_closes_the_longest_idle_connection(pools, clients):
    pool, _, address = pools()
    old, young = idle_connections(pool, address, clients, 2)
    pool._listen = FullListener(pool._listen, failures=1)
    assert ask(pool, clients(address), b"new") == b"new!\n"
    assert (closed_by_server(old), closed_by_server(young)) == (True, False)


def test_out_of_descriptors_with_nothing_to_close_pauses_accepting(pools, clients, caplog):
    pool, app, address = pools()
    pool._listen = FullListener(pool._listen, failures=1)
    conn = clients(address)
    conn.sendall(b"x\n")
    with caplog.at_level(logging.WARNING, "runfcgi_compat"):
        turn_until(pool, lambda: "accept() failed" in caplog.text, "the failure logged")
    for _ in range(3):
        pool.turn(wait=0.01)  # The listener is not watched meanwhile.
    assert stat(pool, "accepted") == 0
    pool.clock.now += pool.accept_pause
    assert answer(pool, conn) == b"x!\n"


# -- spare threads ---------------------------------------------------------------------


def test_minspare_idle_threads_are_kept_ready(pools, clients):
    pool, app, address = pools(maxchildren=4, maxspare=4, minspare=2)
    assert pool.stats()["threads"] == 2
    app.gate(b"busy")
    clients(address).sendall(b"busy\n")
    turn_until(pool, lambda: app.started[b"busy"].is_set(), "the request")
    turn_until(pool, lambda: stat(pool, "threads") == 3, "a third thread")
    assert stat(pool, "idle_threads") == 2


def test_threads_idle_beyond_maxspare_for_a_whole_linger_window_leave(pools, clients):
    pool, app, address = pools(maxchildren=4, maxspare=1, minspare=0, spare_linger=2.0)
    lines = [b"1", b"2", b"3"]
    for line in lines:
        app.gate(line)
        clients(address).sendall(line + b"\n")
    turn_until(pool, lambda: all(app.started[line].is_set() for line in lines),
               "three requests running")
    for line in lines:
        app.release(line)
    turn_until(pool, lambda: settled(pool, 3), "three idle threads")
    assert stat(pool, "threads") == 3
    # The window that saw them busy ends: they were not spare all along.
    pool.clock.now += 2.0
    pool.turn(wait=0)
    assert stat(pool, "threads") == 3
    # A whole window idle: all but maxspare leave.
    pool.clock.now += 2.0
    turn_until(pool, lambda: stat(pool, "threads") == 1, "the spare threads to leave")


# -- stopping --------------------------------------------------------------------------


def test_a_stop_closes_idle_kept_connections_and_waits_for_fresh_ones(pools, clients):
    pool, app, address = pools()
    kept, fresh, half = clients(address), clients(address), clients(address)
    assert ask(pool, kept, b"x") == b"x!\n"
    half.sendall(b"ha")  # Half a request: parked as such.
    turn_until(pool, lambda: settled(pool, 3), "all three idle in the main thread")
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (pool.finish(), done.set()))
    stopper.start()
    try:
        kept.settimeout(LIMIT)
        assert kept.recv(1) == b""  # Closed at once.
        assert not done.is_set()  # The fresh one still has first_request_grace.
        fresh.sendall(b"first\n")
        fresh.settimeout(LIMIT)
        assert fresh.recv(4096) == b"first!\n"
        assert fresh.recv(1) == b""  # Kept no longer: closed after its request.
        half.sendall(b"lf\n")  # The rest of a request stalled half-way.
        half.settimeout(LIMIT)
        assert half.recv(4096) == b"half!\n"
    finally:
        stopper.join(LIMIT)
    assert done.is_set()


class CountingPool(ThreadedPool):
    """Runs ``between()`` once, in finish(), between its look at the
    connections handed back and its count of the work left."""

    between = None

    def _take_returned(self, now):
        super()._take_returned(now)
        if self._stop.is_set() and self.between is not None:
            between, self.between = self.between, None
            between()


def test_a_stop_waits_for_a_connection_handed_back_while_it_counts(pools, clients):
    pool, app, address = pools(cls=CountingPool)
    half = clients(address)
    turn_until(pool, lambda: settled(pool, 1), "the fresh connection idle")
    inside, go = threading.Event(), threading.Event()
    pool.handler.pause = (inside, go)
    half.sendall(b"ha")  # A thread reads it, and waits inside the handler.
    turn_until(pool, inside.is_set, "half a request read")
    returned, handed = stat(pool, "returned"), threading.Event()

    def hand_back():
        go.set()
        wait_until(lambda: stat(pool, "returned") == returned + 1, "the hand-back")
        handed.set()

    pool.between = hand_back
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (pool.finish(), done.set()))
    stopper.start()
    try:
        assert handed.wait(LIMIT)
        half.sendall(b"lf\n")  # The rest: the stop must not have left it behind.
        half.settimeout(LIMIT)
        assert half.recv(4096) == b"half!\n"
        assert half.recv(1) == b""
    finally:
        stopper.join(LIMIT)
    assert done.is_set()


def test_a_stop_gives_up_on_busy_threads_after_graceful_timeout(pools, clients, caplog):
    pool, app, address = pools(graceful_timeout=0.0)
    app.gate(b"slow")
    clients(address).sendall(b"slow\n")
    turn_until(pool, lambda: app.started[b"slow"].is_set(), "the slow request")
    with caplog.at_level(logging.WARNING, "runfcgi_compat"):
        pool.finish()
    assert "1 connections still busy" in caplog.text


# -- the parts -------------------------------------------------------------------------


class Idle:
    def __init__(self, sock):
        self.sock = sock

    def fileno(self):
        return self.sock.fileno()


def test_idle_connections_are_kept_oldest_first(pairs):
    table = IdleConnections()
    a, b, c = (Idle(pairs()[0]) for _ in range(3))
    table.add(a, 10.0)
    table.add(b, 11.0)
    table.add(c, 12.0)
    table.add(a, 13.0)  # Used again: now the youngest.
    assert table.oldest() is b and table.next_deadline() == 11.0
    assert table.expired(12.0) == [b, c]
    assert list(table) == [a] and len(table) == 1
    assert table.pop(a.fileno()) is a and table.oldest() is None
