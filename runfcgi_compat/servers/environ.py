"""Make each request's WSGI environ right for Django, whatever the web server sent.

FastCGI, SCGI and AJP leave SCRIPT_NAME and PATH_INFO to the web server, and
no two servers fill them the same way.  What they send for ``GET
/caf%C3%A9/x?q=1`` (values as flup hands them over: latin-1 text of the raw
bytes, so ``é`` arrives as ``Ã©``)::

    nginx, stock fastcgi_params     SCRIPT_NAME=/café/x, no PATH_INFO
    nginx, fastcgi_split_path_info  SCRIPT_NAME=/app, PATH_INFO=/café/x
    nginx, stock scgi_params        REQUEST_URI only (raw, percent-encoded)
    Apache mod_proxy_fcgi / _scgi   SCRIPT_NAME=/café/x, no PATH_INFO,
                                    SCRIPT_FILENAME=proxy:fcgi://host:port/caf%C3%A9/x
    Apache mod_proxy_ajp            the raw request URI, nothing else
    Apache mod_fcgid + RewriteRule  SCRIPT_NAME=/mysite.fcgi, PATH_INFO=/café/x,
                                    REDIRECT_URL=/café/x
    lighttpd, mounted at /app       SCRIPT_NAME=/app, PATH_INFO=the rest
    lighttpd at / + fix-root-...    SCRIPT_NAME="", PATH_INFO=/café/x
    lighttpd at / without it        SCRIPT_NAME=/café, PATH_INFO=/x (needs
                                    FORCE_SCRIPT_NAME = "": nothing in the
                                    request tells it from a mount at /café)

flup on its own turns several of these into a Django that routes every URL
as ``/`` or sees ``/caf%C3%A9/x``.  ``fix_environ`` rebuilds the pair from
what the server sent, checked against the URI the client asked for
(``REQUEST_URI``, percent-decoded per PEP 3333), in this order:

1. AJP sends no SCRIPT_NAME/PATH_INFO: the path is the request URI.
2. The pair already adds up to the requested path: keep it (the fast path).
3. No PATH_INFO, and SCRIPT_NAME is the whole path: the server did not
   split.  The application is at the root, unless Apache's SCRIPT_FILENAME
   (``proxy:fcgi://host:port/<backend path>``) shows a ``ProxyPass /app/``
   mount.  No PATH_INFO, and SCRIPT_NAME is a leading part of the path
   (``scgi_param SCRIPT_NAME /app``): PATH_INFO is the rest.
4. The pair adds up to the *raw* URI (flup's own guess): decode it.
5. PATH_INFO ends the requested path but SCRIPT_NAME is something else
   (an internal rewrite to ``mysite.fcgi``): the public prefix is what the
   client sent before PATH_INFO -- the value Django itself derives from
   SCRIPT_URL or REDIRECT_URL, which are used first when Apache sends them.
6. Nothing matches (e.g. nginx merged ``//``): trust the server.

``settings.FORCE_SCRIPT_NAME``, when set, wins over all of these: it becomes
SCRIPT_NAME and is cut from the front of the path.  It is read once, on the
first request (and again after ``override_settings`` changes it).

``wsgi.url_scheme`` is ``https`` when the server says ``HTTPS`` is ``on``
(any case) or ``1`` -- or, without HTTPS, when ``REQUEST_SCHEME`` is https.

PEP 3333 (and ``wsgiref.validate``) want more of the CGI variables than web
servers give, whatever the protocol:

* No ``HTTP_CONTENT_TYPE`` or ``HTTP_CONTENT_LENGTH``.  nginx and Caddy pass
  every request header as ``HTTP_*`` besides ``CONTENT_TYPE`` and
  ``CONTENT_LENGTH``; RFC 3875 (4.1.18) says those two are not repeated.
  The web server's own ``CONTENT_TYPE``/``CONTENT_LENGTH`` win; when it sent
  none (or an empty one), the header's value takes its place, as a CGI
  server would have put it there (``fix_content_headers``).
* ``SERVER_NAME`` and ``SERVER_PORT`` are never missing or empty: when the
  server sent none, they come from the ``Host`` header, else ``localhost``
  and the scheme's port (``_fill_server``).
* ``QUERY_STRING``, ``SCRIPT_NAME`` and ``PATH_INFO`` are always there (see
  above), and every value is a native ``str`` (latin-1 text of the bytes).

``content_length`` reads CONTENT_LENGTH for the body stream, which never
lets the app read past it (``base.ProtocolHandler.base_environ``).
"""
from urllib.parse import unquote

from . import speedups

_UNREAD = object()
_force_script_name = _UNREAD


