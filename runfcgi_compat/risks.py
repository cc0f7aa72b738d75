"""Start-up warnings: one line for each risky set-up, naming the option that
fixes it.

They are logged through the ``runfcgi_compat`` logger (stderr, which is
errlog once the streams are redirected), whatever ``--verbosity`` says: a
quiet start must not hide that Django serves as root or to the network.
A daemon's starting process shows them on its terminal too (runner.py).
"""
import os
import socket
import stat

from . import peers


def startup_warnings(options, listener, rule, euid=None):
    """Return the warning lines for serving ``options`` on ``listener``.

    ``rule`` is the listening socket's ``peers.PeerRule``; ``euid`` the
    effective uid serving will start with (default: this process's).
    """
    euid = os.geteuid() if euid is None else euid
    where = rule.where
    exposed = peers.beyond_loopback(listener.sock)
    lines = []
    if exposed and options.allow == peers.ANY:
        lines.append(
            f"listening beyond loopback on {where} with allow=any: every peer that "
            "reaches the port is served and may claim any client address, Host or "
            "HTTPS; name your web servers with allow=ADDRESS/NETWORK instead.")
    if euid == 0 and options.user is None:
        lines.append(
            "serving as root: Django would run with every privilege; give "
            "user=ACCOUNT (and group=GROUP) to switch after binding.")
    if exposed and options.protocol == "ajp" and options.ajpsecret is None:
        lines.append(
            f"AJP beyond loopback on {where} without a shared secret: give "
            "ajpsecret=SECRET (and secret= on Apache's ProxyPass).")
    if exposed and options.debug:
        lines.append(
            f"debug=true beyond loopback on {where}: tracebacks go to whoever "
            "sends a request; give debug=false.")
    mode = _socket_mode(listener)
    if mode is not None and mode & stat.S_IWOTH:
        lines.append(
            f"socket {listener.unix_path} has mode {mode:03o}: every local user may "
            "connect and talk to Django; give socketmode=660 (with group=, the web "
            "server's group) or umask=007.")
    return lines


def _socket_mode(listener):
    """The permissions of a UNIX socket file runfcgi made, or None."""
    if listener.unix_path is None or listener.sock.family != socket.AF_UNIX:
        return None
    try:
        return stat.S_IMODE(os.stat(listener.unix_path).st_mode)
    except OSError:
        return None
