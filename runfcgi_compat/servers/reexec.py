"""Reload the prefork master in place: check the new code, then exec.

A reload must give new workers new code, but the master has imported
Django, the project's apps, its URLconf (system checks) and WSGI module,
and a forked worker inherits all of it.  Only a new interpreter forgets
it, so on SIGHUP the master

1. *probes*: runs its own command line again in a fresh interpreter with
   ``RUNFCGI_PROBE=1``, which makes runfcgi load the app and exit (status 1
   and the error on stderr when it fails).  A failed probe costs one ERROR
   line; the old workers keep serving the old code.
2. *execs itself* (same pid, so the pidfile stays true and the workers stay
   its children): the listening socket and the directory descriptors used
   for clean-up at exit are made inheritable, and ``RUNFCGI_REEXEC`` (JSON)
   tells the new image their numbers, the old workers' pids and the
   directories.  The master's signals stay blocked across the exec (a
   blocked mask survives ``execve``): a SIGTERM in between waits for the
   new image instead of killing a master that has no handler yet.
3. The new image (``runner`` with ``sockets.inherited``) skips binding,
   daemonizing and writing the pidfile, loads the new code, starts new
   workers and asks the old ones to finish gently as soon as the first new
   one is ready, so no connection finds nobody accepting.

The old workers never notice the exec: they keep accepting until the new
image tells them to drain.
"""
import json
import os
import signal
import sys

from ..runner import PROBE_ENV
from ..sockets import REEXEC_ENV
from .base import log


def command_line():
    """The interpreter and arguments (``-W``, ``-m``, the script...) we ran with."""
    return [sys.executable] + sys.orig_argv[1:]


def start_probe(cwd, blocked_signals):
    """Start the new-code check in a child process; return its pid.

    ``cwd`` is where the command was started (its arguments may be relative
    to it).  stdout goes nowhere; stderr is ours (errlog), where the
    project's error lands.
    """
    env = dict(os.environ)
    env.pop(REEXEC_ENV, None)
    env[PROBE_ENV] = "1"
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


def exec_master(listen_sock, worker_pids, state, blocked_signals):
    """Replace this process's image with a fresh one; return only on failure.

    ``state`` is what the runner wants back (see ``runner._reload_state``);
    every ``*_fd`` entry in it is made inheritable.
    """
    handover = dict(state, fd=listen_sock.fileno(), workers=sorted(worker_pids))
    for name, fd in handover.items():
        if (name == "fd" or name.endswith("_fd")) and fd is not None:
            os.set_inheritable(fd, True)
    env = dict(os.environ)
    env[REEXEC_ENV] = json.dumps(handover)
    env.pop(PROBE_ENV, None)
    # The listening socket is non-blocking for the workers; the new image
    # sets what it needs.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked_signals)
    here = os.getcwd()
    try:
        os.chdir(state["cwd"])
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.execve(sys.executable, command_line(), env)
    except OSError as exc:
        os.chdir(here)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for name, fd in handover.items():
            if (name == "fd" or name.endswith("_fd")) and fd is not None:
                os.set_inheritable(fd, False)
        log.error("prefork: reload failed: cannot start %s: %s; still serving the old code",
                  sys.executable, exc)
