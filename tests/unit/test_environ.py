"""fix_environ against the environs real web servers send.

Every row of ``SERVERS`` was captured from the real server (nginx 1.22,
Apache 2.4.6x, lighttpd 1.4.69) answering ``GET /caf%C3%A9/x?q=1`` (or the
path named), before flup or runfcgi_compat touched it.  Values are what a
FastCGI/SCGI/AJP server hands over: latin-1 text of the raw bytes.
"""
import io
import re
from urllib.parse import quote

import pytest
from django.core.handlers.wsgi import WSGIRequest
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from runfcgi_compat.servers import environ as environ_module
from runfcgi_compat.servers.environ import fix_environ
from tests import modes


def wire(text):
    """``text`` as a server passes it through: UTF-8 bytes read as latin-1."""
    return text.encode("utf-8").decode("latin-1")


CAFE = wire("/café/x")
URI = "/caf%C3%A9/x?q=1"

# (name, protocol, environ as sent, SCRIPT_NAME, PATH_INFO after the fix)
SERVERS = [
    ("nginx fastcgi_params", "fcgi",
     {"SCRIPT_NAME": CAFE, "REQUEST_URI": URI, "DOCUMENT_URI": CAFE, "QUERY_STRING": "q=1",
      "REQUEST_SCHEME": "http", "SERVER_SOFTWARE": "nginx/1.22.1"},
     "", CAFE),
    ("nginx fastcgi_params, /", "fcgi",
     {"SCRIPT_NAME": "/", "REQUEST_URI": "/", "DOCUMENT_URI": "/", "QUERY_STRING": ""},
     "", "/"),
    ("nginx fastcgi_params, merged //", "fcgi",
     {"SCRIPT_NAME": "/a/c", "REQUEST_URI": "/a//b/../c", "DOCUMENT_URI": "/a/c",
      "QUERY_STRING": ""},
     "", "/a/c"),
    ("nginx fastcgi_params, literal %", "fcgi",
     {"SCRIPT_NAME": "/100%", "REQUEST_URI": "/100%25", "DOCUMENT_URI": "/100%",
      "QUERY_STRING": ""},
     "", "/100%"),
    ("nginx fastcgi_params, unencoded UTF-8 in the request line", "fcgi",
     {"SCRIPT_NAME": CAFE, "REQUEST_URI": CAFE + "?q=1", "DOCUMENT_URI": CAFE,
      "QUERY_STRING": "q=1"},
     "", CAFE),
    ("nginx fastcgi_split_path_info /app", "fcgi",
     {"SCRIPT_NAME": "/app", "PATH_INFO": CAFE, "REQUEST_URI": "/app" + URI,
      "DOCUMENT_URI": "/app" + CAFE, "QUERY_STRING": "q=1"},
     "/app", CAFE),
    ("nginx fastcgi_split_path_info /app, /app/", "fcgi",
     {"SCRIPT_NAME": "/app", "PATH_INFO": "/", "REQUEST_URI": "/app/",
      "DOCUMENT_URI": "/app/", "QUERY_STRING": ""},
     "/app", "/"),
    ("nginx scgi_params", "scgi",
     {"REQUEST_URI": URI, "DOCUMENT_URI": CAFE, "QUERY_STRING": "q=1", "SCGI": "1",
      "REQUEST_SCHEME": "http"},
     "", CAFE),
    ("nginx scgi_params, merged //", "scgi",
     {"REQUEST_URI": "/a//b/../c", "DOCUMENT_URI": "/a/c", "QUERY_STRING": ""},
     "", "/a//b/../c"),
    ("nginx scgi_params + scgi_param SCRIPT_NAME /app", "scgi",
     {"SCRIPT_NAME": "/app", "REQUEST_URI": "/app" + URI, "DOCUMENT_URI": "/app" + CAFE,
      "QUERY_STRING": "q=1"},
     "/app", CAFE),
    ("nginx scgi_params + scgi_param SCRIPT_NAME /app/", "scgi",
     {"SCRIPT_NAME": "/app/", "REQUEST_URI": "/app" + URI, "QUERY_STRING": "q=1"},
     "/app", CAFE),
    ("SCRIPT_NAME: the whole path, still percent-encoded", "scgi",
     {"SCRIPT_NAME": "/caf%C3%A9/x", "REQUEST_URI": URI, "QUERY_STRING": "q=1"},
     "", CAFE),
    ("SCRIPT_NAME unrelated to the URI, no PATH_INFO: the server's word", "fcgi",
     {"SCRIPT_NAME": "/other", "REQUEST_URI": "/x", "QUERY_STRING": ""},
     "/other", ""),
    ("nginx scgi_params, absolute-form request", "scgi",
     {"REQUEST_URI": "http://example.com" + URI, "QUERY_STRING": "q=1"},
     "", CAFE),
    ("Apache mod_proxy_fcgi", "fcgi",
     {"SCRIPT_NAME": CAFE, "REQUEST_URI": URI, "QUERY_STRING": "q=1",
      "SCRIPT_FILENAME": "proxy:fcgi://127.0.0.1:41287/caf%C3%A9/x",
      "REQUEST_SCHEME": "http", "SERVER_SOFTWARE": "Apache/2.4.71 (Debian)"},
     "", CAFE),
    ("Apache mod_proxy_fcgi, /", "fcgi",
     {"SCRIPT_NAME": "/", "REQUEST_URI": "/", "QUERY_STRING": "",
      "SCRIPT_FILENAME": "proxy:fcgi://127.0.0.1:41287/"},
     "", "/"),
    ("Apache mod_proxy_fcgi, merged //", "fcgi",
     {"SCRIPT_NAME": "/a/c", "REQUEST_URI": "/a//b/../c", "QUERY_STRING": "",
      "SCRIPT_FILENAME": "proxy:fcgi://127.0.0.1:41287/a/c"},
     "", "/a/c"),
    ("Apache mod_proxy_fcgi, ProxyPass /app/", "fcgi",
     {"SCRIPT_NAME": wire("/app/café/x"), "REQUEST_URI": "/app" + URI, "QUERY_STRING": "q=1",
      "SCRIPT_FILENAME": "proxy:fcgi://127.0.0.1:42685/caf%C3%A9/x"},
     "/app", CAFE),
    ("Apache mod_proxy_fcgi, ProxyPass /app/, /app/", "fcgi",
     {"SCRIPT_NAME": "/app/", "REQUEST_URI": "/app/", "QUERY_STRING": "",
      "SCRIPT_FILENAME": "proxy:fcgi://127.0.0.1:42685/"},
     "/app", "/"),
    ("Apache mod_proxy_fcgi over a UNIX socket", "fcgi",
     {"SCRIPT_NAME": CAFE, "REQUEST_URI": URI, "QUERY_STRING": "q=1",
      "SCRIPT_FILENAME": "proxy:fcgi://localhost/caf%C3%A9/x"},
     "", CAFE),
    ("Apache mod_proxy_scgi", "scgi",
     {"SCRIPT_NAME": CAFE, "REQUEST_URI": URI, "QUERY_STRING": "q=1",
      "SCRIPT_FILENAME": "proxy:scgi://127.0.0.1:48031/caf%C3%A9/x"},
     "", CAFE),
    ("Apache mod_proxy_scgi, ProxyPass /app/", "scgi",
     {"SCRIPT_NAME": wire("/app/café/x"), "REQUEST_URI": "/app" + URI, "QUERY_STRING": "q=1",
      "SCRIPT_FILENAME": "proxy:scgi://127.0.0.1:42061/caf%C3%A9/x"},
     "/app", CAFE),
    ("Apache mod_proxy_ajp", "ajp",
     {"REQUEST_URI": "/caf%C3%A9/x", "QUERY_STRING": "q=1"},
     "", CAFE),
    ("Apache mod_proxy_ajp, after flup's guess", "ajp",
     {"REQUEST_URI": "/caf%C3%A9/x", "QUERY_STRING": "q=1", "SCRIPT_NAME": "",
      "PATH_INFO": "/caf%C3%A9/x"},
     "", CAFE),
    ("Apache mod_fcgid + .htaccess RewriteRule", "fcgi",
     {"SCRIPT_NAME": "/mysite.fcgi", "PATH_INFO": CAFE, "REQUEST_URI": URI,
      "QUERY_STRING": "q=1", "SCRIPT_FILENAME": "/srv/www/mysite.fcgi",
      "REDIRECT_URL": CAFE, "SERVER_SOFTWARE": "Apache/2.4.71 (Debian) mod_fcgid/2.3.9"},
     "", CAFE),
    ("Apache mod_fcgid + RewriteRule, merged //", "fcgi",
     {"SCRIPT_NAME": "/mysite.fcgi", "PATH_INFO": "/a/c", "REQUEST_URI": "/a//b/../c",
      "QUERY_STRING": "", "SCRIPT_FILENAME": "/srv/www/mysite.fcgi",
      "REDIRECT_URL": "/a/c"},
     "", "/a/c"),
    ("Apache mod_fcgid, the script's own URL", "fcgi",
     {"SCRIPT_NAME": "/mysite.fcgi", "PATH_INFO": "/x", "REQUEST_URI": "/mysite.fcgi/x",
      "QUERY_STRING": "", "SCRIPT_FILENAME": "/srv/www/mysite.fcgi"},
     "/mysite.fcgi", "/x"),
    ("lighttpd at / with fix-root-scriptname", "fcgi",
     {"SCRIPT_NAME": "", "PATH_INFO": CAFE, "REQUEST_URI": URI, "QUERY_STRING": "q=1",
      "SCRIPT_FILENAME": "/srv/htdocs/", "SERVER_SOFTWARE": "lighttpd/1.4.69"},
     "", CAFE),
    ("lighttpd at /app", "fcgi",
     {"SCRIPT_NAME": "/app", "PATH_INFO": CAFE, "REQUEST_URI": "/app" + URI,
      "QUERY_STRING": "q=1", "SCRIPT_FILENAME": "/srv/htdocs/app"},
     "/app", CAFE),
    ("lighttpd at /app, merged //", "fcgi",
     {"SCRIPT_NAME": "/app", "PATH_INFO": "/a/c", "REQUEST_URI": "/app/a//b/../c",
      "QUERY_STRING": ""},
     "/app", "/a/c"),
    # The server did not split: taken as a root mount (Django answers /app).
    ("lighttpd at /app, exactly /app", "fcgi",
     {"SCRIPT_NAME": "/app", "REQUEST_URI": "/app", "QUERY_STRING": ""},
     "", "/app"),
    # Indistinguishable from a mount at /café: FORCE_SCRIPT_NAME = "" fixes it.
    ("lighttpd at / without fix-root-scriptname", "fcgi",
     {"SCRIPT_NAME": wire("/café"), "PATH_INFO": "/x", "REQUEST_URI": URI,
      "QUERY_STRING": "q=1", "SCRIPT_FILENAME": wire("/srv/htdocs/café")},
     wire("/café"), "/x"),
    ("lighttpd mod_scgi at /", "scgi",
     {"SCRIPT_NAME": "", "PATH_INFO": CAFE, "REQUEST_URI": URI, "QUERY_STRING": "q=1"},
     "", CAFE),
    ("cgi-fcgi", "fcgi",
     {"SCRIPT_NAME": "", "PATH_INFO": "/path/abc", "REQUEST_URI": "/path/abc?q=1",
      "QUERY_STRING": "q=1"},
     "", "/path/abc"),
    ("flup's SCGI guess from REQUEST_URI", "scgi",
     {"SCRIPT_NAME": "", "PATH_INFO": "/caf%C3%A9/x", "REQUEST_URI": URI,
      "QUERY_STRING": "q=1"},
     "", CAFE),
    ("no REQUEST_URI: the server's word", "fcgi",
     {"SCRIPT_NAME": "/app", "PATH_INFO": "/x", "QUERY_STRING": ""},
     "/app", "/x"),
]


