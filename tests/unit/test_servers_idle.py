"""idle.py: idle connections passed between prefork workers and the master.

Real socket pairs stand in for the web server's connections and a fake
clock for time; ``turn()`` runs what the master's selector found ready,
as the master's loop does.
"""
import json
import os
import selectors
import socket

import pytest

from runfcgi_compat.servers.idle import IdleKeeper, hand_over, open_channel, recv_conn, send_conn


class Handler:
    protocol = "fcgi"
    idle_timeout = 10.0
    socket_args = (socket.AF_UNIX, socket.SOCK_STREAM, 0)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def selector():
    sel = selectors.DefaultSelector()
    yield sel
    sel.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def keeper(selector, clock):
    made = IdleKeeper(selector, Handler(), clock=clock)
    yield made
    made.close()


def turn(selector):
    """Run the actions of every key the selector finds ready now."""
    for key, _ in selector.select(0):
        key.data()


def peer_sees_eof(peer):
    peer.settimeout(5)
    return peer.recv(1) == b""


def keep(keeper, pairs, first=False, addr="peer"):
    """A connection handed to the keeper as a worker would; return the web
    server's end of it."""
    conn, web = pairs()
    hand_over(keeper.workers_end, conn, first, addr, patience=1)
    keeper.receive()
    return web


def take(keeper):
    """What a worker receives from the channel, as a socket (or None)."""
    got = recv_conn(keeper.workers_end)
    if got is None:
        return None
    fd, first, addr, stopping = got
    return socket.socket(*Handler.socket_args, fd), first, addr, stopping


# -- the channel ------------------------------------------------------------------


def test_a_connection_passes_with_its_flag_and_address(pairs):
    master_end, workers_end = open_channel()
    try:
        conn, web = pairs()
        send_conn(workers_end, conn.fileno(), True, ("127.0.0.1", 8080))
        conn.close()
        fd, first, addr, stopping = recv_conn(master_end)
        assert (first, addr, stopping) == (True, ("127.0.0.1", 8080), False)
        assert not os.get_inheritable(fd)
        with socket.socket(*Handler.socket_args, fd) as received:
            web.sendall(b"request")
            assert received.recv(100) == b"request"
        assert peer_sees_eof(web)  # The received copy was the last one.
        assert recv_conn(master_end) is None  # Each message is taken once.
    finally:
        master_end.close()
        workers_end.close()


def test_hand_over_closes_our_copy_even_when_it_cannot_pass(pairs):
    master_end, workers_end = open_channel()
    master_end.close()  # Nobody to receive.
    try:
        conn, web = pairs()
        assert hand_over(workers_end, conn, False, "", patience=1) is False
        assert conn.fileno() == -1
        assert peer_sees_eof(web)
    finally:
        workers_end.close()


# -- the keeper --------------------------------------------------------------------------


def test_a_kept_connection_goes_to_the_workers_once_its_request_arrives(keeper, selector,
                                                                        pairs):
    web = keep(keeper, pairs, addr=("10.0.0.1", 1234))
    assert len(keeper) == 1
    turn(selector)
    assert take(keeper) is None  # No request yet: it stays with the master.
    web.sendall(b"next request")
    turn(selector)
    assert len(keeper) == 0
    received, first, addr, stopping = take(keeper)
    with received:
        assert (first, addr, stopping) == (False, ("10.0.0.1", 1234), False)
        assert received.recv(100) == b"next request"
    # The master kept no copy: the worker's close is the connection's end.
    assert peer_sees_eof(web)


def test_a_connection_whose_request_came_already_is_passed_on_at_once(keeper, selector,
                                                                       pairs):
    conn, web = pairs()
    web.sendall(b"next request")  # Sent while the connection was being passed.
    hand_over(keeper.workers_end, conn, False, "busy", patience=1)
    keeper.receive()
    assert len(keeper) == 0
    assert len(selector.get_map()) == 1  # Only the channel: it was never watched.
    received, _, addr, _ = take(keeper)
    with received:
        assert addr == "busy" and received.recv(100) == b"next request"


def test_a_connection_the_web_server_closed_is_closed_by_the_master(keeper, selector, pairs):
    web = keep(keeper, pairs)
    web.shutdown(socket.SHUT_WR)
    turn(selector)
    assert len(keeper) == 0
    assert take(keeper) is None  # No worker is woken for it.
    assert peer_sees_eof(web)


def test_idle_connections_expire_oldest_first(keeper, clock, pairs):
    old = keep(keeper, pairs)
    clock.now += 5
    young = keep(keeper, pairs)
    assert keeper.next_deadline() == 110.0
    clock.now = 109.9
    keeper.expire()
    assert len(keeper) == 2
    clock.now = 110.0
    keeper.expire()
    assert len(keeper) == 1 and keeper.next_deadline() == 115.0
    assert peer_sees_eof(old)
    with pytest.raises(BlockingIOError):  # Still open: no end of file.
        young.recv(1, socket.MSG_DONTWAIT)


