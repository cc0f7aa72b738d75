"""The start-up checklist, from validated options to a serving process.

    check paths -> umask -> load the app -> listen -> daemonize -> pidfile
    -> serve -> clean up (master only)

Everything a user can get wrong is checked before anything is forked, bound
or written, and every failure is a StartupError with one line of text.
"""
import logging
import os
import sys

from . import daemon, pidfile, sockets
from .errors import StartupError

logger = logging.getLogger("runfcgi_compat")

# 1.8 set this umask when daemonizing if none was given (django.utils.daemonize).
DAEMON_UMASK = 0o022


def load_django_app():
    """Return the project's WSGI application, as runserver finds it."""
    from django.core.servers.basehttp import get_internal_wsgi_application

    return get_internal_wsgi_application()


def default_server_factory(options, load_app, **kwargs):
    from .servers import make_server

    return make_server(options, load_app, **kwargs)


def run(options, *, load_app=load_django_app, server_factory=default_server_factory,
        stdout=None, verbosity=1):
    """Start the server described by ``options`` and return when it stops.

    Raise StartupError for anything that stops it from starting.
    """
    stdout = stdout or sys.stdout
    configure_logging()
    streams = daemon.Streams(options.outlog, options.errlog)
    check_paths(options, streams)
    if options.umask is not None:
        os.umask(options.umask)
    _load(load_app)
    listener = sockets.listen(options)
    try:
        reporter = daemon.NoReporter()
        if options.daemonize:
            if options.umask is None:
                os.umask(DAEMON_UMASK)
            reporter = daemon.detach(
                options.workdir, streams,
                on_ready=lambda pid: _banner(options, listener, pid, stdout, verbosity))
            listener.owner_pid = os.getpid()
        else:
            streams.redirect(detached=False)
            _banner(options, listener, os.getpid(), stdout, verbosity)
        _serve(options, listener, load_app, server_factory, streams, reporter)
    finally:
        # Only the process that owns the socket may remove it: never a worker
        # that returned through this stack by mistake.
        if os.getpid() == listener.owner_pid:
            listener.close()


def configure_logging():
    """Send our log lines to stderr unless Django's LOGGING already routes them.

    stderr is errlog once the streams are redirected, so the lines land there.
    """
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [runfcgi %(process)d] %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def check_paths(options, streams):
    """Check every path option before anything is started."""
    if not os.path.isdir(options.workdir):
        raise StartupError(f"workdir={options.workdir!r} is not an existing directory.")
    if options.pidfile:
        try:
            pidfile.check(options.pidfile)
        except pidfile.PidfileError as exc:
            raise StartupError(str(exc)) from None
    try:
        streams.open_check()
    except OSError as exc:
        raise StartupError(str(exc)) from None


def _load(load_app):
    try:
        return load_app()
    except Exception as exc:  # The project's own error: show it in one line.
        raise StartupError(f"cannot load the project's WSGI application: {exc}") from None


def _serve(options, listener, load_app, server_factory, streams, reporter):
    master_pid = os.getpid()
    try:
        if options.pidfile:
            pidfile.write(options.pidfile)
        # The app loaded above proved the project imports; the server builds
        # its own (prefork: in each worker, after fork) from the cached modules.
        server = server_factory(options, load_app, on_reopen_logs=streams.reopen)
    except BaseException as exc:
        reporter.failed(str(exc) or exc.__class__.__name__)
        if options.pidfile:
            pidfile.remove(options.pidfile)
        raise
    reporter.ready()
    try:
        server.serve(listener.sock)
    finally:
        if os.getpid() == master_pid and options.pidfile:
            pidfile.remove(options.pidfile, master_pid)


def _banner(options, listener, pid, stdout, verbosity):
    if verbosity < 1:
        return
    if options.method == "prefork":
        limits = (f"{options.minspare}-{options.maxspare} spare, "
                  f"at most {options.maxchildren} workers")
    else:
        limits = f"at most {options.maxchildren} threads"
    mode = "daemon" if options.daemonize else "foreground"
    stdout.write(
        f"runfcgi: serving {options.protocol} on {listener.description}, "
        f"{options.method} ({limits}), pid {pid}, {mode}\n"
    )
    stdout.flush()