@pytest.fixture(autouse=True)
def fresh_force_script_name():
    """Each test reads FORCE_SCRIPT_NAME afresh, as a new server would."""
    environ_module._force_script_name = environ_module._UNREAD
    yield
    environ_module._force_script_name = environ_module._UNREAD


def fixed(environ, protocol="fcgi"):
    environ = dict(environ)
    fix_environ(environ, protocol)
    return environ


def django_request(environ):
    environ = dict(environ, REQUEST_METHOD="GET", SERVER_NAME="testserver",
                   SERVER_PORT="80")
    environ["wsgi.input"] = io.BytesIO(b"")
    return WSGIRequest(environ)


@pytest.mark.parametrize("name, protocol, sent, script_name, path_info", SERVERS,
                         ids=[row[0] for row in SERVERS])
def test_server_environ(name, protocol, sent, script_name, path_info):
    environ = fixed(sent, protocol)
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == (script_name, path_info)


@pytest.mark.parametrize("name, protocol, sent, script_name, path_info", SERVERS,
                         ids=[row[0] for row in SERVERS])
def test_server_environ_is_stable(name, protocol, sent, script_name, path_info):
    once = fixed(sent, protocol)
    assert fixed(once, protocol) == once


AT_ROOT = [row for row in SERVERS if row[2].get("REQUEST_URI") == URI and row[3] == ""]