def fix_usual_py(environ):
    """Step 2 alone, the usual case: True when done, False (untouched) if not it.

    The usual case: the server sent REQUEST_URI and a PATH_INFO, and with
    SCRIPT_NAME (or none) they add up to the URI's path, with nothing
    percent-encoded.  Then the pair is kept, QUERY_STRING comes from the
    URI when missing, and wsgi.url_scheme from HTTPS or REQUEST_SCHEME.
    The C module's ``fix_usual`` is the same (for the latin-1 str values
    the protocols make; on any other value it answers False).
    """
    get = environ.get
    uri = get("REQUEST_URI")
    path = get("PATH_INFO")
    script = get("SCRIPT_NAME", "")
    if uri is None or not path:
        return False
    raw, _, query = uri.partition("?")
    if "%" in raw or script == "/" or script + path != raw:
        return False  # "/": PEP 3333's root is "" (the general code moves it).
    https = get("HTTPS")
    if https is not None:
        secure = https.lower() in ("on", "1")
    else:
        scheme = get("REQUEST_SCHEME")
        secure = scheme is not None and scheme.lower() == "https"
    environ["wsgi.url_scheme"] = "https" if secure else "http"
    if "QUERY_STRING" not in environ:
        environ["QUERY_STRING"] = query
    if not script:
        environ["SCRIPT_NAME"] = ""
    return True


fix_usual = speedups.pick("fix_usual", fix_usual_py)  # The same in C.


def fix_environ(environ, protocol):
    """Correct SCRIPT_NAME, PATH_INFO, QUERY_STRING and wsgi.url_scheme in place,
    and make the CGI variables PEP 3333's (see the module's docstring).

    ``protocol`` is ``"fcgi"``, ``"scgi"`` or ``"ajp"``.  Safe to call on
    params exactly as the server sent them, or after flup's own guesses.
    """
    if "HTTP_CONTENT_TYPE" in environ or "HTTP_CONTENT_LENGTH" in environ:
        fix_content_headers(environ)
    if not (protocol != "ajp" and _force_script_name is None and fix_usual(environ)):
        _fix_paths(environ, protocol)  # Not the usual case (fix_usual_py).
    get = environ.get
    if not get("SERVER_NAME") or not get("SERVER_PORT"):
        _fill_server(environ)


def fix_content_headers(environ):
    """Drop HTTP_CONTENT_TYPE and HTTP_CONTENT_LENGTH (RFC 3875, 4.1.18).

    The web server's CONTENT_TYPE and CONTENT_LENGTH win when it sent them;
    when it sent none, or an empty one (nginx's ``$content_type`` when the
    request has no such header), the header's value becomes it.
    """
    for header, variable in (("HTTP_CONTENT_TYPE", "CONTENT_TYPE"),
                             ("HTTP_CONTENT_LENGTH", "CONTENT_LENGTH")):
        value = environ.pop(header, None)
        if value and not environ.get(variable):
            environ[variable] = value


def content_length(environ):
    """Return CONTENT_LENGTH as an int; None when there is none (or it is
    empty, as nginx sends it for a GET).  ValueError when it is not a length."""
    value = environ.get("CONTENT_LENGTH")
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"invalid CONTENT_LENGTH {value!r}")
    return int(value)


def _fill_server(environ):
    """Fill SERVER_NAME and SERVER_PORT, which PEP 3333 says are never
    empty, from the Host header when the web server left them out."""
    host = environ.get("HTTP_HOST", "")
    name, port = host, ""
    if host.startswith("["):  # [::1]:8080
        bracket = host.find("]")
        if bracket > 0:
            name, port = host[:bracket + 1], host[bracket + 1:].lstrip(":")
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    if not environ.get("SERVER_NAME"):
        environ["SERVER_NAME"] = name or "localhost"
    if not environ.get("SERVER_PORT"):
        if not (port.isascii() and port.isdigit()):
            port = "443" if environ.get("wsgi.url_scheme") == "https" else "80"
        environ["SERVER_PORT"] = port


def _fix_paths(environ, protocol):
    """fix_environ beyond the usual case: the steps in the module's docstring."""
    get = environ.get
    https = get("HTTPS")
    if https is not None:
        secure = https.lower() in ("on", "1")
    else:
        scheme = get("REQUEST_SCHEME")
        secure = scheme is not None and scheme != "http" and scheme.lower() == "https"
    environ["wsgi.url_scheme"] = "https" if secure else "http"

    request_uri = get("REQUEST_URI")
    if request_uri is not None:
        raw, _, query = request_uri.partition("?")
        if "QUERY_STRING" not in environ:
            environ["QUERY_STRING"] = query
    else:
        raw = None
        environ.setdefault("QUERY_STRING", "")

    script = get("SCRIPT_NAME") or ""
    path_info = get("PATH_INFO") or ""
    # Step 2 below, checked first: nothing to decode, the pair adds up.
    if not (path_info and raw is not None and "%" not in raw and script + path_info == raw
            and protocol != "ajp"):
        script, path_info = _split(environ, protocol, raw, script, path_info)
    force = _force_script_name
    if force is _UNREAD:
        force = _forced_script_name()
    if force is not None:
        script, path_info = _apply_forced(force, script, path_info)
    if script == "/":
        # PEP 3333: the root is SCRIPT_NAME "" (a server that sent "/" and
        # nothing to check it against).
        script, path_info = "", "/" + path_info.lstrip("/")
    environ["SCRIPT_NAME"] = script
    environ["PATH_INFO"] = path_info


