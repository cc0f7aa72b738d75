"""Keep the prefork master's memory shared with its workers.

A forked worker shares every page of the master until one side writes to
it; then the writer gets a private copy of that page.  Two things make a
worker copy pages it would not need to:

* Work Django leaves for the first requests.  It builds parts of its
  request machinery lazily: the URL resolver's per-pattern state, the
  template engine's parser tables and compiled nodes, the classes a
  request and a response are made of on first use.  Done in each worker,
  that work writes all over the pages of the master's objects; done once
  in the master, the workers share its result.  ``warm_up_django()`` does
  it on a request the master makes up, through Django's own code only:
  it never calls a view, a middleware, a signal receiver or a template of
  the site, and sends nothing anywhere.  (Serving real requests in the
  master would share more, but would run the site's code at every start.)

* Python's cyclic garbage collector writes to the header of every object
  it examines, so a worker's first full collection (which comes sooner or
  later in any worker: as objects survive, when the application calls
  ``gc.collect()``) writes to every page that holds a container object the
  master loaded, and the worker ends up with a private copy of most of
  them: about 12 MiB more per worker for the bench site (``bench/memory.py``).
  ``gc.freeze()`` in the master, once the application is loaded and before
  the first fork, moves every object it holds to a generation that no
  collection examines, in the master or in any worker forked from it
  (respawned workers too); objects the workers create are collected as
  usual.  No ``gc.collect()`` before it: the holes it leaves in the
  master's memory are filled by the workers' first allocations, which
  copies the pages around them (measured: 1 % more memory in all).

What a worker still copies is mostly the price of running Python at all:
each object a request reads gets its reference count written, so the page
it lives on is copied in every worker that reads it.
"""
import gc
import io
import logging
import sys

log = logging.getLogger("runfcgi_compat")


def share_with_workers():
    """Call once in the master, after loading the app, before forking."""
    warm_up_django()
    gc.freeze()


def warm_up_django():
    """Build in this process what Django builds on a worker's first requests.

    A made-up ``GET /`` goes through Django's request class, the project's
    URL resolver (matching only: no view is called), the template engine
    (Django's own engine on a template of ours, not the project's
    templates or context processors) and the response class.  Skipped when
    Django is not set up; anything it raises is logged at debug level and
    ignored, as the server does not need it.
    """
    try:
        from django.apps import apps
    except ImportError:
        return
    if not apps.ready:
        return
    try:
        _made_up_request()
    except Exception:
        log.debug("warm-up of Django's request machinery failed", exc_info=True)


def _made_up_request():
    from django.core.handlers.wsgi import WSGIRequest
    from django.http import HttpResponse
    from django.template import Context, Engine
    from django.urls import Resolver404, get_resolver

    request = WSGIRequest(_environ("/"))
    request.GET, request.COOKIES  # noqa: B018 - parsed on first access
    try:
        get_resolver().resolve(request.path_info)
    except Resolver404:
        pass
    body = Engine().from_string("<p>{{ text }}</p>").render(Context({"text": "warm"}))
    # Never response.close(): it sends request_finished to the site's receivers.
    HttpResponse(body).serialize_headers()


def _environ(path):
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": False,
        "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