@pytest.mark.parametrize("name, protocol, sent, script_name, path_info", AT_ROOT,
                         ids=[row[0] for row in AT_ROOT])
def test_django_sees_the_requested_url(name, protocol, sent, script_name, path_info):
    request = django_request(fixed(sent, protocol))
    assert request.path == "/café/x"
    assert request.path_info == "/café/x"
    assert request.GET.dict() == {"q": "1"}


def test_django_sees_the_prefix():
    sent = SERVERS[[row[0] for row in SERVERS].index("nginx fastcgi_split_path_info /app")][2]
    request = django_request(fixed(sent))
    assert (request.path, request.path_info, request.META["SCRIPT_NAME"]) == (
        "/app/café/x", "/café/x", "/app")


def test_django_prefix_from_redirect_url_agrees():
    sent = dict(SERVERS[[row[0] for row in SERVERS].index(
        "Apache mod_fcgid + .htaccess RewriteRule")][2])
    request = django_request(fixed(sent))
    assert (request.path, request.path_info, request.META["SCRIPT_NAME"]) == (
        "/café/x", "/café/x", "")


# -- FORCE_SCRIPT_NAME ------------------------------------------------------------


@pytest.mark.parametrize("force, sent, protocol, expected", [
    ("", {"SCRIPT_NAME": wire("/café"), "PATH_INFO": "/x", "REQUEST_URI": URI}, "fcgi",
     ("", CAFE)),
    ("/app", {"REQUEST_URI": "/x"}, "ajp", ("/app", "/x")),
    ("/app/", {"SCRIPT_NAME": "/app/x", "REQUEST_URI": "/app/x",
               "SCRIPT_FILENAME": "proxy:fcgi://127.0.0.1:9000/app/x"}, "fcgi",
     ("/app", "/x")),
    ("/app", {"SCRIPT_NAME": "/app/x", "REQUEST_URI": "/app/x", "DOCUMENT_URI": "/app/x"},
     "fcgi", ("/app", "/x")),
    ("/app", {"SCRIPT_NAME": "/app", "REQUEST_URI": "/app", "DOCUMENT_URI": "/app"},
     "fcgi", ("/app", "")),
    ("", {"SCRIPT_NAME": "/mysite.fcgi", "PATH_INFO": "/x", "REQUEST_URI": "/x",
          "REDIRECT_URL": "/x"}, "fcgi", ("", "/x")),
    # A prefix that a proxy in front already removed: only SCRIPT_NAME changes.
    ("/public", {"SCRIPT_NAME": "", "PATH_INFO": "/x", "REQUEST_URI": "/x"}, "fcgi",
     ("/public", "/x")),
    # /application is not under /app.
    ("/app", {"SCRIPT_NAME": "", "PATH_INFO": "/application", "REQUEST_URI": "/application"},
     "fcgi", ("/app", "/application")),
])
def test_force_script_name_wins(force, sent, protocol, expected):
    with override_settings(FORCE_SCRIPT_NAME=force):
        environ = fixed(sent, protocol)
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == expected


