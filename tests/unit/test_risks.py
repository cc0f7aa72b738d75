"""risks.py: every start-up warning, by its exact text."""
import os

import pytest

from runfcgi_compat import peers, risks, sockets
from runfcgi_compat.options import parse_words, peer_allowlist
from tests.helpers import ROOT_WARNING, free_port

# Its text is shared with the integration tests, which see it as root.
ROOT = ROOT_WARNING


@pytest.fixture
def warnings_for(tmp_path):
    """Listen as ``words`` say; return the warnings (as a non-root user
    unless ``euid`` is given) and the listening address."""
    made = []

    def warnings_for(words, euid=1000, umask=None):
        host = [w[5:] for w in words if w.startswith("host=")]
        # port=0: a free port of that host.
        words = [f"port={free_port(host[0])}" if w == "port=0" else w for w in words]
        options = parse_words(words)
        old = os.umask(umask) if umask is not None else None
        try:
            listener = sockets.listen(options)
        finally:
            if old is not None:
                os.umask(old)
        made.append(listener)
        if options.socketmode is not None:
            os.chmod(listener.unix_path, options.socketmode)
        rule = peers.decide(listener.sock, peer_allowlist(options, {}))
        return risks.startup_warnings(options, listener, rule, euid=euid), rule.where

    yield warnings_for
    for listener in made:
        listener.close()


def test_loopback_and_a_private_socket_are_quiet(warnings_for, tmp_path):
    assert warnings_for(["host=127.0.0.1", "port=0", "protocol=ajp", "debug=true"])[0] == []
    assert warnings_for(["host=::1", "port=0", "allow=any"])[0] == []
    assert warnings_for([f"socket={tmp_path}/a.sock", "socketmode=660"])[0] == []
    assert warnings_for([f"socket={tmp_path}/b.sock"], umask=0o007)[0] == []


def test_allow_any_beyond_loopback(warnings_for):
    lines, where = warnings_for(["host=0.0.0.0", "port=0", "allow=any"])
    assert lines == [
        f"listening beyond loopback on {where} with allow=any: every peer that reaches "
        "the port is served and may claim any client address, Host or HTTPS; name your "
        "web servers with allow=ADDRESS/NETWORK instead."]


def test_root_without_user(warnings_for, tmp_path):
    assert warnings_for([f"socket={tmp_path}/s.sock", "socketmode=600"], euid=0)[0] == [ROOT]
    # Naming the account to switch to is the fix (root's own name is a choice too).
    assert warnings_for([f"socket={tmp_path}/t.sock", "socketmode=600", "user=root"],
                        euid=0)[0] == []


def test_ajp_beyond_loopback_without_a_secret(warnings_for):
    lines, where = warnings_for(["protocol=ajp", "host=::", "port=0"])
    assert lines == [
        f"AJP beyond loopback on {where} without a shared secret: give ajpsecret=SECRET "
        "(and secret= on Apache's ProxyPass)."]
    assert where.startswith("[::]:")
    assert warnings_for(["protocol=ajp", "host=::", "port=0", "ajpsecret=s3"])[0] == []


def test_debug_beyond_loopback(warnings_for):
    lines, where = warnings_for(["host=0.0.0.0", "port=0", "debug=true",
                                 "allow=10.0.0.0/8"])
    assert lines == [
        f"debug=true beyond loopback on {where}: tracebacks go to whoever sends a "
        "request; give debug=false."]


@pytest.mark.parametrize("words, umask, mode", [
    (["socketmode=777"], None, "777"),
    (["socketmode=666"], None, "666"),
    ([], 0o000, "777"),
])
def test_a_socket_every_local_user_may_connect_to(warnings_for, tmp_path, words, umask,
                                                  mode):
    path = tmp_path / "s.sock"
    lines, _ = warnings_for([f"socket={path}", *words], umask=umask)
    assert lines == [
        f"socket {path} has mode {mode}: every local user may connect and talk to "
        "Django; give socketmode=660 (with group=, the web server's group) or umask=007."]


def test_every_risk_at_once_in_order(warnings_for):
    lines, where = warnings_for(["protocol=ajp", "host=0.0.0.0", "port=0", "allow=any",
                                 "debug=on"], euid=0)
    assert [line.split(":")[0] for line in lines] == [
        f"listening beyond loopback on {where.split(':')[0]}", "serving as root",
        f"AJP beyond loopback on {where.split(':')[0]}", "debug=true beyond loopback on "
        + where.split(":")[0]]


class FakeListener:
    """What startup_warnings reads of a listener, for a set-up the docs quote."""

    def __init__(self, family, name, unix_path=None):
        self.unix_path = unix_path
        self.sock = self
        self.family = family
        self._name = name

    def getsockname(self):
        return self._name


def test_the_docs_quote_every_warning(monkeypatch):
    import socket

    from tests.helpers import REPO
    docs = (REPO / "docs" / "security.rst").read_text()
    tcp = FakeListener(socket.AF_INET, ("0.0.0.0", 3033))
    rule = peers.PeerRule(peers.EVERYONE, where="0.0.0.0:3033")
    options = parse_words(["protocol=ajp", "host=0.0.0.0", "port=3033", "allow=any",
                           "debug=true"])
    lines = risks.startup_warnings(options, tcp, rule, euid=0)
    monkeypatch.setattr(risks, "_socket_mode", lambda listener: 0o777)
    unix = FakeListener(socket.AF_UNIX, "/run/mysite/fcgi.sock", "/run/mysite/fcgi.sock")
    lines += risks.startup_warnings(parse_words(["socket=/run/mysite/fcgi.sock"]), unix,
                                    peers.PeerRule(peers.EVERYONE), euid=1000)
    assert len(lines) == 5
    for line in lines:
        assert f"   {line}\n" in docs, line
