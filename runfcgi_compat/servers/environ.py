"""Make the WSGI environ right for Django (placeholder).

The protocol handlers call ``fix_environ(environ, protocol)`` once per
request, right before the application.  This minimal version will be
replaced by the full one (SCRIPT_NAME/PATH_INFO rebuilding, PEP 3333
decoding); it only fills what every WSGI app needs.
"""
from urllib.parse import unquote_to_bytes

HTTPS_ON = ("on", "ON", "1", "On")


def fix_environ(environ, protocol):
    """Fix ``environ`` in place for a request that arrived over ``protocol``."""
    if environ.get("HTTPS") in HTTPS_ON:
        environ["wsgi.url_scheme"] = "https"
    environ.setdefault("SCRIPT_NAME", "")
    uri, _, query = environ.get("REQUEST_URI", "").partition("?")
    if not environ.get("PATH_INFO") and uri:
        # PEP 3333: PATH_INFO is the decoded path, as latin-1 "bytes in str".
        path = unquote_to_bytes(uri).decode("latin-1")
        script = environ["SCRIPT_NAME"]
        environ["PATH_INFO"] = path[len(script):] if path.startswith(script) else path
    environ.setdefault("PATH_INFO", "")
    if not environ.get("QUERY_STRING"):
        environ["QUERY_STRING"] = query