def test_force_script_name_is_read_once():
    sent = {"SCRIPT_NAME": "", "PATH_INFO": "/x", "REQUEST_URI": "/x"}
    with override_settings(FORCE_SCRIPT_NAME="/first"):
        assert fixed(sent)["SCRIPT_NAME"] == "/first"
        # Bypass override_settings' signal: a per-request read would see this.
        from django.conf import settings

        settings._wrapped.FORCE_SCRIPT_NAME = "/second"
        assert fixed(sent)["SCRIPT_NAME"] == "/first"


def test_force_script_name_follows_override_settings():
    sent = {"SCRIPT_NAME": "", "PATH_INFO": "/x", "REQUEST_URI": "/x"}
    assert fixed(sent)["SCRIPT_NAME"] == ""
    with override_settings(FORCE_SCRIPT_NAME="/mounted"):
        assert fixed(sent)["SCRIPT_NAME"] == "/mounted"
    assert fixed(sent)["SCRIPT_NAME"] == ""


# -- scheme and query string ---------------------------------------------------------


@pytest.mark.parametrize("extra, scheme", [
    ({"HTTPS": "on"}, "https"),
    ({"HTTPS": "ON"}, "https"),
    ({"HTTPS": "On"}, "https"),
    ({"HTTPS": "1"}, "https"),
    ({"HTTPS": "off"}, "http"),
    ({"HTTPS": ""}, "http"),
    ({"HTTPS": "0"}, "http"),
    ({"REQUEST_SCHEME": "https"}, "https"),
    ({"REQUEST_SCHEME": "http"}, "http"),
    ({"HTTPS": "off", "REQUEST_SCHEME": "https"}, "http"),
    ({"HTTPS": "on", "REQUEST_SCHEME": "http"}, "https"),
    ({}, "http"),
    ({"wsgi.url_scheme": "https"}, "http"),
])
def test_url_scheme(extra, scheme):
    environ = fixed(dict({"REQUEST_URI": "/", "SCRIPT_NAME": "", "PATH_INFO": "/"}, **extra))
    assert environ["wsgi.url_scheme"] == scheme
    assert django_request(environ).is_secure() is (scheme == "https")