def _split(environ, protocol, raw, script, path_info):
    """Return (SCRIPT_NAME, PATH_INFO), decoded, from what the server sent
    (``script`` and ``path_info``, "" when missing)."""
    if raw is not None and not raw.startswith("/"):
        raw = _path_of_absolute_uri(raw)
    if raw is None:
        # Nothing to check against: take the server's word.
        return script, path_info
    full = unquote(raw, encoding="latin-1") if "%" in raw else raw

    if protocol == "ajp":
        return "", full
    if path_info and script + path_info == full:
        return script, path_info
    if not path_info:
        if not script:
            return "", full
        if script == raw:
            script = full  # the whole path, still percent-encoded
        if script == full or script == environ.get("DOCUMENT_URI") or _proxied(environ):
            return _unsplit(environ, script)
        mount = script.rstrip("/")
        if full.startswith(mount + "/"):
            return mount, full[len(mount):]
        return script, ""
    if script + path_info == raw:
        return _decode(script), _decode(path_info)
    if path_info:
        # Rewritten inside the server: the public prefix is what the client
        # sent before PATH_INFO -- as Django itself reads SCRIPT_URL, then
        # REDIRECT_URL (Apache's mod_rewrite), then the request URI.
        for public in (environ.get("SCRIPT_URL"), environ.get("REDIRECT_URL"), full):
            if public and public.endswith(path_info):
                return public[: len(public) - len(path_info)], path_info
    return script, path_info


def _unsplit(environ, whole):
    """The server sent the whole path as SCRIPT_NAME; find the mount point.

    Apache's mod_proxy_fcgi/scgi put the URL they forward in SCRIPT_FILENAME
    (``proxy:fcgi://host:port/x``); under ``ProxyPass /app/ fcgi://host:port/``
    SCRIPT_NAME is ``/app/x``, so the mount point is ``/app``.
    """
    filename = environ.get("SCRIPT_FILENAME", "")
    if filename.startswith("proxy:"):
        scheme_end = filename.find("://")
        path_start = filename.find("/", scheme_end + 3) if scheme_end > 0 else -1
        if path_start > 0:
            forwarded = _decode(filename[path_start:].partition("?")[0])
            if forwarded != whole and whole.endswith(forwarded) and forwarded.startswith("/"):
                return whole[: len(whole) - len(forwarded)], forwarded
    return "", whole


def _proxied(environ):
    return environ.get("SCRIPT_FILENAME", "").startswith("proxy:")


def _decode(text):
    """Percent-decode to PEP 3333's form: latin-1 text of the raw bytes."""
    return unquote(text, encoding="latin-1") if "%" in text else text


def _path_of_absolute_uri(uri):
    """Return the path of ``http://host/path``, or None for ``*`` and the like."""
    scheme_end = uri.find("://")
    if scheme_end < 0:
        return None
    path_start = uri.find("/", scheme_end + 3)
    return uri[path_start:] if path_start >= 0 else "/"


def _apply_forced(force, script, path_info):
    """FORCE_SCRIPT_NAME is the prefix: cut it from the path the server gave."""
    whole = script + path_info
    if whole == force or whole.startswith(force + "/"):
        return force, whole[len(force):]
    return force, path_info


def _forced_script_name():
    """Return FORCE_SCRIPT_NAME without a trailing slash, or None; read once."""
    global _force_script_name
    if _force_script_name is _UNREAD:
        from django.conf import settings

        if not settings.configured:
            return None
        value = getattr(settings, "FORCE_SCRIPT_NAME", None)
        _force_script_name = None if value is None else value.rstrip("/")
    return _force_script_name


def _forget_force_script_name(*, setting, **kwargs):
    global _force_script_name
    if setting == "FORCE_SCRIPT_NAME":
        _force_script_name = _UNREAD


def _connect_setting_changed():
    from django.core.signals import setting_changed

    setting_changed.connect(_forget_force_script_name,
                            dispatch_uid="runfcgi_compat.servers.environ")


_connect_setting_changed()
