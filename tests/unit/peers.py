"""Test partners for the client tests: flup's own servers in child processes.

They are a second, independent implementation of each protocol, so a client
test passes only if the client speaks it the way flup understands it.
"""
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import free_port, wait_for_connect

PEER_SCRIPT = r'''
import hashlib, http, json, socket, sys

# flup never sets TCP_NODELAY, so each of its two-write AJP packets waits for
# our delayed ACK (40 ms per 8 KiB of upload).  The peer only has to be quick.
_accept = socket.socket.accept
def accept(self):
    conn, addr = _accept(self)
    if conn.family in (socket.AF_INET, socket.AF_INET6):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn, addr
socket.socket.accept = accept

def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size) if size else b""  # flup's read(0) gives str
    if path.startswith("/status/"):
        code = int(path.split("/")[2])
        start_response(f"{code} {http.HTTPStatus(code).phrase}", [("Content-Type", "text/plain")])
        return [b"status page\n"]
    if path == "/big/":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [bytes(range(256)) * 1200]
    if path == "/stderr/":
        environ["wsgi.errors"].write("written to wsgi.errors\n")
    echo = {k: v for k, v in environ.items() if isinstance(v, str)}
    echo["body_length"] = len(body)
    echo["body_sha256"] = hashlib.sha256(body).hexdigest()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    return [json.dumps(echo).encode()]

protocol, where = sys.argv[1], sys.argv[2]
bind = where if where.startswith("/") else ("127.0.0.1", int(where))
if protocol == "fcgi":
    from flup.server.fcgi_single import WSGIServer
    WSGIServer(app, bindAddress=bind).run()
elif protocol == "scgi":
    from flup.server.scgi import WSGIServer
    WSGIServer(app, bindAddress=bind, scriptName="").run()
else:
    from flup.server.ajp import WSGIServer
    WSGIServer(app, bindAddress=bind).run()
'''


def start_peer(protocol, log_dir, address=None):
    """Start a flup ``protocol`` server; return ``(process, address)`` once it listens."""
    if address is None:
        address = ("127.0.0.1", free_port())
    where = address if isinstance(address, str) else str(address[1])
    log_path = os.path.join(log_dir, f"{protocol}-{os.path.basename(where)}.log")
    with open(log_path, "wb") as log:
        # A file, not a pipe: flup logs every request, and a full pipe would
        # block the server.
        proc = subprocess.Popen([sys.executable, "-c", PEER_SCRIPT, protocol, where],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for_connect(address, timeout=10, process=proc)
    except (RuntimeError, TimeoutError) as exc:
        stop_peer(proc)
        with open(log_path, encoding="utf-8", errors="replace") as log:
            pytest.fail(f"the flup {protocol} peer did not start: {exc}\n{log.read()}")
    return proc, address


def stop_peer(proc):
    # SIGKILL, by pid: flup's servers ignore SIGTERM while idle (see the notes
    # on flup), and these peers hold nothing that needs cleaning up.
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