def test_query_string_from_request_uri_when_missing():
    environ = fixed({"REQUEST_URI": "/x?a=1&b=%C3%A9"}, "scgi")
    assert environ["QUERY_STRING"] == "a=1&b=%C3%A9"
    assert django_request(environ).GET.dict() == {"a": "1", "b": "é"}


def test_query_string_sent_by_the_server_is_kept():
    assert fixed({"REQUEST_URI": "/x?a=1", "QUERY_STRING": "b=2"})["QUERY_STRING"] == "b=2"


def test_missing_everything_gives_empty_strings():
    environ = fixed({})
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"], environ["QUERY_STRING"]) == (
        "", "", "")


def test_asterisk_request_uri():
    environ = fixed({"REQUEST_URI": "*", "SCRIPT_NAME": "", "PATH_INFO": ""})
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "")


# -- any path, through every server shape ----------------------------------------------


def shapes(path, query):
    """What each server sends for ``path`` (real text) and ``query``."""
    raw = quote(path.encode("utf-8"), safe="/")
    uri = raw + ("?" + query if query else "")
    sent = wire(path)
    return {
        "nginx fastcgi_params": ("fcgi", {"SCRIPT_NAME": sent, "DOCUMENT_URI": sent,
                                          "REQUEST_URI": uri}),
        "nginx scgi_params": ("scgi", {"REQUEST_URI": uri, "DOCUMENT_URI": sent}),
        "Apache mod_proxy_fcgi": ("fcgi", {"SCRIPT_NAME": sent, "REQUEST_URI": uri,
                                           "SCRIPT_FILENAME": "proxy:fcgi://h:1" + raw}),
        "Apache mod_proxy_ajp": ("ajp", {"REQUEST_URI": raw}),
        "Apache mod_fcgid": ("fcgi", {"SCRIPT_NAME": "/mysite.fcgi", "PATH_INFO": sent,
                                      "REQUEST_URI": uri, "REDIRECT_URL": sent}),
        "lighttpd": ("fcgi", {"SCRIPT_NAME": "", "PATH_INFO": sent, "REQUEST_URI": uri}),
    }


