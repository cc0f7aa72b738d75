"""orphan.py: a worker whose master died lets go of the port at once."""
import os
import select
import socket
import subprocess
import sys

import pytest

from runfcgi_compat.servers import orphan
from tests import modes


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def test_letting_go_frees_the_port_and_keeps_the_descriptor_harmless(listener):
    port = listener.getsockname()[1]
    fd = listener.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)  # As a worker's loop watches it.
    orphan.let_go(listener)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))  # Nobody holds the port any more.
        other.listen(1)
    assert listener.fileno() == fd  # Same number: nothing else can take it.
    assert poller.poll(0) == []  # Never anything to accept...
    with pytest.raises(BlockingIOError):
        listener.accept()  # ...and accept() says so without waiting.


def test_the_watch_acts_only_when_the_master_is_gone(listener):
    drains = []
    watch = orphan.Watch(listener, lambda: drains.append(1), master_pid=os.getppid())
    watch.on_signal(orphan.SIGNAL, None)  # A stray signal: our parent lives.
    assert (drains, watch.orphaned) == ([], False)
    gone = orphan.Watch(listener, lambda: drains.append(1), master_pid=os.getppid() + 1)
    gone.check()
    gone.check()
    assert (drains, gone.orphaned) == ([1], True)
    with pytest.raises(BlockingIOError):
        listener.accept()


LINUX = sys.platform.startswith("linux")


def parent_death_signal_after(ask):
    """In a forked child: ``ask(SIGNAL)``, then read the signal back with
    PR_GET_PDEATHSIG; return (what ask said, the signal number set)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            import ctypes
            asked = ask(orphan.SIGNAL)
            value = ctypes.c_int()
            orphan._find_prctl()(2, ctypes.addressof(value), 0, 0, 0)  # PR_GET_PDEATHSIG
            os.write(write_fd, f"{asked} {value.value}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        asked, value = os.read(read_fd, 100).decode().split()
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    return asked, int(value)


@pytest.mark.skipif(not LINUX, reason="prctl is Linux's")
def test_the_parent_death_signal_is_asked_for_in_a_child():
    assert parent_death_signal_after(orphan.parent_death_signal) == (
        "True", int(orphan.SIGNAL))


@pytest.mark.skipif(not LINUX, reason="prctl is Linux's")
def test_the_python_twin_asks_for_the_same_signal(monkeypatch):
    monkeypatch.setattr(orphan, "_prctl", orphan._find_prctl())
    assert parent_death_signal_after(orphan._parent_death_signal_py) == (
        "True", int(orphan.SIGNAL))


def test_the_twin_says_false_where_there_is_no_prctl(monkeypatch):
    monkeypatch.setattr(orphan, "_prctl", None)
    assert orphan._parent_death_signal_py(orphan.SIGNAL) is False


def test_ctypes_is_imported_only_for_the_twin():
    # ctypes and libffi cost every prefork server ~0.5 MiB (bench/memory.py).
    code = ("import sys; from runfcgi_compat.servers import orphan; "
            "print(orphan.parent_death_signal is orphan._parent_death_signal_py, "
            "'ctypes' in sys.modules)")
    seen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=modes.REPO).stdout.split()
    twin = seen[0] == "True"
    assert seen == [str(twin), str(twin and LINUX)]


def test_where_no_abstract_socket_exists_the_stand_in_is_never_readable(monkeypatch):
    real = socket.socket

    class NoAutobind(real):
        def bind(self, address):
            if address == "":
                raise OSError(22, "Invalid argument")  # macOS, the BSDs
            return super().bind(address)

    monkeypatch.setattr(socket, "socket", NoAutobind)
    with orphan._stand_in() as stand_in:
        poller = select.poll()
        poller.register(stand_in.fileno(), select.POLLIN)
        assert poller.poll(0) == []
        assert stand_in.type == socket.SOCK_DGRAM and not stand_in.getblocking()
