"""The ceiling: call the bench project's WSGI app in a loop, no server at all.

    python inprocess.py SECONDS

Prints one JSON line: requests, wall seconds and CPU seconds (this process).
Each call gets a fresh copy of a minimal environ for ``GET /`` and reads the
whole response, as a server would.
"""
import io
import json
import os
import sys
import time


def main():
    seconds = float(sys.argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()
    base = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }

    def start_response(status, headers, exc_info=None):
        if not status.startswith("200"):
            raise SystemExit(f"in-process call answered {status}")
        return None

    def call():
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(b"")
        result = app(environ, start_response)
        try:
            for _chunk in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    for _ in range(200):  # warm up
        call()
    count = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = wall0 + seconds
    while True:
        for _ in range(100):
            call()
        count += 100
        if time.perf_counter() >= deadline:
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(json.dumps({"requests": count, "seconds": wall, "cpu": cpu}))


if __name__ == "__main__":
    main()
