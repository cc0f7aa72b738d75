"""The start-up checklist, from validated options to a serving process.

    check paths -> umask -> load the app -> listen -> who may connect and
    warnings -> daemonize -> pidfile -> serve -> clean up (master only)

Everything a user can get wrong is checked before anything is forked, bound
or written, and every failure is a StartupError with one line of text.

Two shorter paths serve a prefork reload (``servers/reexec.py``), which
runs this same command again (``handover.py`` says how each is told):

* the probe: load the app and return (the reload's check that the new code
  loads; an error exits 1 like any start-up error);
* the master's new image: it adopts the listening socket, pidfile and old
  workers handed over instead of binding, daemonizing and writing anything,
  then serves.
"""
import grp
import logging
import os
import pwd
import signal
import sys

from . import daemon, handover, peers, pidfile, risks, scriptwatch, sockets
from .errors import StartupError
from .options import peer_allowlist

logger = logging.getLogger("runfcgi_compat")

HELD_SIGNALS = {signal.SIGHUP, signal.SIGUSR1}

# 1.8 set this umask when daemonizing if none was given (django.utils.daemonize).
DAEMON_UMASK = 0o022


def load_django_app():
    """Return the project's WSGI application, as runserver finds it, with
    the project's URLconf (and the views it imports) loaded too.

    runserver's own finder (``django.core.servers.basehttp``) would import
    Python's HTTP server modules into the prefork master, where every worker
    would carry them; the rule is short enough to follow here.

    The URLconf is imported here, in the process that is about to switch
    accounts (``user=``) and fork, as Django's system checks would do if they
    ran in it (they run in a child: management/commands/runfcgi.py).  Left
    to the first request, it would be read as the serving account, and by
    each prefork worker from whatever is on disk then: a reload's half-edited
    views would reach old workers.
    """
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.wsgi import get_wsgi_application
    from django.urls import get_resolver
    from django.utils.module_loading import import_string

    path = settings.WSGI_APPLICATION
    if path is None:
        app = get_wsgi_application()
    else:
        try:
            app = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"WSGI_APPLICATION {path!r} cannot be imported: {exc}") from exc
    if getattr(settings, "ROOT_URLCONF", None):
        get_resolver().url_patterns  # noqa: B018 - imports the URLconf
    return app


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
    if handover.is_probe(os.environ):
        _load(load_app)
        return
    state = handover.take(os.environ)
    if state is not None:
        _resume(options, state, load_app, server_factory)
        return
    launch_dir = os.getcwd()  # Before daemonizing: a reload runs from here.
    streams = daemon.Streams(options.outlog, options.errlog)
    check_paths(options, streams)
    account = check_account(options)
    allow = peer_allowlist(options)  # A bad FCGI_WEB_SERVER_ADDRS stops us here.
    if options.umask is not None:
        os.umask(options.umask)
    app = _load(load_app)
    listener = sockets.listen(options)
    # SIGHUP and SIGUSR1 end a process that has no handler for them.  Once
    # the socket accepts, a reload or log rotation may come at any moment:
    # they wait (blocked) until the server's handlers take them.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        give_socket(listener, options, account)
        # The same decision the handler makes on this socket (peers.py),
        # for the banner and the warnings.
        rule = peers.decide(listener.sock, allow)
        warnings = risks.startup_warnings(options, listener, rule)
        reporter = daemon.NoReporter()
        if options.daemonize:
            if options.umask is None:
                os.umask(DAEMON_UMASK)

            def on_ready(pid):
                # The daemon logs to errlog; the operator watches this terminal.
                _show_warnings(warnings, sys.stderr)
                _banner(options, listener, rule, pid, stdout, verbosity)

            reporter = daemon.detach(options.workdir, streams, on_ready=on_ready)
            listener.owner_pid = os.getpid()
            _log_warnings(warnings)
        else:
            streams.redirect(detached=False)
            _log_warnings(warnings)
            _banner(options, listener, rule, os.getpid(), stdout, verbosity)
        if listener.spawned_by_web_server and options.method == "threaded":
            scriptwatch.start(os.path.abspath(sys.argv[0]))  # touch mysite.fcgi
        _serve(options, listener, _loaded(app), server_factory, streams, reporter, account,
               launch_dir)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
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


def check_account(options):
    """Return the (uid, gid) to switch to after binding, or None to stay.

    Only root can switch; a user who names their own account is fine.
    """
    if options.user is None and options.group is None:
        return None
    user = pwd.getpwnam(options.user) if options.user else None
    uid = user.pw_uid if user else os.geteuid()
    gid = grp.getgrnam(options.group).gr_gid if options.group else (
        user.pw_gid if user else os.getegid())
    if (uid, gid) == (os.geteuid(), os.getegid()):
        return None
    if os.geteuid() != 0:
        name = f"user={options.user}" if options.user else f"group={options.group}"
        raise StartupError(
            f"{name}: switching to another account needs root "
            f"(running as uid {os.geteuid()}).")
    return uid, gid


