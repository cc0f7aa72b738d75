"""HAProxy in front of several runfcgi backends, speaking FastCGI itself.

HAProxy 2.1 and later talk FastCGI to a backend through an ``fcgi-app``
section.  The balancer here adds what several machines need: a health
check that is a real FastCGI request (a GET that must answer 200, sent
through the same ``fcgi-app``), retries on another backend for a request
whose backend refused, reset or closed without an answer, and nothing sent
twice that is not idempotent.  Tested by tests/integration/test_failover.py
and shown on the docs' scaling page.
"""
import re

from runfcgi_compat.options import OptionError

from . import render
from .balancer import _address, _as_whole, _word, members

# HAProxy sends a request again on another server after these failures
# (``retry-on``): the connection failed, the backend closed it without an
# answer (a killed backend), the answer was not a valid one, none came in
# time, or the backend said 503.  500 is left out on purpose: Django's own
# 500 is an answer, not a sick backend.
RETRY_ON = "conn-failure empty-response junk-response response-timeout 503"

# Methods safe to send again once a backend has taken them.  Others (POST,
# PUT, ...) are retried only when the connection failed, so before a
# backend saw them.
IDEMPOTENT = ("GET", "HEAD", "OPTIONS")

_TIME = re.compile(r"^\d+(us|ms|s|m|h|d)?$")
_BALANCE = ("roundrobin", "leastconn", "first", "source", "random")


def haproxy_balancer(backends=(), *, listen="*:80", server_name="localhost",
                     name="django", docroot="/srv/mysite", balance="roundrobin",
                     check_path="/", check_interval="2s", fall=2, rise=1,
                     connect_timeout="1s", server_timeout="60s", client_timeout="60s",
                     retries=3, retry_on=RETRY_ON, allow=None):
    """Return ``fcgi-app``, ``frontend`` and ``backend`` sections for haproxy.cfg.

    Each backend is a ``(host, port)`` pair or a UNIX socket path; HAProxy
    has no SCGI or AJP, so every one runs ``runfcgi protocol=fcgi``.  Every
    ``check_interval`` HAProxy sends ``GET check_path`` (with ``Host:
    server_name``, which must be in ALLOWED_HOSTS) over FastCGI to each
    backend; ``fall`` failed checks take one out, ``rise`` good ones bring it
    back.  ``allow``: the HAProxy machines' addresses, for the runfcgi
    commands shown.
    """
    protocol, found, commands = members("fcgi", backends, allow=allow)
    if not check_path.startswith("/") or not re.fullmatch(r"[A-Za-z0-9_./?=&%~-]+",
                                                            check_path):
        raise OptionError(f"check_path={check_path!r} must be a URL path such as /health/.")
    if balance not in _BALANCE:
        raise OptionError(f"balance={balance!r} is not one of: {', '.join(_BALANCE)}.")
    for word in retry_on.split():
        if not re.fullmatch(r"[a-z0-9-]+", word):
            raise OptionError(f"retry_on: {word!r} is not an HAProxy retry-on keyword.")
    return render(
        "haproxy-balancer.cfg",
        count=len(found),
        runfcgi=commands,
        servers=[(f"{_word('name', name)}{number}", _address(*where, unix=""))
                 for number, where in enumerate(found, 1)],
        name=_word("name", name),
        listen=_word("listen", listen),
        server_name=_word("server_name", server_name),
        docroot=_word("docroot", docroot),
        balance=balance,
        check_path=check_path,
        check_interval=_as_time("check_interval", check_interval),
        fall=_as_whole("fall", fall, 1),
        rise=_as_whole("rise", rise, 1),
        connect_timeout=_as_time("connect_timeout", connect_timeout),
        server_timeout=_as_time("server_timeout", server_timeout),
        client_timeout=_as_time("client_timeout", client_timeout),
        retries=_as_whole("retries", retries, 0),
        retry_on=retry_on,
        idempotent=" ".join(IDEMPOTENT),
    )


def _as_time(name, value):
    text = str(value)
    if not _TIME.match(text):
        raise OptionError(f"{name}={value!r} is not an HAProxy time such as 2s or 500ms.")
    return text
