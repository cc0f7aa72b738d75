"""Detach into the background, and tell the starting terminal how it went.

The starting process stays attached to the terminal until the daemon says
"ready" (bound and serving) or sends the one-line error that stopped it, so
``manage.py runfcgi`` exits 0 only for a server that really runs, and a
failure is printed where the operator is looking.
"""
import os
import sys

READY = b"ready"


class Streams:
    """outlog and errlog, opened for appending and reopened on SIGUSR1."""

    def __init__(self, outlog=None, errlog=None):
        self.outlog = outlog
        self.errlog = errlog

    def open_check(self):
        """Open each log once now, so a bad path fails before we start."""
        for name, path in (("outlog", self.outlog), ("errlog", self.errlog)):
            if path is None:
                continue
            directory = os.path.dirname(path)
            if not os.path.isdir(directory):
                raise OSError(f"{name}={path!r}: directory {directory!r} does not exist.")
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666))
            except OSError as exc:
                raise OSError(f"{name}={path!r} cannot be opened: {exc.strerror}.") from None

    def redirect(self, detached):
        """Point fds 1 and 2 at the logs; /dev/null when detached and unset."""
        for fd, path in ((1, self.outlog), (2, self.errlog)):
            if path is None and not detached:
                continue  # In the foreground, an unset log keeps the terminal.
            target = os.open(path or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            sys.stdout.flush() if fd == 1 else sys.stderr.flush()
            os.dup2(target, fd)
            os.close(target)

    def reopen(self):
        """Reopen the logs by name (after logrotate moved them)."""
        self.redirect(detached=False)


def detach(workdir, streams, on_ready=None):
    """Double-fork into a daemon; return the Reporter the daemon tells.

    The starting process never returns from here: it waits for the daemon's
    word, calls ``on_ready(pid)`` and exits 0, or prints the error and exits 1.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        _wait_for_daemon(read_end, on_ready)  # Never returns.
    os.close(read_end)
    # A new session: no controlling terminal, not killed with the shell.
    os.setsid()
    if os.fork() > 0:
        # The session leader exits so the daemon can never reacquire a terminal.
        os._exit(0)
    os.chdir(workdir)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    streams.redirect(detached=True)
    return Reporter(write_end)


class Reporter:
    """The daemon's end of the pipe back to the starting process."""

    def __init__(self, fd):
        self.fd = fd

    def ready(self):
        self._send(READY + b" %d" % os.getpid())

    def failed(self, message):
        self._send(b"error " + message.encode("utf-8", "replace"))

    def _send(self, data):
        if self.fd is None:
            return
        try:
            os.write(self.fd, data)
        finally:
            os.close(self.fd)
            self.fd = None


class NoReporter:
    """Stands in for Reporter when nobody waits for the word (foreground)."""

    def ready(self):
        pass

    def failed(self, message):
        pass


def _wait_for_daemon(fd, on_ready):
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    message = b"".join(chunks).decode("utf-8", "replace")
    if message.startswith(READY.decode()):
        if on_ready is not None:
            on_ready(int(message.split()[1]))
        sys.stdout.flush()
        os._exit(0)
    if message.startswith("error "):
        sys.stderr.write(f"Error: {message[6:]}\n")
    else:
        sys.stderr.write("Error: the server stopped during start-up; see errlog.\n")
    sys.stderr.flush()
    os._exit(1)
