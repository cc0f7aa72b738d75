"""The prefork pool: a master process supervising worker processes.

Replaces flup's ``PreforkServer``, whose master slept in ``select()``
through SIGTERM (PEP 475), compared status bytes with a str (so every
worker looked idle and the pool never grew past maxspare), died on
SIGUSR1, ended on SIGHUP, and let every worker return through the
caller's stack.

How it works:

* Workers ``accept()`` on the shared listening socket (non-blocking, after
  a poll that also watches the worker's stop notice) and serve one
  connection at a time with the protocol handler (see ``worker.py``).
* Each worker keeps its state in a shared ``Scoreboard``: idle, busy,
  holding a connection with no request in it, stalled on its peer.  It
  writes to its pipe to the master only when the master must act, so a
  request costs the master nothing.
* A worker keeps one idle connection (kept, or fresh and silent): the one
  it has just served.  Before it serves anything else it passes that one
  to the master, which watches all of them and passes each back to the
  free workers once its next request arrives (``idle.py``).  So a request
  on an idle connection never waits for another request to end, kept
  connections never starve new ones, and none pins a worker.
* The master keeps between ``minspare`` and ``maxspare`` idle workers and
  never more than ``maxchildren`` in all.  While demand outruns the spares
  it starts workers in doubling bursts (1, 2, 4, ...); surplus workers are
  retired once they have been idle for ``settle_time``.  It sleeps in one
  selector on the worker pipes, a signal wake-up fd and the idle
  connections, so signals act at once.
* When every one of ``maxchildren`` workers is stuck in a request whose
  peer stopped sending, the master refuses (accepts and closes) new
  connections, so the web server answers them at once (or tries another
  backend) instead of holding them until an idle timeout frees a worker.
  Workers busy in the application are never a reason to refuse.
* Workers are forked from a master that has loaded the app (the runner
  loads it to report errors in the terminal); a reload re-executes the
  master, so their code is always the code the master last loaded.

Signals to the master:

* SIGTERM, SIGINT: graceful stop.  Workers finish the request they hold and
  exit; idle ones exit at once.  After ``graceful_timeout`` seconds (or a
  second SIGTERM/SIGINT) the rest are killed.  ``serve()`` then returns.
* SIGHUP: graceful reload with new code.  When started by the runner
  (``reload_state`` set), the master checks that the new code loads in a
  fresh interpreter, then re-executes itself in place (same pid, same
  listening socket; see ``reexec.py``); the new image starts new workers
  and retires the old ones once the first new one is ready.  If the new
  code does not load, one ERROR line is logged and the old workers go on
  serving.  A SIGHUP during the check queues one more check, run when it
  ends (the code may have changed after it began); the master restarts
  only after a check that began after the last SIGHUP.  Without
  ``reload_state`` (the pool used on its own) every worker is replaced and
  the new ones load the app again after fork.
  Either way an old worker passes its idle connection to the master and
  exits: kept connections stay open across the reload (closing one races
  with the next request, which nginx retries for GET but not for POST), and
  the new workers serve their next requests.  Across the exec the master
  keeps its idle connections and the channel (``IdleKeeper.reexec_state``);
  requests that arrive on them meanwhile wait until the new image runs.
* SIGUSR1: reopen log files, in the master and every worker.
* SIGCHLD: wakes the master to replace dead workers.  Workers that die
  before they are ready (the app failed to load) are replaced with an
  exponential back-off up to ``max_boot_backoff`` seconds.

If the master dies, its workers let go of the listening socket at once and
finish what they hold (``orphan.py``), so a new master can bind at once.

Workers never return into the caller's stack: they end with ``os._exit``.

For tests, ``prepare()`` and ``turn()`` run the master's loop one pass at a
time, and ``clock``, ``waitpid``, ``kill`` and ``start_worker`` can be
replaced (a fake clock, fake workers on socket pairs).
"""
import dataclasses
import functools
import os
import selectors
import signal
import time

