"""The prefork master's decisions, with fake workers on socket pairs and a fake clock.

No process is forked and nothing sleeps: ``start_worker``, ``waitpid`` and
``kill`` are the pool's seams, a ``Fleet`` plays the workers (a socket pair
stands for each one's status pipe, the scoreboard is the real one), and the
test moves the clock.  ``turn()`` is one pass of the master's loop.
"""
import dataclasses
import errno
import logging
import os
import signal
import socket

import pytest

from runfcgi_compat.handover import State
from runfcgi_compat.servers import prefork
from runfcgi_compat.servers.prefork import PreforkPool
from runfcgi_compat.servers.scoreboard import BUSY, IDLE, STARTING
from runfcgi_compat.servers.worker import EXIT_BOOT_FAILED, EXIT_OK
from tests.unit.clock import FakeClock


class FakeHandler:
    def prepare_listener(self, sock):
        pass


def exited(code):
    """A wait status for a process that exited with ``code``."""
    return code << 8


class Fleet:
    """Workers that are only bookkeeping: the test says when each is ready,
    busy or gone."""

    def __init__(self, pool):
        self.pool = pool
        self.next_pid = 5000
        self.ends = {}  # pid -> our end of its status socket pair
        self.slots = {}  # pid -> slot
        self.statuses = []  # what waitpid(-1) returns next: (pid, status)
        self.signals = []  # (pid, signum), in order
        self.fork_error = None
        pool.start_worker = self.start
        pool.waitpid = self.waitpid
        pool.kill = self.kill

    def start(self, slot):
        if self.fork_error is not None:
            raise self.fork_error
        theirs, ours = socket.socketpair()
        theirs.setblocking(False)  # As the master makes its pipe ends.
        pid = self.next_pid
        self.next_pid += 1
        self.ends[pid] = ours
        self.slots[pid] = slot
        return pid, theirs.detach()  # The pool closes it, as a pipe's end.

    def waitpid(self, pid, options):
        for index, (done, _) in enumerate(self.statuses):
            if pid in (-1, done):
                return self.statuses.pop(index)
        if pid == -1 and options == os.WNOHANG:
            return 0, 0
        raise ChildProcessError(errno.ECHILD, "No child processes")

    def kill(self, pid, signum):
        self.signals.append((pid, signum))
        if signum == signal.SIGKILL and pid in self.ends:
            self.exit(pid, signal.SIGKILL)

    # -- what the workers do

    def ready(self, *pids):
        for pid in pids:
            self.pool.board.set(self.slots[pid], IDLE)
            self.ends[pid].send(b"R")
        self.pool._wait_for_events(watch_listen=False)  # Returns: something to read.

    def mark(self, state, *pids):
        for pid in pids:
            self.pool.board.set(self.slots[pid], state)

    def exit(self, pid, status):
        self.ends.pop(pid).close()
        self.statuses.append((pid, status))

    def close(self):
        for end in self.ends.values():
            end.close()

    def live(self):
        return sorted(self.pool.workers)


@pytest.fixture
def make_pool():
    made = []

    def make(minspare=1, maxspare=2, maxchildren=4, **attrs):
        pool = PreforkPool(FakeHandler(), load_app=None, minspare=minspare,
                           maxspare=maxspare, maxchildren=maxchildren)
        pool.clock = FakeClock()
        for name, value in attrs.items():
            setattr(pool, name, value)
        fleet = Fleet(pool)
        listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        pool.prepare(listen)
        made.append((pool, fleet, listen))
        return pool, fleet

    yield make
    for pool, fleet, listen in made:
        for worker in pool.workers.values():
            pool._close_status(worker)
        fleet.close()
        pool.keeper.close()
        pool._selector.close()
        pool._box.close()
        pool.board.close()
        listen.close()


def test_the_first_turn_starts_minspare_workers_and_counts_starting_ones_as_spare(make_pool):
    pool, fleet = make_pool(minspare=3, maxspare=4, maxchildren=8)
    pool.turn()
    assert len(pool.workers) == 3
    assert all(pool.board.get(slot) == STARTING for slot in fleet.slots.values())
    pool.turn()  # Still loading the app: spare already, nothing more to start.
    assert len(pool.workers) == 3


def test_a_shortage_grows_the_pool_in_doubling_bursts_up_to_maxchildren(make_pool):
    pool, fleet = make_pool(minspare=1, maxspare=1, maxchildren=20)
    started = []
    for _ in range(6):
        before = len(pool.workers)
        pool.turn()
        started.append(len(pool.workers) - before)
        fleet.mark(BUSY, *pool.workers)  # Every worker is taken at once.
    assert started == [1, 2, 4, 8, 5, 0]
    assert len(pool.workers) == 20


