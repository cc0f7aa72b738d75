"""Protected mode, proven with a real peer from another host.

The other host is a network namespace joined to this one by a veth pair,
both made here and removed at the end: its peer has an address that is
not this machine's, and no packet leaves the machine.  Needs root (the
suite runs as root) and iproute2's ``ip``.
"""
import ipaddress
import os
import random
import re
import signal
import socket
import subprocess
import sys

import pytest

from runfcgi_compat import client
from tests.helpers import (
    REPO,
    ROOT_WARNING,
    example_env,
    free_port,
    manage_command,
    run_manage,
    wait_for_exit,
)
from tests.integration.conftest import require_binary

PROTECTED = ", protected mode (only this machine may connect; allow= admits others)"

# Run inside the namespace: one request, and what became of it.
REQUEST = """
import sys
from runfcgi_compat import client
protocol, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    print(client.request((host, port), protocol, timeout=20).status)
except client.ClientError as exc:
    print(type(exc).__name__)
"""


class ForeignHost:
    """A network namespace with one veth link to this machine."""

    def __init__(self):
        self.ip = require_binary("ip")
        tag = os.getpid() % 10_000_000
        self.namespace = f"rfcgi{tag}"
        self.link = f"rfa{tag}"  # Interface names have at most 15 characters.
        net = self._unused_network()
        self.local_address, self.address = str(net[1]), str(net[2])
        self.prefix = net.prefixlen
        self.made = []

    def _unused_network(self):
        """A /30 of 198.18.0.0/15 (kept for network tests, RFC 2544) that no
        address or route of this machine overlaps."""
        taken = []
        for words in (["-o", "-4", "addr", "show"], ["-4", "route", "show", "table", "all"]):
            listing = subprocess.run([self.ip, *words], capture_output=True, text=True).stdout
            for word in listing.split():
                try:
                    taken.append(ipaddress.ip_network(word, strict=False))
                except ValueError:
                    continue
        for _ in range(1000):
            start = ipaddress.ip_address("198.18.0.0") + 4 * random.randrange(2**15)
            net = ipaddress.ip_network(f"{start}/30")
            if not any(net.overlaps(other) for other in taken if other.version == 4):
                return net
        raise RuntimeError("no unused network for the namespace")

    def _ip(self, *words):
        subprocess.run([self.ip, *words], check=True, capture_output=True, text=True)

    def create(self):
        self._ip("netns", "add", self.namespace)
        self.made.append(("netns", "del", self.namespace))
        self._ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0",
                 "netns", self.namespace)
        self.made.append(("link", "del", self.link))  # Removes both ends.
        self._ip("addr", "add", f"{self.local_address}/{self.prefix}", "dev", self.link)
        self._ip("link", "set", self.link, "up")
        self._ip("-n", self.namespace, "addr", "add", f"{self.address}/{self.prefix}", "dev",
                 "eth0")
        self._ip("-n", self.namespace, "link", "set", "eth0", "up")
        self._ip("-n", self.namespace, "link", "set", "lo", "up")

    def remove(self):
        for words in reversed(self.made):
            subprocess.run([self.ip, *words], capture_output=True)

    def request(self, port, protocol="fcgi"):
        """Make one request from the other host; return its status or error's name."""
        done = subprocess.run(
            [self.ip, "netns", "exec", self.namespace, sys.executable, "-c", REQUEST,
             protocol, self.local_address, str(port)],
            capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture(scope="module")
def foreign():
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root")
    host = ForeignHost()
    try:
        host.create()
    except subprocess.CalledProcessError as exc:
        host.remove()
        message = f"cannot make a network namespace: {exc.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield host
    host.remove()


def refusals(err, protocol, peer):
    return [line for line in err.splitlines()
            if f"{protocol}: connection from {peer}:" in line and "refused" in line]


@pytest.mark.parametrize("method", ["prefork", "threaded"])
@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_beyond_loopback_only_this_machine_is_served(foreign, start_backend, protocol,
                                                     method):
    port = free_port("0.0.0.0")
    backend = start_backend([f"protocol={protocol}", f"method={method}", "host=0.0.0.0",
                             f"port={port}"], ("127.0.0.1", port))
    # A scan: two tries from the other host, both refused, one log line.
    assert foreign.request(port, protocol) == "ConnectionClosed"
    assert foreign.request(port, protocol) == "ConnectionClosed"
    # This machine, over loopback and over its own address on that link.
    assert client.request(("127.0.0.1", port), protocol, timeout=20).status == 200
    assert client.request((foreign.local_address, port), protocol, timeout=20).status == 200
    out, err = backend.stop()
    assert out.splitlines()[0].endswith(PROTECTED)
    [line] = refusals(err, protocol, foreign.address)
    assert re.search(
        rf"WARNING {protocol}: connection from {re.escape(foreign.address)}:\d+ refused: "
        rf"protected mode on 0\.0\.0\.0:{port} serves only this machine; allow it with "
        rf"allow={re.escape(foreign.address)} \(or allow=ADDRESS/NETWORK\), or every peer "
        r"with allow=any$", line), line
    assert ROOT_WARNING in err


@pytest.mark.parametrize("allow", ["{peer}", "{peer}/24", "any"])
def test_allow_admits_the_other_host(foreign, start_backend, allow):
    port = free_port("0.0.0.0")
    backend = start_backend(["protocol=scgi", "method=threaded", "host=0.0.0.0", f"port={port}",
                             "allow=" + allow.format(peer=foreign.address)],
                            ("127.0.0.1", port))
    assert foreign.request(port, "scgi") == "200"
    out, err = backend.stop()
    assert PROTECTED not in out
    assert refusals(err, "scgi", foreign.address) == []
    any_warning = (f"listening beyond loopback on 0.0.0.0:{port} with allow=any: every peer "
                   "that reaches the port is served")
    assert (any_warning in err) is (allow == "any")


def test_a_list_without_the_other_host_refuses_it(foreign, start_backend):
    port = free_port("0.0.0.0")
    backend = start_backend(["method=threaded", "host=0.0.0.0", f"port={port}",
                             "allow=127.0.0.1"], ("127.0.0.1", port))
    assert foreign.request(port) == "ConnectionClosed"
    _, err = backend.stop()
    [line] = refusals(err, "fcgi", foreign.address)
    assert line.endswith("refused: not in allow= (or FCGI_WEB_SERVER_ADDRS); add its "
                         "address there to serve it")


def test_a_socket_handed_over_on_fd0_is_judged_by_its_address(foreign):
    """spawn-fcgi's -a defaults to 0.0.0.0: protected too."""
    listening = socket.socket()
    listening.bind(("0.0.0.0", 0))
    listening.listen(16)
    port = listening.getsockname()[1]
    process = subprocess.Popen(manage_command("runfcgi", "method=threaded"),
                               stdin=listening.fileno(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=example_env(), text=True,
                               start_new_session=True)
    listening.close()
    try:
        assert client.request(("127.0.0.1", port), timeout=30).status == 200
        assert foreign.request(port) == "ConnectionClosed"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert out.startswith("runfcgi: serving fcgi on fd 0 (tcp), threaded ")
    assert out.splitlines()[0].endswith(PROTECTED)
    assert len(refusals(err, "fcgi", foreign.address)) == 1


def test_a_daemon_shows_its_warnings_on_the_terminal_and_in_errlog(tmp_path):
    port = free_port("0.0.0.0")
    pidfile, errlog = tmp_path / "s.pid", tmp_path / "err.log"
    out, err, code = run_manage("runfcgi", "host=0.0.0.0", f"port={port}", "allow=any",
                                "debug=true", f"pidfile={pidfile}", f"errlog={errlog}",
                                "--verbosity", "0")
    pid = int(pidfile.read_text())
    try:
        assert (out, code) == ("", 0)
        lines = [
            f"listening beyond loopback on 0.0.0.0:{port} with allow=any: every peer "
            "that reaches the port is served and may claim any client address, Host or "
            "HTTPS; name your web servers with allow=ADDRESS/NETWORK instead.",
            ROOT_WARNING,
            f"debug=true beyond loopback on 0.0.0.0:{port}: tracebacks go to whoever "
            "sends a request; give debug=false."]
        if os.geteuid() != 0:
            lines.remove(ROOT_WARNING)
        assert err == "".join(f"runfcgi: WARNING {line}\n" for line in lines)
        logged = [line.split(" WARNING ", 1)[1] for line in errlog.read_text().splitlines()
                  if " WARNING " in line]
        assert logged == lines
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for_exit(pid, timeout=20)
