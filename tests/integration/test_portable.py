"""What a real ``manage.py runfcgi`` runs with: the portable mode reaches the servers.

In the portable cell (tests/portable/sitecustomize.py) the master and its
workers must serve without the C module, epoll or eventfd; in the other
cells they load the C module, unless ``RUNFCGI_PURE_PYTHON=1`` forces the
Python twins.  Checked from outside, in /proc: the shared objects each
process mapped and the descriptors it holds; and the banner says which.
"""
from pathlib import Path

import pytest

from runfcgi_compat import client
from tests import modes
from tests.helpers import example_env, free_port

NOT_INSTALLED = ("runfcgi: fast path in pure Python (the C module is not installed: it is"
                 " built only when a C compiler is found at install time)\n")


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


def serve(start_backend, **env):
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc (Linux)")
    port = free_port()
    backend = start_backend(["method=prefork", "host=127.0.0.1", f"port={port}",
                             "maxchildren=2", "minspare=2", "maxspare=2"], ("127.0.0.1", port),
                            env=example_env(**env))
    for _ in range(4):
        assert client.request(("127.0.0.1", port), "fcgi", path="/").status == 200
    return backend


def banner_path_line(backend):
    return backend.output()[0].splitlines(keepends=True)[1]


@pytest.mark.skipif(not modes.PORTABLE, reason="only in the portable mode")
def test_the_servers_run_without_the_c_module_epoll_and_eventfd(start_backend):
    server = serve(start_backend)
    pids = processes(server.pid)
    assert len(pids) >= 2  # The master and its workers.
    for pid in pids:
        assert not mapped_c_module(pid), pid
        kinds = descriptor_kinds(pid)
        assert not [k for k in kinds if "eventpoll" in k or "eventfd" in k], (pid, kinds)
    assert banner_path_line(server) == NOT_INSTALLED


@pytest.mark.skipif(modes.PORTABLE, reason="the portable mode hides the C module")
def test_the_servers_load_the_c_module(start_backend):
    modes.wire()  # Skips only where the module cannot be built (see tests/modes.py).
    server = serve(start_backend)
    pids = processes(server.pid)
    assert len(pids) >= 2
    assert all(mapped_c_module(pid) for pid in pids)
    assert banner_path_line(server) == (
        "runfcgi: fast path in the C module (runfcgi_compat.servers._wire)\n")


@pytest.mark.skipif(modes.PORTABLE, reason="the portable mode hides the C module")
def test_pure_python_forced_leaves_the_c_module_unloaded(start_backend):
    modes.wire()
    backend = serve(start_backend, RUNFCGI_PURE_PYTHON="1")
    pids = processes(backend.pid)
    assert len(pids) >= 2
    assert not any(mapped_c_module(pid) for pid in pids)
    assert banner_path_line(backend) == (
        "runfcgi: fast path in pure Python (forced by RUNFCGI_PURE_PYTHON=1)\n")
