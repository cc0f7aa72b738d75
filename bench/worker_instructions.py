"""Instructions per request in a real prefork worker, new vs kept connections.

    bench/.venv/bin/python bench/worker_instructions.py [REQUESTS] [CONNECTIONS] [--uwsgi]

Starts ``manage.py runfcgi`` (prefork, one worker) under valgrind's
callgrind and drives it from this process over TCP with nginx's request
for ``GET /`` (``hotpath.nginx_request``), ``CONNECTIONS`` requests in
flight at a time (4 by default), three ways:

* ``fresh``: a new connection per request, as nginx without kept
  connections;
* ``kept``: ``CONNECTIONS`` kept connections (FCGI_KEEP_CONN), so the
  worker holds several and parks one after nearly every request;
* ``kept-1``: a single kept connection, served again at once every time.

Each way runs twice, with no requests and with ``REQUESTS`` (1000), and the
worker's difference is divided by ``REQUESTS``: user-space instructions per
request, the same on every run of the same code (timings on this machine
move by half).  ``hotpath.py --instructions`` measures the handler alone;
this adds the worker's loop, accepting and holding connections.  Takes
about three minutes; prints one JSON line.

``--uwsgi`` adds ``uwsgi-fresh``: the same count for a worker of uWSGI's
FastCGI server (built in the bench venv, one process under its master, the
same app) serving the ``fresh`` way -- the reference the benchmark compares
with, counted on the same scale.
"""
import glob
import json
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hotpath

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
FCGI_END_REQUEST = 3


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connect(port, deadline):
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_response(sock):
    """Read records up to FCGI_END_REQUEST."""
    buf = b""
    while True:
        while len(buf) >= 8:
            _, kind, _, length, padding = struct.unpack("!BBHHBx", buf[:8])
            if len(buf) < 8 + length + padding:
                break
            buf = buf[8 + length + padding:]
            if kind == FCGI_END_REQUEST:
                return
        data = sock.recv(65536)
        if not data:
            raise SystemExit("the server closed a connection mid-response")
        buf += data


def drive(port, way, requests, connections):
    """Send ``requests`` requests, ``connections`` at a time."""
    kept = way != "fresh"
    width = 1 if way == "kept-1" else connections
    request = hotpath.nginx_request(keep_conn=kept)
    selector = selectors.DefaultSelector()
    sent = done = 0

    def send(sock=None):
        nonlocal sent
        sock = sock or socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        sent += 1
        selector.register(sock, selectors.EVENT_READ)

    for _ in range(min(width, requests)):
        send()
    while done < requests:
        for key, _ in selector.select():
            sock = key.fileobj
            selector.unregister(sock)
            read_response(sock)
            done += 1
            if kept and sent < requests:
                send(sock)
                continue
            sock.close()
            if sent < requests:
                send()


def runfcgi_argv(port):
    return [sys.executable, str(REPO / "example" / "manage.py"), "runfcgi", "daemonize=false",
            "protocol=fcgi", "method=prefork", "host=127.0.0.1", f"port={port}", "maxspare=1",
            "minspare=1", "maxchildren=1"]


def uwsgi_argv(port):
    return [str(BENCH / ".venv" / "bin" / "uwsgi"), f"--fastcgi-socket=127.0.0.1:{port}",
            "--master", "--processes=1", "--module=benchsite.wsgi:application",
            f"--pythonpath={BENCH}", f"--pythonpath={REPO / 'example'}", "--disable-logging",
            "--die-on-term", "--need-app", "--env=DJANGO_SETTINGS_MODULE=benchsite.settings"]


def worker_count(way, requests, connections, tmp, argv=runfcgi_argv):
    """The worker's instruction count after ``requests`` requests."""
    port = free_port()
    out = os.path.join(tmp, f"{argv.__name__}-{way}-{requests}")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="benchsite.settings", PYTHONHASHSEED="0",
               PYTHONPATH=os.pathsep.join([str(BENCH), str(REPO / "example")]))
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"] + argv(port),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # One request first, so the app is loaded and warm in both counts.
        sock = connect(port, time.monotonic() + 120)
        sock.sendall(hotpath.nginx_request())
        read_response(sock)
        sock.close()
        drive(port, way, requests, connections)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    counts = {}
    for path in glob.glob(out + ".*"):
        match = re.search(r"^(?:summary|totals): (\d+)", Path(path).read_text(), re.M)
        counts[int(path.rsplit(".", 1)[1])] = int(match.group(1))
    # The worker is the process forked last.
    return counts[max(counts)]


def main():
    args = [int(a) for a in sys.argv[1:] if a != "--uwsgi"]
    requests = args[0] if args else 1000
    connections = args[1] if len(args) > 1 else 4
    result = {"requests": requests, "connections": connections}
    with tempfile.TemporaryDirectory(prefix="runfcgi-callgrind-") as tmp:
        for way in ("fresh", "kept", "kept-1"):
            base = worker_count(way, 0, connections, tmp)
            total = worker_count(way, requests, connections, tmp)
            result[way] = round((total - base) / requests)
        if "--uwsgi" in sys.argv:
            base = worker_count("fresh", 0, connections, tmp, uwsgi_argv)
            total = worker_count("fresh", requests, connections, tmp, uwsgi_argv)
            result["uwsgi-fresh"] = round((total - base) / requests)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
