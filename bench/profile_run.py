"""Where runfcgi's time per request goes: py-spy stacks and strace syscall counts.

Run through ``bench/run --profile [--only KEYS]``.  For each server (runfcgi
prefork/threaded FastCGI, and uWSGI for the syscall comparison) it starts the
backend and one nginx, then under ``wrk -t1 -c8``:

1. ``py-spy record --subprocesses`` samples every process of the backend;
   the collapsed stacks are summed into the functions that use the most
   time, by self time and inclusive time;
2. ``strace -c -f`` on every process of the backend counts system calls,
   divided by the requests nginx got answered in that window (strace slows
   the server down, but not the number of calls per request).

Writes ``bench/results/profile-<time>/``: the raw stacks, strace's tables and
``summary.txt`` (also printed).
"""
import collections
import datetime
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import bench

PROFILED = {
    "runfcgi-prefork-fcgi": ("fcgi", lambda t: bench.runfcgi_argv("fcgi", "prefork", t)),
    "runfcgi-threaded-fcgi": ("fcgi", lambda t: bench.runfcgi_argv("fcgi", "threaded", t)),
    "runfcgi-prefork-fcgi-keep": ("fcgi", lambda t: bench.runfcgi_argv("fcgi", "prefork", t)),
    "runfcgi-threaded-fcgi-keep": ("fcgi", lambda t: bench.runfcgi_argv("fcgi", "threaded", t)),
    "runfcgi-prefork-scgi": ("scgi", lambda t: bench.runfcgi_argv("scgi", "prefork", t)),
    "uwsgi-fcgi": ("fcgi", lambda t: bench.uwsgi_argv),
    "flup-prefork-fcgi": ("fcgi", lambda t: bench.flup_argv("fcgi", "prefork", t)),
}
# Functions whose inclusive share the summary always lists, if sampled.
WATCHED = [
    "WSGIHandler.__call__",  # Django itself
    "ProtocolHandler.serve_request", "run_app", "ProtocolHandler.base_environ", "fix_environ",
    "FCGIConnection.process_input", "Connection.process_input", "Record.read",
    "FCGIConnection._check_version", "FCGIConnection.poll_for_abort", "FCGIConnection.flush",
    "FCGIConnection._close", "ProtocolHandler.linger_close", "ProtocolHandler.wait_for_data",
    "ProtocolHandler.serve_next", "ProtocolHandler.connect", "describe_peer", "wait_readable",
    "SignalBox.drain",
    "PreforkPool._worker_main.<locals>.report", "PreforkPool._wait_for_events",
    "PreforkPool._read_status", "PreforkPool._reap", "PreforkPool._adjust_pool.<locals>",
    "ThreadedPool._accept_loop", "ThreadedPool._dispatch", "ThreadedPool._worker",
    "Thread.start", "Condition.wait", "socket.accept",
]
DEFAULT = ["runfcgi-prefork-fcgi", "runfcgi-threaded-fcgi", "runfcgi-prefork-fcgi-keep",
           "uwsgi-fcgi"]


