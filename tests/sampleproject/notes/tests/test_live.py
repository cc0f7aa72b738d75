"""The sample project's tests through runfcgi_compat.testing: each class
changed only its base class (and chose a deployment) from LiveServerTestCase."""
import json
import re
import socket
import ssl
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

from notes.models import Note
from runfcgi_compat.testing import FastCGILiveServerTestCase, StaticFastCGILiveServerTestCase


def fetch(url, data=None, opener=None, headers=None):
    """Return (status, body text) for a GET, or a POST of form ``data``."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, body, headers=headers or {})
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # The live server's throwaway certificate.
    opener = opener or urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    with opener.open(request, timeout=30) as response:
        return response.status, response.read().decode()


def browser(https=False):
    """An opener that keeps cookies, as a browser does."""
    handlers = [urllib.request.HTTPCookieProcessor(CookieJar())]
    if https:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


class LiveChecks:
    """What every deployment below must do (mixed into each test case)."""

    def test_orm_write_then_read_through_the_web_server(self):
        Note.objects.create(text="written by the test")
        status, body = fetch(f"{self.live_server_url}/notes/")
        self.assertEqual((status, json.loads(body)), (200, {"notes": ["written by the test"]}))

    def test_post_form_with_csrf(self):
        opener = browser(self.https)
        url = f"{self.live_server_url}/notes/new/"
        status, page = fetch(url, opener=opener)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        # A browser sends the page's address as Referer (checked over https).
        status, body = fetch(url, {"csrfmiddlewaretoken": token, "text": "via the form"},
                             opener=opener, headers={"Referer": url})
        self.assertEqual(json.loads(body), {"notes": ["via the form"]})
        self.assertEqual(list(Note.objects.values_list("text", flat=True)), ["via the form"])

    def test_post_without_csrf_token_is_refused(self):
        with self.assertRaises(urllib.error.HTTPError) as caught:
            fetch(f"{self.live_server_url}/notes/new/", {"text": "forged"})
        self.assertEqual(caught.exception.code, 403)
        self.assertFalse(Note.objects.exists())

    def test_fcgi_client_speaks_the_protocol(self):
        response = self.fcgi_client.get("/echo/", HTTP_X_FOO="bar")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["foo"], "bar")
        self.assertEqual(response.json()["script_name"], self.prefix)


class ThreadedFastCGIThroughNginx(LiveChecks, FastCGILiveServerTestCase):
    pass


class PreforkFastCGIThroughNginx(LiveChecks, FastCGILiveServerTestCase):
    method = "prefork"


class ThreadedSCGIUnderPrefix(LiveChecks, FastCGILiveServerTestCase):
    protocol = "scgi"
    prefix = "/app"

    def test_live_server_url_includes_the_prefix(self):
        self.assertTrue(self.live_server_url.endswith("/app"))
        status, body = fetch(f"{self.live_server_url}/echo/")
        self.assertEqual(json.loads(body)["path"], "/app/echo/")
        self.assertEqual(json.loads(body)["script_name"], "/app")


class PreforkSCGIThroughNginx(LiveChecks, FastCGILiveServerTestCase):
    protocol = "scgi"
    method = "prefork"


class ThreadedAJPThroughApache(LiveChecks, FastCGILiveServerTestCase):
    protocol = "ajp"
    frontend = "apache"


class PreforkAJPThroughApacheUnderPrefix(LiveChecks, FastCGILiveServerTestCase):
    protocol = "ajp"
    method = "prefork"
    frontend = "apache"
    prefix = "/app"


def free_port():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


class HTTPSThroughNginx(LiveChecks, FastCGILiveServerTestCase):
    https = True
    port = free_port()  # A port of the test's choosing, as LiveServerTestCase allows.

    def test_request_is_secure(self):
        self.assertEqual(self.live_server_url, f"https://localhost:{self.port}")
        status, body = fetch(f"{self.live_server_url}/echo/")
        self.assertIs(json.loads(body)["secure"], True)


class HTTPSThroughApache(LiveChecks, FastCGILiveServerTestCase):
    frontend = "apache"
    https = True

    def test_request_is_secure(self):
        status, body = fetch(f"{self.live_server_url}/echo/")
        self.assertIs(json.loads(body)["secure"], True)


class StaticFilesThroughNginx(StaticFastCGILiveServerTestCase):
    server_header = "nginx"

    def test_static_file_served_by_the_front_end(self):
        status, page = fetch(f"{self.live_server_url}/about/")
        self.assertIn('href="/static/notes/site.css"', page)
        request = urllib.request.urlopen(f"{self.live_server_url}/static/notes/site.css",
                                         timeout=30)
        with request as response:
            self.assertIn(b"rgb(0, 128, 0)", response.read())
            self.assertEqual(response.headers["Content-Type"].split(";")[0], "text/css")
            # The web server's own answer: Django never saw this request.
            self.assertIn(self.server_header, response.headers["Server"])
            self.assertNotIn("X-Content-Type-Options", response.headers)


class StaticFilesThroughApache(StaticFilesThroughNginx):
    frontend = "apache"
    server_header = "Apache"


class StaticFilesThroughLighttpd(StaticFilesThroughNginx):
    frontend = "lighttpd"
    protocol = "scgi"
    server_header = "lighttpd"
