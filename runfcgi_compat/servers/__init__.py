"""Servers: (protocol, method) -> a pool running a protocol handler.

    server = make_server(options, load_app, on_reopen_logs=reopen)
    server.serve(listen_sock)   # blocks; returns in the master after a stop

Two small tables pick the parts.  A protocol handler (``fcgi``, ``scgi``,
``ajp``) runs one accepted connection to completion; it is built from
flup's protocol classes with their Python 3 defects fixed in subclasses.
A pool (``prefork``, ``threaded``) owns processes or threads, signals and
the listening socket's accept loop; flup's own pools are not used.

The tables name the classes rather than import them: a server imports only
the protocol and pool it runs, so a prefork master (whose memory every
worker shares) carries no code for the others.
"""
import importlib

from ..options import peer_allowlist

# name -> "module:class", the module relative to this package.
PROTOCOLS = {
    "fcgi": "fcgi:FastCGIHandler",
    "scgi": "scgi:SCGIHandler",
    "ajp": "ajp:AJPHandler",
}

POOLS = {
    "prefork": "prefork:PreforkPool",
    "threaded": "threaded:ThreadedPool",
}


def protocol_class(name):
    """Return the handler class of protocol ``name`` (a key of PROTOCOLS)."""
    return _import(PROTOCOLS[name])


def pool_class(name):
    """Return the pool class of method ``name`` (a key of POOLS)."""
    return _import(POOLS[name])


def _import(where):
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def make_server(options, load_app, *, on_reopen_logs=None):
    """Return a server for ``options``; call ``serve(listen_sock)`` on it.

    ``load_app`` is called with no arguments and returns the WSGI app: in
    each prefork worker after fork, once before serving in threaded mode.
    (A prefork reload re-executes the master, see ``reexec.py``, so new
    workers get new code.)  ``on_reopen_logs`` is called on SIGUSR1 in
    every process.
    """
    threaded = options.method == "threaded"
    handler = protocol_class(options.protocol)(
        debug=options.debug,
        multithreaded=threaded,
        multiprocess=not threaded,
        max_conns=options.maxchildren,
        allowed_peers=peer_allowlist(options),
    )
    pool = pool_class(options.method)(
        handler,
        load_app,
        maxspare=options.maxspare,
        minspare=options.minspare,
        maxchildren=options.maxchildren,
        maxrequests=options.maxrequests,
        on_reopen_logs=on_reopen_logs,
    )
    # Timeouts are class defaults; the options override them on the
    # instances.  0 means "no limit" for idletimeout.
    handler.idle_timeout = options.idletimeout or None
    if options.ajpsecret is not None:
        handler.required_secret = options.ajpsecret
    pool.graceful_timeout = options.gracetimeout
    return pool
