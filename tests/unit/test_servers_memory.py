"""servers/memory.py: what the prefork master does before forking."""
import gc
import logging

import django.urls
import pytest
from django.core import signals
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path, re_path

from runfcgi_compat.servers import memory

views_called = []


def record_view(request, **kwargs):
    views_called.append(request.path)
    return HttpResponse("view")


# The URLconf of these tests: a view for "/" and for everything else.
urlpatterns = [path("", record_view), re_path(r"^(?P<rest>.*)$", record_view)]


@pytest.fixture
def unfreeze():
    yield
    gc.unfreeze()


class FakeResolver:
    def __init__(self):
        self.paths = []

    def resolve(self, path_info):
        self.paths.append(path_info)
        raise django.urls.Resolver404({"path": path_info})


def test_share_with_workers_freezes_what_the_master_holds(unfreeze):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    memory.share_with_workers()
    assert gc.get_freeze_count() > 1000  # Django, the project, the server


def test_warm_up_resolves_a_made_up_request(monkeypatch):
    resolver = FakeResolver()
    monkeypatch.setattr(django.urls, "get_resolver", lambda: resolver)
    memory.warm_up_django()
    assert resolver.paths == ["/"]


@override_settings(ROOT_URLCONF=__name__)
def test_warm_up_runs_no_view_and_sends_no_signal():
    sent = []

    def receiver(sender, **kwargs):
        sent.append(sender)

    views_called.clear()
    for signal in (signals.request_started, signals.request_finished,
                   signals.got_request_exception):
        signal.connect(receiver, weak=False)
    try:
        memory.warm_up_django()
    finally:
        for signal in (signals.request_started, signals.request_finished,
                       signals.got_request_exception):
            signal.disconnect(receiver)
    assert django.urls.get_resolver().resolve("/").func is record_view  # "/" has a view
    assert views_called == [] and sent == []


def test_a_failing_warm_up_is_logged_and_the_master_still_freezes(monkeypatch, caplog,
                                                                   unfreeze):
    def broken():
        raise RuntimeError("no resolver today")

    monkeypatch.setattr(django.urls, "get_resolver", broken)
    gc.unfreeze()
    with caplog.at_level(logging.DEBUG, logger="runfcgi_compat"):
        memory.share_with_workers()
    assert gc.get_freeze_count() > 0
    assert [r.getMessage() for r in caplog.records] == [
        "warm-up of Django's request machinery failed"]
    assert "no resolver today" in caplog.text


def test_warm_up_waits_for_django_to_be_set_up(monkeypatch):
    from django.apps import apps

    resolver = FakeResolver()
    monkeypatch.setattr(django.urls, "get_resolver", lambda: resolver)
    monkeypatch.setattr(apps, "ready", False)
    memory.warm_up_django()
    assert resolver.paths == []
