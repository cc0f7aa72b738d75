"""Soak: wrk at full load through nginx against prefork with worker recycling.

``maxrequests=500`` makes every worker exit and be replaced every few
seconds under load; nginx must never see a failed request while that
happens, and the memory of master plus workers must stay flat.  The run
lasts ``RUNFCGI_SOAK_SECONDS`` (20 by default, to fit the CI budget).
"""
import os
import re
import subprocess
import time

import pytest

from runfcgi_compat import frontends as conf
from tests.helpers import free_port
from tests.integration import hostile
from tests.integration.conftest import require_binary
from tests.integration.nginx_cluster import nginx_front  # noqa: F401

SECONDS = int(os.environ.get("RUNFCGI_SOAK_SECONDS", "20"))
MAXREQUESTS = 500
MAXCHILDREN = 4
CONNECTIONS = 8
MIB = 1024


def parse_wrk(text):
    """Return wrk's figures: requests, requests/s, non-2xx/3xx, socket errors."""
    def number(pattern, default=0.0):
        match = re.search(pattern, text)
        return float(match.group(1)) if match else default

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                       r"timeout (\d+)", text)
    return {
        "requests": int(number(r"(\d+) requests in")),
        "rate": number(r"Requests/sec:\s+([\d.]+)"),
        "non_2xx": int(number(r"Non-2xx or 3xx responses: (\d+)")),
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
        "socket_errors_text": errors.group(0) if errors else "",
    }


@pytest.mark.slow
def test_soak_through_nginx_with_recycling(start_backend, nginx_front,  # noqa: F811
                                           tmp_path):
    wrk = require_binary("wrk")
    require_binary("nginx")
    address = ("127.0.0.1", free_port())
    backend = start_backend(
        ["protocol=fcgi", "method=prefork", "host=127.0.0.1", f"port={address[1]}",
         f"maxchildren={MAXCHILDREN}", f"maxspare={MAXCHILDREN}", "minspare=2",
         f"maxrequests={MAXREQUESTS}", f"errlog={tmp_path / 'err.log'}",
         f"outlog={tmp_path / 'out.log'}"], address)
    nginx, port = nginx_front(tmp_path, lambda listen: conf.nginx(
        "fcgi", *address, listen=listen))
    pool = hostile.Pool(backend.pid, "prefork", MAXCHILDREN)
    url = f"http://127.0.0.1:{port}/"

    # Warm up: every worker has served (and grown to its working size).
    warm = subprocess.run([wrk, "-t1", f"-c{CONNECTIONS}", "-d1s", url],
                          capture_output=True, text=True, timeout=30)
    assert parse_wrk(warm.stdout)["requests"] > 0, warm.stdout + warm.stderr
    rss_start = pool.total_rss_kib()

    workers_seen, samples = set(), []
    # wrk counts a response slower than its --timeout (2 s by default) as a
    # socket error: a latency threshold, which a loaded CI machine crosses
    # now and then.  What must not happen is a request that fails.
    run = subprocess.Popen([wrk, "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout",
                            "20s", url],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + SECONDS + 30
        while run.poll() is None:
            # Sampling, not synchronisation: wrk's own -d ends the run.
            workers_seen |= hostile.children(backend.pid)
            samples.append(pool.total_rss_kib())
            pool.workers()
            assert time.monotonic() < deadline, "wrk did not finish"
            time.sleep(0.5)
        rss_end = pool.total_rss_kib()
        out, err = run.communicate()
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    figures = parse_wrk(out)
    print(f"soak: {SECONDS} s of wrk -c{CONNECTIONS} through nginx, fcgi/prefork "
          f"maxchildren={MAXCHILDREN} maxrequests={MAXREQUESTS}: {figures['requests']} "
          f"requests, {figures['rate']:.0f} req/s, non-2xx {figures['non_2xx']}, socket "
          f"errors {figures['socket_errors']}; {len(workers_seen)} worker processes used "
          f"(recycling), max {pool.max_workers_seen} at once; RSS master+workers start "
          f"{rss_start / MIB:.1f} MiB, peak {max(samples, default=0) / MIB:.1f} MiB, end "
          f"{rss_end / MIB:.1f} MiB")
    assert run.returncode == 0, err
    assert figures["requests"] > 0, out
    assert "Non-2xx or 3xx responses" not in out, out
    assert "Socket errors" not in out, out
    assert backend.process.poll() is None, "the master died"
    assert pool.max_workers_seen <= MAXCHILDREN
    # maxrequests really recycled workers during the run.
    assert len(workers_seen) > MAXCHILDREN
    assert rss_end <= rss_start * 1.5 + 20 * MIB
