"""Front ends that start runfcgi also stop it: h2o's fastcgi.spawn and spawn-fcgi.

Each test starts runfcgi in prefork (a master and its workers) the way the
generated configuration or command line does, checks it answers, stops it
the documented way, and checks that the master and every worker are gone.
"""
import os
import signal
import sys

import pytest

from runfcgi_compat import client
from runfcgi_compat import frontends as conf
from tests.helpers import free_port, wait_for_exit, wait_until
from tests.integration import frontends as harness
from tests.integration import frontends_more as more

pytestmark = pytest.mark.integration


def runfcgi_pids(session):
    """Pids of the runfcgi processes (master and workers) in ``session``."""
    pids = []
    for pid in [session, *harness.session_members(session)]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
        except OSError:
            continue
        if b"runfcgi" in words:
            pids.append(pid)
    return pids


def gone(pids):
    """True once none of ``pids`` runs (exited: no such process, or a zombie)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return False
    return True


def test_stopping_h2o_stops_the_runfcgi_it_spawned(tmp):
    tmp_dir, processes = tmp
    command = conf.h2o_spawn_command(sys.executable, str(harness.PROJECT / "manage.py"),
                                     settings=harness.SETTINGS, method="prefork")
    listen = free_port()
    site_text = conf.h2o(spawn=command, listen=f"127.0.0.1:{listen}")
    h2o = more.start_h2o(tmp_dir, site_text, listen, env=harness.django_env())
    processes.append(h2o)
    site = harness.Site("h2o-spawn", listen, processes=[h2o])
    worker = site.json("GET", "/who")["pid"]
    pids = runfcgi_pids(h2o.pid)
    assert worker in pids and len(pids) >= 2, (pids, site.logs())  # master and workers
    os.kill(h2o.pid, signal.SIGTERM)
    assert wait_for_exit(h2o.pid, timeout=harness.STOP_TIMEOUT)
    wait_until(lambda: gone(pids), harness.STOP_TIMEOUT, f"runfcgi {pids} to stop")


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_sigterm_stops_runfcgi_started_by_spawn_fcgi_n(unix, tmp):
    """Foreground: spawn-fcgi -n became runfcgi, so its pid is the master's."""
    tmp_dir, processes = tmp
    where = (dict(socket_path=str(tmp_dir / "django.sock")) if unix
             else dict(host="127.0.0.1", port=free_port()))
    process = more.start_spawn_fcgi(tmp_dir, "prefork", **where)
    processes.append(process)
    address = where.get("socket_path") or (where["host"], where["port"])
    assert client.request(address, path="/who").status == 200
    pids = runfcgi_pids(process.pid)
    assert process.pid in pids and len(pids) >= 2, pids
    os.kill(process.pid, signal.SIGTERM)
    assert process.popen.wait(harness.STOP_TIMEOUT) == 0
    wait_until(lambda: gone(pids), harness.STOP_TIMEOUT, f"runfcgi {pids} to stop")


def test_sigterm_to_the_pidfile_stops_runfcgi_forked_by_spawn_fcgi(tmp):
    """Init-script style: spawn-fcgi -P forks runfcgi, writes its pid and exits."""
    tmp_dir, processes = tmp
    socket_path = str(tmp_dir / "django.sock")
    process = more.start_spawn_fcgi(tmp_dir, "prefork", socket_path=socket_path,
                                    pidfile=True)
    processes.append(process)
    pid = process.pid
    assert client.request(socket_path, path="/who").status == 200
    pids = runfcgi_pids(pid)
    assert pid in pids and len(pids) >= 2, pids
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: gone(pids), harness.STOP_TIMEOUT, f"runfcgi {pids} to stop")
