"""runfcgi answers the real ``cgi-fcgi`` client, in both methods, over TCP and UNIX;
the test project inside ``wsgiref.validate`` gets no finding from what it sends."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from urllib.parse import quote

import pytest

from runfcgi_compat.servers import speedups
from tests.helpers import example_env, free_port, run_manage, wait_for_connect, wait_for_exit
from tests.integration import frontends, validation
from tests.integration.conftest import require_binary

METHODS = ["prefork", "threaded"]


def cgi_fcgi(connect, path="/", query=""):
    """Send one GET through cgi-fcgi; return its stdout (CGI headers and body)."""
    env = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path,
        "QUERY_STRING": query, "REQUEST_URI": path + ("?" + query if query else ""),
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "PATH": os.environ.get("PATH", ""),
    }
    done = subprocess.run([require_binary("cgi-fcgi"), "-bind", "-connect", connect],
                          env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    return done.stdout.decode("latin-1")


@pytest.mark.parametrize("method", METHODS)
def test_tcp(method, start_backend):
    port = free_port()
    backend = start_backend([f"method={method}", "host=127.0.0.1", f"port={port}"],
                            ("127.0.0.1", port))
    answer = cgi_fcgi(f"127.0.0.1:{port}")
    assert answer.startswith("Status: 200 OK\r\nContent-Type: text/plain"), answer
    assert "Hello from runfcgi, pid " in answer
    out, err = backend.stop()
    assert backend.process.returncode == 0, err
    assert out.startswith(f"runfcgi: serving fcgi on 127.0.0.1:{port}, {method} ")


@pytest.mark.parametrize("method", METHODS)
def test_unix_socket_with_query(method, start_backend, tmp_path):
    sock = str(tmp_path / "s.sock")
    backend = start_backend([f"method={method}", f"socket={sock}"], sock)
    answer = cgi_fcgi(sock, path="/path/abc", query="q=1")
    assert '"path": "/path/abc"' in answer and '"query": {"q": "1"}' in answer, answer
    backend.stop()
    assert backend.process.returncode == 0
    assert not os.path.exists(sock)


@pytest.mark.parametrize("method", METHODS)
def test_daemon_with_pidfile_then_kill(method, daemons, tmp_path):
    """The 1.8 recipe: start (daemonizes by default), request, kill $(cat pidfile)."""
    port = free_port()
    pid_path = tmp_path / "site.pid"
    out, err, code = run_manage("runfcgi", f"method={method}", "host=127.0.0.1",
                                f"port={port}", f"pidfile={pid_path}",
                                f"errlog={tmp_path}/err.log")
    assert code == 0, err
    pid = int(pid_path.read_text())
    daemons.append(pid)
    assert out == (f"runfcgi: serving fcgi on 127.0.0.1:{port}, {method} "
                   + ("(2-5 spare, at most 50 workers)" if method == "prefork"
                      else "(at most 50 threads)") + f", pid {pid}, daemon\n"
                   + f"runfcgi: fast path in {speedups.DESCRIPTION}\n")
    wait_for_connect(("127.0.0.1", port))  # Bound before the command returned.
    assert "Hello from runfcgi" in cgi_fcgi(f"127.0.0.1:{port}")
    os.kill(pid, signal.SIGTERM)
    assert wait_for_exit(pid, timeout=10)
    assert not pid_path.exists()


def test_legacy_fcgi_script(start_backend, tmp_path):
    """A 1.8 mysite.fcgi with one changed import line."""
    port = free_port()
    script = tmp_path / "mysite.fcgi"
    script.write_text(
        "import os\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'exampleproject.settings'\n"
        "from runfcgi_compat.fastcgi import runfastcgi\n"
        f"runfastcgi(method='threaded', daemonize='false', host='127.0.0.1', port={port})\n")
    import sys
    process = subprocess.Popen([sys.executable, str(script)], env=example_env(),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for_connect(("127.0.0.1", port), process=process)
        assert "Hello from runfcgi" in cgi_fcgi(f"127.0.0.1:{port}")
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


# -- the test project inside wsgiref.validate, straight from cgi-fcgi ----------------


@pytest.fixture(scope="module", params=METHODS)
def validated(request):
    """runfcgi serving the test project (validator on), one per method."""
    require_binary("cgi-fcgi")
    tmp = frontends.make_tmp()
    site = frontends.Site(f"cgi-fcgi-{request.param}", 0, "", [])
    try:
        host, port, _ = frontends._backend(tmp, site.processes, "fcgi", request.param)
        site.connect = f"{host}:{port}"
        yield site
    finally:
        site.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    validation.assert_no_findings(site)


def cgi_request(site, method="GET", path="/", query="", body=b"", **params):
    """Run cgi-fcgi once as a CGI web server would; return (status, head, body).

    ``path`` is text (sent UTF-8 encoded), ``query`` the raw query string.
    """
    env = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path,
        "QUERY_STRING": query, "REQUEST_URI": quote(path) + ("?" + query if query else ""),
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "PATH": os.environ.get("PATH", ""),
        **params,
    }
    done = subprocess.run([require_binary("cgi-fcgi"), "-bind", "-connect", site.connect],
                          env=env, input=body, capture_output=True, timeout=60)
    head, _, data = done.stdout.partition(b"\r\n\r\n")
    status = int(head.split(b"\r\n", 1)[0].split()[1]) if head.startswith(b"Status:") else 200
    assert not validation.findings(site), validation.findings(site)
    return status, head.decode("latin-1"), data


def test_validated_get_with_query(validated):
    status, _, data = cgi_request(validated, path="/café/x", query="q=1&r=%C3%A9")
    assert status == 200, data
    seen = json.loads(data)
    assert (seen["path"], seen["query"]) == ("/café/x", {"q": ["1"], "r": ["é"]})
    assert seen["wsgi_input"] == "wsgiref.validate.InputWrapper"


def test_validated_post_with_repeated_content_headers(validated):
    """As nginx sends them: the HTTP_ copies (here different) never reach the app."""
    body = b"line\n" * 1000
    status, _, data = cgi_request(
        validated, "POST", "/echo/", body=body, CONTENT_TYPE="text/plain",
        CONTENT_LENGTH=str(len(body)), HTTP_CONTENT_TYPE="text/html",
        HTTP_CONTENT_LENGTH="999")
    assert status == 200, data
    seen = json.loads(data)
    assert (seen["content_type"], seen["content_length"]) == ("text/plain", str(len(body)))
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_validated_form_with_only_the_header(validated):
    """No CONTENT_TYPE, only the header's copy: it takes CONTENT_TYPE's place."""
    body = b"a=1&b=%C3%A9"
    status, _, data = cgi_request(
        validated, "POST", "/form/", body=body, CONTENT_LENGTH=str(len(body)),
        HTTP_CONTENT_TYPE="application/x-www-form-urlencoded")
    assert status == 200, data
    assert json.loads(data)["fields"] == {"a": ["1"], "b": ["é"]}


def test_validated_head_stream_and_error(validated):
    status, head, _ = cgi_request(validated, "HEAD", "/x")
    assert status == 200 and "Content-Type: application/json" in head
    status, _, data = cgi_request(validated, path="/stream/1000000")
    assert (status, len(data)) == (200, 1000000)
    status, _, data = cgi_request(validated, path="/error/")
    assert status == 500 and b"Traceback" not in data


def test_validated_client_leaves_mid_stream(validated):
    token = uuid.uuid4().hex[:12]
    env = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": f"/endless/{token}",
           "REQUEST_URI": f"/endless/{token}", "QUERY_STRING": "", "SERVER_NAME": "localhost",
           "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
    reader = subprocess.Popen([require_binary("cgi-fcgi"), "-bind", "-connect",
                               validated.connect], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert len(reader.stdout.read(256 * 1024)) == 256 * 1024
    finally:
        reader.stdout.close()  # cgi-fcgi dies writing to it, and hangs up.
        reader.wait(30)
    closed = f"testproject: endless {token} closed after "
    deadline = time.monotonic() + validation.CLOSE_TIMEOUT
    while closed not in validation.log_text(validated):
        assert time.monotonic() < deadline, validated.logs()
        time.sleep(0.05)
    assert not validation.findings(validated)
