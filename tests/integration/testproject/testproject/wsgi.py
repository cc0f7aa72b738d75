"""The application the integration tests serve: the project inside Python's
own ``wsgiref.validate.validator``.

The validator checks both sides of every request -- the environ's keys and
types, each ``wsgi.input`` and ``wsgi.errors`` call, ``start_response``, the
headers, the body's chunks, and that the response's ``close()`` is called --
and reports in the server: an ``AssertionError`` (a 500, or a line the
interpreter prints for an iterable never closed) or a ``WSGIWarning``, in the
log of whichever process runs the app.  ``tests/integration/validation.py``
reads those logs.

On unless TESTPROJECT_WSGI_VALIDATOR=0 (to compare with the bare app).
"""
import os

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()

if os.environ.get("TESTPROJECT_WSGI_VALIDATOR", "1") != "0":
    from wsgiref.validate import validator

    application = validator(application)
