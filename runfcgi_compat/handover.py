"""What a prefork master hands to its own new image on reload, in one place.

A reload (``servers/reexec.py``) runs this same command twice more: once as
a *probe* that only checks that the new code loads, then as the master's new
image, by ``execve`` in the same process.  The two are told apart by one
environment variable each:

* ``RUNFCGI_PROBE=1``: load the app and exit (``runner.run``).
* ``RUNFCGI_REEXEC=<json>``: serve as the master's new image, with the
  ``State`` below instead of binding, daemonizing and writing anything.

The state (JSON, one object, ``"version": 1``):

* ``listen_fd``, ``description``, ``unix_path``: the listening socket, its
  text for the log, its path when it is a UNIX socket;
* ``socket_file``: ``[dir_fd, name, dev, inode]`` of a UNIX socket file we
  created (removed at exit only if it is still that file), or null;
* ``pidfile``, ``pidfile_dir_fd``: the pidfile we wrote and its directory;
* ``cwd``: where the command was started (its arguments may be relative to
  it), ``workdir``: the working directory to go back to;
* ``workers``: the pids of the old image's workers, to adopt.

Descriptors (``listen_fd``, the two directory fds) cross the exec because
``inherit(state)`` marks them inheritable just before it; ``take`` marks
them close-on-exec again in the new image (and ``inherit(state, False)``
does after a failed exec), so they never leak into processes started later.

A state that does not parse, lacks a key or names a descriptor that is not
open is refused with a ``HandoverError`` saying which: the new image stops
with one line in errlog, never with a traceback or a socket it guessed.
"""
import dataclasses
import json
import os
import socket
import stat

from . import pidfile
from .errors import StartupError
from .sockets import Listener

PROBE_ENV = "RUNFCGI_PROBE"
STATE_ENV = "RUNFCGI_REEXEC"
VERSION = 1


class HandoverError(StartupError):
    """The state handed over across a reload's exec cannot be used."""


@dataclasses.dataclass(frozen=True)
class State:
    listen_fd: int
    description: str
    cwd: str
    workdir: str
    unix_path: str | None = None
    socket_file: tuple | None = None  # (dir_fd, name, dev, inode)
    pidfile: str | None = None
    pidfile_dir_fd: int | None = None
    workers: tuple = ()
    # The prefork master's idle connections and their channel to the
    # workers (servers/idle.py: IdleKeeper.reexec_state).
    idle: dict | None = None

    def descriptors(self):
        """The descriptors this state carries across the exec."""
        fds = [self.listen_fd, self.pidfile_dir_fd,
               self.socket_file[0] if self.socket_file else None]
        if self.idle is not None:
            fds += list(self.idle["channel"]) + [conn[0] for conn in self.idle["conns"]]
        return [fd for fd in fds if fd is not None]


# name -> (types allowed, required)
_FIELDS = {
    "listen_fd": ((int,), True),
    "description": ((str,), True),
    "cwd": ((str,), True),
    "workdir": ((str,), True),
    "unix_path": ((str, type(None)), False),
    "socket_file": ((list, type(None)), False),
    "pidfile": ((str, type(None)), False),
    "pidfile_dir_fd": ((int, type(None)), False),
    "workers": ((list,), False),
    "idle": ((dict, type(None)), False),
}


def describe_master(listener, written, cwd):
    """Return the State a reload needs, for the master serving ``listener``.

    ``written`` is the pidfile it wrote (``pidfile.Written``) or None;
    ``cwd`` where the command was started.
    """
    socket_file = None
    if listener.socket_file is not None and listener.socket_file[2] is not None:
        dir_fd, name, inode = listener.socket_file
        socket_file = (dir_fd, name, *inode)
    return State(listen_fd=listener.sock.fileno(), description=listener.description,
                 cwd=cwd, workdir=os.getcwd(), unix_path=listener.unix_path,
                 socket_file=socket_file,
                 pidfile=written.path if written else None,
                 pidfile_dir_fd=written.dir_fd if written else None)


def encode(state):
    fields = dataclasses.asdict(state)
    fields["socket_file"] = list(state.socket_file) if state.socket_file else None
    fields["workers"] = list(state.workers)
    return json.dumps(dict(fields, version=VERSION))


