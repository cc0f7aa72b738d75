"""Keep the prefork master's memory shared with its workers.

A forked worker shares every page of the master until one side writes to
it; then the writer gets a private copy of that page.  Four things make a
worker copy pages it would not need to, and the master does something
about each before its first fork (``share_with_workers``):

* Work Django leaves for the first requests.  It builds parts of its
  request machinery lazily: the request's headers and host checks, the
  URL resolver's per-pattern state, the template engine's parser tables
  and compiled nodes, the classes a request and a response are made of on
  first use, the JSON encoder.  Done in each worker, that work writes all
  over the pages of the master's objects; done once in the master, the
  workers share its result.  ``warm_up_django()`` does it on requests the
  master makes up (one that matches a URL pattern, one that matches none,
  as a 404 does), through Django's own code only: it never calls a view,
  a middleware, a signal receiver or a template of the site, and sends
  nothing anywhere.  (Serving real requests in the master would share
  more, but would run the site's code at every start.)  It goes through
  them a few times: Python rewrites a function's bytecode for speed after
  its first calls, in place, which is also better done once.

* Our own request path, which the master, busy supervising, never runs:
  ``warm_up_server()`` serves made-up requests through the protocol
  handler with a stand-in app.

* Work done once and dropped.  What the master builds and frees leaves
  holes all over its memory, which the workers' first allocations fill,
  copying the pages around them.  Django's system checks are the largest
  such work (they look at every model, URL pattern and setting):
  ``run_apart()`` runs them in a child that exits after.  For the same
  reason there is no ``gc.collect()`` before the freeze below (measured:
  1 % more memory in all).

* Python's cyclic garbage collector writes to the header of every object
  it examines, so a worker's first full collection (which comes sooner or
  later in any worker: as objects survive, when the application calls
  ``gc.collect()``) writes to every page that holds a container object the
  master loaded, and the worker ends up with a private copy of most of
  them: about 12 MiB more per worker for the bench site (``bench/memory.py``).
  ``gc.freeze()`` in the master, last, moves every object it holds to a
  generation that no collection examines, in the master or in any worker
  forked from it (respawned workers too); objects the workers create are
  collected as usual.

What a worker still copies is mostly the price of running Python at all:
each object a request reads gets its reference count written, so the page
it lives on is copied in every worker that reads it.  docs/performance.rst
has the measurements.
"""
import gc
import io
import os
import signal
import socket
import sys
import tempfile

from .base import KEEP, flush_std_streams, log
from .signals import wait_readable

# Python 3.11 specializes a function after 8 calls; a few more cost ~20 ms.
WARM_UP_ROUNDS = 20


def share_with_workers(handler=None):
    """Call once in the master, after loading the app, before forking;
    ``handler``: the protocol handler the workers will serve with."""
    warm_up_django()
    if handler is not None:
        warm_up_server(handler)
    gc.freeze()


def warm_up_server(handler):
    """Serve a few made-up requests through ``handler``, our own protocol
    code, with a stand-in for the project's app.

    The workers run this code on every request; the master, which only
    supervises, would otherwise never have run it, and each worker would
    specialize its bytecode (and build what it builds on first use) on
    its own pages.  The requests come from ``client.py`` in a child
    process (so the client's code never lands here), over a UNIX socket in
    a temporary directory.  Anything that goes wrong is logged at debug
    level and ignored.
    """
    app = handler.app
    handler.set_app(_stand_in_app)
    try:
        with tempfile.TemporaryDirectory(prefix="runfcgi-warm-up-") as where:
            path = os.path.join(where, "socket")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(path)
                listener.listen(WARM_UP_ROUNDS)
                listener.settimeout(5.0)
                asker = _start_apart(lambda: _ask(path, handler))
                served = False
                try:
                    for _ in range(WARM_UP_ROUNDS):
                        _serve_one(handler, listener.accept()[0], path)
                    served = True
                finally:
                    if not served:
                        os.kill(asker, signal.SIGKILL)
                    os.waitpid(asker, 0)
    except Exception:
        log.debug("warm-up of the server's request path failed", exc_info=True)
    finally:
        handler.set_app(app)


def _serve_one(handler, sock, path):
    try:
        conn = handler.connect(sock, path)
    except BaseException:
        sock.close()
        raise
    try:
        while handler.serve_next(conn) is KEEP and wait_readable([conn], 5.0):
            pass
    finally:
        conn.close()


