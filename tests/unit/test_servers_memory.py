"""servers/memory.py: what the prefork master does before forking."""
import gc
import logging
import os
from signal import SIGKILL

import django.urls
import pytest
from django.core import signals
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path, re_path

from runfcgi_compat.options import parse_words
from runfcgi_compat.servers import make_server, memory

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
    assert resolver.paths == ["/", f"/{memory.NOWHERE}/"] * memory.WARM_UP_ROUNDS


@override_settings(ALLOWED_HOSTS=["example.com"])
def test_a_host_the_project_does_not_allow_leaves_the_warm_up_whole(monkeypatch, caplog):
    resolver = FakeResolver()
    monkeypatch.setattr(django.urls, "get_resolver", lambda: resolver)
    with caplog.at_level(logging.DEBUG, logger="runfcgi_compat"):
        memory.warm_up_django()
    assert resolver.paths == ["/", f"/{memory.NOWHERE}/"] * memory.WARM_UP_ROUNDS
    assert caplog.records == []


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


# -- run_apart: work whose litter stays out of the master --------------------------


def test_run_apart_runs_in_a_child_and_says_what_it_raised():
    touched = []

    def works():
        touched.append(os.getpid())

    def fails():
        raise ValueError("a bad setting")

    assert memory.run_apart(works) is None
    assert memory.run_apart(fails) == ("ValueError", "a bad setting")
    assert touched == []  # The child's memory is its own.


def test_run_apart_reports_a_child_that_died():
    assert memory.run_apart(lambda: os.kill(os.getpid(), SIGKILL)) == (
        "Error", "the child died (signal 9)")


# -- warm_up_server: our request path, run once in the master ------------------------


@pytest.mark.parametrize("protocol", ["fcgi", "scgi", "ajp"])
def test_warm_up_server_serves_made_up_requests_with_a_stand_in_app(protocol, monkeypatch):
    options = parse_words([f"protocol={protocol}", "host=127.0.0.1", "port=9"])
    handler = make_server(options, lambda: None).handler
    project_app = object()
    handler.set_app(project_app)
    served = []
    monkeypatch.setattr(memory, "_stand_in_app", _counting(served))
    memory.warm_up_server(handler)
    assert served == [("GET", "/")] * memory.WARM_UP_ROUNDS
    assert handler.app is project_app


def _counting(served, real=memory._stand_in_app):
    def app(environ, start_response):
        served.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return real(environ, start_response)
    return app


def test_a_failing_server_warm_up_is_logged_and_the_app_put_back(monkeypatch, caplog):
    handler = make_server(parse_words(["host=127.0.0.1", "port=9"]), lambda: None).handler
    project_app = object()
    handler.set_app(project_app)

    def refuse(sock, addr):
        raise OSError("no connections today")

    monkeypatch.setattr(handler, "connect", refuse)
    with caplog.at_level(logging.DEBUG, logger="runfcgi_compat"):
        memory.warm_up_server(handler)
    assert [r.getMessage() for r in caplog.records] == [
        "warm-up of the server's request path failed"]
    assert handler.app is project_app
