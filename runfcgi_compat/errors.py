"""Turn operating-system errors into the plain sentences users read."""
import errno

# Worded like Django's runserver, which users already know.
ERRNO_SENTENCES = {
    errno.EADDRINUSE: "That port is already in use.",
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
    errno.EAFNOSUPPORT: "That address family is not supported on this machine.",
}


# A UNIX socket is a file: the same errors mean something else there.
UNIX_SOCKET_SENTENCES = {
    errno.EACCES: "You don't have permission to create a socket in that directory.",
    errno.EADDRINUSE: "Something else already uses that path.",
    errno.EROFS: "That directory is on a read-only file system.",
}


def describe(exc, unix=False):
    """Return one sentence for an OSError, without a traceback."""
    if unix and exc.errno in UNIX_SOCKET_SENTENCES:
        return UNIX_SOCKET_SENTENCES[exc.errno]
    if exc.errno in ERRNO_SENTENCES:
        return ERRNO_SENTENCES[exc.errno]
    reason = exc.strerror or str(exc)
    return reason[:1].upper() + reason[1:] + ("" if reason.endswith(".") else ".")


class StartupError(RuntimeError):
    """Start-up cannot go on; the message is one line naming what is wrong."""
