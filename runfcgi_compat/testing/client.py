"""A test client that talks FastCGI, SCGI or AJP to runfcgi directly.

It is to ``runfcgi_compat.client`` (one request, the web server's side)
what Django's test ``Client`` is to a view: the same calls (``get``,
``post`` with ``data`` and ``content_type``, ``**extra`` environ names such
as ``HTTP_X_FOO``, ``headers=``, ``secure=``, ``follow=``), cookies kept
between requests, and responses with ``status_code``, ``headers``,
``content``, ``json()`` and ``cookies``.  Unlike Django's client, each
request crosses the real protocol and the real server, as a web server's
would; no web server needs to be installed.
"""
import json
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

from .. import client as wire

BOUNDARY = "BoUnDaRyStRiNg"
MULTIPART_CONTENT = f"multipart/form-data; boundary={BOUNDARY}"
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 20


class Response:
    """An answer as a Django test client's response reads."""

    def __init__(self, answer, request):
        from django.utils.datastructures import CaseInsensitiveMapping

        self.status_code = answer.status
        self.reason_phrase = answer.reason
        self.header_list = list(answer.headers)  # Duplicates kept (Set-Cookie).
        self.headers = CaseInsensitiveMapping(self.header_list)
        self.content = answer.body
        self.stderr = answer.stderr  # FastCGI's error stream; b"" for SCGI and AJP.
        self.request = request
        self.redirect_chain = []
        self.cookies = SimpleCookie()
        for name, value in self.header_list:
            if name.lower() == "set-cookie":
                self.cookies.load(value)

    @property
    def charset(self):
        _, _, params = self.headers.get("Content-Type", "").partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    @property
    def text(self):
        return self.content.decode(self.charset)

    @property
    def url(self):
        """The redirect's target (``Location``), as Django's redirects have."""
        return self.headers.get("Location")

    def json(self, **kwargs):
        return json.loads(self.content.decode(self.charset), **kwargs)

    def __getitem__(self, name):
        return self.headers[name]

    def has_header(self, name):
        return name in self.headers

    def get(self, name, default=None):
        return self.headers.get(name, default)

    def __repr__(self):
        return (f"<{type(self).__name__} status_code={self.status_code}, "
                f'"{self.headers.get("Content-Type", "")}">')