def _ask(path, handler):
    from .. import client

    secret = getattr(handler, "required_secret", None)
    for _ in range(WARM_UP_ROUNDS):
        client.request(path, protocol=handler.protocol, secret=secret, timeout=5.0)


def _stand_in_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"warm"]


def run_apart(func):
    """Run ``func()`` in a forked child that exits when it is done; return
    None, or what it raised as (the exception's class name, its text).

    What the child builds and drops never touches this process's memory.
    Its output goes where ours does (flushed on both sides of the fork).
    """
    read_fd, write_fd = os.pipe()
    pid = _start_apart(func, write_fd)
    os.close(write_fd)
    with open(read_fd, "rb") as pipe:
        said = pipe.read()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == 0:
        return None
    name, _, text = said.decode(errors="replace").partition("\0")
    how = f"signal {-code}" if code < 0 else f"exit status {code}"
    return (name, text) if name else ("Error", f"the child died ({how})")


def _start_apart(func, write_fd=None):
    """Fork a child that runs ``func()`` and exits (status 1 if it raised,
    its class and text written to ``write_fd``); return its pid."""
    flush_std_streams()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, which never returns
        code = 0
        try:
            func()
        except BaseException as exc:
            code = 1
            if write_fd is not None:
                try:
                    os.write(write_fd, f"{type(exc).__name__}\0{exc}".encode(errors="replace"))
                except BaseException:
                    pass
        finally:
            flush_std_streams()
            os._exit(code)
    return pid


def warm_up_django():
    """Build in this process what Django builds on a worker's first requests.

    A made-up ``GET /`` goes through Django's request class (its headers,
    its host checked against ALLOWED_HOSTS, its URL), the project's URL
    resolver (matching only: no view is called), the template engine
    (Django's own engine on a template of ours, not the project's
    templates or context processors), the response classes and the JSON
    encoder; a made-up request for a path no pattern matches goes through
    the resolver's every pattern, a template lookup that finds nothing (a
    name no project has) and Django's own error page, as a 404 does in a
    project without a 404 template.  Skipped when Django is not set up;
    anything it raises is logged at debug level and ignored, as
    the server does not need it.
    """
    try:
        from django.apps import apps
    except ImportError:
        return
    if not apps.ready:
        return
    try:
        for _ in range(WARM_UP_ROUNDS):
            _made_up_request()
    except Exception:
        log.debug("warm-up of Django's request machinery failed", exc_info=True)


def _made_up_request():
    from urllib.parse import quote

    from django.core.exceptions import SuspiciousOperation
    from django.core.handlers.wsgi import WSGIRequest
    from django.http import HttpResponse, HttpResponseNotFound, JsonResponse
    from django.template import Context, Engine, TemplateDoesNotExist, loader
    from django.urls import Resolver404, get_resolver
    from django.views.defaults import ERROR_PAGE_TEMPLATE

    for path in ("/", f"/{NOWHERE}/"):
        request = WSGIRequest(_environ(path))
        request.GET, request.COOKIES, request.headers  # noqa: B018 - built on first access
        request.get_full_path(), request.is_secure()
        try:
            request.build_absolute_uri()  # get_host(): ALLOWED_HOSTS, as middleware asks
        except SuspiciousOperation:
            pass  # The made-up host is not allowed (DisallowedHost).
        try:
            get_resolver().resolve(request.path_info)
        except Resolver404:
            quote(request.path)
    try:
        loader.get_template(f"{NOWHERE}.html")
    except TemplateDoesNotExist:
        pass
    body = Engine().from_string("<p>{{ text }}</p>").render(Context({"text": "warm"}))
    # Never response.close(): it sends request_finished to the site's receivers.
    HttpResponse(body).serialize_headers()
    JsonResponse({"warm": [1, "up"], "none": None}).serialize_headers()
    page = Engine().from_string(ERROR_PAGE_TEMPLATE % {"title": "Not Found", "details": "warm"})
    HttpResponseNotFound(page.render(Context({"request_path": "/"}))).serialize_headers()


# A URL path and template name no project has.
NOWHERE = "runfcgi-warm-up-finds-nothing"


def _environ(path):
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": False,
        "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
