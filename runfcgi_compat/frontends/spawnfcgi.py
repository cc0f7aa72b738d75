"""spawn-fcgi starting runfcgi: the command lines, foreground or init-script style.

spawn-fcgi makes the listening socket (TCP, IPv6 or UNIX, with the UNIX
socket's owner and mode), then runs the command with that socket on fd 0.
runfcgi is given no address, takes the socket from fd 0 and stays in the
foreground.

* Foreground (``-n``): spawn-fcgi replaces itself with runfcgi, so the pid a
  supervisor (systemd, runit, daemontools) started is runfcgi's.
* Init-script style (``-P pidfile``): spawn-fcgi forks runfcgi, writes its
  pid to the pidfile and exits.  ``kill $(cat pidfile)`` (SIGTERM) stops
  runfcgi and its workers.  spawn-fcgi never removes the pidfile: the
  init script does, after the stop.

Tested by tests/integration/frontends_more.py (set-ups ``spawn-fcgi-*``,
with nginx in front) and tests/integration/test_spawners.py (stopping).
"""
import shlex

from runfcgi_compat.options import OptionError, as_octal

from . import PROTOCOL_NAMES, _address, _safe, backend, runfcgi_words


def spawn_fcgi_argv(protocol="fcgi", host=None, port=None, socket=None, *, python,
                    manage_py="manage.py", project_dir=None, settings=None,
                    method="prefork", pidfile=None, user=None, group=None,
                    socket_user=None, socket_group=None, socket_mode=None,
                    spawn_fcgi="spawn-fcgi", options=()):
    """Return the argv that has spawn-fcgi start runfcgi on the given address.

    Without ``pidfile`` spawn-fcgi stays in the foreground (``-n``) and
    becomes runfcgi; with it, spawn-fcgi forks runfcgi and writes its pid
    there.  ``settings`` is passed as DJANGO_SETTINGS_MODULE (through
    ``env``); ``options`` are more runfcgi words (e.g. ``maxchildren=8``).
    """
    protocol, host, port, socket = backend(protocol, host, port, socket)
    if socket is None and (socket_user or socket_group or socket_mode):
        raise OptionError("socket_user, socket_group and socket_mode need a socket.")
    argv = [spawn_fcgi]
    argv += ["-P", _safe("pidfile", pidfile)] if pidfile else ["-n"]
    if socket:
        argv += ["-s", socket]
        if socket_mode is not None:
            argv += ["-M", f"{as_octal('socket_mode', socket_mode):04o}"]
        if socket_user:
            argv += ["-U", _safe("socket_user", socket_user)]
        if socket_group:
            argv += ["-G", _safe("socket_group", socket_group)]
    else:
        argv += ["-a", host, "-p", str(port)]
    if user:
        argv += ["-u", _safe("user", user)]
    if group:
        argv += ["-g", _safe("group", group)]
    if project_dir:
        argv += ["-d", _safe("project_dir", project_dir)]
    argv.append("--")
    if settings:
        argv += ["/usr/bin/env", f"DJANGO_SETTINGS_MODULE={_safe('settings', settings)}"]
    argv += [_safe("python", python), _safe("manage_py", manage_py), "runfcgi"]
    argv += runfcgi_words(protocol, method=method)
    argv += [_safe("options", word) for word in options]
    return argv


def spawn_fcgi(protocol="fcgi", host=None, port=None, socket=None, **kwargs):
    """Return the spawn-fcgi command line as text (a comment, then the command).

    Takes the arguments of ``spawn_fcgi_argv()``.
    """
    argv = spawn_fcgi_argv(protocol, host, port, socket, **kwargs)
    protocol, host, port, socket = backend(protocol, host, port, socket)
    where = f"UNIX socket {socket}" if socket else _address(host, port)
    style = ("spawn-fcgi forks it and writes its pid to " + kwargs["pidfile"]
             if kwargs.get("pidfile") else "spawn-fcgi -n becomes runfcgi (foreground)")
    split = argv.index("--")
    note = ""
    logged = any(word.startswith(("outlog=", "errlog=")) for word in kwargs.get("options", ()))
    if kwargs.get("pidfile") and not logged:
        note = ("# The forked runfcgi's standard output and error are /dev/null: add\n"
                "# errlog=/path/to/file (and outlog=) to keep its messages.\n")
    return (f"# spawn-fcgi: Django over {PROTOCOL_NAMES[protocol]} on {where}; {style}\n"
            f"{note}"
            f"{shlex.join(argv[:split])} \\\n"
            f"    {shlex.join(argv[split:])}\n")