def test_without_an_idle_timeout_nothing_expires(selector, clock, pairs):
    handler = Handler()
    handler.idle_timeout = 0
    keeper = IdleKeeper(selector, handler, clock=clock)
    try:
        keep(keeper, pairs)
        assert keeper.next_deadline() is None
        clock.now += 10 ** 6
        keeper.expire()
        assert len(keeper) == 1
    finally:
        keeper.close()


def test_near_the_descriptor_limit_the_oldest_connection_gives_way(keeper, pairs, caplog):
    keeper.room = 2
    old = keep(keeper, pairs)
    keep(keeper, pairs)
    keep(keeper, pairs)
    assert len(keeper) == 2
    assert peer_sees_eof(old)
    assert "closing the oldest" in caplog.text


def test_a_stop_closes_kept_connections_and_passes_fresh_ones(keeper, selector, pairs):
    kept = keep(keeper, pairs, first=False)
    fresh = keep(keeper, pairs, first=True, addr="fresh")
    keeper.stop()
    assert len(keeper) == 0
    assert peer_sees_eof(kept)
    received, first, addr, stopping = take(keeper)
    with received:
        # Its grace is a stopping worker's, and it tells the worker so.
        assert (first, addr, stopping) == (True, "fresh", True)
        fresh.sendall(b"first request")
        assert received.recv(100) == b"first request"
    # Passed to it later, while stopping: the same rules.
    late_kept = keep(keeper, pairs, first=False)
    late_fresh = keep(keeper, pairs, first=True)
    assert peer_sees_eof(late_kept)
    received, first, _, stopping = take(keeper)
    received.close()
    assert first is True and stopping is True and len(keeper) == 0
    assert peer_sees_eof(late_fresh)


def test_a_full_channel_keeps_ready_connections_until_there_is_room(keeper, selector, pairs):
    keeper.master_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    filler, filler_web = pairs()
    sent = 0
    while True:  # Fill the channel, as when every worker is busy for long.
        try:
            send_conn(keeper.master_end, filler.fileno(), False, "filler")
        except BlockingIOError:
            break
        sent += 1
    filler.close()
    web = keep(keeper, pairs, addr="waiting")
    web.sendall(b"request")
    turn(selector)
    assert len(keeper) == 1  # Ready, not sent: nothing lost.
    for _ in range(sent):
        received, _, addr, _ = take(keeper)
        received.close()
        assert addr == "filler"
    turn(selector)  # Room again: the keeper sends it.
    received, _, addr, _ = take(keeper)
    with received:
        assert addr == "waiting" and received.recv(100) == b"request"
    assert len(keeper) == 0
    turn(selector)  # Nothing left to send: no busy loop on a writable channel.
    assert all(not key.events & selectors.EVENT_WRITE for key in selector.get_map().values())
    filler_web.close()


def test_the_keeper_survives_a_reexec(clock, pairs):
    old_selector = selectors.DefaultSelector()
    keeper = IdleKeeper(old_selector, Handler(), clock=clock)
    web = keep(keeper, pairs, addr=("::1", 443, 0, 0))
    clock.now += 4
    fresh = keep(keeper, pairs, first=True, addr=b"\0abstract")
    state = keeper.reexec_state()
    fds = state["idle"]["channel"] + [conn[0] for conn in state["idle"]["conns"]]
    assert all(os.get_inheritable(fd) for fd in fds)
    keeper.reexec_failed()
    assert not any(os.get_inheritable(fd) for fd in fds)

    # It travels in the environment, as JSON.
    state = json.loads(json.dumps(keeper.reexec_state()))["idle"]
    # As exec does: the old image's objects vanish, the descriptors stay.
    for idle in keeper.conns.values():
        idle.sock.detach()
    keeper.master_end.detach()
    keeper.workers_end.detach()
    old_selector.close()
    new_selector = selectors.DefaultSelector()
    new = IdleKeeper.adopt(state, new_selector, Handler(), clock=clock)
    try:
        assert not any(os.get_inheritable(fd) for fd in fds)
        assert len(new) == 2
        assert new.next_deadline() == 110.0  # What was left of its time, not all of it.
        assert [(i.first, i.addr) for i in new.conns.values()] == [
            (False, ("::1", 443, 0, 0)), (True, "\0abstract")]
        web.sendall(b"after the reload")
        turn(new_selector)
        received, _, _, _ = take(new)
        with received:
            assert received.recv(100) == b"after the reload"
        fresh.sendall(b"first")
        turn(new_selector)
        received, first, _, _ = take(new)
        received.close()
        assert first is True
    finally:
        new.close()
        new_selector.close()


def test_shed_closes_the_masters_copies_without_touching_its_selector(keeper, selector,
                                                                      pairs):
    keep(keeper, pairs)
    registered = len(selector.get_map())
    keeper.shed()
    assert keeper.master_end.fileno() == -1 and len(keeper) == 0
    assert len(selector.get_map()) == registered
    # What a worker keeps: its end of the channel.
    assert keeper.workers_end.fileno() >= 0
