"""A few views that show what reached Django, used by the docs and tests."""
import hashlib
import os
import time

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return HttpResponse(f"Hello from runfcgi, pid {os.getpid()}\n", content_type="text/plain")


def show_path(request, rest):
    return JsonResponse({
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "query": request.GET.dict(),
        "secure": request.is_secure(),
        "method": request.method,
    })


@csrf_exempt
def echo(request):
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = request.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse({"length": size, "sha256": digest.hexdigest(), "method": request.method})


def stream(request, size):
    def chunks():
        left = size
        while left > 0:
            step = min(left, 65536)
            yield b"x" * step
            left -= step
    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


def error(request):
    raise RuntimeError("this view fails on purpose")


def slow(request, millis):
    time.sleep(millis / 1000)
    return HttpResponse(f"slept {millis} ms in pid {os.getpid()}\n", content_type="text/plain")