segment = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#\0"),
                  min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.lists(segment, min_size=1, max_size=4), st.booleans())
def test_any_path_reaches_django_unchanged(segments, trailing_slash):
    path = "/" + "/".join(segments) + ("/" if trailing_slash else "")
    for name, (protocol, sent) in shapes(path, "q=1").items():
        environ = fixed(dict(sent, QUERY_STRING="q=1"), protocol)
        request = django_request(environ)
        assert (request.path, request.path_info) == (path, path), name


PIECES = st.sampled_from(["", "/", "/a", "/a/", "/b", "x", "%41", "/caf\xc3\xa9", "?q=1", "?",
                          "/\u0100", "ON", "on", "1", "https", "HTTPS", "http"])
KEYS = ["REQUEST_URI", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "HTTPS", "REQUEST_SCHEME",
        "DOCUMENT_URI"]


VALUES = st.lists(PIECES, min_size=1, max_size=3).map("".join)
# What the protocols make: latin-1 text (the C twin answers False on the rest).
LATIN1_VALUES = VALUES.filter(lambda value: max(value, default="") <= "\xff")

# Both versions of the usual case: the C one (when the module is there) and
# the Python one.
USUAL = [pytest.param(environ_module.fix_usual_py, id="python")]
if environ_module.fix_usual is not environ_module.fix_usual_py:
    USUAL.append(pytest.param(environ_module.fix_usual, id="c"))


@pytest.mark.parametrize("usual", USUAL)
@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES),
       st.sampled_from(["fcgi", "scgi", "ajp"]))
def test_the_usual_case_agrees_with_the_general_code(usual, sent, protocol):
    saved = environ_module.fix_usual
    environ_module._force_script_name = None  # As after the first request.
    try:
        environ_module.fix_usual = usual
        with_usual = fixed(sent, protocol)
        environ_module.fix_usual = lambda environ: False  # Only the general code.
        assert with_usual == fixed(sent, protocol)
    finally:
        environ_module.fix_usual = saved


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), LATIN1_VALUES))
def test_the_c_usual_case_agrees_with_its_python_twin(sent):
    fix_usual = modes.wire().fix_usual
    in_c, in_python = dict(sent), dict(sent)
    assert (fix_usual(in_c), in_c) == (environ_module.fix_usual_py(in_python), in_python)


@pytest.mark.parametrize("usual", USUAL)
def test_the_usual_case_takes_nginx_with_a_path_info(usual):
    environ = {"REQUEST_URI": "/a/b?q=1", "SCRIPT_NAME": "/a", "PATH_INFO": "/b",
               "REQUEST_SCHEME": "HTTPS"}
    assert usual(environ) is True
    assert environ == dict(environ, QUERY_STRING="q=1", **{"wsgi.url_scheme": "https"})
    encoded = {"REQUEST_URI": "/a%20b", "SCRIPT_NAME": "", "PATH_INFO": "/a b"}
    assert usual(encoded) is False
    assert "wsgi.url_scheme" not in encoded  # Left untouched for the general code.


# -- PEP 3333's CGI variables, whatever the server sent --------------------------------

