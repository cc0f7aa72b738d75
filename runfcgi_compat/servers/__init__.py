"""Servers: (protocol, method) -> a pool running a protocol handler.

    server = make_server(options, load_app, on_reopen_logs=reopen)
    server.serve(listen_sock)   # blocks; returns in the master after a stop

Two small tables pick the parts.  A protocol handler (``fcgi``, ``scgi``,
``ajp``) runs one accepted connection to completion; it is built from
flup's protocol classes with their Python 3 defects fixed in subclasses.
A pool (``prefork``, ``threaded``) owns processes or threads, signals and
the listening socket's accept loop; flup's own pools are not used.
"""
import os

from .ajp import AJPHandler
from .fcgi import FastCGIHandler
from .prefork import PreforkPool
from .scgi import SCGIHandler
from .threaded import ThreadedPool

PROTOCOLS = {
    "fcgi": FastCGIHandler,
    "scgi": SCGIHandler,
    "ajp": AJPHandler,
}

POOLS = {
    "prefork": PreforkPool,
    "threaded": ThreadedPool,
}


def make_server(options, load_app, *, on_reopen_logs=None):
    """Return a server for ``options``; call ``serve(listen_sock)`` on it.

    ``load_app`` is called with no arguments and returns the WSGI app: in
    each prefork worker after fork, once before serving in threaded mode.
    (A prefork reload re-executes the master, see ``reexec.py``, so new
    workers get new code.)  ``on_reopen_logs`` is called on SIGUSR1 in
    every process.
    """
    threaded = options.method == "threaded"
    handler = PROTOCOLS[options.protocol](
        debug=options.debug,
        multithreaded=threaded,
        multiprocess=not threaded,
        max_conns=options.maxchildren,
        allowed_peers=_allowed_peers(options),
    )
    pool = POOLS[options.method](
        handler,
        load_app,
        maxspare=options.maxspare,
        minspare=options.minspare,
        maxchildren=options.maxchildren,
        maxrequests=options.maxrequests,
        on_reopen_logs=on_reopen_logs,
    )
    # Timeouts are class defaults; the options, when present, override them
    # on the instances.  0 means "no limit" for idletimeout.
    idle = getattr(options, "idletimeout", None)
    if idle is not None:
        handler.idle_timeout = idle or None
    secret = getattr(options, "ajpsecret", None)
    if secret is not None:
        handler.required_secret = secret
    grace = getattr(options, "gracetimeout", None)
    if grace is not None:
        pool.graceful_timeout = grace
        handler.drain_timeout = grace
    return pool


def _allowed_peers(options):
    """The ``allow`` option, else FCGI_WEB_SERVER_ADDRS; None: any peer."""
    from .. import options as options_module

    lookup = getattr(options_module, "peer_allowlist", None)
    if lookup is not None:
        return lookup(options)
    return os.environ.get("FCGI_WEB_SERVER_ADDRS")
