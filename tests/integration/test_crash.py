"""SIGKILL prefork workers under load: only the requests they held fail.

Four client threads keep four workers busy with short slow requests, one
connection per request (as nginx without ``fastcgi_keep_conn``).  While
they run, random workers are killed with SIGKILL.  A killed worker can take
down at most the one request it was serving, so at most one failure per
kill reaches the clients; the master replaces every killed worker and the
pool is back to at least ``minspare`` idle workers within seconds.
"""
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from runfcgi_compat import client
from tests.helpers import free_port
from tests.integration import hostile

REQUESTS = 300
CLIENTS = 4
KILLS = 3
MAXCHILDREN = 4
MINSPARE = 2
SEED = 20260601
REPLACE_BOUND = 10.0  # s: killed workers replaced, pool back to >= minspare


@pytest.mark.parametrize("protocol", ["fcgi", "ajp"])
def test_killed_workers_lose_only_the_requests_they_held(start_backend, tmp_path, protocol):
    address = ("127.0.0.1", free_port())
    errlog = tmp_path / "err.log"
    backend = start_backend(
        [f"protocol={protocol}", "method=prefork", "host=127.0.0.1", f"port={address[1]}",
         f"maxchildren={MAXCHILDREN}", f"maxspare={MAXCHILDREN}", f"minspare={MINSPARE}",
         f"errlog={errlog}", f"outlog={tmp_path / 'out.log'}"], address)
    pool = hostile.Pool(backend.pid, "prefork", MAXCHILDREN)
    rng = random.Random(SEED)

    def one(_):
        try:
            return client.request(address, protocol=protocol, path="/slow/20/",
                                  timeout=10).status
        except client.ClientError as exc:
            return exc

    killed, replace_times = [], []
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as clients:
        futures = [clients.submit(one, n) for n in range(REQUESTS)]
        for kill in range(1, KILLS + 1):
            # Spread the kills over the run: after 1/4, 2/4 and 3/4 of it.
            goal = REQUESTS * kill // (KILLS + 1)
            hostile.wait_until(lambda goal=goal: sum(f.done() for f in futures) >= goal, 60,
                               f"{goal} requests to finish")
            victims = sorted(hostile.children(backend.pid) - set(killed))
            assert victims, "no worker to kill"
            victim = rng.choice(victims)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            pool.workers()
            kill_at = time.monotonic()
            hostile.wait_until(
                lambda victim=victim: victim not in hostile.children(backend.pid)
                and len(hostile.children(backend.pid)) >= MINSPARE,
                REPLACE_BOUND, f"worker {victim} to be replaced")
            replace_times.append(time.monotonic() - kill_at)
        results = [future.result() for future in futures]
    elapsed = time.monotonic() - started

    failed = [result for result in results if result != 200]
    replaced_at = time.monotonic()
    hostile.wait_until(
        lambda: (len(hostile.children(backend.pid)) >= MINSPARE
                 and not hostile.children(backend.pid) & set(killed)),
        REPLACE_BOUND, f"the pool to be back to {MINSPARE}+ workers")
    replaced_in = time.monotonic() - replaced_at
    deaths = errlog.read_text().count("(signal SIGKILL); replacing it")
    print(f"crash: {protocol}/prefork {REQUESTS} requests by {CLIENTS} clients in "
          f"{elapsed:.1f} s, {len(killed)} workers SIGKILLed, {len(failed)} failed "
          f"(at most {KILLS}), each replaced within {max(replace_times):.2f} s, max workers "
          f"{pool.max_workers_seen}/{MAXCHILDREN}, pool back "
          f"to {len(hostile.children(backend.pid))} workers {replaced_in:.2f} s after the "
          f"load, master logged {deaths} replacements")
    for failure in failed:
        print(f"  failed: {failure}")
    assert backend.process.poll() is None, "the master died"
    # A request either fails below HTTP (its worker died) or succeeds.
    assert all(result == 200 for result in results if isinstance(result, int))
    assert len(failed) <= KILLS
    assert pool.max_workers_seen <= MAXCHILDREN
    assert deaths == KILLS
    assert client.request(address, protocol=protocol, path="/").status == 200