def context_switches(pids):
    """Voluntary + involuntary context switches of every thread of ``pids``."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt")):
                            total += int(line.split()[1])
            except OSError:
                continue
    return total


def summarize_stacks(path, top=15):
    """Return text: the heaviest functions by self and by inclusive samples."""
    self_count = collections.Counter()
    incl_count = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        # py-spy's raw format starts with the process/thread; drop those.
        frames = [f for f in frames if "(" in f]
        if not frames:
            continue
        total += n
        self_count[frames[-1]] += n
        for frame in set(frames):
            incl_count[frame] += n
    lines = [f"{total} samples"]
    # Inclusive share of the functions that matter for the per-request path
    # (matched by name; a function counted once per sample).
    by_name = collections.Counter()
    for frame, n in incl_count.items():
        by_name[frame.split(" (")[0]] += n
    lines.append("-- per-request path, inclusive")
    for name in WATCHED:
        if by_name.get(name):
            lines.append(f"{100 * by_name[name] / total:6.1f}%  {name}")
    for title, counter in (("self", self_count), ("inclusive", incl_count)):
        lines.append(f"-- top {top} by {title} time")
        for frame, n in counter.most_common(top):
            lines.append(f"{100 * n / total:6.1f}%  {frame}")
    return "\n".join(lines)


def parse_strace(path):
    """Return {syscall: calls} from an ``strace -c`` table."""
    calls = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
            try:
                # columns: % time, seconds, usecs/call, calls, [errors], syscall
                calls[parts[-1]] = int(parts[3])
            except ValueError:
                continue
    return calls


def run(args):
    keys = [k.strip() for k in (args.only.split(",") if args.only else DEFAULT) if k.strip()]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = bench.RESULTS / f"profile-{stamp}"
    out.mkdir(parents=True)
    tmp = tempfile.mkdtemp(prefix="runfcgi-profile-")
    procs = bench.Processes(tmp)
    env = bench.bench_env()
    seconds = max(4, int(args.seconds * 2))
    report = [f"profile of {stamp}: wrk -t1 -c{args.connections}, {seconds} s per tool"]
    try:
        targets = []
        for key in keys:
            protocol, argv = PROFILED[key]
            backend = bench.Backend(key, protocol, argv(args.threads), env, cwd=str(bench.BENCH))
            mode = "keep" if key.endswith("-keep") else "plain"
            targets.append(bench.Target(key, key, "runfcgi", backend, mode))
        for t in targets:
            t.backend.start(procs)
        for t in targets:
            t.backend.wait(procs)
        status_port = bench.free_port()
        bench.start_nginx(procs, tmp, targets, status_port)
        for t in targets:
            key = t.key
            err = bench.probe(t)
            if err:
                report.append(f"\n== {t.key}: not profiled ({err})")
                continue
            bench.run_wrk(t.url(), 1, args.connections)  # warm up
            report.append(f"\n== {t.key}")
            pids = t.backend.pids()
            report.append(f"processes: {len(pids)}")

            # Plain run: CPU per request without any tool attached.
            switches = context_switches(t.backend.pids())
            res = bench.measure_wrk(t, seconds, args.connections)
            switches = context_switches(t.backend.pids()) - switches
            served = max(1, res["requests"])
            report.append(f"no tool: {res['rps']:.0f} req/s, "
                          f"{res['cpu_s'] / served * 1e6:.0f} us CPU/request "
                          f"({res['cpu_sys_s'] / served * 1e6:.0f} us in the kernel), "
                          f"{switches / served:.1f} context switches/request")

            if not key.startswith("uwsgi"):
                # Two views: every sample (wall time, waiting included) and only
                # samples holding the GIL (Python code running on a CPU).
                for view, extra in (("wall", []), ("gil", ["--gil"])):
                    raw = out / f"{key}.pyspy-{view}.txt"
                    spy = subprocess.Popen(
                        [str(bench.VENV / "bin" / "py-spy"), "record", "--subprocesses",
                         "--format", "raw", "--rate", "250", "--duration", str(seconds),
                         "--output", str(raw), "--pid", str(t.backend.proc.pid)] + extra,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    time.sleep(0.5)
                    res = bench.run_wrk(t.url(), seconds, args.connections)
                    try:
                        _, err = spy.communicate(timeout=seconds + 30)
                    except subprocess.TimeoutExpired:
                        spy.kill()
                        err = "py-spy did not finish"
                    if raw.exists():
                        report.append(f"py-spy, {view} view ({res['requests'] / seconds:.0f} "
                                      "req/s while sampled):")
                        report.append(summarize_stacks(raw))
                    else:
                        report.append(f"py-spy failed: {err.strip()[-300:]}")

            table = out / f"{key}.strace.txt"
            argv = ["strace", "-c", "-f", "-o", str(table)]
            for pid in t.backend.pids():
                argv += ["-p", str(pid)]
            tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            offset = bench.log_size(t.access_log)
            res = bench.run_wrk(t.url(), seconds, args.connections)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
            bench.nginx_wait_idle(status_port)
            served = bench.nginx_outcome(t.access_log, offset)["ok"]
            calls = parse_strace(table) if table.exists() else {}
            report.append(f"strace: {served} requests answered while traced "
                          f"({res['requests'] / seconds:.0f} req/s)")
            if calls and served:
                total = sum(calls.values())
                report.append(f"  {total / served:.1f} syscalls per request:")
                for name, n in sorted(calls.items(), key=lambda kv: -kv[1])[:14]:
                    report.append(f"    {n / served:6.2f}  {name}")
    finally:
        procs.stop_all()
    text = "\n".join(report) + "\n"
    (out / "summary.txt").write_text(text)
    print(text)
    print(f"profile written to {out}")
    return 0
