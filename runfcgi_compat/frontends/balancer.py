"""nginx in front of several runfcgi backends: one upstream, fail over on errors.

Tested by tests/integration/test_failover.py (one backend killed mid-load,
no failed request reaches the client) and shown on the docs' scaling page.
"""
import re

from runfcgi_compat.options import OptionError

from . import PROTOCOL_NAMES, backend, hardened_words

# Try the next backend on anything that means "this one is gone or sick",
# for every method.  fastcgi_/scgi_next_upstream know no http_502 (only
# proxy_ and uwsgi_ do; nginx -t refuses it): a dead FastCGI backend shows
# as "error" (refused or reset) or "invalid_header" (closed before a full
# answer).  http_500 is left out on purpose: Django's own 500 is an answer,
# not a sick backend.  non_idempotent also retries POSTs; drop it if a view
# must never run twice (a backend killed after the view committed its work
# but before nginx had the answer).
NEXT_UPSTREAM = "error timeout invalid_header http_503 non_idempotent"

_NGINX_TIME = re.compile(r"^\d+(ms|s|m)?$")

BALANCER = """\
# nginx: Django over {protocol_name}, balanced over {count} runfcgi backends
# Generated for the http {{ }} context.  A backend that refuses, resets, times
# out, or answers 503 is skipped and the request goes to the next one.
# Django side:
{runfcgi}
upstream {upstream} {{
{servers}
}}

server {{
    listen {listen};
    server_name {server_name};
    client_max_body_size {max_body};

    location / {{
        include {params_dir}/{protocol}_params;
        {protocol}_pass {upstream};
        {protocol}_connect_timeout {connect_timeout};
        {protocol}_next_upstream {next_upstream};
    }}
}}
"""


def nginx_balancer(protocol="fcgi", backends=(), *, listen="80", server_name="_",
                   upstream="django", connect_timeout="1s", next_upstream=NEXT_UPSTREAM,
                   max_fails=1, fail_timeout="10s", max_body="20m",
                   params_dir="/etc/nginx", allow=None):
    """Return an nginx snippet spreading requests over ``backends``.

    Each backend is a ``(host, port)`` pair or a UNIX socket path.
    ``max_fails``/``fail_timeout``: after that many failures a backend is
    left alone for that long.  ``allow``: nginx's addresses, which each
    runfcgi command shown names (a back end on another host refuses other
    peers: docs/security.rst).
    """
    if not backends:
        raise OptionError("backends: give at least one (host, port) or socket path.")
    servers, commands = [], []
    for target in backends:
        if isinstance(target, str):
            protocol, host, port, path = backend(protocol, socket=target)
            address = f"unix:{path}"
        else:
            protocol, host, port, path = backend(protocol, *target)
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        words = hardened_words(protocol, host, port, path, allow=allow)
        commands.append("#   " + " ".join(["manage.py runfcgi", *words]))
        servers.append(f"    server {address} max_fails={int(max_fails)} "
                       f"fail_timeout={_as_time('fail_timeout', fail_timeout)};")
    if protocol == "ajp":
        raise OptionError("protocol='ajp': nginx has no AJP module; use fcgi or scgi.")
    directive = "fastcgi" if protocol == "fcgi" else "scgi"
    for word in next_upstream.split():
        if not re.fullmatch(r"[a-z_0-9]+", word):
            raise OptionError(f"next_upstream: {word!r} is not an nginx keyword.")
    return BALANCER.format(
        protocol_name=PROTOCOL_NAMES[protocol],
        count=len(backends),
        runfcgi="\n".join(commands),
        upstream=_word("upstream", upstream),
        servers="\n".join(servers),
        listen=_word("listen", listen),
        server_name=_word("server_name", server_name),
        max_body=_word("max_body", max_body),
        params_dir=_word("params_dir", params_dir).rstrip("/"),
        protocol=directive,
        connect_timeout=_as_time("connect_timeout", connect_timeout),
        next_upstream=next_upstream,
    )


def _word(name, value):
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9_.:/\[\]-]+", text):
        raise OptionError(f"{name}={value!r} cannot be written into an nginx "
                               "configuration.")
    return text


def _as_time(name, value):
    text = str(value)
    if not _NGINX_TIME.match(text):
        raise OptionError(f"{name}={value!r} is not an nginx time such as 1s or 500ms.")
    return text
