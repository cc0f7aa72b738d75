"""Serve the test project inside ``wsgiref.validate`` and fail on any finding.

The test project's application is wrapped in Python's own validator
(``testproject/wsgi.py``; on unless TESTPROJECT_WSGI_VALIDATOR=0), so every
front end started through ``frontends.py`` serves it wrapped.  The validator
reports inside the server, not to the client: an ``AssertionError`` becomes a
500 and a traceback in the log of the process that runs the app (runfcgi's
own, or the web server's for a backend it spawned), a response iterable that
was never closed prints a line when it is collected, and a ``WSGIWarning``
goes to standard error.  So the checks read every log of the set-up as well
as the status codes.

For a new front end, call ``check_site(site)`` with its running
``frontends.Site`` (whose processes list every log): it runs each of
``CHECKS`` -- GET with a query, form and multipart POST, a raw POST, HEAD, a
streamed response, an error, a client leaving mid-stream -- and asserts that
no log holds a finding.  ``assert_no_findings(site)`` alone checks the logs.
"""
import hashlib
import json
import socket
import time
import uuid

MiB = 1024 * 1024

# What the validator leaves in a log, and nothing else does.
MARKERS = ("AssertionError", "WSGIWarning", "without being closed")
CLOSE_TIMEOUT = 30


def log_paths(site):
    """Every log the set-up's processes write (the backend's and the web server's)."""
    return [path for process in site.processes for path in (process.log, *process.extra_logs)]


def findings(site):
    """Return the log lines that show a validator finding, each with its log."""
    found = []
    for path in log_paths(site):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found += [f"{path}: {line}" for line in text.splitlines()
                  if any(marker in line for marker in MARKERS)]
    return found


def assert_no_findings(site):
    found = findings(site)
    assert not found, "wsgiref.validate found:\n" + "\n".join(found) + "\n" + site.logs()


def log_text(site):
    texts = []
    for path in log_paths(site):
        try:
            texts.append(path.read_text(errors="replace"))
        except OSError:
            pass
    return "\n".join(texts)


# -- the checks: each takes a running Site and asserts what the client gets ---------


def get_with_query(site):
    seen = site.json("GET", "/caf%C3%A9/x?q=1&r=%C3%A9t%C3%A9")
    assert seen["path_info"] == "/café/x"
    assert seen["query"] == {"q": ["1"], "r": ["été"]}
    # The validator is there to find something.
    assert seen["wsgi_input"] == "wsgiref.validate.InputWrapper", seen


def post_form(site):
    body = "name=caf%C3%A9&n=1&n=2"
    status, _, data = site.request("POST", "/form/", body, {
        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, f"HTTP {status}: {data[:2000]!r}\n{site.logs()}"
    assert json.loads(data)["fields"] == {"name": ["café"], "n": ["1", "2"]}


def post_multipart(site):
    upload = bytes(range(256)) * 1024 + b"\r\n--not-the-boundary\r\n"
    boundary = "validator-boundary-7d1"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n"
            "A title\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            "filename=\"data.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + upload + f"\r\n--{boundary}--\r\n".encode()
    status, _, data = site.request("POST", "/form/", body, {
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, f"HTTP {status}: {data[:2000]!r}\n{site.logs()}"
    seen = json.loads(data)
    assert seen["fields"] == {"title": ["A title"]}
    assert seen["files"] == {"file": ["data.bin", len(upload),
                                      hashlib.sha256(upload).hexdigest()]}


def post_raw(site):
    body = b"line one\nline two\n" * 1000
    seen = site.json("POST", "/echo/", body, {"Content-Type": "text/plain; charset=utf-8"})
    assert (seen["body_len"], seen["content_length"]) == (len(body), str(len(body)))
    assert seen["content_type"] == "text/plain; charset=utf-8"
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def head(site):
    status, headers, data = site.request("HEAD", "/head/x?q=1")
    assert status == 200, site.logs()
    assert headers["Content-Type"] == "application/json"
    assert data == b""


def streamed(site):
    size = 3 * MiB + 5
    status, _, data = site.request("GET", f"/stream/{size}")
    assert status == 200, site.logs()
    pattern = bytes(range(256)) * 256
    assert data == (pattern * (size // len(pattern) + 1))[:size]


def error(site):
    status, _, data = site.request("GET", "/error/")
    assert status == 500, f"HTTP {status}: {data[:500]!r}\n{site.logs()}"
    assert b"Traceback" not in data


def client_leaves(site):
    """Leave in the middle of a long streamed response: the server must still
    close the response (the view says so in the log when it is closed)."""
    token = uuid.uuid4().hex[:12]
    request = (f"GET {site.prefix}/endless/{token} HTTP/1.1\r\n"
               "Host: localhost\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", site.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while len(received) < 256 * 1024:
            chunk = sock.recv(65536)
            assert chunk, f"the stream ended early: {received[:500]!r}\n{site.logs()}"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200 "), received[:500]
    closed = f"testproject: endless {token} closed after "
    deadline = time.monotonic() + CLOSE_TIMEOUT
    while closed not in log_text(site):
        assert time.monotonic() < deadline, (
            f"the response was never closed after the client left\n{site.logs()}")
        time.sleep(0.05)


CHECKS = (get_with_query, post_form, post_multipart, post_raw, head, streamed, error,
          client_leaves)


def check_site(site):
    """Run every check against ``site``; then no log may hold a finding."""
    for check in CHECKS:
        check(site)
        assert_no_findings(site)