def test_the_burst_starts_again_from_one_after_a_settled_shortage(make_pool):
    pool, fleet = make_pool(minspare=1, maxspare=8, maxchildren=20)
    for _ in range(3):
        pool.turn()
        fleet.mark(BUSY, *pool.workers)
    assert len(pool.workers) == 7  # 1 + 2 + 4
    fleet.mark(IDLE, *pool.workers)
    pool.turn()
    pool.clock.now += pool.settle_time + 0.1
    pool.turn()  # The shortage is over: the next one starts small.
    fleet.mark(BUSY, *pool.workers)
    before = len(pool.workers)
    pool.turn()
    assert len(pool.workers) - before == 1


def test_surplus_idle_workers_retire_only_after_settle_time_longest_idle_first(make_pool):
    pool, fleet = make_pool(minspare=1, maxspare=2, maxchildren=6)
    for _ in range(3):
        pool.turn()
        fleet.mark(BUSY, *pool.workers)
    first, second, *rest = fleet.live()
    fleet.ready(*fleet.live())  # All idle: 4 spare, maxspare is 2.
    fleet.mark(BUSY, *rest)
    pool.turn()  # first and second idle from now.
    pool.clock.now += 0.5
    fleet.mark(IDLE, *rest)
    pool.turn()  # The others idle from now, half a settle_time later.
    assert fleet.signals == []
    pool.clock.now += pool.settle_time - 0.5
    pool.turn()
    assert fleet.signals == [(first, signal.SIGTERM), (second, signal.SIGTERM)]
    pool.clock.now += 0.5
    pool.turn()  # The rest have been idle long enough too: two more go.
    assert fleet.signals[2:] == [(rest[0], signal.SIGTERM), (rest[1], signal.SIGTERM)]
    pool.clock.now += pool.settle_time
    pool.turn()  # Retiring ones are not counted again: 2 idle left, no surplus.
    assert len(fleet.signals) == 4


def test_a_worker_that_fails_to_start_is_retried_with_a_growing_back_off(make_pool):
    pool, fleet = make_pool(minspare=1, maxspare=1, maxchildren=4,
                            first_boot_backoff=0.1, max_boot_backoff=0.5)
    pool.turn()
    delays = []
    for _ in range(5):
        (pid,) = fleet.live()
        fleet.exit(pid, exited(EXIT_BOOT_FAILED))
        failed_at = pool.clock.now
        pool.turn()
        assert fleet.live() == []  # Not at once.
        delay = pool._next_spawn_at - failed_at
        pool.clock.now = failed_at + delay - 0.001
        pool.turn()
        assert fleet.live() == []
        pool.clock.now = failed_at + delay
        pool.turn()
        assert len(fleet.live()) == 1  # One at a time: no burst of failures.
        delays.append(round(delay, 3))
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]
    # Once one starts, the next failure waits the first delay again.
    (pid,) = fleet.live()
    fleet.ready(pid)
    fleet.mark(BUSY, pid)
    pool.turn()
    new = max(fleet.live())
    fleet.exit(new, exited(EXIT_BOOT_FAILED))
    failed_at = pool.clock.now
    pool.turn()
    assert round(pool._next_spawn_at - failed_at, 3) == 0.1


def test_a_fork_that_fails_waits_the_first_back_off(make_pool, caplog):
    pool, fleet = make_pool(minspare=1, first_boot_backoff=0.1)
    fleet.fork_error = OSError(errno.EAGAIN, "Resource temporarily unavailable")
    pool.turn()
    assert fleet.live() == [] and pool.board.snapshot().count(b"\0") == pool.maxchildren
    assert "cannot start a worker: [Errno 11] Resource temporarily unavailable" in caplog.text
    fleet.fork_error = None
    pool.turn()
    assert fleet.live() == []
    pool.clock.now += 0.1
    pool.turn()
    assert len(fleet.live()) == 1


def test_a_worker_done_with_its_maxrequests_is_replaced_at_once(make_pool, caplog):
    pool, fleet = make_pool(minspare=1, maxspare=1, maxchildren=2, maxrequests=10)
    pool.turn()
    (pid,) = fleet.live()
    fleet.ready(pid)
    caplog.set_level(logging.DEBUG, logger="runfcgi_compat")
    fleet.exit(pid, exited(EXIT_OK))  # Served its 10 requests and drained.
    pool.turn()  # Same instant: no back-off, it was no failure.
    assert fleet.live() and pid not in fleet.live()
    assert f"worker {pid} exited after its maxrequests" in caplog.text
    assert "failed to start" not in caplog.text


def test_a_ready_worker_that_dies_is_replaced_at_once(make_pool, caplog):
    pool, fleet = make_pool(minspare=1, maxspare=1, maxchildren=2)
    pool.turn()
    (pid,) = fleet.live()
    fleet.ready(pid)
    fleet.exit(pid, signal.SIGKILL)
    pool.turn()
    assert fleet.live() and pid not in fleet.live()
    assert f"worker {pid} died (signal SIGKILL); replacing it" in caplog.text


