"""The pidfile: refuse a live one, replace a stale one, write it atomically,
and remove it at exit only while it still names us.
"""
import errno
import os
import tempfile


class PidfileError(RuntimeError):
    """The pidfile cannot be used; the message is one printable line."""


def read_pid(path, dir_fd=None):
    """Return the pid written in ``path``, or None if there is none to read."""
    try:
        with open(os.open(path, os.O_RDONLY, dir_fd=dir_fd)) as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidfileError(f"pidfile={path!r} cannot be read: {exc.strerror}.") from None
    try:
        pid = int(text)
    except ValueError:
        return None  # Garbage is treated like a stale file: it names no one.
    return pid if pid > 0 else None


def is_running(pid):
    """Return True if a process with ``pid`` exists (even if not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # It exists; it just belongs to another user.
    return True


def check(path):
    """Refuse to start if ``path`` names a live process; checked before binding."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise PidfileError(f"pidfile={path!r}: directory {directory!r} does not exist.")
    if os.path.isdir(path):
        raise PidfileError(f"pidfile={path!r} is a directory.")
    if not os.access(directory, os.W_OK):
        raise PidfileError(f"pidfile={path!r}: directory {directory!r} is not writable.")
    pid = read_pid(path)
    if pid is not None and pid != os.getpid() and is_running(pid):
        raise PidfileError(
            f"pidfile={path!r} names process {pid}, which is still running: "
            "is the server already started?"
        )


def write(path, pid=None):
    """Write ``pid`` (default: ours) to ``path`` atomically; return ``Written``.

    A temporary file in the same directory is renamed over the target, so a
    reader never sees a half-written number and a stale file is replaced.
    """
    pid = os.getpid() if pid is None else pid
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(prefix=".pid-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{pid}\n")
        os.chmod(temp, 0o644 & ~_current_umask())
        os.replace(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise
    return Written(path, pid)


class Written:
    """A pidfile we wrote, removable later even from an unprivileged account."""

    def __init__(self, path, pid):
        self.path = path
        self.pid = pid
        # The directory stays open so removal does not depend on reaching it
        # by path once we run as another user.
        self.dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)

    def remove(self):
        """Remove the file if it still holds our pid; close the directory."""
        if self.dir_fd is None:
            return
        name = os.path.basename(self.path)
        try:
            if read_pid(name, dir_fd=self.dir_fd) == self.pid:
                os.unlink(name, dir_fd=self.dir_fd)
        except (OSError, PidfileError):
            pass  # At exit there is no one left to tell; never mask the real exit.
        finally:
            os.close(self.dir_fd)
            self.dir_fd = None


def remove(path, pid=None):
    """Remove ``path`` if it still holds ``pid`` (default: ours)."""
    pid = os.getpid() if pid is None else pid
    try:
        if read_pid(path) == pid:
            os.unlink(path)
    except (OSError, PidfileError):
        pass  # At exit there is no one left to tell; never mask the real exit.


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