def decode(raw):
    """Return the State in ``raw`` (the JSON); raise HandoverError if unusable."""
    try:
        fields = json.loads(raw)
    except ValueError as exc:
        raise HandoverError(f"{STATE_ENV} is not valid JSON ({exc}).") from None
    if not isinstance(fields, dict):
        raise HandoverError(f"{STATE_ENV} is not a JSON object.")
    if fields.pop("version", None) != VERSION:
        raise HandoverError(f"{STATE_ENV} is not version {VERSION} of the hand-over "
                            "(a runfcgi of another release started this reload?).")
    unknown = sorted(set(fields) - set(_FIELDS))
    missing = sorted(name for name, (_, required) in _FIELDS.items()
                     if required and name not in fields)
    problems = ([f"lacks {', '.join(missing)}"] if missing else []) + (
        [f"has unknown {', '.join(unknown)}"] if unknown else [])
    if problems:
        raise HandoverError(f"{STATE_ENV} {' and '.join(problems)}.")
    for name, value in fields.items():
        kinds = _FIELDS[name][0]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise HandoverError(f"{STATE_ENV}: {name}={value!r} is not "
                                f"{' or '.join(k.__name__ for k in kinds)}.")
    socket_file = fields.get("socket_file")
    if socket_file is not None:
        kinds = (int, str, int, int)
        if len(socket_file) != 4 or not all(
                isinstance(value, kind) and not isinstance(value, bool)
                for value, kind in zip(socket_file, kinds, strict=True)):
            raise HandoverError(f"{STATE_ENV}: socket_file={socket_file!r} is not "
                                "[dir_fd, name, dev, inode].")
        fields["socket_file"] = tuple(socket_file)
    workers = fields.get("workers", [])
    if not all(isinstance(pid, int) and pid > 0 for pid in workers):
        raise HandoverError(f"{STATE_ENV}: workers={workers!r} is not a list of pids.")
    fields["workers"] = tuple(workers)
    return State(**fields)


def probe_environ(environ):
    """The environment for a reload's check that the new code loads."""
    env = dict(environ)
    env.pop(STATE_ENV, None)
    env[PROBE_ENV] = "1"
    return env


def is_probe(environ):
    return bool(environ.get(PROBE_ENV))


def exec_environ(environ, state):
    """The environment for the master's new image."""
    env = dict(environ)
    env.pop(PROBE_ENV, None)
    env[STATE_ENV] = encode(state)
    return env


def inherit(state, inheritable=True):
    """Let the state's descriptors cross an exec (or stop them from it)."""
    for fd in state.descriptors():
        os.set_inheritable(fd, inheritable)


def take(environ):
    """Return the State our previous image handed over, or None if none.

    The variable is removed from ``environ`` (processes we start later must
    not think they are a reload), and the descriptors are checked and made
    close-on-exec again.
    """
    raw = environ.pop(STATE_ENV, None)
    if raw is None:
        return None
    state = decode(raw)
    for fd in state.descriptors():
        try:
            os.set_inheritable(fd, False)
        except OSError:
            raise HandoverError(f"{STATE_ENV}: descriptor {fd} did not come across the "
                                "exec (it is not open).") from None
    if not stat.S_ISSOCK(os.fstat(state.listen_fd).st_mode):
        raise HandoverError(f"{STATE_ENV}: listen_fd={state.listen_fd} is not a socket.")
    return state


def listener(state):
    """The Listener handed over.  A UNIX socket's file is neither removed
    nor recreated: the web server keeps connecting to it."""
    socket_file = None
    if state.socket_file is not None:
        dir_fd, name, dev, inode = state.socket_file
        socket_file = (dir_fd, name, (dev, inode))
    return Listener(socket.socket(fileno=state.listen_fd), state.description,
                    unix_path=state.unix_path, socket_file=socket_file)


class _HandedOverPidfile(pidfile.Written):
    """The pidfile our previous image wrote: same pid, so it stays as it is;
    its directory's descriptor came across the exec."""

    def __init__(self, path, pid, dir_fd):
        self.path, self.pid, self.dir_fd = path, pid, dir_fd


def written_pidfile(state):
    """The pidfile handed over (removed at exit like one we wrote), or None."""
    if state.pidfile_dir_fd is None:
        return None
    return _HandedOverPidfile(state.pidfile, os.getpid(), state.pidfile_dir_fd)
