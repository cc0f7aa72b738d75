"""Sockets handed over by someone else: fd 0 (mod_fcgid, lighttpd bin-path) and
systemd socket activation (LISTEN_FDS)."""
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from runfcgi_compat import client
from tests.helpers import example_env, free_port, manage_command

METHODS = ["prefork", "threaded"]


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


@pytest.mark.parametrize("method", METHODS)
def test_socket_on_fd0_like_mod_fcgid(method, tmp_path):
    path = str(tmp_path / "fcgid.sock")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(path)
    listening.listen(16)
    # The web server's way: the listening socket is the child's stdin.
    process = subprocess.Popen(manage_command("runfcgi", f"method={method}"),
                               stdin=listening.fileno(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=example_env(), text=True,
                               start_new_session=True)
    listening.close()
    try:
        answer = client.request(path, path="/path/x", query="a=1", timeout=30)
        assert answer.status == 200
        assert b'"path": "/path/x"' in answer.body
    finally:
        out, err = stop(process)
    assert process.returncode == 0, err
    assert out.startswith(f"runfcgi: serving fcgi on fd 0 (unix), {method} ")


@pytest.mark.parametrize("method", METHODS)
def test_systemd_socket_activation(method):
    port = free_port()
    listening = socket.socket()
    listening.bind(("127.0.0.1", port))
    listening.listen(16)
    # What systemd does: the socket on fd 3, LISTEN_PID naming the service's pid.
    launcher = textwrap.dedent(f"""
        import os, sys
        os.dup2({listening.fileno()}, 3)
        os.environ["LISTEN_FDS"] = "1"
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.execv(sys.executable, [sys.executable] + sys.argv[1:])
    """)
    command = [sys.executable, "-c", launcher] + manage_command("runfcgi", f"method={method}")[1:]
    process = subprocess.Popen(command, pass_fds=[listening.fileno()],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=example_env(), text=True,
                               start_new_session=True)
    listening.close()
    try:
        answer = client.request(("127.0.0.1", port), path="/", timeout=30)
        assert answer.status == 200 and answer.body.startswith(b"Hello from runfcgi")
    finally:
        out, err = stop(process)
    assert process.returncode == 0, err
    assert out.startswith(f"runfcgi: serving fcgi on systemd fd 3 (tcp), {method} ")
