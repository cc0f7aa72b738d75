"""h2o in front of runfcgi: ``fastcgi.connect``, or ``fastcgi.spawn`` (h2o starts it).

h2o speaks FastCGI only.  It sends ``SCRIPT_NAME=""`` and the whole path
as ``PATH_INFO`` wherever the handler is mounted, so under a prefix nothing
in the request tells Django the mount point: the generated file says to
set ``FORCE_SCRIPT_NAME`` to the prefix (runfcgi then cuts it from the
path).  At ``/`` nothing needs setting.

With ``fastcgi.spawn`` h2o runs the command itself when it starts, with a
listening UNIX socket on fd 0 (runfcgi is given no address and stays in
the foreground); when h2o stops, its ``kill-on-close`` helper sends the
command SIGTERM, and runfcgi stops its workers.

The text is one entry of h2o's ``hosts:`` mapping (listen address and
paths), to paste under ``hosts:`` or to keep in a file of its own read
with ``hosts: !file <path>``.

Tested by tests/integration/frontends_more.py (set-ups ``h2o-*``).
"""
import re
import shlex

from runfcgi_compat.options import OptionError, as_host, as_port

from . import (
    _as_prefix,
    _check_static,
    _safe,
    _title,
    _tls,
    backend,
    render,
    runfcgi_command,
    runfcgi_words,
)

_LISTEN = re.compile(r"^(?:(?P<host>[^\s:\]\[]+|\[[0-9A-Fa-f:.]+\]):)?(?P<port>\d+)$")


def h2o(protocol="fcgi", host=None, port=None, socket=None, *, listen="80",
        server_name="default", prefix="", https=False, keepalive=0, spawn=None,
        spawn_user=None, allow=None, static_url=None, static_root=None,
        certificate=None, certificate_key=None):
    """Return an entry of h2o's ``hosts:`` mapping sending ``prefix`` to runfcgi.

    ``listen`` is ``port`` or ``host:port``.  ``keepalive`` > 0 keeps an
    idle connection to runfcgi open that many seconds
    (``fastcgi.timeout.keepalive``).  ``spawn`` is a shell command h2o runs
    to start runfcgi itself (no host, port or socket then); ``spawn_user``
    the account it runs as (by default h2o's global ``user``: ``nobody``
    when h2o starts as root and names none).  ``certificate`` and
    ``certificate_key`` (PEM files) make h2o serve TLS on ``listen``;
    ``static_url`` is served from ``static_root`` (``file.dir``).
    """
    _check_static(static_url, static_root)
    certificate, certificate_key = _tls(certificate, certificate_key)
    prefix = _as_prefix("prefix", prefix)
    mount = f" under {prefix}/" if prefix else ""
    if spawn is not None:
        if host is not None or port is not None or socket is not None:
            raise OptionError("spawn: h2o makes the socket itself; give no host, port "
                              "or socket.")
        protocol = _fcgi_only(protocol)
        where = None
        title = f"Django{mount} over FastCGI, started by h2o (fastcgi.spawn)"
    else:
        protocol, host, port, socket = backend(protocol, host, port, socket)
        _fcgi_only(protocol)
        where = {"socket": socket} if socket else {"host": host, "port": port}
        title = _title(protocol, host, port, socket, prefix)
    if spawn_user is not None and spawn is None:
        raise OptionError("spawn_user needs spawn (the command h2o starts).")
    listen_host, listen_port = _as_listen(listen)
    return render(
        "h2o.conf",
        title=title,
        runfcgi=None if spawn else runfcgi_command(protocol, host, port, socket, allow=allow),
        server_name=_safe("server_name", server_name),
        listen_host=listen_host,
        listen_port=listen_port,
        mount=prefix or "/",
        prefix=prefix,
        where=where,
        keepalive_ms=int(keepalive) * 1000 or None,
        https=https,
        spawn=spawn and _as_command("spawn", spawn),
        spawn_user=spawn_user and _safe("spawn_user", spawn_user),
        static_url=static_url and _safe("static_url", static_url),
        static_root=static_root and _safe("static_root", static_root).rstrip("/"),
        certificate=certificate,
        certificate_key=certificate_key,
    )


def h2o_spawn_command(python, manage_py="manage.py", *, settings=None, method="prefork",
                      options=()):
    """Return the shell command for ``fastcgi.spawn`` starting runfcgi on fd 0.

    It starts with ``exec``: h2o runs it through ``/bin/sh -c``, and its
    SIGTERM on stopping must reach runfcgi, not a shell.
    """
    words = ["exec"]
    if settings:
        words += ["/usr/bin/env", f"DJANGO_SETTINGS_MODULE={_safe('settings', settings)}"]
    words += [python, manage_py, "runfcgi", *runfcgi_words("fcgi", method=method), *options]
    return shlex.join(words)


def h2o_main(root, site, *, user=None):
    """Return a whole h2o.conf that runs from ``root`` and reads ``site`` as its hosts."""
    return render("h2o-main.conf", root=_safe("root", root), site=_safe("site", site),
                  user=user and _safe("user", user))


def _fcgi_only(protocol):
    if protocol != "fcgi":
        raise OptionError(f"protocol={protocol!r}: h2o speaks FastCGI only; "
                          "use protocol=fcgi.")
    return protocol


def _as_listen(value):
    found = _LISTEN.match(str(value))
    if not found:
        raise OptionError(f"listen={value!r} is not a port or host:port.")
    host = found.group("host")
    return (as_host("listen", host.strip("[]")) if host else None,
            as_port("listen", found.group("port")))


def _as_command(name, value):
    # Written between double quotes in YAML: no quote, backslash or line break.
    if any(c in value for c in "\"\\\n"):
        raise OptionError(f"{name}={value!r} cannot hold double quotes, backslashes or "
                          "line breaks.")
    return value
