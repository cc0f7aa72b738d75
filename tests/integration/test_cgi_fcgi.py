"""runfcgi answers the real ``cgi-fcgi`` client, in both methods, over TCP and UNIX."""
import os
import signal
import subprocess

import pytest

from runfcgi_compat.servers import speedups
from tests.helpers import example_env, free_port, run_manage, wait_for_connect, wait_for_exit
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
