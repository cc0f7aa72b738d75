"""Hostile peers for the robustness tests: raw sockets, bad bytes, process counts.

The web server side of FastCGI, SCGI and AJP13 is written again here, small
and independent of ``runfcgi_compat.client``, so that every byte can be
broken on purpose: a length field that lies, a record type nobody knows, a
request cut short, a peer that resets while the answer is still coming.

* ``valid_request(protocol, path, body)``: the bytes of one well-formed
  request, as nginx (FastCGI, SCGI) or mod_proxy_ajp (AJP13) would send it.
* ``mutate(rng, protocol)``: one seeded hostile variant of a valid request.
* ``send_raw(address, data)``: send bytes, optionally half-close, and report
  how the server ended the connection (``Outcome``), always within a bound.
* ``Pool``: what the operating system says about a running server: is the
  master alive, how many workers (processes or threads), how much memory.
* ``wait_until``: poll a condition with a deadline (no fixed sleeps).
"""
import dataclasses
import errno
import os
import random
import socket
import struct
import time
from pathlib import Path

from tests.helpers import wait_until  # noqa: F401  (used here and by the tests)

PROTOCOLS = ("fcgi", "scgi", "ajp")

# How ``send_raw`` saw the connection end.
CLOSED = "closed"  # the server closed it (recv returned b"")
RESET = "reset"  # the server reset it (it closed with our bytes unread)
OPEN = "open"  # still open when our patience ran out: the server holds it


# -- waiting ---------------------------------------------------------------------


# wait_until lives in tests.helpers (imported above, used from here too).


# -- FastCGI -------------------------------------------------------------------------

FCGI_BEGIN_REQUEST = 1
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_UNKNOWN_TYPE = 11
FCGI_KNOWN_TYPES = frozenset(range(1, 12))
FCGI_HEADER = struct.Struct(">BBHHBx")


def fcgi_record(record_type, content=b"", request_id=1, *, length=None, padding=None,
                version=1):
    """One record; ``length``/``padding`` may lie about ``content``.

    Padding bytes are sent only for an honest record.
    """
    honest = length is None and padding is None
    length = len(content) if length is None else length
    padding = -len(content) % 8 if padding is None else padding
    pad = b"\0" * padding if honest else b""
    return FCGI_HEADER.pack(version, record_type, request_id, length, padding) + content + pad


def fcgi_pairs(pairs):
    out = bytearray()
    for name, value in pairs.items():
        for size in (len(name), len(value)):
            out += bytes([size]) if size < 128 else struct.pack(">I", size | 0x80000000)
        out += name + value
    return bytes(out)


def fcgi_begin(keep_conn=False, role=1):
    return fcgi_record(FCGI_BEGIN_REQUEST, struct.pack(">HB5x", role, int(keep_conn)))


def cgi_variables(method, path, body):
    return {
        b"REQUEST_METHOD": method.encode(),
        b"SCRIPT_NAME": b"",
        b"PATH_INFO": path.encode(),
        b"REQUEST_URI": path.encode(),
        b"QUERY_STRING": b"",
        b"SERVER_NAME": b"localhost",
        b"SERVER_PORT": b"80",
        b"SERVER_PROTOCOL": b"HTTP/1.1",
        b"REMOTE_ADDR": b"127.0.0.1",
        b"HTTP_HOST": b"localhost",
        b"CONTENT_TYPE": b"application/octet-stream" if body else b"",
        b"CONTENT_LENGTH": str(len(body)).encode() if body else b"",
    }


def fcgi_request(path="/", body=b"", method=None, keep_conn=False):
    method = method or ("POST" if body else "GET")
    params = fcgi_pairs(cgi_variables(method, path, body))
    stdin = fcgi_record(FCGI_STDIN, body) if body else b""
    return (fcgi_begin(keep_conn) + fcgi_record(FCGI_PARAMS, params)
            + fcgi_record(FCGI_PARAMS) + stdin + fcgi_record(FCGI_STDIN))


# -- SCGI --------------------------------------------------------------------------


def scgi_netstring(block, *, length=None, comma=b","):
    length = len(block) if length is None else length
    return str(length).encode() + b":" + block + comma


def scgi_request(path="/", body=b"", method=None):
    method = method or ("POST" if body else "GET")
    variables = cgi_variables(method, path, body)
    variables.pop(b"CONTENT_LENGTH")
    items = [(b"CONTENT_LENGTH", str(len(body)).encode()), (b"SCGI", b"1")]
    items += list(variables.items())
    block = b"".join(name + b"\0" + value + b"\0" for name, value in items)
    return scgi_netstring(block) + body


