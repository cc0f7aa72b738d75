"""The sample project's pytest tests: pytest-django's conventions, with
``runfcgi_live_server`` where they would use ``live_server``."""
import json
import urllib.request

import pytest

from notes.models import Note


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_orm_write_then_read_through_the_web_server(runfcgi_live_server):
    Note.objects.create(text="from a pytest test")
    assert get_json(f"{runfcgi_live_server.url}/notes/") == {"notes": ["from a pytest test"]}


def test_str_gives_the_url(runfcgi_live_server):
    assert str(runfcgi_live_server) == runfcgi_live_server.url
    assert runfcgi_live_server.url.startswith("http://localhost:")


def test_each_test_starts_with_an_empty_database(runfcgi_live_server):
    assert get_json(f"{runfcgi_live_server.url}/notes/") == {"notes": []}


@pytest.mark.django_db(transaction=True)
def test_client_keeps_cookies_and_posts(runfcgi_client):
    page = runfcgi_client.get("/notes/new/")
    assert page.status_code == 200
    token = runfcgi_client.cookies["csrftoken"].value
    response = runfcgi_client.post("/notes/new/", {"text": "over the protocol"},
                                   HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 302
    assert list(Note.objects.values_list("text", flat=True)) == ["over the protocol"]


def test_client_sends_headers_json_and_secure(runfcgi_client):
    response = runfcgi_client.post("/echo/", {"a": 1}, content_type="application/json",
                                   secure=True, HTTP_X_FOO="bar",
                                   headers={"X-Other": "x"})
    assert response.status_code == 403  # CSRF: no token; the answer still parses.
    runfcgi_client.cookies["flavour"] = "mint"
    data = runfcgi_client.get("/echo/", HTTP_X_FOO="bar", secure=True).json()
    assert (data["foo"], data["cookie"], data["secure"]) == ("bar", "mint", True)


def test_with_db_fixture(db, runfcgi_live_server):
    Note.objects.create(text="db fixture")
    assert get_json(f"{runfcgi_live_server.url}/notes/") == {"notes": ["db fixture"]}


def test_with_transactional_db_fixture(transactional_db, runfcgi_live_server):
    Note.objects.create(text="transactional_db fixture")
    assert get_json(f"{runfcgi_live_server.url}/notes/") == {
        "notes": ["transactional_db fixture"]}


def test_the_deployment_the_options_chose(runfcgi_live_server, request):
    option = request.config.getoption
    assert runfcgi_live_server.protocol == option("runfcgi_protocol")
    assert runfcgi_live_server.method == option("runfcgi_method")
    assert runfcgi_live_server.frontend == option("runfcgi_frontend")
    assert runfcgi_live_server.url.endswith(f":{runfcgi_live_server.web_server.port}"
                                            + option("runfcgi_prefix"))
    data = get_json(f"{runfcgi_live_server.url}/echo/")
    assert (data["path"], data["script_name"]) == (
        option("runfcgi_prefix") + "/echo/", option("runfcgi_prefix"))
