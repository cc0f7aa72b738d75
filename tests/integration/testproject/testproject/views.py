"""Views that show what Django received, to check each front end end to end."""
import hashlib
import os
import sys

from django.http import JsonResponse, StreamingHttpResponse
from django.urls import get_script_prefix

CHUNK = 64 * 1024
# The streamed body: a fixed pattern the test can recompute.
PATTERN = bytes(range(256)) * (CHUNK // 256)


def _digest(request):
    """Read the body in chunks; return (length, sha256 hex)."""
    digest = hashlib.sha256()
    length = 0
    while True:
        chunk = request.read(CHUNK)
        if not chunk:
            return length, digest.hexdigest()
        length += len(chunk)
        digest.update(chunk)


def echo(request, rest):
    body_len, body_sha256 = _digest(request)
    return JsonResponse({
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME"),
        "script_prefix": get_script_prefix(),
        "query": {key: request.GET.getlist(key) for key in request.GET},
        "method": request.method,
        "is_secure": request.is_secure(),
        "body_len": body_len,
        "body_sha256": body_sha256,
        "server_software": request.META.get("SERVER_SOFTWARE", ""),
        "content_type": request.META.get("CONTENT_TYPE"),
        "content_length": request.META.get("CONTENT_LENGTH"),
        # wsgiref.validate's wrapper when the validator is on (wsgi.py).
        "wsgi_input": "{0.__module__}.{0.__name__}".format(type(request.META["wsgi.input"])),
        "pid": os.getpid(),
    })


def upload(request):
    body_len, body_sha256 = _digest(request)
    return JsonResponse({"body_len": body_len, "body_sha256": body_sha256})


def stream(request, size):
    def chunks():
        left = size
        while left > 0:
            yield PATTERN[:min(left, CHUNK)]
            left -= CHUNK

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


def form(request):
    """What Django parsed of a form: fields, and each file's name, size and digest."""
    return JsonResponse({
        "method": request.method,
        "fields": {key: request.POST.getlist(key) for key in request.POST},
        "files": {key: [upload.name, upload.size,
                        hashlib.sha256(upload.read()).hexdigest()]
                  for key, upload in request.FILES.items()},
    })


def endless(request, token):
    """Stream until the client leaves (at most 64 MiB); when the server
    closes the response, say so on standard error, for the test to see."""
    def chunks():
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                yield PATTERN
                sent += len(PATTERN)
        finally:
            print(f"testproject: endless {token} closed after {sent} bytes",
                  file=sys.stderr, flush=True)

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


def error(request):
    raise RuntimeError("testproject error view: this text must not reach the client")
