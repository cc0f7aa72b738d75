import gc
import os

from django.http import HttpResponse

_bodies = {}


def big(request, size):
    """Return ``size`` bytes as one chunk (a plain HttpResponse, not streamed)."""
    body = _bodies.get(size)
    if body is None:
        body = _bodies[size] = b"x" * size
    return HttpResponse(body, content_type="application/octet-stream")


def collect(request):
    """Run a full garbage collection, as a long-running worker does sooner or later."""
    gc.collect()
    return HttpResponse(f"collected in pid {os.getpid()}\n", content_type="text/plain")
