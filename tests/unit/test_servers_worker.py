"""worker.WorkerProcess: one prefork worker's loop, run in a thread.

The test plays the master: it holds the master's end of the channel, sees
what the worker passes to it, and passes connections to the worker.  The
web server is the test client, over UNIX sockets.  Every ordering asserted
here is one the worker guarantees (it passes its idle connection on before
it serves another); nothing depends on timing.
"""
import os
import socket
import struct
import threading

import pytest

from runfcgi_compat import client
from runfcgi_compat.servers.fcgi import FastCGIHandler
from runfcgi_compat.servers.idle import open_channel, recv_conn, send_conn
from runfcgi_compat.servers.scoreboard import STALLED, Scoreboard
from runfcgi_compat.servers.signals import SignalBox, wait_readable
from runfcgi_compat.servers.worker import WorkerProcess

TIMEOUT = 10


class App:
    """``/pid``; ``/slow`` waits until ``release`` is set (a slow view)."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            self.started.set()
            self.release.wait(TIMEOUT)
        if environ["PATH_INFO"] == "/echo":
            self.started.set()
            body = environ["wsgi.input"].read()
        else:
            body = environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]


class Pool:
    """What a worker reads from its pool; the test is the master."""

    minspare = 0
    maxrequests = 0

    def __init__(self, handler, listen, app, channel):
        self.handler = handler
        self.listen_sock = listen
        self.app = app
        self.board = Scoreboard(1)
        self.master_pid = os.getppid()  # The worker's check for a lost master.
        self.keeper = type("Keeper", (), {"workers_end": channel})

    def load_app(self):
        return self.app

    def _reopen_logs(self):
        pass


class Harness:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.address = str(tmp_path / "worker.sock")
        self.listen = listen(self.address)
        self.side_address = str(tmp_path / "side.sock")
        self.side = listen(self.side_address)  # For connections the master passes.
        self.master_end, self.workers_end = open_channel()
        self.handler = FastCGIHandler()
        self.handler.prepare_listener(self.listen)
        self.listen.setblocking(False)
        self.app = App()
        self.pool = Pool(self.handler, self.listen, self.app, self.workers_end)
        # The worker's pipe to the master: READY and WAKE land here, unread.
        self.status_read, self.status_write = os.pipe()
        self.worker = WorkerProcess(self.pool, 0, self.status_write)
        self.box = SignalBox(())
        self.thread = threading.Thread(target=self.worker.serve, args=(self.box,))
        self.opened = []

    def start(self):
        self.thread.start()
        return self

    def kept_idle(self):
        """A kept connection that has served one request: the worker's own."""
        kept = self.connect()
        assert kept.request(path="/pid").status == 200
        return kept

    def connect(self):
        conn = client.FastCGIConnection(self.address, timeout=TIMEOUT)
        self.opened.append(conn)
        return conn

    def pass_to_worker(self, stopping=False, first=False):
        """A kept connection the master passes to the worker; return the web
        server's end."""
        conn = client.FastCGIConnection(self.side_address, timeout=TIMEOUT)
        self.opened.append(conn)
        accepted, _ = self.side.accept()
        send_conn(self.master_end, accepted.fileno(), first, "side", stopping)
        accepted.close()
        return conn

    def passed_to_master(self, timeout=0):
        """(fd, first) the worker passed to the master, or None."""
        if timeout and not wait_readable([self.master_end], timeout):
            return None
        got = recv_conn(self.master_end)
        if got is None:
            return None
        fd, first, _, _ = got
        return fd, first

    def ended(self):
        self.thread.join(TIMEOUT)
        return not self.thread.is_alive()

    def close(self):
        self.app.release.set()
        self.worker.stop.set()
        self.thread.join(TIMEOUT)
        for conn in self.opened:
            conn.close()
        for item in (self.listen, self.side, self.master_end, self.workers_end):
            item.close()
        os.close(self.status_read)
        os.close(self.status_write)
        self.box.close()
        self.pool.board.close()


def listen(address):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen(8)
    return sock


@pytest.fixture
def harness(tmp_path):
    made = Harness(tmp_path)
    yield made
    made.close()