# The usual case (nginx with a PATH_INFO) and one for the general code.
ROUTES = {"usual": {"REQUEST_URI": "/x?a=1", "SCRIPT_NAME": "", "PATH_INFO": "/x"},
          "general": {"REQUEST_URI": "/x?a=1", "SCRIPT_NAME": "/x"}}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("sent, expected", [
    # nginx and Caddy send both: the web server's own value wins.
    ({"CONTENT_TYPE": "text/plain", "HTTP_CONTENT_TYPE": "text/html",
      "CONTENT_LENGTH": "3", "HTTP_CONTENT_LENGTH": "5"},
     {"CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3"}),
    # Only the header (a hand-written param list): it takes the variable's place.
    ({"HTTP_CONTENT_TYPE": "text/html", "HTTP_CONTENT_LENGTH": "5"},
     {"CONTENT_TYPE": "text/html", "CONTENT_LENGTH": "5"}),
    # nginx's empty $content_type when... the header came some other way.
    ({"CONTENT_TYPE": "", "HTTP_CONTENT_TYPE": "a/b", "CONTENT_LENGTH": ""},
     {"CONTENT_TYPE": "a/b", "CONTENT_LENGTH": ""}),
    # An empty header adds nothing.
    ({"HTTP_CONTENT_TYPE": "", "HTTP_CONTENT_LENGTH": ""}, {}),
    ({"CONTENT_TYPE": "", "CONTENT_LENGTH": ""}, {"CONTENT_TYPE": "", "CONTENT_LENGTH": ""}),
])
def test_content_headers_are_not_repeated(route, sent, expected):
    environ = fixed(dict(ROUTES[route], **sent))
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    content = {key: environ[key] for key in ("CONTENT_TYPE", "CONTENT_LENGTH") if key in environ}
    assert content == expected


@pytest.mark.parametrize("sent, expected", [
    ({"SERVER_NAME": "a", "SERVER_PORT": "81", "HTTP_HOST": "b:82"}, ("a", "81")),
    ({"HTTP_HOST": "example.com:8080"}, ("example.com", "8080")),
    ({"HTTP_HOST": "[::1]:8081"}, ("[::1]", "8081")),
    ({"HTTP_HOST": "[::1]"}, ("[::1]", "80")),
    ({"HTTP_HOST": "example.com", "HTTPS": "on"}, ("example.com", "443")),
    ({"HTTP_HOST": "example.com:"}, ("example.com", "80")),
    ({}, ("localhost", "80")),
    ({"SERVER_NAME": "", "SERVER_PORT": "", "HTTP_HOST": "h"}, ("h", "80")),
    ({"SERVER_NAME": "a"}, ("a", "80")),
])
def test_server_name_and_port_are_never_missing(sent, expected):
    environ = fixed(dict(ROUTES["usual"], **sent))
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == expected


@pytest.mark.parametrize("sent, expected", [
    ({"SCRIPT_NAME": "/"}, ("", "/")),
    ({"SCRIPT_NAME": "/", "PATH_INFO": "/x"}, ("", "/x")),
])
def test_script_name_is_never_a_slash(sent, expected):
    environ = fixed(sent)
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == expected


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("0", 0), ("12", 12), ("007", 7)])
def test_content_length(value, expected):
    environ = {} if value is None else {"CONTENT_LENGTH": value}
    assert environ_module.content_length(environ) == expected


@pytest.mark.parametrize("value", ["-1", "x", " 3", "1_000", "+3", "\u0663", "3.0"])
def test_content_length_that_is_not_a_length(value):
    with pytest.raises(ValueError, match=re.escape(f"invalid CONTENT_LENGTH {value!r}")):
        environ_module.content_length({"CONTENT_LENGTH": value})


HEADER_KEYS = KEYS + ["CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE",
                      "HTTP_CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "HTTP_HOST"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(HEADER_KEYS), LATIN1_VALUES),
       st.sampled_from(["fcgi", "scgi", "ajp"]))
def test_wsgiref_validate_finds_nothing_in_any_environ(sent, protocol):
    """Whatever a server sends, the environ passes wsgiref.validate's checks
    (a CONTENT_LENGTH that is not a length is refused before the app runs)."""
    import warnings
    from wsgiref.validate import check_environ

    if any(sent.get(key, "/")[:1] != "/" for key in ("SCRIPT_NAME", "PATH_INFO",
                                                     "DOCUMENT_URI", "REQUEST_URI")):
        return  # Not a path: no web server sends it (and step 6 trusts the server).
    environ = fixed(dict(sent, REQUEST_METHOD="GET"), protocol)
    try:
        environ_module.content_length(environ)
    except ValueError:
        return  # base_environ: a ProtocolError, the app never sees it.
    environ.update({"wsgi.version": (1, 0), "wsgi.input": io.BytesIO(),
                    "wsgi.errors": io.StringIO(), "wsgi.multithread": False,
                    "wsgi.multiprocess": True, "wsgi.run_once": False})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_environ(environ)
