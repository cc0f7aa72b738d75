"""Who may connect: the one rule every protocol and both pools apply.

A FastCGI, SCGI or AJP peer is trusted like the web server it claims to be:
it sets REMOTE_ADDR, HTTPS, the Host header and every other header Django
reads.  So the listening socket itself decides, once, who may talk to it
(``decide``), and ``ProtocolHandler.connect`` asks the resulting rule about
every accepted connection:

* a UNIX socket: every peer (its file's owner, group and mode decide who
  can connect at all);
* ``allow=any``: every peer, on purpose;
* ``allow=ADDRS`` or, without it, ``FCGI_WEB_SERVER_ADDRS``: the peers
  listed;
* a TCP socket on a loopback address: every peer (only this machine can
  reach it);
* a TCP socket beyond loopback (``0.0.0.0``, ``::``, a LAN address) with
  nothing listed: *protected mode*, as Redis does since its exposed
  instances were mass-exploited: only peers on this machine (loopback, or
  one of this machine's own addresses) are served.

The socket is looked at whoever bound it: runfcgi (``host=``), a web server
or spawn-fcgi (fd 0), or systemd (``LISTEN_FDS``).

A refused peer is logged with how to let it in, at most once a minute per
address (``RefusalLog``), so a port scan cannot flood the log.
"""
import ipaddress
import logging
import mmap
import socket
import struct
import time
import zlib

log = logging.getLogger("runfcgi_compat")

ANY = "any"  # allow=any

# The rule's kinds.
EVERYONE = "everyone"
LISTED = "listed"
PROTECTED = "protected"

REFUSAL_INTERVAL = 60.0  # Seconds between two log lines about one address.


class PeerRule:
    """Who may connect to one listening socket (see the module docstring).

    ``kind`` is EVERYONE, LISTED (``networks``: ``ip_network`` objects) or
    PROTECTED; ``where`` is the listening address as text, for messages.
    """

    def __init__(self, kind, networks=(), where="", clock=time.monotonic):
        self.kind = kind
        self.networks = tuple(networks)
        self.where = where
        # False when every peer is served: connect() asks nothing more.
        self.checks = kind != EVERYONE
        # Only a rule that refuses needs the table (made here, before the
        # prefork pool forks, so that its workers share it).
        self.refusals = RefusalLog(clock) if self.checks else None
        # Read once: whether binding an address proves it is this machine's.
        self.bind_proves = {version: not nonlocal_bind(version) for version in (4, 6)} if (
            kind == PROTECTED) else {}

    def admits(self, addr):
        """Return True if the peer at ``addr`` (an accepted IP address
        tuple) may be served."""
        if self.kind == EVERYONE:
            return True
        ip = peer_ip(addr)
        if ip is None:
            return False
        if self.kind == LISTED:
            # A network written as ::ffff:10.0.0.0/104 matches too.
            seen = {ip, ipaddress.ip_address(str(addr[0]).split("%", 1)[0])}
            return any(each.version == net.version and each in net
                       for each in seen for net in self.networks)
        return ip.is_loopback or (self.bind_proves[ip.version] and is_own_address(ip, addr))

    def refuse(self, protocol, peer, addr):
        """Log that the peer at ``addr`` (``peer``: as shown) was refused,
        unless that address was already logged within the last minute."""
        ip = peer_ip(addr)
        if ip is not None and not self.refusals.first_in_a_while(ip):
            return
        if self.kind == LISTED:
            log.warning("%s: connection from %s refused: not in allow= (or "
                        "FCGI_WEB_SERVER_ADDRS); add its address there to serve it",
                        protocol, peer)
        else:
            log.warning("%s: connection from %s refused: protected mode on %s serves "
                        "only this machine; allow it with allow=%s (or "
                        "allow=ADDRESS/NETWORK), or every peer with allow=any",
                        protocol, peer, self.where, ip if ip is not None else "ADDRESS")

    def banner_note(self):
        """What the start-up banner adds about this rule ('' for none)."""
        if self.kind == PROTECTED:
            return ", protected mode (only this machine may connect; allow= admits others)"
        return ""


