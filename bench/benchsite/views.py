from django.http import HttpResponse

_bodies = {}


def big(request, size):
    """Return ``size`` bytes as one chunk (a plain HttpResponse, not streamed)."""
    body = _bodies.get(size)
    if body is None:
        body = _bodies[size] = b"x" * size
    return HttpResponse(body, content_type="application/octet-stream")