class FastCGIClient:
    """Requests to runfcgi at ``address`` ((host, port) or a UNIX socket path).

    ``prefix`` is where the site is mounted (``"/app"``): paths given to
    the client are the site's own (``"/polls/"``), sent as a web server
    mounting it there would.  ``host`` is the Host the requests name.
    """

    def __init__(self, address, protocol="fcgi", *, prefix="", host="localhost",
                 timeout=30.0):
        self.address = address
        self.protocol = protocol
        self.prefix = prefix.rstrip("/")
        self.host = host
        self.timeout = timeout
        self.cookies = SimpleCookie()

    # -- the verbs, as Django's Client has them

    def get(self, path, data=None, follow=False, secure=False, *, headers=None, **extra):
        return self.generic("GET", path, query=data, follow=follow, secure=secure,
                            headers=headers, **extra)

    def head(self, path, data=None, follow=False, secure=False, *, headers=None, **extra):
        return self.generic("HEAD", path, query=data, follow=follow, secure=secure,
                            headers=headers, **extra)

    def options(self, path, data="", content_type="application/octet-stream", follow=False,
                secure=False, *, headers=None, **extra):
        return self.generic("OPTIONS", path, data, content_type, follow=follow,
                            secure=secure, headers=headers, **extra)

    def post(self, path, data=None, content_type=MULTIPART_CONTENT, follow=False,
             secure=False, *, headers=None, **extra):
        return self.generic("POST", path, _encode(data, content_type), content_type,
                            follow=follow, secure=secure, headers=headers, **extra)

    def put(self, path, data="", content_type="application/octet-stream", follow=False,
            secure=False, *, headers=None, **extra):
        return self.generic("PUT", path, _encode(data, content_type), content_type,
                            follow=follow, secure=secure, headers=headers, **extra)

    def patch(self, path, data="", content_type="application/octet-stream", follow=False,
              secure=False, *, headers=None, **extra):
        return self.generic("PATCH", path, _encode(data, content_type), content_type,
                            follow=follow, secure=secure, headers=headers, **extra)

    def delete(self, path, data="", content_type="application/octet-stream", follow=False,
               secure=False, *, headers=None, **extra):
        return self.generic("DELETE", path, _encode(data, content_type), content_type,
                            follow=follow, secure=secure, headers=headers, **extra)

    def generic(self, method, path, data=b"", content_type="application/octet-stream", *,
                query=None, follow=False, secure=False, headers=None, **extra):
        """Send one request (and follow its redirects if ``follow``)."""
        response = self._send(method, path, data, content_type, query, secure, headers,
                              extra)
        chain = []
        while follow and response.status_code in REDIRECTS:
            if len(chain) >= MAX_REDIRECTS:
                raise RuntimeError(f"more than {MAX_REDIRECTS} redirects from {path!r}")
            target = urlsplit(response.url)
            chain.append((response.url, response.status_code))
            path = target.path or "/"
            if self.prefix and path.startswith(self.prefix + "/"):
                path = path[len(self.prefix):]
            keep_body = response.status_code in (307, 308)
            response = self._send(
                method if keep_body else ("HEAD" if method == "HEAD" else "GET"),
                path + (f"?{target.query}" if target.query else ""),
                data if keep_body else b"", content_type, None,
                secure or target.scheme == "https", headers, extra)
        response.redirect_chain = chain
        return response

    # -- one request

    def _send(self, method, path, data, content_type, query, secure, headers, extra):
        split = urlsplit(str(path))
        query_string = urlencode(query, doseq=True) if query else split.query
        body = data.encode("utf-8") if isinstance(data, str) else bytes(data or b"")
        sent_headers, params = self._headers_and_params(
            body, content_type, secure, headers, extra)
        app_path = split.path or "/"
        if self.protocol != "ajp" and self.prefix:
            # As a web server mounting the site at the prefix sends it.
            params.setdefault("SCRIPT_NAME", self.prefix)
            params.setdefault("PATH_INFO", app_path)
            wire_path = self.prefix + app_path
        else:
            # AJP carries the path after the mount (FORCE_SCRIPT_NAME names it).
            wire_path = app_path
        answer = wire.request(self.address, self.protocol, method, wire_path, query_string,
                              sent_headers, body, params, timeout=self.timeout)
        response = Response(answer, {"method": method, "path": path, "query": query_string,
                                     "headers": sent_headers, "params": params})
        self._keep_cookies(response.cookies)
        return response

    def _headers_and_params(self, body, content_type, secure, headers, extra):
        sent = [("Host", self.host)]
        if body or content_type != "application/octet-stream":
            sent.append(("Content-Type", content_type))
        cookie = "; ".join(f"{name}={morsel.coded_value}"
                           for name, morsel in self.cookies.items())
        if cookie:
            sent.append(("Cookie", cookie))
        params = {}
        if secure:
            params.update(HTTPS="on", SERVER_PORT="443", REQUEST_SCHEME="https")
        sent += list((headers or {}).items())
        for key, value in extra.items():
            # Django's client takes WSGI environ names: HTTP_X_FOO is X-Foo.
            if key.startswith("HTTP_"):
                sent.append((key[5:].replace("_", "-").title(), value))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                sent.append((key.replace("_", "-").title(), value))
            else:
                params[key] = value
        names = [name.lower() for name, _ in sent]
        if names.count("host") > 1:
            sent.pop(0)  # The caller named its own Host.
        return sent, params

    def _keep_cookies(self, cookies):
        for name, morsel in cookies.items():
            if morsel["max-age"] == "0" or morsel.value == "" and morsel["expires"]:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel


def _encode(data, content_type):
    """Encode a body as Django's test client does."""
    from django.test.client import encode_multipart
    from django.utils.encoding import force_bytes

    if data is None:
        data = {}
    if content_type.startswith("application/json") and isinstance(data, (dict, list, tuple)):
        from django.core.serializers.json import DjangoJSONEncoder

        return json.dumps(data, cls=DjangoJSONEncoder).encode("utf-8")
    if content_type == MULTIPART_CONTENT:
        return encode_multipart(BOUNDARY, data)
    return force_bytes(data)
