from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render

from .models import Note


def note_list(request):
    return JsonResponse({"notes": list(Note.objects.order_by("id").values_list("text",
                                                                                flat=True))})


def new_note(request):
    """A form with Django's CSRF protection, as a browser sees it."""
    if request.method == "POST":
        Note.objects.create(text=request.POST["text"])
        return HttpResponseRedirect("../")
    return render(request, "notes/new.html")


def about(request):
    return render(request, "notes/about.html")


def echo(request):
    """What Django saw of the request."""
    return JsonResponse({
        "secure": request.is_secure(),
        "path": request.path,
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "host": request.get_host(),
        "foo": request.headers.get("X-Foo"),
        "cookie": request.COOKIES.get("flavour"),
        "method": request.method,
        "body": request.body.decode("utf-8", "replace"),
    })
