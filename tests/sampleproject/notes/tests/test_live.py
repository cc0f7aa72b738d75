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
from runfcgi_compat.testing import (
    FastCGILiveServerTestCase,
    LiveServerError,
    StaticFastCGILiveServerTestCase,
)


def unverified():
    """An https handler that takes the live server's throwaway certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return urllib.request.HTTPSHandler(context=context)


def fetch(url, data=None, opener=None, headers=None):
    """Return (status, body text) for a GET, or a POST of form ``data``."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, body, headers=headers or {})
    opener = opener or urllib.request.build_opener(unverified())
    with opener.open(request, timeout=30) as response:
        return response.status, response.read().decode()


def browser(https=False):
    """An opener that keeps cookies, as a browser does."""
    handlers = [urllib.request.HTTPCookieProcessor(CookieJar())]
    if https:
        handlers.append(unverified())
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
        # STATIC_URL is /static/ on the server, outside any prefix.
        origin = self.live_server_url.removesuffix(self.prefix)
        opener = urllib.request.build_opener(unverified())
        with opener.open(f"{origin}/static/notes/site.css", timeout=30) as response:
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


class HTTPSThroughLighttpd(HTTPSThroughApache):
    frontend = "lighttpd"  # Its TLS is in Debian's lighttpd-mod-openssl.


class SecurePrefixChecks(LiveChecks):
    """https under /app, with the project's static files from the front end."""

    https = True
    prefix = "/app"

    def test_request_is_secure_under_the_prefix(self):
        self.assertTrue(self.live_server_url.startswith("https://localhost:"))
        self.assertTrue(self.live_server_url.endswith("/app"))
        status, body = fetch(f"{self.live_server_url}/echo/")
        seen = json.loads(body)
        self.assertIs(seen["secure"], True)
        self.assertEqual((seen["path"], seen["script_name"]), ("/app/echo/", "/app"))


class CaddyHTTPSUnderPrefix(SecurePrefixChecks, StaticFilesThroughNginx):
    frontend = "caddy"
    server_header = "Caddy"


class H2OHTTPSUnderPrefixPrefork(SecurePrefixChecks, StaticFilesThroughNginx):
    # h2o sends SCRIPT_NAME "": the live server sets FORCE_SCRIPT_NAME, in
    # the prefork child too.
    frontend = "h2o"
    method = "prefork"
    server_header = "h2o"


class HAProxyHTTPSUnderPrefix(SecurePrefixChecks, FastCGILiveServerTestCase):
    frontend = "haproxy"

    def test_static_test_case_needs_a_front_end_that_serves_files(self):
        class Static(StaticFastCGILiveServerTestCase):
            frontend = "haproxy"

        try:
            with self.assertRaises(LiveServerError) as caught:
                Static.setUpClass()
        finally:
            Static.doClassCleanups()  # What setUpClass set before it failed.
        self.assertIn("frontend='haproxy' cannot serve static files", str(caught.exception))