def same_connection(fd, conn):
    """True if ``fd`` (passed to the master) is ``conn``'s server side; closes it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fd) as sock:
        conn._channel.sock.sendall(b"ping")
        sock.settimeout(TIMEOUT)
        return sock.recv(4) == b"ping"


def test_the_own_connection_is_served_in_place(harness):
    harness.start()
    conn = harness.connect()
    for _ in range(3):
        assert conn.request(path="/pid").body == b"/pid"
    assert harness.passed_to_master() is None  # Nothing else came: it stays.


def test_the_own_connection_goes_to_the_master_before_another_is_served(harness):
    kept = harness.start().kept_idle()
    assert harness.connect().request(path="/pid", keep_conn=False).status == 200
    fd, first = harness.passed_to_master()  # Passed before the new one was served.
    assert first is False and same_connection(fd, kept)


def test_a_slow_request_never_keeps_an_idle_connection_from_the_others(harness):
    kept = harness.start().kept_idle()
    slow = harness.pass_to_worker()
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=slow.request(path="/slow")))
    thread.start()
    try:
        assert harness.app.started.wait(TIMEOUT)
        # The view runs, and the idle connection is the master's already:
        # its next request goes to another worker.
        fd, first = harness.passed_to_master(TIMEOUT)
        assert first is False and same_connection(fd, kept)
    finally:
        harness.app.release.set()
        thread.join(TIMEOUT)
    assert result["r"].body == b"/slow"


def test_a_drain_passes_the_own_connection_on_and_ends(harness):
    kept = harness.start().kept_idle()
    harness.worker.drain.set()
    assert harness.ended()
    fd, first = harness.passed_to_master()
    assert first is False and same_connection(fd, kept)


def test_maxrequests_ends_the_worker_after_its_last_request(harness):
    harness.pool.maxrequests = 2
    kept = harness.start().kept_idle()
    assert kept.request(path="/pid").status == 200
    assert harness.ended()
    fd, _ = harness.passed_to_master()
    assert same_connection(fd, kept)


def test_a_stop_closes_an_idle_kept_connection(harness):
    kept = harness.start().kept_idle()
    harness.worker.stop.set()
    assert harness.ended()
    assert harness.passed_to_master() is None
    sock = kept._channel.sock
    sock.settimeout(TIMEOUT)
    assert sock.recv(1) == b""


def test_a_fresh_connection_passed_as_the_pool_stops_gets_its_grace(harness):
    harness.start()
    fresh = harness.pass_to_worker(stopping=True, first=True)
    # Told by the message that the pool stops, the worker waits for this
    # connection's first request before it leaves, and passes nothing back.
    assert fresh.request(path="/pid", keep_conn=False).body == b"/pid"
    assert harness.ended()
    assert harness.worker.stop.is_set()
    assert harness.passed_to_master() is None


def test_a_peer_that_goes_quiet_inside_a_request_marks_the_worker_stalled(harness):
    """The worker's wait for a request body (its ``wait_for_data``, which
    the handler calls) counts as stalled, and as busy again once the rest
    comes."""
    harness.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    harness.opened.append(sock)
    sock.connect(harness.address)
    sock.settimeout(TIMEOUT)
    body = b"x" * 10
    params = client.cgi_params("POST", "/echo", body=body)
    begin = client._fcgi_record(1, struct.pack(">HB5x", 1, 0))
    sock.sendall(begin + client._fcgi_params(params) + client._fcgi_record(5, body[:4]))
    assert harness.app.started.wait(TIMEOUT)
    wait_until_state(harness, STALLED)
    sock.sendall(client._fcgi_record(5, body[4:]) + client._fcgi_record(5))
    answer = read_until_closed(sock)
    assert b"Status: 200" in answer and body in answer
    assert harness.pool.board.get(0) != STALLED


def wait_until_state(harness, state):
    """Wait, on the worker's own wake-ups, until its scoreboard slot shows
    ``state``: when it marks itself stalled it also writes to its pipe if
    every worker is (here, the only one)."""
    while harness.pool.board.get(0) != state:
        assert wait_readable([harness.status_read], TIMEOUT), harness.pool.board.get(0)
        os.read(harness.status_read, 64)


def read_until_closed(sock):
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
