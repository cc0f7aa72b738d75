"""sockets.py: TCP, IPv6, UNIX sockets and the stale-socket rules."""
import os
import socket
import stat

import pytest

from runfcgi_compat import sockets
from runfcgi_compat.errors import StartupError
from runfcgi_compat.options import parse_words
from tests.helpers import free_port


def test_tcp_listener():
    port = free_port()
    listener = sockets.listen(parse_words(["host=127.0.0.1", f"port={port}"]))
    try:
        assert listener.sock.getsockname() == ("127.0.0.1", port)
        assert listener.description == f"127.0.0.1:{port}"
    finally:
        listener.close()


def test_port_in_use_reads_like_runserver():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(StartupError) as caught:
            sockets.listen_tcp("127.0.0.1", port)
        assert str(caught.value) == f"host=127.0.0.1 port={port}: That port is already in use."
    finally:
        holder.close()


def test_ipv6_listener():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    port = free_port("::1")
    listener = sockets.listen_tcp("::1", port)
    try:
        assert listener.sock.family == socket.AF_INET6
        assert listener.description == f"[::1]:{port}"
    finally:
        listener.close()


def test_unix_socket_created_and_removed(tmp_path):
    path = str(tmp_path / "s.sock")
    old = os.umask(0o007)
    try:
        listener = sockets.listen_unix(path)
    finally:
        os.umask(old)
    try:
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o770
    finally:
        listener.close()
    assert not os.path.exists(path)


def test_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / "s.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # The file stays; nobody listens on it.
    listener = sockets.listen_unix(path)
    listener.close()


def test_live_socket_is_refused_and_kept(tmp_path):
    path = str(tmp_path / "s.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen()
    try:
        with pytest.raises(StartupError) as caught:
            sockets.listen_unix(path)
        assert str(caught.value) == f"socket={path} is in use by a running server."
        assert os.path.exists(path)
    finally:
        live.close()


def test_regular_file_is_refused_and_kept(tmp_path):
    path = tmp_path / "s.sock"
    path.write_text("precious")
    with pytest.raises(StartupError) as caught:
        sockets.listen_unix(str(path))
    assert str(caught.value) == f"socket={path}: a file that is not a socket is in the way."
    assert path.read_text() == "precious"


def test_missing_directory(tmp_path):
    path = str(tmp_path / "nope" / "s.sock")
    with pytest.raises(StartupError) as caught:
        sockets.listen_unix(path)
    assert str(caught.value) == (
        f"socket={path}: directory {str(tmp_path / 'nope')!r} does not exist.")


def test_unwritable_directory_speaks_of_the_directory():
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path
    base = Path(tempfile.mkdtemp())  # under /tmp, reachable by nobody
    os.chmod(base, 0o755)
    locked = base / "locked"
    locked.mkdir(mode=0o755)
    # As an unprivileged account, so root's override of permissions does not apply.
    code = ("from runfcgi_compat import sockets\n"
            "from runfcgi_compat.errors import StartupError\n"
            "try:\n"
            f"    sockets.listen_unix({str(locked / 's.sock')!r})\n"
            "except StartupError as exc:\n"
            "    print(exc)\n")
    if os.geteuid() == 0:
        os.chown(locked, 0, 0)
        argv = ["runuser", "-u", "nobody", "--", sys.executable, "-c", code]
    else:
        os.chmod(locked, 0o555)
        argv = [sys.executable, "-c", code]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
    finally:
        shutil.rmtree(base)
    if "Permission denied" in done.stderr and "python" in done.stderr.lower():
        pytest.skip("this interpreter is not reachable by nobody")
    assert done.stdout == (f"socket={locked / 's.sock'}: You don't have permission to "
                           "create a socket in that directory.\n"), done.stderr
