"""Memory: what 4 prefork workers serving the bench site cost, against uWSGI.

Part of ``bench/run`` (``--only memory`` runs it alone); also on its own::

    bench/.venv/bin/python bench/memory.py [--rounds N] [--requests N]

Each round starts runfcgi prefork FastCGI with a fixed pool of 4 workers
and uWSGI's FastCGI server with ``--master --processes 4`` (built into the
bench venv: the same interpreter, Django and site), side by side, sends each
the same few hundred requests straight over FastCGI (8 at a time, a new
connection each), then sums PSS from ``/proc/<pid>/smaps_rollup`` over every
process of each (master and workers).  PSS counts a page shared by n
processes as 1/n in each, so the sum is what the server as a whole costs.
Both servers are sampled at the same moment, so the pages they share with
each other and with the rest of the machine (libc, libpython) are split
alike.  The target: runfcgi at most 0.9x uWSGI.  Then both are asked for
``/gc/`` (a full garbage collection) until every worker has run one, and
summed again: what any long-running worker comes to (shown, not a target).
"""
import contextlib
import json
import re
import socket
import statistics
import sys
import tempfile
import threading
import time

import bench

WORKERS = 4
REQUESTS = 400
CLIENTS = 8
# What the requests ask for: the hello view (it names the pid that served
# it), a view that returns JSON, and Django's 404 page.
PATHS = ["/", "/path/a/b/", "/", "/missing/"]
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Private_Clean", "Private_Dirty")
GOAL = 0.9
KEY = "memory"  # what --only must name to run this part


def smaps(pid):
    """The kB fields of /proc/<pid>/smaps_rollup we report, or None if it is gone."""
    found = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in FIELDS:
                    found[name] = int(rest.split()[0])
    except OSError:
        return None
    return found


def server_memory(backend):
    """Sum of every live process of ``backend``'s session, in KiB, and each one."""
    total = dict.fromkeys(FIELDS, 0)
    processes = []
    for pid in sorted(backend.pids()):
        fields = smaps(pid)
        if fields is None:
            continue
        for name in FIELDS:
            total[name] += fields.get(name, 0)
        processes.append({"pid": pid, "master": pid == backend.proc.pid,
                          "pss_kib": fields.get("Pss", 0),
                          "uss_kib": fields.get("Private_Clean", 0)
                          + fields.get("Private_Dirty", 0)})
    total["processes"] = len(processes)
    total["per_process"] = processes
    return total


def drive(port, requests=REQUESTS, clients=CLIENTS, paths=PATHS):
    """Send ``requests`` GETs over FastCGI, ``clients`` at a time; return what
    came back: {"ok", "failed", "pids"} (the pids the views named)."""
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0}
    pids = set()
    numbers = iter(range(requests))

    def client():
        while True:
            with lock:
                number = next(numbers, None)
            if number is None:
                return
            path = paths[number % len(paths)]
            try:
                with socket.create_connection((bench.HOST, port), 10) as sock:
                    sock.sendall(bench.fcgi_request_bytes(path))
                    answer = bench.fcgi_read_response(sock, 10)
            except OSError:
                answer = None
            with lock:
                if answer is None or b"Status: 5" in answer[:200]:
                    counts["failed"] += 1
                    continue
                counts["ok"] += 1
                found = re.search(rb"pid (\d+)", answer)
                if found:
                    pids.add(int(found.group(1)))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts | {"pids": sorted(pids)}


def collect_everywhere(port, workers, limit=400):
    """Ask for /gc/ until ``workers`` different workers have run it; return them."""
    pids = set()
    while len(pids) < workers and limit > 0:
        pids.update(drive(port, CLIENTS, paths=["/gc/"])["pids"])
        limit -= CLIENTS
    return sorted(pids)