# -- AJP13 -------------------------------------------------------------------------

AJP_FORWARD_REQUEST = 2
AJP_METHOD_CODES = {"GET": 2, "POST": 4}
AJP_HEADER_HOST = 0xA00B
AJP_HEADER_CONTENT_LENGTH = 0xA008


def ajp_packet(payload, *, length=None, magic=b"\x12\x34"):
    length = len(payload) if length is None else length
    return magic + struct.pack(">H", length) + payload


def ajp_string(text):
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data + b"\0"


def ajp_forward_request(path="/", body=b"", method=None):
    method = method or ("POST" if body else "GET")
    out = bytearray([AJP_FORWARD_REQUEST, AJP_METHOD_CODES[method]])
    for text in ("HTTP/1.1", path, "127.0.0.1", "localhost", "localhost"):
        out += ajp_string(text)
    out += struct.pack(">HB", 80, 0)
    headers = [(AJP_HEADER_HOST, "localhost")]
    if body:
        headers.append((AJP_HEADER_CONTENT_LENGTH, str(len(body))))
    out += struct.pack(">H", len(headers))
    for code, value in headers:
        out += struct.pack(">H", code) + ajp_string(value)
    out.append(0xFF)  # no attributes
    return ajp_packet(bytes(out))


def ajp_body(data):
    return ajp_packet(struct.pack(">H", len(data)) + data)


def ajp_request(path="/", body=b"", method=None):
    # The first body packet follows the request unasked, as Apache sends it.
    return ajp_forward_request(path, body, method) + (ajp_body(body) if body else b"")


def valid_request(protocol, path="/", body=b""):
    """Return the bytes of one well-formed request for ``protocol``."""
    return {"fcgi": fcgi_request, "scgi": scgi_request, "ajp": ajp_request}[protocol](
        path, body)


# -- hostile variants ------------------------------------------------------------------

SEED_PATHS = ("/", "/path/a/b?c=d", "/echo/", "/error/", "/no-such-page/")


def seed_request(rng, protocol):
    path = rng.choice(SEED_PATHS)
    body = rng.randbytes(rng.choice((0, 1, 100, 3000))) if path == "/echo/" else b""
    return valid_request(protocol, path, body)


def truncate(rng, data):
    return data[:rng.randrange(len(data))]


