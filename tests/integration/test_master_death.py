"""The prefork master dies (SIGKILL): its workers let go of the port at once.

Three requests are held in flight in a view the test controls
(``tinysite``'s ``/hold``), then the master is killed.  A new runfcgi on the
same port must bind at once, while the orphaned workers are still inside
their views; the held requests must still complete, and every orphan must
exit after.  Linux only for "while inside a view" (``PR_SET_PDEATHSIG``);
elsewhere an orphan lets go when its request ends.
"""
import re
import signal
import sys
import threading
import time

import pytest

from tests.helpers import wait_for_connect
from tests.integration.hostile import alive, children
from tests.integration.lifecycle import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the parent-death signal is Linux's")

HELD = ("one", "two", "three")
POOL = 5


@pytest.mark.parametrize("bind", ["tcp", "unix"])
def test_a_killed_master_frees_the_port_while_its_workers_finish(site, bind):
    # A pool of fixed size: one that grew or shrank while the requests are
    # held would fork or retire a worker between listing its workers and
    # the kill (seen in CI: 6 orphans for 5 listed, and 5 for 6).
    words = [f"minspare={POOL}", f"maxspare={POOL}", f"maxchildren={POOL}"]
    if bind == "unix":
        # Its file stays behind; the new server replaces it once nobody answers.
        site.address = str(site.root / "fcgi.sock")
        words.append(f"socket={site.address}")
    old = site.start(*words)
    wait_for_connect(site.address, process=old)
    wait_until(site.listening, 30, "the first server's banner")
    results = {}

    def hold(name):
        response = site.get(f"/hold/{name}", timeout=60)
        results[name] = (response.status, response.body.decode())

    clients = [threading.Thread(target=hold, args=(name,)) for name in HELD]
    for thread in clients:
        thread.start()
    holders = {wait_until(lambda name=name: site.started(name), 30, f"request {name}")
               for name in HELD}
    # Once the pool is full it neither forks nor retires a worker.
    wait_until(lambda: len(children(old.pid)) == POOL, 30, "the pool to fill up")
    orphans = children(old.pid)
    assert holders <= orphans

    old.send_signal(signal.SIGKILL)
    old.wait()
    killed_at = time.monotonic()
    new = site.start(*words)
    # The new server listens (prints its banner) only if it could bind.
    wait_until(site.listening, 30, "the new server to bind the port")
    bound_in = time.monotonic() - killed_at
    # ...and answers: from its own workers, not from an orphan.
    wait_until(lambda: int(site.get("/ppid").body) == new.pid, 30,
               "the new server to answer")
    assert all(alive(pid) for pid in holders), "the orphans were still in their views"
    assert not results

    for name in HELD:
        site.release(name)
    for thread in clients:
        thread.join(60)
    assert results == {name: (200, f"held {name}") for name in HELD}
    wait_until(lambda: not any(alive(pid) for pid in orphans), 30, "every orphan to exit")
    # Each orphan says so, once.
    said = [int(pid) for pid in re.findall(r"worker (\d+) lost its master", site.log())]
    assert sorted(said) == sorted(orphans)
    assert int(site.get("/ppid").body) == new.pid
    print(f"master death ({bind}): a new runfcgi listened {bound_in:.2f} s after the "
          f"SIGKILL (start-up included), {len(HELD)} held requests answered 200, "
          f"{len(orphans)} orphans exited")
