"""peers.py: who may connect, decided from the listening socket itself."""
import logging
import socket

import pytest

from runfcgi_compat import peers
from runfcgi_compat.peers import ANY, EVERYONE, LISTED, PROTECTED, PeerRule, RefusalLog


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def own_address():
    """This machine's first non-loopback IPv4 address, or None."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))  # No packet is sent for UDP.
            infos.append((None, None, None, None, (probe.getsockname()[0], 0)))
        except OSError:
            pass
    for info in infos:
        if not info[4][0].startswith("127."):
            return info[4][0]
    return None


@pytest.fixture
def listener():
    """Make listening sockets; closed at the end."""
    made = []

    def listen(family, host):
        sock = socket.socket(family, socket.SOCK_STREAM)
        made.append(sock)
        sock.bind((host, 0))
        sock.listen()
        return sock

    yield listen
    for sock in made:
        sock.close()


# -- the decision ------------------------------------------------------------


@pytest.mark.parametrize("family, host, allow, kind", [
    (socket.AF_INET, "127.0.0.1", None, EVERYONE),       # loopback: as before
    (socket.AF_INET6, "::1", None, EVERYONE),
    (socket.AF_INET, "0.0.0.0", None, PROTECTED),        # beyond loopback
    (socket.AF_INET6, "::", None, PROTECTED),
    (socket.AF_INET, "0.0.0.0", ANY, EVERYONE),          # allow=any, on purpose
    (socket.AF_INET, "0.0.0.0", ("10.0.0.5/32",), LISTED),
    (socket.AF_INET, "127.0.0.1", ("10.0.0.5/32",), LISTED),
])
def test_the_listening_socket_decides(listener, family, host, allow, kind):
    rule = peers.decide(listener(family, host), allow)
    assert rule.kind == kind
    assert rule.checks is (kind != EVERYONE)


def test_a_unix_socket_serves_every_peer(tmp_path):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s.sock"))
        sock.listen()
        rule = peers.decide(sock, ("10.0.0.5/32",))
    assert rule.kind == EVERYONE and rule.admits("") and rule.where == "a UNIX socket"


def test_an_address_of_this_machine_is_beyond_loopback(listener):
    address = own_address()
    if address is None:
        pytest.skip("this machine has no address beyond loopback")
    rule = peers.decide(listener(socket.AF_INET, address), None)
    assert rule.kind == PROTECTED
    assert rule.where.startswith(f"{address}:")


def test_protected_mode_admits_this_machine_only(listener):
    rule = peers.decide(listener(socket.AF_INET, "0.0.0.0"), None)
    assert rule.admits(("127.0.0.1", 5000))
    assert rule.admits(("127.8.9.10", 5000))
    assert not rule.admits(("192.0.2.99", 5000))      # TEST-NET-1: nobody's here
    assert not rule.admits(("203.0.113.7", 5000))
    assert not rule.admits(("not an address", 5000))
    address = own_address()
    if address is not None:
        assert rule.admits((address, 5000))


def test_protected_mode_on_ipv6(listener):
    rule = peers.decide(listener(socket.AF_INET6, "::"), None)
    assert rule.admits(("::1", 5000, 0, 0))
    assert rule.admits(("::ffff:127.0.0.1", 5000, 0, 0))  # IPv4 on a dual socket
    assert not rule.admits(("2001:db8::5", 5000, 0, 0))
    assert not rule.admits(("::ffff:203.0.113.7", 5000, 0, 0))


@pytest.mark.parametrize("addr, admitted", [
    (("10.0.0.5", 1), True),
    (("10.0.1.77", 1), True),
    (("::ffff:10.0.1.77", 1, 0, 0), True),   # IPv4 peer of a dual-stack socket
    (("2001:db8::9", 1, 0, 0), True),
    (("10.0.0.6", 1), False),
    (("127.0.0.1", 1), False),               # a list is the whole list
    (("fe80::1%eth0", 1, 0, 2), False),
])
def test_a_list_admits_its_peers_only(addr, admitted):
    rule = PeerRule(LISTED, peers.networks_of(("10.0.0.5/32", "10.0.1.0/24",
                                                "2001:db8::/32")))
    assert rule.admits(addr) is admitted


def test_a_handler_before_its_socket_applies_the_list_or_serves_everyone():
    assert peers.rule_before_listening(None).kind == EVERYONE
    assert peers.rule_before_listening(ANY).kind == EVERYONE
    rule = peers.rule_before_listening(("[::1]",))
    assert rule.kind == LISTED and rule.admits(("::1", 1, 0, 0))


def test_own_addresses_are_asked_of_the_kernel(monkeypatch, listener):
    import ipaddress
    assert peers.is_own_address(ipaddress.ip_address("127.0.0.1"))
    assert not peers.is_own_address(ipaddress.ip_address("192.0.2.99"))
    address = own_address()
    if address is None:
        pytest.skip("this machine has no address beyond loopback")
    assert peers.decide(listener(socket.AF_INET, "0.0.0.0"), None).admits((address, 1))
    # If the kernel binds any address, binding proves nothing: only loopback.
    monkeypatch.setattr(peers, "nonlocal_bind", lambda version: True)
    rule = peers.decide(listener(socket.AF_INET, "0.0.0.0"), None)
    assert not rule.admits((address, 1))
    assert rule.admits(("127.0.0.1", 1))


# -- the log line, at most once a minute per address ---------------------------------


def test_refusals_are_logged_once_a_minute_per_address():
    clock = FakeClock()
    refusals = RefusalLog(clock)
    import ipaddress
    a, b = ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("2001:db8::7")
    assert refusals.first_in_a_while(a)
    assert not refusals.first_in_a_while(a)
    assert refusals.first_in_a_while(b)       # another address: its own minute
    clock.now += 59.9
    assert not refusals.first_in_a_while(a)
    clock.now += 0.1
    assert refusals.first_in_a_while(a)        # a minute later: once more
    assert not refusals.first_in_a_while(a)


def test_the_refusal_line_says_how_to_allow(listener, caplog):
    clock = FakeClock()
    sock = listener(socket.AF_INET, "0.0.0.0")
    rule = peers.decide(sock, None, clock=clock)
    port = sock.getsockname()[1]
    with caplog.at_level(logging.WARNING, "runfcgi_compat"):
        for _ in range(5):  # A scan: five connections, one line.
            rule.refuse("scgi", "192.0.2.9:40000", ("192.0.2.9", 40000))
        clock.now += 60
        rule.refuse("scgi", "192.0.2.9:40001", ("192.0.2.9", 40001))
    assert [r.getMessage() for r in caplog.records] == [
        f"scgi: connection from 192.0.2.9:{n} refused: protected mode on 0.0.0.0:{port} "
        "serves only this machine; allow it with allow=192.0.2.9 (or "
        "allow=ADDRESS/NETWORK), or every peer with allow=any"
        for n in (40000, 40001)]


def test_the_refusal_line_of_a_list(caplog):
    rule = PeerRule(LISTED, peers.networks_of(("10.0.0.5",)))
    with caplog.at_level(logging.WARNING, "runfcgi_compat"):
        rule.refuse("ajp", "192.0.2.9:40000", ("192.0.2.9", 40000))
        rule.refuse("ajp", "192.0.2.9:40002", ("192.0.2.9", 40002))
    assert [r.getMessage() for r in caplog.records] == [
        "ajp: connection from 192.0.2.9:40000 refused: not in allow= (or "
        "FCGI_WEB_SERVER_ADDRS); add its address there to serve it"]


def test_the_banner_says_protected(listener):
    assert peers.decide(listener(socket.AF_INET, "0.0.0.0"), None).banner_note() == (
        ", protected mode (only this machine may connect; allow= admits others)")
    assert peers.decide(listener(socket.AF_INET, "127.0.0.1"), None).banner_note() == ""


def test_prefork_workers_share_the_refusal_table():
    import ipaddress
    import os
    refusals = RefusalLog()
    address = ipaddress.ip_address("192.0.2.8")
    pid = os.fork()
    if pid == 0:  # A worker logs first...
        os._exit(0 if refusals.first_in_a_while(address) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not refusals.first_in_a_while(address)  # ...so the next one does not.