def give_socket(listener, options, account):
    """Hand the UNIX socket to the account and mode the web server needs."""
    if listener.unix_path is None:
        return
    if account is not None:
        # The socket stays root's unless we give it away; the web server's
        # group (group=www-data) is what usually needs to connect.
        uid = account[0] if options.user else -1
        gid = account[1] if options.group else -1
        os.chown(listener.unix_path, uid, gid)
    if options.socketmode is not None:
        os.chmod(listener.unix_path, options.socketmode)


def switch_account(options, account):
    """Drop root for the account asked for; logs stay writable for SIGUSR1."""
    if account is None:
        return
    uid, gid = account
    for path in (options.outlog, options.errlog):
        if path and os.path.exists(path):
            os.chown(path, uid, gid)
    if options.user:
        os.initgroups(options.user, gid)
    else:
        os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)


def _load(load_app):
    try:
        return load_app()
    except Exception as exc:  # The project's own error: show it in one line.
        raise StartupError(f"cannot load the project's WSGI application: {exc}") from None


def _loaded(app):
    """The server's ``load_app`` once the app is loaded: the same object.

    A prefork worker uses the master's app, as uWSGI's workers do unless
    told ``lazy-apps``: loading it again after fork (even from the modules
    already imported) writes to pages every worker would otherwise share.
    """
    return lambda: app


def _serve(options, listener, load_app, server_factory, streams, reporter, account,
           launch_dir):
    master_pid = os.getpid()
    written = None
    try:
        if options.pidfile:
            written = pidfile.write(options.pidfile)
        # Made before switching account: our code is imported while we may
        # still read wherever it is installed.
        server = server_factory(options, load_app, on_reopen_logs=streams.reopen)
        _allow_reload(server, listener, written, launch_dir)
        switch_account(options, account)
    except BaseException as exc:
        reporter.failed(str(exc) or exc.__class__.__name__)
        if written is not None:
            written.remove()
        raise
    reporter.ready()
    _serve_until_stopped(server, listener, written, master_pid)


def _serve_until_stopped(server, listener, written, master_pid):
    try:
        server.serve(listener.sock)
    finally:
        if os.getpid() == master_pid and written is not None:
            written.remove()


def _allow_reload(server, listener, written, launch_dir):
    """Tell a prefork pool what its new image needs on reload (reexec.py)."""
    if not hasattr(server, "reload_state"):
        return  # threaded: SIGHUP is a no-op
    server.reload_state = handover.describe_master(listener, written, launch_dir)


def _resume(options, state, load_app, server_factory):
    """Serve as the master's new image after a reload.

    Streams, umask, account and working directory survived the exec; the
    socket, pidfile and workers are adopted, nothing is bound or written.
    """
    os.chdir(state.workdir)
    listener = handover.listener(state)
    written = handover.written_pidfile(state)
    streams = daemon.Streams(options.outlog, options.errlog)
    try:
        # If the code broke between the reload's check and now, this master
        # ends with the error in errlog and its old workers follow it.
        app = _load(load_app)
        server = server_factory(options, _loaded(app), on_reopen_logs=streams.reopen)
    except BaseException:
        logger.exception("prefork: the master's new image cannot serve; stopping")
        if written is not None:
            written.remove()
        listener.close()
        raise
    server.adopt(state.workers, state.idle)
    _allow_reload(server, listener, written, state.cwd)
    logger.info("prefork: master %d reloaded with the new code", os.getpid())
    try:
        _serve_until_stopped(server, listener, written, os.getpid())
    finally:
        if os.getpid() == listener.owner_pid:
            listener.close()


def _log_warnings(warnings):
    """Log each warning; also write it to stderr (errlog) when the project's
    LOGGING sends our logger's lines somewhere else: they must be seen."""
    for line in warnings:
        logger.warning("%s", line)
    if warnings and not _logs_reach_stderr():
        _show_warnings(warnings, sys.stderr)


def _logs_reach_stderr():
    """True if a warning of our logger is written to fd 2 by some handler."""
    if not logger.isEnabledFor(logging.WARNING):
        return False
    current = logger
    while current is not None:
        for handler in current.handlers:
            stream = getattr(handler, "stream", None)
            if handler.level <= logging.WARNING and _is_stderr(stream):
                return True
        if not current.propagate:
            break
        current = current.parent
    return False


def _is_stderr(stream):
    try:
        return stream is not None and stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return stream is sys.stderr  # pytest's capture, say: no real fd.


def _show_warnings(warnings, stream):
    for line in warnings:
        stream.write(f"runfcgi: WARNING {line}\n")
    stream.flush()


def _banner(options, listener, rule, pid, stdout, verbosity):
    from .servers import speedups

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
        f"{options.method} ({limits}), pid {pid}, {mode}{rule.banner_note()}\n"
        f"runfcgi: fast path in {speedups.DESCRIPTION}\n"
    )
    stdout.flush()
