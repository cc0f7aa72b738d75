"""threaded.ThreadHold: how a thread waits for the next request on a connection.

Each thread keeps one poller from one wait to the next; these tests hold it
to the same answers as a fresh poll: the connection's own readiness, a
notice, or a ``Parked`` (returned, not raised) once ``park_after`` passes
quietly.
"""
import threading

import pytest

from runfcgi_compat.servers.base import NOTICE, Parked
from runfcgi_compat.servers.signals import Notice
from runfcgi_compat.servers.threaded import ThreadHold


def test_a_thread_waits_on_one_connection_after_another(pairs):
    hold, stop = ThreadHold(0.01), Notice()
    (first, first_peer), (second, second_peer) = pairs(), pairs()
    second_peer.send(b"x")
    assert hold.wait_for_request(None, second, False, [stop]) is True
    parked = hold.wait_for_request(None, first, True, [stop])
    assert isinstance(parked, Parked) and parked.first is True
    first_peer.send(b"x")
    assert hold.wait_for_request(None, first, False, [stop]) is True
    # The first connection's readiness does not leak into a wait on the second.
    second.recv(1)
    assert isinstance(hold.wait_for_request(None, second, False, [stop]), Parked)


def test_a_crowded_pool_parks_even_a_ready_connection_at_once(pairs):
    # Others wait for a thread: this connection takes its turn behind them.
    crowded = [True]
    hold = ThreadHold(5.0, crowded=lambda: crowded[0])
    sock, peer = pairs()
    peer.send(b"x")
    parked = hold.wait_for_request(None, sock, False, [])
    assert isinstance(parked, Parked) and parked.first is False
    crowded[0] = False
    assert hold.wait_for_request(None, sock, False, []) is True


def test_a_notice_is_told_apart_from_the_connection(pairs):
    hold, stop = ThreadHold(5.0), Notice()
    sock, _ = pairs()
    stop.set()
    assert hold.wait_for_request(None, sock, False, [stop]) == NOTICE


def test_a_reused_descriptor_number_is_watched_again(pairs):
    hold = ThreadHold(0.01)
    sock, peer = pairs()
    number = sock.fileno()
    assert isinstance(hold.wait_for_request(None, sock, False, []), Parked)
    sock.close()
    peer.close()
    again, again_peer = pairs()
    if again.fileno() != number:
        again, again_peer = again_peer, again  # socketpair may hand them out either way
    assert again.fileno() == number
    again_peer.send(b"x")
    assert hold.wait_for_request(None, again, False, []) is True


def test_each_thread_waits_on_its_own_connection(pairs):
    hold, stop = ThreadHold(0.2), Notice()
    (quiet, _), (busy, busy_peer) = pairs(), pairs()
    busy_peer.send(b"x")
    answers = {}

    def wait(name, sock):
        verdict = hold.wait_for_request(None, sock, False, [stop])
        answers[name] = "parked" if isinstance(verdict, Parked) else verdict

    threads = [threading.Thread(target=wait, args=("quiet", quiet)),
               threading.Thread(target=wait, args=("busy", busy))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {"quiet": "parked", "busy": True}


def test_a_kept_connection_goes_to_the_held_set_at_once(pairs):
    # With the pool's held set, a kept connection is handed back as soon as
    # its request is answered, ready or not: the thread takes whichever held
    # connection is ready next (see held.py).  A fresh one still waits.
    hold, stop = ThreadHold(5.0, hold_kept=True), Notice()
    sock, peer = pairs()
    peer.send(b"x")
    parked = hold.wait_for_request(None, sock, False, [stop])
    assert isinstance(parked, Parked) and parked.first is False
    assert hold.wait_for_request(None, sock, True, [stop]) is True


def test_a_resumed_held_connection_is_ready_once(pairs):
    hold = ThreadHold(5.0, hold_kept=True)
    (sock, peer), (other, _) = pairs(), pairs()
    peer.send(b"x")
    hold.resuming(sock)
    assert hold.wait_for_request(None, other, False, []).first is False  # Not that one.
    assert hold.wait_for_request(None, sock, False, []) is True
    # Its next wait, after the request: held again.
    assert isinstance(hold.wait_for_request(None, sock, False, []), Parked)
    # Only in the thread that resumes it.
    hold.resuming(sock)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(
        hold.wait_for_request(None, sock, False, [])))
    thread.start()
    thread.join(10)
    assert isinstance(seen[0], Parked)
    hold.resuming(None)
    assert isinstance(hold.wait_for_request(None, sock, False, []), Parked)


def test_a_request_stalled_before_the_app_is_parked_as_such(pairs):
    hold = ThreadHold(0.01, hold_kept=True)
    sock, _ = pairs()
    with pytest.raises(Parked) as info:
        hold.wait_mid_request(None, sock, parkable=True)
    assert info.value.mid_request is True and info.value.first is False
    assert Parked(False).mid_request is False
