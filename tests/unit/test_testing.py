"""runfcgi_compat.testing without a web server: the FastCGI test client
against runfcgi running threaded in this process, over each protocol, and
the checks made before anything starts.  (The test cases and fixtures
behind real web servers are tested by tests/sampleproject, in tox's
livetests environment.)"""
import json
import ssl

import pytest
from django.db import connections
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.test.utils import override_settings
from django.urls import path

from runfcgi_compat.testing import FastCGIClient, FrontEndMissing, LiveServer, LiveServerError
from runfcgi_compat.testing.backend import check_shareable
from runfcgi_compat.testing.certificate import make_certificate


def echo(request):
    body = request.body.decode()  # Read first: POST is then parsed from it.
    return JsonResponse({
        "method": request.method, "path": request.path,
        "script_name": request.META.get("SCRIPT_NAME"), "query": request.GET.dict(),
        "post": request.POST.dict(), "body": body,
        "content_type": request.content_type, "foo": request.headers.get("X-Foo"),
        "cookies": request.COOKIES, "secure": request.is_secure(),
        "host": request.get_host()})


def set_cookie(request):
    response = HttpResponse("set")
    response.set_cookie("flavour", "mint")
    return response


def delete_cookie(request):
    response = HttpResponse("deleted")
    response.delete_cookie("flavour")
    return response


urlpatterns = [
    path("echo/", echo),
    path("cookie/", set_cookie),
    path("uncookie/", delete_cookie),
    path("hop/", lambda request: HttpResponseRedirect("/echo/?from=hop")),
]


@pytest.fixture(scope="module", params=["fcgi", "scgi", "ajp"])
def server(request):
    with override_settings(ROOT_URLCONF=__name__):
        server = LiveServer(protocol=request.param, frontend=None).start(connections)
        yield server
        server.stop()


def test_get_with_headers_and_query(server):
    client = server.client()
    response = client.get("/echo/", {"a": "1"}, HTTP_X_FOO="bar")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert (data["method"], data["path"], data["query"], data["foo"]) == (
        "GET", "/echo/", {"a": "1"}, "bar")
    assert client.get("/echo/?b=2", headers={"X-Foo": "baz"}).json()["foo"] == "baz"


def test_post_form_and_json(server):
    client = server.client()
    data = client.post("/echo/", {"text": "hello"}).json()
    assert data["post"] == {"text": "hello"}
    assert data["content_type"] == "multipart/form-data"
    data = client.post("/echo/", {"a": [1, 2]}, content_type="application/json").json()
    assert json.loads(data["body"]) == {"a": [1, 2]}
    assert client.put("/echo/", "raw", content_type="text/plain").json()["body"] == "raw"


def test_cookies_are_kept_and_deleted(server):
    client = server.client()
    assert client.get("/cookie/").cookies["flavour"].value == "mint"
    assert client.get("/echo/").json()["cookies"] == {"flavour": "mint"}
    client.get("/uncookie/")
    assert client.get("/echo/").json()["cookies"] == {}


def test_follow_and_secure(server):
    response = server.client().get("/hop/", follow=True, secure=True)
    assert response.redirect_chain == [("/echo/?from=hop", 302)]
    assert response.json()["query"] == {"from": "hop"}
    assert response.json()["secure"] is True


def test_url_needs_a_front_end(server):
    with pytest.raises(LiveServerError, match="frontend=None"):
        server.url  # noqa: B018


def test_prefix_is_sent_as_the_mount_point():
    with override_settings(ROOT_URLCONF=__name__):
        server = LiveServer(protocol="fcgi", frontend=None, prefix="/app").start(connections)
        try:
            data = server.client().get("/echo/").json()
        finally:
            server.stop()
    assert (data["script_name"], data["path"]) == ("/app", "/app/echo/")


def test_client_names_where_nothing_listens():
    client = FastCGIClient(("127.0.0.1", 9), "fcgi")
    with pytest.raises(OSError, match="no server at 127.0.0.1:9"):
        client.get("/")