def decide(listen_sock, allow, clock=time.monotonic):
    """Return the PeerRule for ``listen_sock``.

    ``allow`` is what ``options.peer_allowlist`` resolved: None (nothing
    set), ``ANY``, or a sequence of addresses and networks.
    """
    where = listening_text(listen_sock)
    if listen_sock.family not in (socket.AF_INET, socket.AF_INET6) or allow == ANY:
        return PeerRule(EVERYONE, where=where)
    if allow is not None:
        return PeerRule(LISTED, networks_of(allow), where, clock)
    if not beyond_loopback(listen_sock):
        return PeerRule(EVERYONE, where=where)
    return PeerRule(PROTECTED, where=where, clock=clock)


def rule_before_listening(allow):
    """The rule of a handler not yet given its listening socket: the
    listed peers if any, else every peer (what ``decide`` says of a
    loopback socket)."""
    if allow is None or allow == ANY:
        return PeerRule(EVERYONE)
    return PeerRule(LISTED, networks_of(allow))


def networks_of(allow):
    """``ip_network`` objects for validated addresses and networks."""
    return [ipaddress.ip_network(str(item).strip("[]"), strict=False) for item in allow]


def beyond_loopback(listen_sock):
    """True when a TCP socket listens on an address other machines may reach."""
    if listen_sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    ip = peer_ip(listen_sock.getsockname())
    return ip is None or not ip.is_loopback


def listening_text(listen_sock):
    """The listening address as people write it: 0.0.0.0:3033, [::]:3033."""
    if listen_sock.family not in (socket.AF_INET, socket.AF_INET6):
        return "a UNIX socket"
    host, port = listen_sock.getsockname()[:2]
    return f"[{host}]:{port}" if listen_sock.family == socket.AF_INET6 else f"{host}:{port}"


def peer_ip(addr):
    """The IP address of an address tuple; an IPv4 peer of a dual-stack
    socket (::ffff:a.b.c.d) as plain IPv4.  None if it is not one."""
    try:
        ip = ipaddress.ip_address(str(addr[0]).split("%", 1)[0])
    except (ValueError, IndexError, TypeError):
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def is_own_address(ip, addr=()):
    """True if ``ip`` is one of this machine's own addresses.

    Asked of the kernel, not of a list made at start-up (addresses come
    and go, by DHCP for one): only an address of this machine can be
    bound -- unless the kernel lets any address be bound (Linux's
    ip_nonlocal_bind, see ``nonlocal_bind``): the caller checks that.
    """
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    # A link-local IPv6 address is only one with its interface (scope id).
    scope = addr[3] if ip.version == 6 and len(addr) == 4 else 0
    where = (str(ip), 0) if ip.version == 4 else (str(ip), 0, 0, scope)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(where)
        except OSError:
            return False
    return True


def nonlocal_bind(version):
    """True if this kernel binds addresses that are not its own."""
    try:
        with open(f"/proc/sys/net/ipv{version}/ip_nonlocal_bind") as setting:
            return setting.read().strip() != "0"
    except OSError:
        return False  # Not Linux: binding proves the address is ours.


class RefusalLog:
    """Remember when each refused address was last logged.

    The table lives in anonymous shared memory, made before the prefork
    pool forks, so a worker sees that another has already logged an
    address.  It is a fixed hash table: two addresses that share a slot
    push each other out, so in a scan of very many addresses one may be
    logged twice in a minute; the table never grows.  A race between two
    workers can do the same; neither matters for a log line.
    """

    SLOTS = 1024
    SLOT = struct.Struct("=17sd")  # (IP version + packed address, when logged)

    def __init__(self, clock=time.monotonic, interval=REFUSAL_INTERVAL):
        self.clock = clock
        self.interval = interval
        # fileno -1: anonymous and MAP_SHARED, seen by every forked worker.
        self._table = mmap.mmap(-1, self.SLOTS * self.SLOT.size)

    def first_in_a_while(self, ip):
        """True (and remembered) if ``ip`` was not logged within the interval."""
        key = (bytes([ip.version]) + ip.packed).ljust(17, b"\0")
        offset = zlib.crc32(key) % self.SLOTS * self.SLOT.size
        stored, when = self.SLOT.unpack_from(self._table, offset)
        now = self.clock()
        if stored == key and now - when < self.interval:
            return False
        self.SLOT.pack_into(self._table, offset, key, now)
        return True
