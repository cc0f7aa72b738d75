"""The server's own cost per request, without nginx, wrk or the kernel's network.

    python hotpath.py [SECONDS] [--profile]
    python hotpath.py --instructions

Feeds nginx's request for ``GET /`` (the bytes its stock fastcgi_params
produce, as four records in one segment) to runfcgi's FastCGI handler over
a socket pair, one connection per request as in the benchmark, and reads the
response back.  The same loop also calls the view with no server (as
``inprocess.py``) so the difference -- what the server adds around Django --
is measured in one run, with one process and no scheduler noise.  Prints one
JSON line; ``--profile`` prints cProfile's top functions instead.
``--instructions`` counts instructions per request with valgrind's
callgrind (1000 requests each way, fixed hash seed): slow (about a
minute) but the same on every run of the same code, so it can tell a
change of 1 % that timings on this machine cannot.

This is the number to watch while changing ``runfcgi_compat/servers/``: the
full benchmark moves with the machine's load, this one hardly does.
"""
import io
import json
import os
import socket
import sys
import time

# A request as nginx sends it behind the benchmark's fastcgi block.
NGINX_PARAMS = {
    "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
    "SCRIPT_NAME": "", "PATH_INFO": "/", "REQUEST_URI": "/", "DOCUMENT_URI": "/",
    "DOCUMENT_ROOT": "/usr/share/nginx/html", "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http", "GATEWAY_INTERFACE": "CGI/1.1",
    "SERVER_SOFTWARE": "nginx/1.22.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51234",
    "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_NAME": "localhost",
    "HTTP_HOST": "127.0.0.1:8080",
}


def nginx_request(keep_conn=False):
    from flup.server.fcgi_base import FCGI_BEGIN_REQUEST, FCGI_KEEP_CONN, FCGI_RESPONDER

    from runfcgi_compat import client

    begin = bytes([0, FCGI_RESPONDER, FCGI_KEEP_CONN if keep_conn else 0, 0, 0, 0, 0, 0])
    return (client._fcgi_record(FCGI_BEGIN_REQUEST, begin)
            + client._fcgi_params(NGINX_PARAMS)
            + client._fcgi_stream(client.FCGI_STDIN, b""))


def read_response(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def count_instructions(requests=1000):
    """Instructions per request under callgrind: the same count on every run
    of the same code, whatever else the machine is doing."""
    import re
    import subprocess

    def collected(mode, count):
        env = dict(os.environ, PYTHONHASHSEED="0")
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, os.path.abspath(__file__), "--loop", mode, str(count)],
            env=env, capture_output=True, text=True, check=True).stderr
        return int(re.search(r"Collected : (\d+)", out).group(1))

    start = collected("served", 0)
    server = (collected("served", requests) - start) / requests
    view = (collected("bare", requests) - start) / requests
    print(json.dumps({"server_instructions": round(server), "view_instructions": round(view),
                      "overhead_instructions": round(server - view)}))


def main():
    if "--instructions" in sys.argv:
        return count_instructions()
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    seconds = float(args[0]) if args and "--loop" not in sys.argv else 3.0
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.join(os.path.dirname(here), "example")]
    from django.core.wsgi import get_wsgi_application

    from runfcgi_compat.servers.base import KEEP
    from runfcgi_compat.servers.fcgi import FastCGIHandler

    app = get_wsgi_application()
    handler = FastCGIHandler()
    handler.set_app(app)
    # What prepare_listener would read from the worker's listening socket.
    handler.socket_args = (socket.AF_UNIX, socket.SOCK_STREAM, 0)
    request = nginx_request()
    expected = None

    def served():
        nonlocal expected
        ours, theirs = socket.socketpair()
        theirs.sendall(request)
        # As a prefork worker serves a connection it accepted.
        conn = handler.connect(ours.detach(), "")
        if handler.serve_next(conn) is KEEP:
            conn.close()
        response = read_response(theirs)
        theirs.close()
        if expected is None:
            if b"Status: 200" not in response:
                raise SystemExit(f"the handler answered {response[:200]!r}")
            expected = len(response)

    base = {"wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False}
    base.update(NGINX_PARAMS)

    def start_response(status, headers, exc_info=None):
        return None

    def bare():
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(b"")
        result = app(environ, start_response)
        for _chunk in result:
            pass
        result.close()

    if "--loop" in sys.argv:  # One side of --instructions, run under valgrind.
        mode, count = sys.argv[sys.argv.index("--loop") + 1:][:2]
        call = {"served": served, "bare": bare}[mode]
        for _ in range(int(count)):
            call()
        return

    if "--profile" in sys.argv:
        import cProfile
        import pstats

        for _ in range(500):
            served()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(5000):
            served()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return

    def measure(call):
        for _ in range(300):
            call()
        count, cpu0 = 0, time.process_time()
        deadline = time.perf_counter() + seconds / 4
        while time.perf_counter() < deadline:
            for _ in range(100):
                call()
            count += 100
        return (time.process_time() - cpu0) / count * 1e6

    # Alternate, so that a slow patch of the machine lands on both.
    server, view = [], []
    for _ in range(2):
        server.append(measure(served))
        view.append(measure(bare))
    result = {"server_us": round(min(server), 1), "view_us": round(min(view), 1)}
    result["overhead_us"] = round(result["server_us"] - result["view_us"], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