def test_a_graceful_stop_waits_for_the_workers_then_kills_the_late_ones(make_pool):
    pool, fleet = make_pool(minspare=2, maxspare=2, maxchildren=4, graceful_timeout=30.0)
    pool.turn()
    first, second = fleet.live()
    pool._on_signal(signal.SIGTERM)
    assert fleet.signals == [(first, signal.SIGTERM), (second, signal.SIGTERM)]
    fleet.exit(first, exited(EXIT_OK))
    assert pool.turn() is False  # One still finishing its request.
    assert fleet.live() == [second]
    pool.clock.now += 30.0
    assert pool.turn() is None
    assert fleet.signals[-1] == (second, signal.SIGKILL)
    assert pool.workers == {}


# -- reload


class Reexec:
    """Stands in for reexec.start_probe and exec_master."""

    class Execed(Exception):
        pass

    def __init__(self, fleet):
        self.fleet = fleet
        self.probes = []
        self.execs = []

    def start_probe(self, cwd, blocked):
        pid = 9000 + len(self.probes)
        self.probes.append((pid, cwd))
        return pid

    def exec_master(self, state, workers, blocked):
        self.execs.append((state, sorted(workers)))
        raise self.Execed  # exec does not return; nor does the test's turn().

    def probe_ends(self, status):
        pid = self.probes[-1][0]
        self.fleet.statuses.append((pid, status))


@pytest.fixture
def reloading(make_pool, monkeypatch):
    pool, fleet = make_pool(minspare=1, maxspare=1, maxchildren=2)
    pool.reload_state = State(listen_fd=pool.listen_sock.fileno(), description="test",
                              cwd="/launch", workdir="/")
    fake = Reexec(fleet)
    monkeypatch.setattr(prefork.reexec, "start_probe", fake.start_probe)
    monkeypatch.setattr(prefork.reexec, "exec_master", fake.exec_master)
    pool.turn()
    return pool, fleet, fake


def test_a_reload_checks_the_new_code_then_restarts_the_master(reloading):
    pool, fleet, fake = reloading
    pool._on_signal(signal.SIGHUP)
    assert [cwd for _, cwd in fake.probes] == ["/launch"]
    fake.probe_ends(exited(0))
    with pytest.raises(Reexec.Execed):
        pool.turn()
    (state, workers), = fake.execs
    # The master's idle connections and their channel go across the exec too.
    assert (dataclasses.replace(state, idle=None), workers) == (pool.reload_state, fleet.live())
    assert len(state.idle["channel"]) == 2 and state.idle["conns"] == []


def test_a_sighup_during_the_check_queues_exactly_one_more(reloading, caplog):
    caplog.set_level(logging.INFO, logger="runfcgi_compat")
    pool, fleet, fake = reloading
    pool._on_signal(signal.SIGHUP)
    for _ in range(3):
        pool._on_signal(signal.SIGHUP)
    assert len(fake.probes) == 1
    fake.probe_ends(exited(0))
    pool.turn()  # This check passed, but the code may have changed since it began.
    assert len(fake.probes) == 2 and fake.execs == []
    fake.probe_ends(exited(0))
    with pytest.raises(Reexec.Execed):
        pool.turn()
    assert len(fake.probes) == 2 and len(fake.execs) == 1
    assert caplog.text.count("SIGHUP received during a reload") == 1


def test_a_queued_reload_runs_after_a_failed_check(reloading, caplog):
    pool, fleet, fake = reloading
    pool._on_signal(signal.SIGHUP)
    pool._on_signal(signal.SIGHUP)  # The code was fixed meanwhile.
    fake.probe_ends(exited(1))
    pool.turn()
    assert "checking again for the SIGHUP that came meanwhile" in caplog.text
    assert len(fake.probes) == 2
    fake.probe_ends(exited(0))
    with pytest.raises(Reexec.Execed):
        pool.turn()
    assert len(fake.execs) == 1


def test_a_failed_check_without_a_queued_reload_keeps_the_old_code(reloading, caplog):
    pool, fleet, fake = reloading
    pool._on_signal(signal.SIGHUP)
    fake.probe_ends(exited(1))
    pool.turn()
    assert len(fake.probes) == 1 and fake.execs == []
    assert "still serving the old code" in caplog.text
    pool._on_signal(signal.SIGHUP)  # The next SIGHUP starts a new check.
    assert len(fake.probes) == 2


def test_a_stop_during_the_check_kills_it_and_forgets_the_queue(reloading):
    pool, fleet, fake = reloading
    pool._on_signal(signal.SIGHUP)
    pool._on_signal(signal.SIGHUP)
    probe = fake.probes[-1][0]
    pool._on_signal(signal.SIGTERM)
    assert (probe, signal.SIGKILL) in fleet.signals
    fake.probe_ends(signal.SIGKILL)
    pool.turn()
    assert len(fake.probes) == 1 and fake.execs == []
