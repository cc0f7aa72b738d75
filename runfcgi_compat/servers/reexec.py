"""Reload the prefork master in place: check the new code, then exec.

A reload must give new workers new code, but the master has imported
Django, the project's apps, its URLconf (system checks) and WSGI module,
and a forked worker inherits all of it.  Only a new interpreter forgets
it, so on SIGHUP the master

1. *probes*: runs its own command line again in a fresh interpreter,
   marked as a probe, which makes runfcgi load the app and exit (status 1
   and the error on stderr when it fails).  A failed probe costs one ERROR
   line; the old workers keep serving the old code.
2. *execs itself* (same pid, so the pidfile stays true and the workers stay
   its children) with the hand-over state: the listening socket, the
   directory descriptors used for clean-up at exit and the old workers'
   pids (``handover.py`` holds the names, the format and the rules).  The
   master's signals stay blocked across the exec (a blocked mask survives
   ``execve``): a SIGTERM in between waits for the new image instead of
   killing a master that has no handler yet.
3. The new image (``runner`` with ``handover.take``) skips binding,
   daemonizing and writing the pidfile, loads the new code, starts new
   workers and asks the old ones to finish gently as soon as the first new
   one is ready, so no connection finds nobody accepting.

The old workers never notice the exec: they keep accepting until the new
image tells them to drain.  The exec keeps the pid and happens in the
master's main thread, the one that forked them, so their parent-death
signal (``orphan.py``) does not fire either.
"""
import dataclasses
import os
import signal
import sys

from .. import handover
from .base import flush_std_streams, log


def command_line():
    """The interpreter and arguments (``-W``, ``-m``, the script...) we ran with."""
    return [sys.executable] + sys.orig_argv[1:]


def start_probe(cwd, blocked_signals):
    """Start the new-code check in a child process; return its pid.

    ``cwd`` is where the command was started (its arguments may be relative
    to it).  stdout goes nowhere; stderr is ours (errlog), where the
    project's error lands.
    """
    env = handover.probe_environ(os.environ)
    argv = command_line()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked_signals)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - replaced by exec at once
        try:
            os.chdir(cwd)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


def exec_master(state, worker_pids, blocked_signals):
    """Replace this process's image with a fresh one; return only on failure.

    ``state`` is the ``handover.State`` the runner made; ``worker_pids``
    are the workers the new image adopts.
    """
    state = dataclasses.replace(state, workers=tuple(sorted(worker_pids)))
    env = handover.exec_environ(os.environ, state)
    handover.inherit(state)
    # The listening socket is non-blocking for the workers; the new image
    # sets what it needs.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked_signals)
    here = os.getcwd()
    try:
        os.chdir(state.cwd)
        flush_std_streams()
        os.execve(sys.executable, command_line(), env)
    except OSError as exc:
        os.chdir(here)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        handover.inherit(state, False)
        log.error("prefork: reload failed: cannot start %s: %s; still serving the old code",
                  sys.executable, exc)
