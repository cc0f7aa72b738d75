"""held.HeldConnections: the threaded pool's kept connections between requests.

Each connection is armed for one readiness report: exactly one ``take``
gets it once its peer sends, until it is held again.  Both versions are
tested: the C module's calls that keep the interpreter lock, and
select.epoll's.
"""
import threading

import pytest

from runfcgi_compat.servers import held as held_module
from runfcgi_compat.servers.base import Parked
from runfcgi_compat.servers.held import HeldConnections


class Handler:
    protocol = "fcgi"
    idle_timeout = 60.0


VERSIONS = ["python"]
if held_module.epoll_arm is not None:
    VERSIONS.insert(0, "c")


@pytest.fixture(params=VERSIONS)
def make_held(request):
    made = []

    def make(handler=None):
        held = HeldConnections(handler or Handler())
        if request.param == "python":
            # The instance's C shortcuts hide the methods select.epoll's use.
            held.__dict__.pop("_arm", None)
            held.__dict__.pop("_take_fd", None)
        made.append(held)
        return held

    yield make
    for held in made:
        held.close()


def parked(sock):
    p = Parked(False)
    p.sock = sock
    return p


def test_a_connection_is_taken_once_its_peer_sends(make_held, pairs):
    held = make_held()
    sock, peer = pairs()
    held.hold(parked(sock))
    assert held and len(held) == 1
    assert held.take() is None  # Nothing sent yet.
    peer.send(b"request")
    taken = held.take()
    assert taken.sock is sock
    assert not held and held.taken == 1


def test_one_report_per_hold(make_held, pairs):
    held = make_held()
    sock, peer = pairs()
    held.hold(parked(sock))
    peer.send(b"request")
    assert held.take().sock is sock
    # Still readable (nothing read), but not armed again until held again.
    assert held.take() is None
    held.hold(parked(sock))
    assert held.take().sock is sock


def test_two_threads_never_take_the_same_connection(make_held, pairs):
    held = make_held()
    socks = []
    for _ in range(50):
        sock, peer = pairs()
        held.hold(parked(sock))
        peer.send(b"x")
        socks.append(sock)
    taken = [[], []]

    def take_all(into):
        while True:
            got = held.take()
            if got is None:
                return
            into.append(got.sock)

    threads = [threading.Thread(target=take_all, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    together = taken[0] + taken[1]
    assert sorted(s.fileno() for s in together) == sorted(s.fileno() for s in socks)
    assert not held


def test_the_descriptor_is_readable_while_one_is_ready(make_held, pairs):
    import select
    held = make_held()
    sock, peer = pairs()
    held.hold(parked(sock))
    assert select.select([held], [], [], 0)[0] == []
    peer.send(b"x")
    assert select.select([held], [], [], 0)[0] == [held]
    held.take()
    assert select.select([held], [], [], 0)[0] == []


def test_a_reused_descriptor_number_is_armed_again(make_held, pairs):
    held = make_held()
    sock, peer = pairs()
    number = sock.fileno()
    held.hold(parked(sock))
    peer.send(b"x")
    assert held.take().sock is sock
    sock.close()  # Closing takes it out of the epoll set.
    peer.close()
    new, new_peer = pairs()
    if new.fileno() != number:  # The kernel hands out the lowest free number.
        pytest.skip("the descriptor number was not reused")
    held.hold(parked(new))
    new_peer.send(b"x")
    assert held.take().sock is new


def test_idle_connections_expire_oldest_first(make_held, pairs):
    held = make_held()
    (first, _), (second, second_peer) = pairs(), pairs()
    held.hold(parked(first))
    held.hold(parked(second))
    first_deadline = held.next_deadline()
    held.expire(first_deadline)
    assert first.fileno() == -1  # Closed.
    assert second.fileno() != -1 and len(held) == 1
    # Served and held again: it goes to the end, with a new deadline.
    second_peer.send(b"x")
    held.hold(held.take())
    assert held.next_deadline() > first_deadline
    held.expire(held.next_deadline())
    assert second.fileno() == -1 and not held


def test_no_idle_timeout_means_no_deadline(make_held, pairs):
    handler = Handler()
    handler.idle_timeout = 0
    held = make_held(handler)
    sock, _ = pairs()
    held.hold(parked(sock))
    assert held.next_deadline() is None
    held.expire(float("inf"))
    assert len(held) == 1


def test_close_oldest_and_close_all(make_held, pairs):
    held = make_held()
    socks = [pairs()[0] for _ in range(3)]
    for sock in socks:
        held.hold(parked(sock))
    assert held.close_oldest() is True
    assert [s.fileno() == -1 for s in socks] == [True, False, False]
    held.close_all()
    assert all(s.fileno() == -1 for s in socks) and not held
    assert held.close_oldest() is False


def test_a_connection_closed_while_held_is_never_taken(make_held, pairs):
    held = make_held()
    sock, peer = pairs()
    held.hold(parked(sock))
    peer.send(b"x")
    held.close_all()
    assert held.take() is None
