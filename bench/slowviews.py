"""Slow views beside fast ones: the fast requests' p99 with and without kept connections.

Part of ``bench/run`` (``--only slow-views`` runs it alone).  Each set-up
serves the bench site behind an nginx of its own: runfcgi with
``maxchildren=8`` (prefork: at most 8 workers, threaded: 8 threads; the
spares as the defaults leave them), uWSGI with ``--processes 8``.  While it is measured:

* two clients loop on ``/slow/300/`` (a view that sleeps 300 ms), one request
  after another on kept HTTP connections, so two slow requests are in flight
  nearly all the time;
* four clients send ``GET /`` at a fixed pace, 100 requests a second in all.
  Each fast request's latency runs from the moment it was due, not from the
  moment it was sent, so a request held up behind a slow one also delays the
  same client's next ones, and those count too (wrk2's "corrected" latency).

The set-ups are measured in interleaved rounds after a warm-up each, and
the p99 is taken over every fast request of every round.  The target: with
``fastcgi_keep_conn on`` + ``keepalive 8`` the p99 is at most 2x the p99 of
the same server with plain FastCGI (a new connection per request); uWSGI,
which closes its FastCGI connections, is shown for reference.
"""
import http.client
import random
import signal
import threading
import time
from pathlib import Path

import bench

SLOW_PATH = "/slow/300/"
SLOW_CLIENTS = 2
SLOW_PAUSE = 0.05  # seconds, at most, between two slow requests of a client
FAST_CLIENTS = 8
FAST_RATE = 100.0  # fast requests per second, over all fast clients
WORKERS = 8
GOAL = 2.0
# key, label, method ("uwsgi" for the reference), nginx mode
SETUPS = [
    ("slow-runfcgi-prefork-keep", "runfcgi prefork keep_conn", "prefork", "keep"),
    ("slow-runfcgi-prefork", "runfcgi prefork", "prefork", "plain"),
    ("slow-runfcgi-threaded-keep", "runfcgi threaded keep_conn", "threaded", "keep"),
    ("slow-runfcgi-threaded", "runfcgi threaded", "threaded", "plain"),
    ("slow-uwsgi", f"uWSGI ({WORKERS} processes)", "uwsgi", "plain"),
]
KEY = "slow-views"  # what --only must name to run this part


