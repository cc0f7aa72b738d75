"""Caddy 2 in front of runfcgi: ``reverse_proxy`` with ``transport fastcgi``.

Caddy speaks FastCGI only (no SCGI, no AJP).  Left to itself it sends
``SCRIPT_NAME=""`` and the whole path as ``PATH_INFO``, which is right for a
site at ``/``.  Under a prefix the site block uses ``handle`` (which keeps
the prefix in the path) with ``split <prefix>``, so SCRIPT_NAME is the
prefix and PATH_INFO the rest; ``handle_path`` would strip the prefix before
the FastCGI transport sees it, and Django would build its URLs without it.

Tested by tests/integration/frontends_more.py (set-ups ``caddy-*``).
"""
from runfcgi_compat.options import OptionError

from . import _as_prefix, _check_static, _safe, _title, _tls, backend, render, runfcgi_command


def caddy(protocol="fcgi", host=None, port=None, socket=None, *, address="example.com",
          prefix="", https=False, allow=None, static_url=None, static_root=None,
          certificate=None, certificate_key=None):
    """Return a Caddyfile site block sending requests (under ``prefix``) to runfcgi.

    ``address`` is Caddy's site address: a domain name (Caddy then gets a
    certificate and serves HTTPS itself, and tells Django so) or
    ``http://host:port``.  ``https`` sends ``HTTPS on`` for TLS that ends in
    front of Caddy.  ``certificate`` and ``certificate_key`` (PEM files) are
    the certificate Caddy serves (``tls``), instead of one it would fetch;
    ``static_url`` is served from ``static_root`` (``file_server``).
    """
    protocol, host, port, socket = backend(protocol, host, port, socket)
    if protocol != "fcgi":
        raise OptionError(f"protocol={protocol!r}: Caddy speaks FastCGI only; "
                          "use protocol=fcgi.")
    _check_static(static_url, static_root)
    certificate, certificate_key = _tls(certificate, certificate_key)
    prefix = _as_prefix("prefix", prefix)
    return render(
        "caddy.conf",
        title=_title(protocol, host, port, socket, prefix),
        runfcgi=runfcgi_command(protocol, host, port, socket, allow=allow),
        address=_safe("address", address),
        upstream=f"unix/{socket}" if socket else _dial(host, port),
        prefix=prefix,
        https=https,
        static_url=static_url and _safe("static_url", static_url),
        static_root=static_root and _safe("static_root", static_root).rstrip("/"),
        certificate=certificate,
        certificate_key=certificate_key,
    )


def caddy_main(root, site, *, bind=None):
    """Return a whole Caddyfile that runs from ``root`` and imports ``site``.

    The admin endpoint and automatic HTTPS are off, and Caddy's storage and
    log are under ``root``: enough to try a site block on a free port (the
    tests use it).  ``bind`` is the address every site listens on (Caddy's
    ``default_bind``), e.g. 127.0.0.1 with a site address ``http://:8080``
    that answers whatever the Host header says.
    """
    return render("caddy-main.conf", root=_safe("root", root), site=_safe("site", site),
                  bind=bind and _safe("bind", bind))


def _dial(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