def flip_bits(rng, data, flips=None):
    out = bytearray(data)
    for _ in range(flips or rng.randint(1, 8)):
        position = rng.randrange(len(out) * 8)
        out[position // 8] ^= 1 << (position % 8)
    return bytes(out)


def overwrite(rng, data):
    """Replace a short run with random bytes (hits length fields often)."""
    out = bytearray(data)
    start = rng.randrange(len(out))
    size = rng.randint(1, 4)
    out[start:start + size] = rng.randbytes(size)
    return bytes(out)


def splice(rng, data):
    """Insert random bytes at a random place."""
    where = rng.randrange(len(data) + 1)
    return data[:where] + rng.randbytes(rng.randint(1, 64)) + data[where:]


def absurd_length(rng, protocol):
    """A header that announces far more data than ever comes."""
    if protocol == "fcgi":
        record_type = rng.choice((FCGI_BEGIN_REQUEST, FCGI_PARAMS, FCGI_STDIN, 200))
        return fcgi_record(record_type, rng.randbytes(rng.randint(0, 16)), length=65535,
                           padding=255)
    if protocol == "scgi":
        return scgi_netstring(rng.randbytes(rng.randint(0, 16)),
                              length=rng.choice((10**12, 10**6 + 1, 2**64, 99999999)))
    return ajp_packet(bytes([AJP_FORWARD_REQUEST]) + rng.randbytes(rng.randint(0, 16)),
                      length=rng.choice((0xFFFF, 0x8000, 8193)))


def unknown_type(rng, protocol):
    if protocol == "fcgi":
        record_type = rng.choice([t for t in range(256) if t not in FCGI_KNOWN_TYPES])
        return fcgi_record(record_type, rng.randbytes(rng.randint(0, 32)),
                           request_id=rng.choice((0, 1, 65535)))
    if protocol == "scgi":
        return scgi_netstring(b"SCGI\x001\x00", length=rng.randint(0, 5)) + b"x" * 10
    payload = bytes([rng.choice([t for t in range(256) if t not in (2, 7, 10)])])
    return ajp_packet(payload + rng.randbytes(rng.randint(0, 32)))


MUTATIONS = {
    "random bytes": lambda rng, protocol: rng.randbytes(rng.randint(1, 600)),
    "truncated": lambda rng, protocol: truncate(rng, seed_request(rng, protocol)),
    "bit flips": lambda rng, protocol: flip_bits(rng, seed_request(rng, protocol)),
    "overwritten": lambda rng, protocol: overwrite(rng, seed_request(rng, protocol)),
    "spliced": lambda rng, protocol: splice(rng, seed_request(rng, protocol)),
    "absurd length": absurd_length,
    "unknown type": unknown_type,
    "valid then garbage": lambda rng, protocol: (
        seed_request(rng, protocol) + rng.randbytes(rng.randint(1, 64))),
}


def mutate(rng, protocol):
    """Return (kind, bytes): one hostile variant chosen with ``rng``."""
    kind = rng.choice(sorted(MUTATIONS))
    return kind, MUTATIONS[kind](rng, protocol)


def seeded_cases(seed, protocol, count):
    rng = random.Random(f"{seed}-{protocol}")
    return [mutate(rng, protocol) for _ in range(count)]


# -- sending ---------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    end: str  # CLOSED, RESET or OPEN
    answer: bytes  # whatever the server sent before the end
    seconds: float

    def __str__(self):
        return f"{self.end} after {self.seconds:.2f} s with {len(self.answer)} bytes"


def connect(address, timeout=5.0, rcvbuf=None):
    """A TCP connection; ``rcvbuf`` shrinks its receive window (set before connecting)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def read_until_end(sock, patience, limit=1 << 20):
    """Read until the server ends the connection or ``patience`` runs out."""
    started = time.monotonic()
    answer = bytearray()
    sock.settimeout(patience)
    try:
        while True:
            left = patience - (time.monotonic() - started)
            if left <= 0:
                return Outcome(OPEN, bytes(answer), time.monotonic() - started)
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                return Outcome(CLOSED, bytes(answer), time.monotonic() - started)
            if len(answer) < limit:
                answer += chunk
    except socket.timeout:
        return Outcome(OPEN, bytes(answer), time.monotonic() - started)
    except ConnectionResetError:
        return Outcome(RESET, bytes(answer), time.monotonic() - started)


def recv_exactly(sock, size, patience):
    """Return ``size`` bytes, or fewer if the server ends or stalls first."""
    sock.settimeout(patience)
    data = b""
    try:
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def recv_some(sock, patience):
    """Return the first bytes the server sends (b"" if it ends or stalls)."""
    sock.settimeout(patience)
    try:
        return sock.recv(65536)
    except (socket.timeout, ConnectionResetError):
        return b""


def send_raw(address, data, *, half_close=True, patience=5.0):
    """Send ``data``, half-close if asked, and return how the connection ended.

    A server that closes early (so our send fails) counts as RESET or
    CLOSED; one still holding the connection after ``patience`` s as OPEN.
    """
    with connect(address) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            # The server closed first and reset us: the send or the
            # shutdown (ENOTCONN) fails.
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise
            return Outcome(RESET, b"", 0.0)
        return read_until_end(sock, patience)


def reset(sock):
    """Close ``sock`` with SO_LINGER 0: the peer gets RST, not FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- the server as the kernel sees it ---------------------------------------------------


def alive(pid):
    """True while ``pid`` runs (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # Gone between open and read.
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid):
    """Pids of ``pid``'s live child processes (every thread's children)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return {child for child in found if alive(child)}


def thread_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


def status_kib(pid, field):
    """A KiB figure of ``pid``'s /proc status (VmRSS, VmHWM...); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def rss_kib(pid):
    """Resident memory of ``pid`` in KiB (0 once it is gone)."""
    return status_kib(pid, "VmRSS")


@dataclasses.dataclass
class Pool:
    """A running server's master pid, method and limit, for the checks."""

    pid: int
    method: str
    maxchildren: int
    max_workers_seen: int = 0

    def alive(self):
        return alive(self.pid)

    def workers(self):
        """Worker processes (prefork) or threads other than the main one."""
        if self.method == "prefork":
            count = len(children(self.pid))
        else:
            count = max(0, thread_count(self.pid) - 1)
        self.max_workers_seen = max(self.max_workers_seen, count)
        return count

    def total_rss_kib(self):
        return rss_kib(self.pid) + sum(rss_kib(child) for child in children(self.pid))