def percentile(values, fraction):
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def load(port, seconds):
    """Run the slow and the paced fast clients against ``port`` for ``seconds``.

    Return {"fast_ms": [latencies], "fast_failed", "slow", "slow_failed"}.
    """
    stop_at = time.monotonic() + seconds + 0.5
    lock = threading.Lock()
    out = {"fast_ms": [], "fast_failed": 0, "slow": 0, "slow_failed": 0}

    def get(conn, path):
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status

    def slow_client(index):
        conn = http.client.HTTPConnection(bench.HOST, port, timeout=10)
        pause = random.Random(-1 - index)
        while time.monotonic() < stop_at:
            # A moment between two requests, as a client over a network
            # has: nginx then hands the next slow request whichever kept
            # connection is free, not always the one the last one used.
            time.sleep(pause.uniform(0, SLOW_PAUSE))
            try:
                ok = get(conn, SLOW_PATH) == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
            with lock:
                out["slow" if ok else "slow_failed"] += 1
        conn.close()

    # The fast clients start once the slow ones are in their first requests.
    start = time.monotonic() + 0.5
    rate = FAST_RATE / FAST_CLIENTS  # per client

    def fast_client(index):
        conn = http.client.HTTPConnection(bench.HOST, port, timeout=10)
        pace = random.Random(index)
        due = start + pace.expovariate(rate)
        latencies, failed = [], 0
        while due < stop_at:
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                ok = get(conn, "/") == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
            if ok:
                latencies.append((time.monotonic() - due) * 1000)
            else:
                failed += 1
            due += pace.expovariate(rate)
        conn.close()
        with lock:
            out["fast_ms"] += latencies
            out["fast_failed"] += failed

    threads = [threading.Thread(target=slow_client, args=(i,)) for i in range(SLOW_CLIENTS)]
    threads += [threading.Thread(target=fast_client, args=(i,)) for i in range(FAST_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def burst(target):
    """One second of ``wrk -c16``, as any busy site has now and then: nginx
    opens more connections than it keeps, and keeps 8 of them."""
    bench.run_wrk(target.url(), 1, 16)


def build():
    """The backends and nginx targets of this part (not started)."""
    env = bench.bench_env()
    cwd = str(bench.BENCH)
    targets = []
    for key, label, method, mode in SETUPS:
        if method == "uwsgi":
            argv = lambda port: bench.uwsgi_argv(port, processes=WORKERS)  # noqa: E731
        else:
            # The pool as a user sets it: maxchildren, the spares left as they are.
            argv = bench.runfcgi_argv("fcgi", method, WORKERS, pool={"maxchildren": WORKERS})
        backend = bench.Backend(key, "fcgi", argv, env, cwd=cwd)
        targets.append(bench.Target(key, label, "slow-views", backend, mode))
    return targets


def run(args, procs, tmp):
    """Measure every set-up; return the results for the JSON (by key)."""
    rounds, seconds, warmup = (2, 5, 2) if args.quick else (3, 6, 2)
    tmp = Path(tmp)
    tmp.mkdir(exist_ok=True)
    targets = build()
    for t in targets:
        t.backend.start(procs)
    for t in targets:
        if not t.backend.wait(procs):
            t.error = t.backend.error
    live = [t for t in targets if t.error is None]
    nginx = bench.start_nginx(procs, tmp, live, None)
    samples = {t.key: [] for t in targets}
    per_round = {t.key: [] for t in targets}
    counts = {t.key: {"fast_failed": 0, "slow": 0, "slow_failed": 0} for t in targets}
    try:
        for t in live:
            err = bench.probe(t)
            if err:
                t.error = f"GET / through nginx: {err}"
        live = [t for t in live if t.error is None]
        bench.log(f"slow views beside fast ones: warming up {len(live)} set-ups "
                  f"({warmup + 1} s each), then rounds of {seconds + 1} s")
        for t in live:
            burst(t)
            load(t.port, warmup)
        for rnd in range(rounds):
            shift = rnd % max(1, len(live))
            for t in live[shift:] + live[:shift]:
                # Each round from a new spread of nginx's kept connections
                # over the workers, not from the one the last round left.
                burst(t)
                res = load(t.port, seconds)
                samples[t.key] += res["fast_ms"]
                per_round[t.key].append(percentile(res["fast_ms"], 0.99))
                for name in counts[t.key]:
                    counts[t.key][name] += res[name]
                bench.log(f"round {rnd + 1}/{rounds} {t.label:<30} fast p99 "
                          f"{bench.fmt(per_round[t.key][-1], '.1f')} ms, "
                          f"{len(res['fast_ms'])} fast, {res['slow']} slow"
                          + (f", {res['fast_failed'] + res['slow_failed']} failed"
                             if res["fast_failed"] + res["slow_failed"] else ""))
    finally:
        for t in targets:
            if t.backend.proc is not None:
                procs.stop(t.backend.proc)
        procs.stop(nginx, signal.SIGQUIT)
    results = {}
    for t in targets:
        fast = samples[t.key]
        if t.error or not fast:
            results[t.key] = {"label": t.label, "error": t.error or "no fast request answered"}
            continue
        results[t.key] = {
            "label": t.label, "fast_requests": len(fast),
            "p50_ms": percentile(fast, 0.50), "p99_ms": percentile(fast, 0.99),
            "max_ms": max(fast), "p99_by_round_ms": per_round[t.key], **counts[t.key],
        }
    return {"rounds": rounds, "seconds": seconds, "fast_rate": FAST_RATE,
            "slow_clients": SLOW_CLIENTS, "workers": WORKERS, "setups": results}


def check(slow, method):
    """(value, passed, detail, noisy) for ``method``'s target; passed None: not measured."""
    setups = (slow or {}).get("setups", {})
    keep = setups.get(f"slow-runfcgi-{method}-keep", {})
    plain = setups.get(f"slow-runfcgi-{method}", {})
    if "p99_ms" not in keep or "p99_ms" not in plain:
        return None, None, keep.get("error") or plain.get("error") or "", False
    r = bench.ratio(keep["p99_ms"], plain["p99_ms"])
    rounds = [bench.ratio(a, b) for a, b in zip(keep["p99_by_round_ms"],
                                                   plain["p99_by_round_ms"], strict=False)]
    rounds = [x for x in rounds if x is not None]
    detail = f"p99 {keep['p99_ms']:.1f} ms with keep_conn, {plain['p99_ms']:.1f} ms without"
    uwsgi = setups.get("slow-uwsgi", {})
    if "p99_ms" in uwsgi:
        detail += f", uWSGI {uwsgi['p99_ms']:.1f} ms"
    if rounds:
        detail += f"; rounds {min(rounds):.2f}-{max(rounds):.2f}x"
    noisy = bool(rounds) and min(rounds) <= GOAL < max(rounds)
    return r, r <= GOAL, detail, noisy


def print_slow(slow):
    if not slow:
        return
    print(f"Fast requests ({slow['fast_rate']:.0f}/s) beside {slow['slow_clients']} clients "
          f"looping on {SLOW_PATH}, {slow['workers']} workers/threads, "
          f"{slow['rounds']} round(s) x {slow['seconds']:g} s:")
    for res in slow["setups"].values():
        if "error" in res:
            print(f"  {res['label']:<30} {res['error'].splitlines()[0]}")
            continue
        by_round = ", ".join(bench.fmt(x, ".1f") for x in res["p99_by_round_ms"])
        failed = res["fast_failed"] + res["slow_failed"]
        print(f"  {res['label']:<30} p50 {res['p50_ms']:6.1f} ms  p99 {res['p99_ms']:6.1f} ms "
              f"(rounds {by_round})  max {res['max_ms']:6.1f} ms  {res['fast_requests']} fast, "
              f"{res['slow']} slow" + (f", {failed} failed" if failed else ""))
