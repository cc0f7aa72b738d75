"""Listening sockets: TCP (IPv4 or IPv6), UNIX, the one a web server hands us
on fd 0, or the ones systemd passes with LISTEN_FDS.  (Our own, handed over
across a reload's exec, is rebuilt by ``handover.listener``.)

A UNIX socket path is only ever removed when it is a socket that nobody
answers on (stale); a live server's socket or any other file is an error.
"""
import os
import socket
import stat

from .errors import StartupError, describe

BACKLOG = 1024
SYSTEMD_FIRST_FD = 3


class Listener:
    """A bound, listening socket and what to clean up when we are done.

    ``socket_file`` is ``(dir_fd, name, (dev, inode))`` of a UNIX socket
    file we created, or None: removed on close if it is still that file.
    """

    def __init__(self, sock, description, unix_path=None, created=False, socket_file=None):
        self.sock = sock
        self.description = description
        self.unix_path = unix_path
        self.owner_pid = os.getpid()
        self.spawned_by_web_server = False
        self.socket_file = socket_file
        if created:
            # Hold the directory open: after switching to an unprivileged
            # account we may no longer reach it by path, but we can still
            # remove our socket from it by name.
            dir_fd = os.open(os.path.dirname(unix_path), os.O_RDONLY | os.O_DIRECTORY)
            name = os.path.basename(unix_path)
            self.socket_file = (dir_fd, name, _inode(name, dir_fd))

    def close(self):
        """Close the socket and remove the socket file if it is still ours."""
        self.sock.close()
        if self.socket_file is None:
            return
        dir_fd, name, inode = self.socket_file
        self.socket_file = None
        try:
            if _inode(name, dir_fd) == inode:
                os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass  # At exit there is no one left to tell.
        finally:
            os.close(dir_fd)


def listen(options, environ=os.environ):
    """Return a Listener for ``options``; raise StartupError with one line."""
    if options.socket:
        return listen_unix(options.socket)
    if options.host is not None:
        return listen_tcp(options.host, options.port)
    inherited = systemd_socket(environ)
    if inherited is not None:
        return inherited
    return fd0_socket()


def listen_tcp(host, port):
    where = f"host={host} port={port}"
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"{where}: cannot resolve {host!r} ({exc.strerror}).") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restarted server bind while old connections sit in TIME_WAIT;
        # it does not let two live servers share the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartupError(f"{where}: {describe(exc)}") from None
    host_shown = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
    shown = f"{host_shown}:{address[1]}"
    return Listener(sock, shown)


def listen_unix(path):
    where = f"socket={path}"
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise StartupError(f"{where}: directory {directory!r} does not exist.")
    remove_if_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Permissions come from the process umask, which the runner has set.
        sock.bind(path)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartupError(f"{where}: {describe(exc, unix=True)}") from None
    return Listener(sock, f"unix:{path}", unix_path=path, created=True)


def remove_if_stale(path):
    """Remove a socket file nobody answers on; refuse anything else at ``path``."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"socket={path}: a file that is not a socket is in the way.")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # Left behind by a server that died: safe to replace.
        return
    except OSError as exc:
        raise StartupError(
            f"socket={path}: cannot check the old socket ({describe(exc)})") from None
    finally:
        probe.close()
    raise StartupError(f"socket={path} is in use by a running server.")


def fd0_socket():
    """Return the listening socket a web server passed on fd 0 (mod_fcgid, lighttpd)."""
    hint = ("no host/port or socket given, and standard input is not a listening "
            "socket: give socket=PATH or host=HOST port=PORT, or let the web server "
            "start runfcgi.")
    try:
        if not stat.S_ISSOCK(os.fstat(0).st_mode):
            raise StartupError(hint)
        sock = socket.socket(fileno=os.dup(0))
    except OSError:
        raise StartupError(hint) from None
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.close()
        raise StartupError(hint)
    # fd 0 must stop being the socket, or code reading stdin would read requests.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    listener = Listener(sock, f"fd 0 ({_family_name(sock)})")
    listener.spawned_by_web_server = True
    return listener


def systemd_socket(environ):
    """Return the first socket systemd passed (LISTEN_FDS), or None."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    # Unset them so processes we start don't think the sockets are theirs.
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    sock = socket.socket(fileno=SYSTEMD_FIRST_FD)
    return Listener(sock, f"systemd fd {SYSTEMD_FIRST_FD} ({_family_name(sock)})")


def _family_name(sock):
    return {socket.AF_UNIX: "unix", socket.AF_INET: "tcp", socket.AF_INET6: "tcp6"}.get(
        sock.family, str(sock.family))


def _inode(path, dir_fd=None):
    try:
        info = os.lstat(path, dir_fd=dir_fd)
    except (OSError, TypeError):
        return None
    return (info.st_dev, info.st_ino)