@pytest.mark.parametrize("choice, message", [
    ({"protocol": "http"}, "protocol='http' is not one of: fcgi, scgi, ajp."),
    ({"method": "forking"}, "method='forking' is not one of: threaded, prefork."),
    ({"frontend": "iis"},
     "frontend='iis' is not one of: nginx, apache, lighttpd, caddy, haproxy, h2o"),
    ({"frontend": "caddy", "protocol": "scgi"},
     "protocol='scgi' cannot go through frontend='caddy', which speaks only fcgi;"),
    ({"frontend": "h2o", "protocol": "ajp"},
     "protocol='ajp' cannot go through frontend='h2o', which speaks only fcgi;"),
    ({"frontend": "nginx", "protocol": "ajp"},
     "protocol='ajp' cannot go through frontend='nginx', which speaks only fcgi and scgi;"),
    ({"frontend": "haproxy", "static": "collect"},
     "frontend='haproxy' cannot serve static files, which StaticFastCGILiveServerTestCase "
     "needs; use nginx, apache, lighttpd, caddy, h2o or FastCGILiveServerTestCase."),
    ({"prefix": "/app/"}, "prefix='/app/' must start with '/' and not end with one"),
])
def test_bad_choices_are_named(choice, message):
    with pytest.raises(LiveServerError) as caught:
        LiveServer(**choice)
    assert message in str(caught.value)


@pytest.mark.parametrize("frontend, program, package", [
    ("nginx", "nginx", "nginx"),
    ("apache", "apache2", "apache2"),
    ("lighttpd", "lighttpd", "lighttpd"),
    ("caddy", "caddy", "caddy"),
    ("haproxy", "haproxy", "haproxy"),
    ("h2o", "h2o", "h2o"),
])
def test_missing_front_end_names_program_and_package(monkeypatch, frontend, program, package):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("os.path.exists", lambda path: False)  # not in /usr/sbin either
    with pytest.raises(FrontEndMissing) as caught:
        LiveServer(frontend=frontend).check_frontend()
    assert str(caught.value) == (
        f"frontend={frontend!r} needs the {program} program, which is not installed "
        f"(Debian package {package}: apt-get install {package}).")


def test_missing_tls_module_names_its_package(monkeypatch):
    monkeypatch.setattr("runfcgi_compat.testing.webservers.find_program", lambda frontend: None)
    monkeypatch.setattr("os.path.exists", lambda path: not path.endswith("/mod_openssl.so"))
    LiveServer(frontend="lighttpd").check_frontend()  # plain http needs no TLS module
    with pytest.raises(FrontEndMissing) as caught:
        LiveServer(frontend="lighttpd", https=True).check_frontend()
    assert str(caught.value) == (
        "https=True with frontend='lighttpd' needs /usr/lib/lighttpd/mod_openssl.so, which "
        "is not installed (Debian package lighttpd-mod-openssl: apt-get install "
        "lighttpd-mod-openssl).")


@pytest.mark.parametrize("frontend, protocol, changes", [
    ("nginx", "fcgi", {}),
    ("caddy", "fcgi", {}),
    ("apache", "ajp", {"FORCE_SCRIPT_NAME": "/app"}),  # AJP carries no mount point
    ("h2o", "fcgi", {"FORCE_SCRIPT_NAME": "/app"}),  # h2o sends SCRIPT_NAME ""
])
def test_force_script_name_where_the_prefix_is_not_sent(frontend, protocol, changes):
    server = LiveServer(frontend=frontend, protocol=protocol, prefix="/app")
    assert server.settings_changes == changes
    assert LiveServer(frontend=frontend, protocol=protocol).settings_changes == {}


def test_prefork_refuses_an_in_memory_database():
    class Memory:
        vendor, alias = "sqlite", "default"

        def is_in_memory_db(self):
            return True

    with pytest.raises(LiveServerError, match="cannot open the in-memory SQLite test "
                                              "database of 'default'"):
        check_shareable([Memory()], "prefork")


def test_certificate_is_a_usable_pair(tmp_path):
    cert, key = make_certificate(tmp_path)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0