from . import memory, orphan, reexec
from .base import flush_std_streams, log
from .idle import RESERVED_FDS, IdleKeeper
from .scoreboard import FREE, IDLE, STALLED, STARTING, Scoreboard
from .signals import STOP_SIGNALS, SignalBox, reopen_logs
from .worker import EXIT_ERROR, EXIT_OK, WorkerProcess

MASTER_SIGNALS = STOP_SIGNALS + (signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


class Worker:
    """The master's record of one worker process."""

    def __init__(self, pid, status_fd, slot):
        self.pid = pid
        self.status_fd = status_fd
        self.slot = slot  # None: not ours to watch (adopted after a reload)
        self.retiring = False  # Asked to stop (shrink, reload or stop).
        self.ever_ready = False
        self.idle_since = None  # When the master first saw it idle.

    def __repr__(self):
        return f"<Worker {self.pid} slot {self.slot}{' retiring' if self.retiring else ''}>"


class PreforkPool:
    # Seconds the master waits for busy workers after SIGTERM before it
    # kills them.
    graceful_timeout = 30.0
    # Longest pause between two attempts to start a worker that keeps
    # failing at start-up.
    max_boot_backoff = 5.0
    first_boot_backoff = 0.1
    # Most workers started in one go when the pool runs short of idle ones;
    # the burst doubles while the shortage lasts.
    max_spawn_burst = 32
    # Seconds a surplus worker stays idle before it is retired, and a
    # shortage must be over before the spawn burst resets.
    settle_time = 1.0
    # Seconds the new code may take to load in a reload's check before the
    # reload is given up.
    probe_timeout = 120.0
    # The master's clock and its system calls on children: seams for tests
    # (a fake clock, fake workers on socket pairs).
    clock = staticmethod(time.monotonic)
    waitpid = staticmethod(os.waitpid)
    kill = staticmethod(os.kill)

    def __init__(self, handler, load_app, *, maxspare, minspare, maxchildren,
                 maxrequests=0, on_reopen_logs=None):
        self.handler = handler
        self.load_app = load_app
        self.maxspare = maxspare
        self.minspare = min(minspare, maxspare)
        self.maxchildren = maxchildren
        self.maxrequests = maxrequests
        self.on_reopen_logs = on_reopen_logs
        self.workers = {}  # pid -> Worker
        self.listen_sock = None
        self.board = None
        self.master_pid = None
        # Set by the runner: what a reload hands to the master's new image
        # (see reexec.exec_master); None: reload by replacing workers only.
        self.reload_state = None
        self._adopted = {}  # pid -> Worker: an earlier image's workers
        self._adopted_idle = None  # The previous image's idle connections.
        self._probe_pid = None
        self._probe_deadline = None
        # A SIGHUP came while a reload's check ran: check again after it.
        self._reload_queued = False
        # Start a worker in ``slot``; return (pid, fd of its status pipe).
        self.start_worker = self._fork_worker
        self._selector = None
        self.keeper = None

    def adopt(self, pids, idle=None):
        """Take over workers started by this master's previous image (a
        reload): they are reaped here and retired once a new worker is ready.
        ``idle``: its idle connections (``IdleKeeper.reexec_state``)."""
        self._adopted_idle = idle
        for pid in pids:
            worker = Worker(pid, None, None)
            worker.ever_ready = True  # They served: an exit is no boot failure.
            self._adopted[pid] = worker

    # -- master --------------------------------------------------------------

    def serve(self, listen_sock):
        """Run the pool on ``listen_sock`` until a graceful stop; return None."""
        was_blocking = listen_sock.getblocking()
        self.prepare(listen_sock)
        # Before our handlers: the warm-up forks a child of its own.
        memory.share_with_workers(self.handler)
        self._box.install()
        # After a reload the previous image blocked these across exec so
        # that none was lost; pending ones arrive now, handled.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
        try:
            self._run()
        finally:
            if self.workers or self._adopted:  # Only after an unexpected error.
                self._kill_all()
            self._box.restore()
            self.keeper.close()
            self._selector.close()
            self._box.close()
            self.board.close()
            listen_sock.setblocking(was_blocking)

    def prepare(self, listen_sock):
        """Set up the master's state for ``listen_sock`` (no signal handlers,
        no workers yet): the first step of ``serve``, and where tests start."""
        self.listen_sock = listen_sock
        self.master_pid = os.getpid()
        self.board = Scoreboard(self.maxchildren)
        self._box = SignalBox(MASTER_SIGNALS)
        self._stopping = False
        self._force = False
        self._deadline = None
        self._boot_failures = 0
        self._next_spawn_at = 0.0
        self._burst = 1
        self._last_shortage = 0.0
        self._refusing = 0  # Connections refused in the current episode.
        # Workers poll, then accept; only one wins each connection, the
        # others must get EAGAIN instead of blocking.
        listen_sock.setblocking(False)
        self.handler.prepare_listener(listen_sock)
        # One selector for everything the master waits on; each key's data
        # is what to do when it is readable (see _wait_for_events).
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._box, selectors.EVENT_READ, _wake)
        self._listen_watched = False
        # Descriptors besides idle connections: a pipe to every worker, and more.
        reserved = RESERVED_FDS + self.maxchildren
        if self._adopted_idle is None:
            self.keeper = IdleKeeper(self._selector, self.handler, clock=self.clock,
                                     reserved=reserved)
        else:
            self.keeper = IdleKeeper.adopt(self._adopted_idle, self._selector, self.handler,
                                           clock=self.clock, reserved=reserved)

    def _run(self):
        while True:
            watch_listen = self.turn()
            if watch_listen is None:
                return
            self._wait_for_events(watch_listen)

    def turn(self):
        """One turn of the master's loop, without waiting: act on signals,
        reap, keep the pool in shape.  Return None when ``serve`` must end,
        else whether to watch the listening socket while waiting."""
        for signum in self._box.drain():
            self._on_signal(signum)
        self._reap()
        self._check_probe()
        if self._stopping:
            if not self.workers and not self._adopted:
                log.info("prefork: all workers stopped")
                return None
            if self._force or self.clock() >= self._deadline:
                self._kill_all()
                return None
            return False
        self._adjust_pool()
        return self._refuse_if_stuck()

    def _wait_for_events(self, watch_listen):
        """Sleep until a signal, a worker's word or the next maintenance;
        meanwhile pass idle connections on (the keeper's work needs no turn
        of the master's loop)."""
        now = self.clock()
        if self._stopping:
            end = self._deadline
        else:
            end = self._next_wakeup(now)
        # A ceiling: workers do not report going idle, so the master looks
        # at the scoreboard at least this often (and after a coalesced SIGCHLD).
        end = now + 1.0 if end is None else min(end, now + 1.0)
        if watch_listen != self._listen_watched:
            self._listen_watched = watch_listen
            if watch_listen:
                self._selector.register(self.listen_sock, selectors.EVENT_READ, _wake)
            else:
                self._selector.unregister(self.listen_sock)
        keeper = self.keeper
        while True:
            until = end
            expiry = keeper.next_deadline()
            if expiry is not None:
                until = min(until, expiry)
            turn = False
            for key, _ in self._selector.select(max(0.0, until - now)):
                turn = key.data() or turn
            now = self.clock()
            keeper.expire(now)
            if turn or now >= end:
                return

    def _on_signal(self, signum):
        if signum in STOP_SIGNALS:
            if self._stopping:
                log.warning("prefork: second stop signal; killing the workers")
                self._force = True
            else:
                self._begin_stop(signum)
        elif signum == signal.SIGHUP:
            if not self._stopping:
                self._reload()
        elif signum == signal.SIGUSR1:
            self._reopen_logs()
            for worker in list(self.workers.values()) + list(self._adopted.values()):
                self._signal(worker, signal.SIGUSR1)

    def _begin_stop(self, signum):
        log.info("prefork: %s received; stopping %d workers gracefully",
                 signal.Signals(signum).name, len(self.workers))
        self._stopping = True
        self._deadline = self.clock() + self.graceful_timeout
        # Before the workers hear of it: fresh connections the master keeps
        # must be in the channel when they look there on their way out.
        self.keeper.stop()
        if self._probe_pid is not None:
            self._signal_pid(self._probe_pid, signal.SIGKILL)
        for worker in list(self.workers.values()) + list(self._adopted.values()):
            # Every worker, even one already draining after a reload.
            worker.retiring = True
            self._signal(worker, signal.SIGTERM)

    def _reload(self):
        if self.reload_state is None:
            self._replace_workers()
        elif self._probe_pid is not None:
            # The code may have changed after the check started: check again
            # once it ends (one more check, however many SIGHUPs come).
            if not self._reload_queued:
                log.info("prefork: SIGHUP received during a reload; the new code will "
                         "be checked again when the current check ends")
            self._reload_queued = True
        else:
            log.info("prefork: SIGHUP received; checking that the new code loads")
            self._start_probe()

    def _start_probe(self):
        self._probe_pid = reexec.start_probe(self.reload_state.cwd, MASTER_SIGNALS)
        self._probe_deadline = self.clock() + self.probe_timeout

    def _replace_workers(self):
        log.info("prefork: SIGHUP received; replacing %d workers", len(self.workers))
        for worker in self.workers.values():
            # SIGHUP, not SIGTERM: finish gently (see worker._finish).
            self._retire(worker, signal.SIGHUP)
        # Fresh code deserves a fresh start: forget old start-up failures.
        self._boot_failures = 0
        self._next_spawn_at = 0.0

    def _check_probe(self):
        if self._probe_pid is not None and self.clock() > self._probe_deadline:
            self._signal_pid(self._probe_pid, signal.SIGKILL)  # Reaped as a failure.

    def _probe_done(self, status):
        self._probe_pid = None
        queued, self._reload_queued = self._reload_queued, False
        code = os.waitstatus_to_exitcode(status)
        if self._stopping:
            return
        if code != 0:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
            log.error("prefork: reload cancelled: the new code does not load (check "
                      "exited with %s; its error is above); %s", how,
                      "checking again for the SIGHUP that came meanwhile" if queued
                      else "still serving the old code")
        if queued:
            # Whatever this check found, the code on disk may have changed
            # since it started: restart only after a check that began after
            # the last SIGHUP.
            if code == 0:
                log.info("prefork: the new code loads, but a SIGHUP came during the "
                         "check; checking again")
            self._start_probe()
            return
        if code != 0:
            return
        log.info("prefork: the new code loads; restarting the master in place (pid %d)",
                 os.getpid())
        workers = list(self.workers) + list(self._adopted)
        state = dataclasses.replace(self.reload_state, idle=self.keeper.reexec_state()["idle"])
        self._box.restore()
        reexec.exec_master(state, workers, MASTER_SIGNALS)
        self._box.install()  # Only reached when exec failed.
        self.keeper.reexec_failed()

    def _retire_adopted(self):
        """A new worker is ready: the previous image's workers finish and go."""
        if self._adopted:
            log.info("prefork: new workers are ready; %d old workers finish their work",
                     len(self._adopted))
        for worker in self._adopted.values():
            self._retire(worker, signal.SIGHUP)

    def _reopen_logs(self):
        reopen_logs(self.on_reopen_logs, "prefork")

    def _kill_all(self):
        everyone = {**self._adopted, **self.workers}
        if everyone:
            log.warning("prefork: killing %d workers that did not stop in time: %s",
                        len(everyone), ", ".join(str(p) for p in everyone))
        for worker in everyone.values():
            self._signal(worker, signal.SIGKILL)
        for pid, worker in everyone.items():
            try:
                self.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self._forget(worker)

    # -- pool accounting

    def _state(self, worker):
        return None if worker.slot is None else self.board.get(worker.slot)

    def _adjust_pool(self):
        now = self.clock()
        current = [w for w in self.workers.values() if not w.retiring]
        idle = []
        starting = 0
        for worker in current:
            state = self._state(worker)
            if state == IDLE:
                if worker.idle_since is None:
                    worker.idle_since = now
                idle.append(worker)
            else:
                worker.idle_since = None
                starting += state == STARTING
        spare = len(idle) + starting
        if spare < self.minspare:
            self._last_shortage = now
            room = self.maxchildren - len(self.workers)
            if room > 0 and now >= self._next_spawn_at:
                count = min(room, max(self.minspare - spare, self._burst))
                # Demand that outruns the spare workers grows the next burst
                # (1, 2, 4, ...) so a queue of slow requests is met quickly;
                # a fork that fails resets it (see _spawn).
                self._burst = min(self._burst * 2, self.max_spawn_burst)
                for _ in range(count):
                    self._spawn()
        elif now - self._last_shortage > self.settle_time:
            self._burst = 1
        # Shrink only workers idle for settle_time: a worker that has just
        # finished a request during a burst is likely needed again, and
        # killing it would only mean forking (and loading the app) anew.
        surplus = len(idle) - self.maxspare
        if surplus > 0:
            idle.sort(key=lambda w: w.idle_since)
            for worker in idle[:surplus]:
                if now - worker.idle_since >= self.settle_time:
                    self._retire(worker)

    def _next_wakeup(self, now):
        """When pool maintenance must run next without any event; None: never."""
        times = []
        if self._probe_deadline is not None and self._probe_pid is not None:
            times.append(self._probe_deadline)
        if self._next_spawn_at > now:
            times.append(self._next_spawn_at)
        idle = [w.idle_since for w in self.workers.values()
                if w.idle_since is not None and not w.retiring]
        if len(idle) > self.maxspare:
            times.append(min(idle) + self.settle_time)
        return min(times) if times else None

    def _all_stalled(self):
        """True when maxchildren workers all wait on peers that stopped sending."""
        if len(self.workers) < self.maxchildren:
            return False  # There is room to start a worker instead.
        states = self.board.snapshot().replace(FREE, b"")
        return bool(states) and states.count(STALLED) == len(states)

    def _refuse_if_stuck(self):
        """Refuse waiting connections while every worker is stuck on a stalled
        peer; return True to keep watching the listening socket."""
        if not self._all_stalled():
            if self._refusing:
                log.info("prefork: a worker is free again after %d connections "
                         "were refused", self._refusing)
                self._refusing = 0
            return False
        while self._all_stalled():
            try:
                conn, _ = self.listen_sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # Whatever it is, the workers will meet it too.
            if not self._refusing:
                log.warning("prefork: all %d workers wait on peers that stopped sending; "
                            "refusing new connections", self.maxchildren)
            self._refusing += 1
            conn.close()
        return True

    def _retire(self, worker, signum=signal.SIGTERM):
        if not worker.retiring:
            worker.retiring = True
            self._signal(worker, signum)

    def _signal(self, worker, signum):
        self._signal_pid(worker.pid, signum)

    def _signal_pid(self, pid, signum):
        try:
            self.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _on_status(self, fd):
        self._read_status(fd)
        return True  # Look at the scoreboard now.

    def _read_status(self, fd):
        worker = next((w for w in self.workers.values() if w.status_fd == fd), None)
        if worker is None:
            return
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            # Any word from a worker means its app loaded; the rest of what
            # it has to say is on the scoreboard.
            if not worker.ever_ready:
                worker.ever_ready = True
                self._boot_failures = 0
                self._next_spawn_at = 0.0
                self._retire_adopted()
        else:
            # EOF: the worker is exiting; SIGCHLD will follow.  Stop polling.
            self._close_status(worker)

    def _close_status(self, worker):
        if worker.status_fd is not None:
            self._selector.unregister(worker.status_fd)
            os.close(worker.status_fd)
            worker.status_fd = None

    def _forget(self, worker):
        self._close_status(worker)
        if worker.slot is not None:
            self.board.set(worker.slot, FREE)
        self.workers.pop(worker.pid, None)
        self._adopted.pop(worker.pid, None)

    def _reap(self):
        while True:
            try:
                pid, status = self.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self._probe_pid:
                self._probe_done(status)
                continue
            worker = self.workers.get(pid) or self._adopted.get(pid)
            if worker is None:
                continue
            # The last bytes may still be in the pipe (ready, then died).
            if worker.status_fd is not None:
                self._read_status(worker.status_fd)
            self._forget(worker)
            self._log_exit(worker, status)

    def _log_exit(self, worker, status):
        code = os.waitstatus_to_exitcode(status)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        if worker.retiring and code in (EXIT_OK, -signal.SIGTERM, -signal.SIGKILL):
            log.debug("prefork: worker %d exited (%s)", worker.pid, how)
        elif not worker.ever_ready and not worker.retiring:
            self._boot_failures += 1
            delay = min(self.max_boot_backoff,
                        self.first_boot_backoff * 2 ** (self._boot_failures - 1))
            self._next_spawn_at = self.clock() + delay
            # The retry is one worker: a burst of workers that cannot load
            # the app helps nobody.
            self._burst = 1
            log.error("prefork: worker %d failed to start (%s); next attempt in %.1fs",
                      worker.pid, how, delay)
        elif code == EXIT_OK:
            log.debug("prefork: worker %d exited after its maxrequests", worker.pid)
        else:
            log.warning("prefork: worker %d died (%s); replacing it", worker.pid, how)

    def _spawn(self):
        slot = self.board.free_slot({w.slot for w in self.workers.values()})
        if slot is None:
            return  # Every slot is taken by a worker not yet reaped.
        self.board.set(slot, STARTING)
        try:
            pid, status_fd = self.start_worker(slot)
        except OSError as exc:
            self.board.set(slot, FREE)
            self._next_spawn_at = self.clock() + self.first_boot_backoff
            self._burst = 1
            log.error("prefork: cannot start a worker: %s", exc)
            return
        self.workers[pid] = Worker(pid, status_fd, slot)
        self._selector.register(status_fd, selectors.EVENT_READ,
                                functools.partial(self._on_status, status_fd))

    def _fork_worker(self, slot):
        """Fork a worker for ``slot``; return (its pid, our end of its pipe).

        The fork happens in the master's main thread (``serve`` runs there):
        a worker's parent-death signal is tied to the thread that forked it.
        """
        read_fd, write_fd = os.pipe()
        # Block our signals across fork: until the child has installed its
        # own handlers, a signal would run the master's handler in the
        # child and write to the master's wake-up pipe.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:
            code = EXIT_ERROR
            try:
                os.close(read_fd)
                self._shed_master_state()
                worker = WorkerProcess(self, slot, write_fd)
                # First thing after fork: a master that dies from now on
                # (or died a moment ago) is noticed at once.
                orphan.watch(self.listen_sock, worker.drain.set, self.master_pid)
                code = worker.run(blocked)
            except BaseException:
                try:
                    log.exception("prefork: worker %d crashed", os.getpid())
                except BaseException:
                    pass
            finally:
                # Never return into the caller's stack (its cleanup code
                # belongs to the master).
                orphan.report()
                flush_std_streams()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        return pid, read_fd

    def _shed_master_state(self):
        """In a new worker: drop the master's wake-up fd, handlers, pipes,
        selector and idle connections."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self._box.close()
        for worker in self.workers.values():
            if worker.status_fd is not None:
                os.close(worker.status_fd)
        self.workers = {}
        # Closed, never unregistered: an epoll set is shared with the master.
        self._selector.close()
        self.keeper.shed()


def _wake():
    """A selector key's action: run the master's turn (see _wait_for_events)."""
    return True
