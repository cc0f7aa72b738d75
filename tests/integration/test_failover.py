"""A backend dies under load behind nginx: no client sees a failure.

Two prefork ``runfcgi`` backends sit behind one real nginx whose upstream
retries the next backend on errors, timeouts, bad headers, 502 and 503, for
every method (the snippet comes from ``nginx_cluster.nginx_balancer`` and is
printed for the docs).  Client threads send GET requests through nginx with
``http.client``; a third of the way in, one backend's whole process group
(master and workers) is SIGKILLed.  Every request must still get a 200.
"""
import http.client
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from runfcgi_compat import client
from tests.helpers import free_port
from tests.integration import hostile
from tests.integration.conftest import require_binary
from tests.integration.nginx_cluster import nginx_balancer, nginx_front  # noqa: F401

BACKENDS = 2
REQUESTS = 300
CLIENTS = 4
KILL_AFTER = REQUESTS // 3
PATH = "/slow/20/"  # long enough that requests are in flight when the kill lands


def get(port, path):
    """Return (status, body, finished at) for one GET through nginx.

    The status is None when the request failed below HTTP (body: the error).
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(), time.monotonic()
    except (OSError, http.client.HTTPException) as exc:
        return None, repr(exc).encode(), time.monotonic()
    finally:
        connection.close()


def serving_group(body):
    """The process group (= backend master pid) of the worker that answered."""
    try:
        pid = int(body.split(b"pid ")[1].split()[0])
        return os.getpgid(pid)
    except (IndexError, ValueError):
        return None
    except ProcessLookupError:
        return "gone"


def test_killing_a_backend_mid_load_fails_no_request(start_backend, nginx_front,  # noqa: F811
                                                     tmp_path):
    require_binary("nginx")
    backends = []
    for number in range(BACKENDS):
        address = ("127.0.0.1", free_port())
        backends.append(start_backend(
            ["protocol=fcgi", "method=prefork", "host=127.0.0.1", f"port={address[1]}",
             "maxchildren=4", "maxspare=4", "minspare=2",
             f"errlog={tmp_path / f'backend{number}.err'}",
             f"outlog={tmp_path / f'backend{number}.out'}"], address))
    snippet = None

    def site(listen):
        nonlocal snippet
        snippet = nginx_balancer("fcgi", [b.address for b in backends], listen=listen)
        return snippet

    nginx, port = nginx_front(tmp_path, site)
    print("nginx snippet (failover):\n" + snippet)
    victim, survivor = backends
    # Both backends answer before the load starts.
    for backend in backends:
        assert client.request(backend.address, path="/").status == 200

    served_by = {}
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as clients:
        futures = [clients.submit(get, port, PATH) for _ in range(REQUESTS)]
        hostile.wait_until(lambda: sum(f.done() for f in futures) >= KILL_AFTER, 60,
                           f"{KILL_AFTER} requests to finish")
        groups_before = {serving_group(f.result()[1]) for f in futures if f.done()}
        killed_at = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)
        results = [future.result() for future in futures]
    elapsed = time.monotonic() - started
    # Not process.poll(): start_backend's finalizer must reap it (and close its pipes).
    hostile.wait_until(lambda: not hostile.alive(victim.pid), 10, "the killed master to die")

    after_kill = [(status, body) for status, body, finished in results if finished > killed_at]
    before_kill = REQUESTS - len(after_kill)
    for status, body in after_kill:
        group = serving_group(body) if status == 200 else None
        served_by[group] = served_by.get(group, 0) + 1
    failed = [(status, body[:200]) for status, body, _ in results if status != 200]
    error_log = (nginx.log.parent / "error.log").read_text(errors="replace")
    retried = sum("upstream" in line and ("connect()" in line or "prematurely" in line
                                         or "reset" in line)
                  for line in error_log.splitlines())
    print(f"failover: {REQUESTS} GET {PATH} through nginx over {BACKENDS} backends by "
          f"{CLIENTS} clients in {elapsed:.1f} s; backend {victim.pid} killed (master and "
          f"workers) at {killed_at - started:.2f} s after {before_kill} answers; "
          f"{REQUESTS - len(failed)} x 200, {len(failed)} failed; answers after the kill "
          f"by group: {served_by}; nginx logged {retried} upstream errors it retried")
    for failure in failed[:10]:
        print(f"  failed: {failure}")
    assert groups_before >= {victim.pid, survivor.pid}, "both backends served before the kill"
    assert not failed
    assert survivor.process.poll() is None
    assert hostile.children(victim.pid) == set()
    # Whatever the first few requests after the kill met, the survivor takes the rest.
    assert served_by.get(survivor.pid, 0) >= len(after_kill) - CLIENTS
