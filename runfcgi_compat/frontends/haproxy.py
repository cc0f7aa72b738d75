"""HAProxy (2.1 and later) in front of runfcgi, over its native FastCGI (``fcgi-app``).

A FastCGI set-up in HAProxy has three parts: a ``frontend`` taking HTTP, a
``backend`` whose servers are reached with ``proto fcgi``, and an
``fcgi-app`` section (``use-fcgi-app`` in the backend) saying which
parameters to send.  ``fcgi_app_section()`` and ``fcgi_server_line()`` write
the last two pieces on their own, so a configuration with several backends
(a balancer) builds on the same text.

What runfcgi answers to ``FCGI_GET_VALUES`` (asked for with ``option
get-values``): ``FCGI_MAX_CONNS`` and ``FCGI_MAX_REQS`` are ``maxchildren``,
``FCGI_MPXS_CONNS`` is 0.  A connection carries one request at a time, so
``mpxs-conns`` stays off; concurrency comes from several connections, which
``option keep-conn`` keeps open between requests.

Tested by tests/integration/frontends_more.py (set-ups ``haproxy-*``).
"""
import re

from runfcgi_compat.options import OptionError

from . import _address, _as_prefix, _safe, _title, backend, render, runfcgi_command

_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


def _name(option, value):
    if not _NAME.match(str(value)):
        raise OptionError(f"{option}={value!r} is not an HAProxy section name "
                          "(letters, digits, _ . : -).")
    return str(value)


def fcgi_app_section(name="runfcgi", *, docroot="/srv/mysite", prefix="", https=False,
                     keep_conn=True, get_values=True):
    """Return an ``fcgi-app`` section for runfcgi.

    ``docroot`` is required by HAProxy (it only builds SCRIPT_FILENAME from
    it; Django ignores that).  Under ``prefix`` a ``path-info`` rule sends
    SCRIPT_NAME=prefix and the rest as PATH_INFO.  ``https`` sets ``HTTPS
    on`` for TLS that ends in front of HAProxy (HAProxy sets it itself when
    it ends TLS).
    """
    prefix = _as_prefix("prefix", prefix)
    return render(
        "haproxy-fcgi-app.conf",
        name=_name("name", name),
        docroot=_safe("docroot", docroot),
        prefix=prefix,
        prefix_regex=re.escape(prefix),
        https=https,
        keep_conn=keep_conn,
        get_values=get_values,
    )


def fcgi_server_line(name, host=None, port=None, socket=None, *, options=""):
    """Return one ``server`` line reaching runfcgi over FastCGI (TCP or UNIX)."""
    _, host, port, socket = backend("fcgi", host, port, socket)
    address = socket if socket else _address(host, port)
    extra = f" {options}" if options else ""
    return f"server {_name('name', name)} {address} proto fcgi{extra}"


def haproxy(protocol="fcgi", host=None, port=None, socket=None, *, listen="*:80",
            prefix="", https=False, keep_conn=True, docroot="/srv/mysite",
            app="runfcgi", backend_name="django", allow=None, certificate=None):
    """Return ``frontend``, ``backend`` and ``fcgi-app`` sections for HAProxy.

    The frontend sends ``prefix`` (or everything) to the backend; the
    backend reaches runfcgi on ``host``/``port`` or ``socket``.
    ``certificate`` makes HAProxy serve TLS itself: one PEM file holding the
    certificate followed by its private key (``bind ... ssl crt``).
    HAProxy serves no files, so static files need another server.
    """
    protocol, host, port, socket = backend(protocol, host, port, socket)
    if protocol != "fcgi":
        raise OptionError(f"protocol={protocol!r}: HAProxy speaks FastCGI only; "
                          "use protocol=fcgi.")
    prefix = _as_prefix("prefix", prefix)
    return render(
        "haproxy.conf",
        title=_title(protocol, host, port, socket, prefix),
        runfcgi=runfcgi_command(protocol, host, port, socket, allow=allow),
        listen=_safe("listen", listen),
        certificate=certificate and _safe("certificate", certificate),
        prefix=prefix,
        backend=_name("backend_name", backend_name),
        app=_name("app", app),
        server=fcgi_server_line("runfcgi", host, port, socket),
        fcgi_app=fcgi_app_section(app, docroot=docroot, prefix=prefix, https=https,
                                  keep_conn=keep_conn).rstrip("\n"),
    )


def haproxy_main(root, site):
    """Return the ``global`` and ``defaults`` sections to run ``site`` with,
    from ``root``: ``haproxy -db -f <root>/haproxy.cfg -f <site>``."""
    return render("haproxy-main.conf", root=_safe("root", root), site=_safe("site", site))
