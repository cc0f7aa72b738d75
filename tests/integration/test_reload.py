"""SIGHUP reloads a prefork server with the project's new code (issue #3).

The tiny project of ``tinysite.py`` is served by the real ``manage.py
runfcgi`` (or ``runfastcgi()`` from a script), and its view module is
rewritten between reloads.
"""
import os
import signal
import threading
from pathlib import Path

from runfcgi_compat import client
from tests.helpers import kill_quietly, wait_for_connect, wait_for_exit
from tests.integration.lifecycle import wait_until


class Hammer:
    """Threads that keep requesting ``/`` and record every outcome."""

    def __init__(self, site, threads=4):
        self.site = site
        self.outcomes = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self):
        while not self._stop.is_set():
            try:
                response = self.site.get()
                self.outcomes.append(response.body.decode() if response.status == 200
                                     else f"status {response.status}")
            except (OSError, client.ClientError) as exc:
                self.outcomes.append(f"error {exc}")

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def seen_since(self, start, text):
        return text in self.outcomes[start:]

    def failures(self):
        return [o for o in self.outcomes if not o.startswith("version ")]


def reload_to(site, pid, version, hammer=None):
    """Write the new view, SIGHUP the master, wait until it answers."""
    site.write_version(version)
    start = len(hammer.outcomes) if hammer else 0
    os.kill(pid, signal.SIGHUP)
    if hammer is not None:
        wait_until(lambda: hammer.seen_since(start, f"version {version}"), 60,
                   f"version {version} after the reload")
    else:
        wait_until(lambda: site.text() == f"version {version}", 60,
                   f"version {version} after the reload")


def test_two_reloads_under_load_serve_new_code_and_lose_no_request(site):
    process = site.start()
    wait_for_connect(site.address, process=process)
    assert site.text() == "version 1"
    with Hammer(site) as hammer:
        wait_until(lambda: len(hammer.outcomes) > 20, 30, "some requests")
        for version in (2, 3):
            reload_to(site, process.pid, version, hammer)
            assert process.poll() is None
    failures = hammer.failures()
    print(f"two reloads under load: {len(hammer.outcomes)} requests, "
          f"{len(failures)} failures")
    assert failures == []
    # Same master throughout: the workers answering are its children.
    assert int(site.get("/ppid").body) == process.pid
    assert site.log().count("reloaded with the new code") == 2
    # The exec kept the pid and the forking thread: no worker took it for death.
    assert "lost its master" not in site.log()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


def children(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()}


def test_kept_connections_stay_open_across_the_masters_exec(site):
    # More kept connections than workers: some wait in the master while it
    # re-executes itself.  Those, the channel the workers pass connections
    # through, and the ones the old workers pass on as they leave all reach
    # the new image; every connection serves the new code afterwards.
    process = site.start()
    wait_for_connect(site.address, process=process)
    kept = [client.FastCGIConnection(site.address, timeout=30) for _ in range(8)]
    try:
        for conn in kept:
            assert conn.request(path="/").body == b"version 1"
        old_workers = children(process.pid)
        reload_to(site, process.pid, 2)
        wait_until(lambda: not old_workers & children(process.pid), 60,
                   "the old workers to exit")
        for conn in kept:
            assert conn.request(path="/").body == b"version 2"
        assert "lost in passing" not in site.log()
    finally:
        for conn in kept:
            conn.close()


def test_code_that_does_not_load_cancels_the_reload(site):
    process = site.start()
    wait_for_connect(site.address, process=process)
    site.break_views()
    os.kill(process.pid, signal.SIGHUP)
    wait_until(lambda: "reload cancelled" in site.log(), 60, "the cancelled reload")
    errors = [line for line in site.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "still serving the old code" in errors[0]
    assert site.text() == "version 1", site.log()
    assert process.poll() is None
    reload_to(site, process.pid, 2)  # Fixed: the next reload goes through.


def test_daemonized_reload_keeps_pid_pidfile_and_unix_socket(site):
    sock_path = site.root / "fcgi.sock"
    pidfile = site.root / "server.pid"
    site.address = str(sock_path)
    site.start("daemonize=true", f"pidfile={pidfile}", f"socket={sock_path}",
               f"workdir={site.root}").wait(60)
    pid = int(pidfile.read_text())
    try:
        inode = sock_path.stat().st_ino
        assert site.text() == "version 1"
        reload_to(site, pid, 2)
        assert int(pidfile.read_text()) == pid
        assert sock_path.stat().st_ino == inode
        assert int(site.get("/ppid").body) == pid
        os.kill(pid, signal.SIGTERM)
        wait_for_exit(pid, timeout=30)
        assert not pidfile.exists() and not sock_path.exists()
    finally:
        kill_quietly(pid, signal.SIGKILL)


def test_runfastcgi_from_a_script_reloads(site):
    process = site.start(script="serve.py", command=())
    wait_for_connect(site.address, process=process)
    assert site.text() == "version 1"
    reload_to(site, process.pid, 2)
    assert process.poll() is None
    assert Path(site.root / "serve.py").exists()


# Runs when the reload's check imports the views: announce it, wait for the
# test, then fail as a half-edited module would.
HELD_BROKEN_PROBE = """
if os.environ.get("RUNFCGI_PROBE"):
    _root = pathlib.Path(__file__).resolve().parent.parent
    (_root / "probe.started").touch()
    _deadline = time.monotonic() + 60
    while not (_root / "probe.go").exists() and time.monotonic() < _deadline:
        time.sleep(0.01)
    raise ImportError("half-edited view module")
"""


def test_a_sighup_during_a_reload_queues_one_more(site):
    process = site.start()
    wait_for_connect(site.address, process=process)
    assert site.text() == "version 1"
    site.write_version(2, prelude=HELD_BROKEN_PROBE)
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: (site.root / "probe.started").exists(), 60, "the reload's check")
    # Fixed while the check still runs on the broken code; two SIGHUPs, one
    # more check.
    site.write_version(3)
    process.send_signal(signal.SIGHUP)
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: "checked again" in site.log(), 60, "the queued reload")
    site.release("probe")
    wait_until(lambda: site.text() == "version 3", 60, "version 3 after the queued reload")
    log = site.log()
    assert log.count("checking that the new code loads") == 1
    assert log.count("reload cancelled") == 1
    assert "checking again for the SIGHUP that came meanwhile" in log
    assert log.count("reloaded with the new code") == 1
    assert int(site.get("/ppid").body) == process.pid
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
