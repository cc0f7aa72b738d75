"""What a real ``manage.py runfcgi`` runs with: the portable mode reaches the servers.

In the portable cell (tests/portable/sitecustomize.py) the master and its
workers must serve without the C module, epoll or eventfd; in the other
cells they load the C module.  Checked from outside, in /proc: the shared
objects each process mapped and the descriptors it holds.
"""
from pathlib import Path

import pytest

from runfcgi_compat import client
from tests import modes
from tests.helpers import free_port


def processes(master):
    """The master's pid and its children's."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


def mapped_c_module(pid):
    return any("/_wire." in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())


def descriptor_kinds(pid):
    """What each open descriptor is, e.g. "socket:[123]", "anon_inode:[eventpoll]"."""
    kinds = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            kinds.append(fd.readlink().as_posix())
        except FileNotFoundError:
            pass  # Closed while listed.
    return kinds


@pytest.fixture
def server(start_backend):
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc (Linux)")
    port = free_port()
    backend = start_backend(["method=prefork", "host=127.0.0.1", f"port={port}",
                             "maxchildren=2", "minspare=2", "maxspare=2"], ("127.0.0.1", port))
    for _ in range(4):
        assert client.request(("127.0.0.1", port), "fcgi", path="/").status == 200
    return backend


@pytest.mark.skipif(not modes.PORTABLE, reason="only in the portable mode")
def test_the_servers_run_without_the_c_module_epoll_and_eventfd(server):
    pids = processes(server.pid)
    assert len(pids) >= 2  # The master and its workers.
    for pid in pids:
        assert not mapped_c_module(pid), pid
        kinds = descriptor_kinds(pid)
        assert not [k for k in kinds if "eventpoll" in k or "eventfd" in k], (pid, kinds)


@pytest.mark.skipif(modes.PORTABLE, reason="the portable mode hides the C module")
def test_the_servers_load_the_c_module(server):
    modes.wire()  # Skips only where the module cannot be built (see tests/modes.py).
    pids = processes(server.pid)
    assert len(pids) >= 2
    assert all(mapped_c_module(pid) for pid in pids)