def wait_for_workers(backend, count, timeout=60.0):
    """Wait until ``backend``'s session holds ``count`` processes; return True."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(backend.pids()) >= count:
            return True
        if backend.proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def backends():
    """The two servers, as bench.Backend objects (not yet started)."""
    env = bench.bench_env()
    cwd = str(bench.BENCH)
    runfcgi = bench.Backend("memory-runfcgi", "fcgi",
                            bench.runfcgi_argv("fcgi", "prefork", 0, pool=dict.fromkeys(
                                ("maxspare", "minspare", "maxchildren"), WORKERS)), env,
                            cwd=cwd)
    uwsgi = bench.Backend("memory-uwsgi", "fcgi",
                          lambda port: bench.uwsgi_argv(port, processes=WORKERS), env, cwd=cwd)
    return {"runfcgi": runfcgi, "uwsgi": uwsgi}


def one_round(procs, requests):
    """Start both servers, drive them alike, sample both, stop them."""
    servers = backends()
    try:
        for backend in servers.values():
            backend.start(procs)
        for name, backend in servers.items():
            if not backend.wait(procs) or not wait_for_workers(backend, WORKERS + 1):
                return {"error": f"{name}: {backend.error or 'workers did not start'}"}
        served = {name: drive(backend.port, requests) for name, backend in servers.items()}
        # Let the pools settle (a master notices idle workers within a second).
        time.sleep(1.5)
        sums = {name: server_memory(backend) for name, backend in servers.items()}
        # Then what a long-running worker comes to: its first full collection.
        collected = {name: collect_everywhere(backend.port, WORKERS)
                     for name, backend in servers.items()}
        time.sleep(1.5)
        after = {name: server_memory(backend) for name, backend in servers.items()}
    finally:
        for backend in servers.values():
            if backend.proc is not None:
                procs.stop(backend.proc)
    result = {}
    for name in servers:
        result[name] = sums[name] | {"served": served[name]}
        result[f"{name}_collected"] = after[name] | {"workers": collected[name]}
    result["ratio"] = bench.ratio(sums["runfcgi"]["Pss"], sums["uwsgi"]["Pss"])
    result["ratio_collected"] = bench.ratio(after["runfcgi"]["Pss"], after["uwsgi"]["Pss"])
    return result


def run(args, procs):
    """The memory target: ``rounds`` rounds; return the results for the JSON."""
    rounds = 2 if args.quick else 3
    out = []
    for number in range(rounds):
        bench.log(f"memory round {number + 1}/{rounds}: runfcgi prefork and uWSGI, "
                  f"{WORKERS} workers each, {REQUESTS} requests")
        res = one_round(procs, REQUESTS)
        if "error" in res:
            bench.log(f"memory: {res['error']}")
            return {"error": res["error"], "rounds": out}
        out.append(res)
        bench.log(f"memory: runfcgi {res['runfcgi']['Pss'] / 1024:.1f} MiB, "
                  f"uWSGI {res['uwsgi']['Pss'] / 1024:.1f} MiB PSS: {res['ratio']:.3f}x; "
                  f"after a full collection in each worker "
                  f"{res['runfcgi_collected']['Pss'] / 1024:.1f} and "
                  f"{res['uwsgi_collected']['Pss'] / 1024:.1f} MiB: "
                  f"{res['ratio_collected']:.3f}x")
    ratios = [r["ratio"] for r in out]
    return {
        "workers": WORKERS, "requests": REQUESTS,
        "runfcgi_pss_mib": statistics.median(r["runfcgi"]["Pss"] for r in out) / 1024,
        "uwsgi_pss_mib": statistics.median(r["uwsgi"]["Pss"] for r in out) / 1024,
        "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "collected_runfcgi_pss_mib": statistics.median(
            r["runfcgi_collected"]["Pss"] for r in out) / 1024,
        "collected_uwsgi_pss_mib": statistics.median(
            r["uwsgi_collected"]["Pss"] for r in out) / 1024,
        "collected_ratio": statistics.median(r["ratio_collected"] for r in out),
        "rounds": out,
    }


def check(memory):
    """(value, passed, detail, noisy) of the memory target; passed None: not measured."""
    if not memory or memory.get("error") or memory.get("ratio") is None:
        return None, None, (memory or {}).get("error", ""), False
    r = memory["ratio"]
    detail = (f"runfcgi {memory['runfcgi_pss_mib']:.1f} MiB, uWSGI "
              f"{memory['uwsgi_pss_mib']:.1f} MiB; rounds {memory['ratio_min']:.3f}-"
              f"{memory['ratio_max']:.3f}x")
    if memory.get("collected_ratio") is not None:
        detail += (f"; after a full collection in each worker {memory['collected_ratio']:.2f}x "
                   f"({memory['collected_runfcgi_pss_mib']:.1f} vs "
                   f"{memory['collected_uwsgi_pss_mib']:.1f} MiB)")
    noisy = memory["ratio_min"] <= GOAL < memory["ratio_max"]
    return r, r <= GOAL, detail, noisy


def print_memory(memory):
    if not memory:
        return
    print(f"Memory, {WORKERS} prefork workers vs uWSGI --processes {WORKERS} --master, "
          f"PSS summed over every process after {REQUESTS} requests:")
    if memory.get("error"):
        print(f"  {memory['error']}")
        return
    for number, res in enumerate(memory["rounds"], 1):
        line = []
        for name in ("runfcgi", "uwsgi"):
            s = res[name]
            master = next((p["pss_kib"] for p in s["per_process"] if p["master"]), 0)
            workers = [p["pss_kib"] for p in s["per_process"] if not p["master"]]
            line.append(f"{name} {s['Pss'] / 1024:6.1f} MiB (master {master / 1024:.1f}, "
                        f"workers {statistics.mean(workers) / 1024 if workers else 0:.1f} each,"
                        f" {len(s['served']['pids'])} served)")
        print(f"  round {number}: " + "; ".join(line) + f": {res['ratio']:.3f}x")
        print(f"    then a full collection in each worker: runfcgi "
              f"{res['runfcgi_collected']['Pss'] / 1024:.1f} MiB, uWSGI "
              f"{res['uwsgi_collected']['Pss'] / 1024:.1f} MiB: {res['ratio_collected']:.3f}x")


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="runfcgi-memory-")
    procs = bench.Processes(tmp)
    results = []
    try:
        for _ in range(args.rounds):
            res = one_round(procs, args.requests)
            results.append(res)
            if "error" in res:
                print(res["error"], file=sys.stderr)
                return 1
            print(json.dumps({
                name: {"pss_mib": round(res[name]["Pss"] / 1024, 2),
                       "uss_mib": round((res[name]["Private_Clean"]
                                         + res[name]["Private_Dirty"]) / 1024, 2),
                       "per_process_pss_mib": [round(p["pss_kib"] / 1024, 2)
                                               for p in res[name]["per_process"]],
                       "served_by": len(res[name]["served"]["pids"]),
                       "failed": res[name]["served"]["failed"]}
                for name in ("runfcgi", "uwsgi")} | {
                    "ratio": round(res["ratio"], 4),
                    "collected_pss_mib": {name: round(res[f"{name}_collected"]["Pss"] / 1024, 2)
                                          for name in ("runfcgi", "uwsgi")},
                    "collected_ratio": round(res["ratio_collected"], 4)}))
    finally:
        with contextlib.suppress(Exception):
            procs.stop_all()
    ratios = [r["ratio"] for r in results]
    print(f"ratio median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
