"""Web servers in front of several runfcgi backends: nginx and Apache.

nginx retries a failed request on the next backend; Apache's
mod_proxy_balancer skips a member it cannot connect to and sends a request
whose backend died to another member, but with only the part of its body it
had not sent yet.  HAProxy's balancer lives in
``haproxy_balancer.py``.  Tested by tests/integration/test_failover.py (one
backend killed mid-load, then started again) and shown on the docs' scaling
page.
"""
import re

from runfcgi_compat.options import OptionError, as_networks

from . import PROTOCOL_NAMES, backend, hardened_words, render

# Try the next backend on anything that means "this one is gone or sick",
# for every method.  fastcgi_/scgi_next_upstream know no http_502 (only
# proxy_ and uwsgi_ do; nginx -t refuses it): a dead FastCGI backend shows
# as "error" (refused or reset) or "invalid_header" (closed before a full
# answer).  http_500 is left out on purpose: Django's own 500 is an answer,
# not a sick backend.  non_idempotent also retries POSTs; drop it if a view
# must never run twice (a backend killed after the view committed its work
# but before nginx had the answer).
NEXT_UPSTREAM = "error timeout invalid_header http_503 non_idempotent"

# Modules Apache's balancer needs besides the protocol's own, in LoadModule
# order: the shared memory the members' state lives in, the balancer, its
# "by requests" method, and the health checks (mod_watchdog is built in).
APACHE_BALANCER_MODULES = ("slotmem_shm", "proxy_balancer", "lbmethod_byrequests",
                           "proxy_hcheck")

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


def members(protocol, backends, *, allow=None, sockets=True):
    """Return ``(protocol, [(host, port, socket), ...], runfcgi comment lines)``.

    Each backend is a ``(host, port)`` pair or, where ``sockets`` is true, a
    UNIX socket path.  ``allow`` (the balancers' addresses) goes into every
    runfcgi command shown: a backend on a private address serves only them.
    """
    if not backends:
        raise OptionError("backends: give at least one (host, port) or socket path.")
    allow = _as_allow(allow)
    found, commands = [], []
    for target in backends:
        if isinstance(target, str):
            if not sockets:
                raise OptionError(f"backends: {target!r}: this balancer reaches its "
                                  "backends over TCP only; give (host, port) pairs.")
            protocol, host, port, path = backend(protocol, socket=target)
        else:
            protocol, host, port, path = backend(protocol, *target)
        found.append((host, port, path))
        words = hardened_words(protocol, host, port, path, allow=allow)
        commands.append("#   " + " ".join(["manage.py runfcgi", *words]))
    return protocol, found, commands


def _as_allow(value):
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    as_networks("allow", items)  # Checked as runfcgi will check it.
    return ",".join(_word("allow", str(item).strip()) for item in items if str(item).strip())


def _address(host, port, path, *, unix="unix:"):
    if path:
        return f"{unix}{path}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- nginx ------------------------------------------------------------------------


def nginx_balancer(protocol="fcgi", backends=(), *, listen="80", server_name="_",
                   upstream="django", connect_timeout="1s", next_upstream=NEXT_UPSTREAM,
                   max_fails=1, fail_timeout="10s", max_body="20m",
                   params_dir="/etc/nginx", allow=None):
    """Return an nginx snippet spreading requests over ``backends``.

    Each backend is a ``(host, port)`` pair or a UNIX socket path.
    ``max_fails``/``fail_timeout``: after that many failures a backend is
    left alone for that long, then tried again.  ``allow``: the nginx
    machines' addresses, for the runfcgi commands shown.
    """
    protocol, found, commands = members(protocol, backends, allow=allow)
    if protocol == "ajp":
        raise OptionError("protocol='ajp': nginx has no AJP module; use fcgi or scgi.")
    servers = [f"    server {_address(*where)} max_fails={int(max_fails)} "
               f"fail_timeout={_as_time('fail_timeout', fail_timeout)};" for where in found]
    directive = "fastcgi" if protocol == "fcgi" else "scgi"
    for word in next_upstream.split():
        if not re.fullmatch(r"[a-z_0-9]+", word):
            raise OptionError(f"next_upstream: {word!r} is not an nginx keyword.")
    return BALANCER.format(
        protocol_name=PROTOCOL_NAMES[protocol],
        count=len(found),
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


# -- Apache -----------------------------------------------------------------------


def apache_balancer(protocol="fcgi", backends=(), *, listen="*:80",
                    server_name="localhost", balancer="django", retry=10,
                    connect_timeout=1, check_interval=5, allow=None):
    """Return an Apache ``<VirtualHost>`` spreading requests over ``backends``.

    Each backend is a ``(host, port)`` pair (mod_proxy_balancer's members are
    reached over TCP).  A member Apache cannot connect to is left alone for
    ``retry`` seconds and the request goes to another; mod_proxy_hcheck
    opens a connection to every member each ``check_interval`` seconds and
    takes a member out, or back, by the result.  A request whose backend
    dies after taking it goes to another member, with only the part of its
    body Apache had not sent yet (seen with Apache 2.4.71).
    """
    protocol, found, commands = members(protocol, backends, allow=allow, sockets=False)
    return render(
        "apache-balancer.conf",
        protocol_name=PROTOCOL_NAMES[protocol],
        count=len(found),
        modules=apache_balancer_modules(protocol),
        runfcgi=commands,
        members=[f"{protocol}://{_address(*where)}" for where in found],
        listen=_word("listen", listen),
        server_name=_word("server_name", server_name),
        balancer=_word("balancer", balancer),
        retry=_as_whole("retry", retry, 0),
        connect_timeout=_as_whole("connect_timeout", connect_timeout, 1),
        check_interval=_as_whole("check_interval", check_interval, 1),
    )


def apache_balancer_modules(protocol="fcgi"):
    """Return the Apache modules ``apache_balancer()`` needs (``a2enmod`` names)."""
    return ("proxy", f"proxy_{protocol}", *APACHE_BALANCER_MODULES)


# -- values -----------------------------------------------------------------------


def _word(name, value):
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9_.:/\[\]*-]+", text):
        raise OptionError(f"{name}={value!r} cannot be written into a web server "
                          "configuration.")
    return text


def _as_whole(name, value, low):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < low or isinstance(value, bool):
        raise OptionError(f"{name}={value!r} is not a whole number of seconds "
                          f"from {low}.")
    return number


def _as_time(name, value):
    text = str(value)
    if not _NGINX_TIME.match(text):
        raise OptionError(f"{name}={value!r} is not an nginx time such as 1s or 500ms.")
    return text
