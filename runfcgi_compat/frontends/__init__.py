"""Web server configuration for runfcgi: the one source for docs, tests and generators.

Each function returns the text of a configuration file, rendered from a
template under ``templates/`` with Django's template engine (autoescaping
off; a line holding only a ``{% tag %}`` leaves no blank line behind).  The
same text is shown in the docs, written by the integration tests that run the
real servers, and printed by the configuration generator, so a recipe that is
documented is a recipe that was tested.

Where Django listens is given as ``protocol`` plus either ``host`` and
``port`` or ``socket`` (a UNIX socket path), exactly like ``runfcgi``'s own
options; ``prefix`` is the URL path the site is mounted under (``""`` for the
root, or e.g. ``"/app"``).

* ``nginx()``: a snippet for nginx's ``http { }`` context (upstream + server).
* ``apache()``: a ``<VirtualHost>`` using mod_proxy_fcgi, mod_proxy_scgi or
  mod_proxy_ajp.
* ``apache_fcgid()``, ``htaccess()``, ``fcgi_script()``: the shared-host recipe
  where mod_fcgid starts the application itself.
* ``lighttpd()``: ``fastcgi.server`` (or ``scgi.server``) to
  a running ``runfcgi``, or spawning it with ``bin_path``.
* ``systemd()``, ``systemd_socket()``: a service unit running ``runfcgi`` in
  the foreground, and the socket unit for socket activation.
* ``logrotate()``: rotation of runfcgi's own log files (SIGUSR1 reopens).
* ``nginx_balancer()``, ``apache_balancer()`` (balancer.py) and
  ``haproxy_balancer()`` (haproxy_balancer.py): one balancer in front of
  runfcgi backends on several machines.
* ``nginx_main()``, ``apache_main()``, ``lighttpd_main()``: minimal whole-server
  configurations that include a snippet; enough to try one out (the tests use
  them).

Newer front ends, each in a module of its own (FastCGI only):

* ``caddy()``, ``caddy_main()`` (``caddy.py``): a Caddy 2 site block,
  ``reverse_proxy`` with ``transport fastcgi``.
* ``haproxy()``, ``haproxy_main()`` (``haproxy.py``): HAProxy's ``fcgi-app``;
  ``fcgi_app_section()`` and ``fcgi_server_line()`` are the reusable pieces.
* ``h2o()``, ``h2o_main()`` (``h2o.py``): ``fastcgi.connect``, or
  ``fastcgi.spawn`` where h2o starts runfcgi.
* ``spawn_fcgi()``, ``spawn_fcgi_argv()`` (``spawnfcgi.py``): the command
  line that has spawn-fcgi start runfcgi, foreground or with a pidfile.
"""
import functools
import ipaddress
import re
import shlex
from importlib import resources

from runfcgi_compat.options import OptionError, as_host, as_path, as_port, choice

PROTOCOL_NAMES = {"fcgi": "FastCGI", "scgi": "SCGI", "ajp": "AJP13"}

# Apache modules each set-up needs, in LoadModule order.
APACHE_BASE_MODULES = (
    "mpm_event", "unixd", "authz_core", "log_config", "mime", "alias", "env",
)
APACHE_PROXY_MODULES = {
    "fcgi": ("proxy", "proxy_fcgi"),
    "scgi": ("proxy", "proxy_scgi"),
    "ajp": ("proxy", "proxy_ajp"),
}
APACHE_FCGID_MODULES = ("fcgid", "rewrite")

LIGHTTPD_BACKENDS = {
    # protocol: (module, directive)
    "fcgi": ("mod_fastcgi", "fastcgi.server"),
    "scgi": ("mod_scgi", "scgi.server"),
}

_as_protocol = choice("fcgi", "scgi", "ajp")
# Characters that would end or split a directive in nginx, Apache or lighttpd.
_UNSAFE = re.compile(r"[\s\"'`;{}\\$#|<>]")
_TAG_LINE = re.compile(r"^[ \t]*((?:\{%[^\n]*?%\}|\{#[^\n]*?#\})[ \t]*)+\n", re.M)


# -- values ------------------------------------------------------------------


def _safe(name, value, *, empty=False):
    text = str(value)
    if (not text and not empty) or _UNSAFE.search(text):
        raise OptionError(
            f"{name}={value!r} cannot be written into a web server configuration: "
            "avoid spaces, quotes and ; { } \\ $ # | < >."
        )
    return text


def _as_prefix(name, value):
    """``""``, ``"/"`` or ``"/app/"`` → ``""``, ``""``, ``"/app"``."""
    text = (value or "").strip().rstrip("/")
    if text and not text.startswith("/"):
        raise OptionError(f"{name}={value!r} must start with '/' (e.g. /app).")
    return _safe(name, text) if text else ""


def backend(protocol="fcgi", host=None, port=None, socket=None):
    """Return ``(protocol, host, port, socket)`` checked like runfcgi's options.

    Without a socket, host defaults to 127.0.0.1 and port to 8000.
    """
    protocol = _as_protocol("protocol", protocol)
    if socket is not None:
        if host is not None or port is not None:
            raise OptionError("socket cannot be combined with host or port.")
        return protocol, None, None, _safe("socket", as_path("socket", socket))
    host = "127.0.0.1" if host is None else host
    port = 8000 if port is None else port
    return protocol, _safe("host", as_host("host", host)), as_port("port", port), None


def runfcgi_words(protocol="fcgi", host=None, port=None, socket=None, method=None,
                  **options):
    """Return the ``runfcgi`` words that listen where the web server connects.

    ``host``/``port``/``socket`` may all be None: the web server then passes
    the socket on fd 0 (lighttpd ``bin-path``, mod_fcgid).
    """
    words = [f"protocol={_as_protocol('protocol', protocol)}"]
    if method:
        words.append(f"method={method}")
    if socket is not None:
        words.append(f"socket={socket}")
    elif host is not None:
        words += [f"host={host}", f"port={port}"]
    words += [f"{name}={value}" for name, value in options.items() if value is not None]
    return words


# Shown in a runfcgi command for a back end beyond loopback when the web
# servers' addresses were not given: runfcgi refuses it as an allow= value,
# so the command cannot be run before someone fills it in.
WEB_SERVER_ADDRESS = "WEB_SERVER_ADDRESS"


def hardened_words(protocol="fcgi", host=None, port=None, socket=None, *, allow=None,
                   ajpsecret=None, **options):
    """Return ``runfcgi_words`` for a command the docs and generators show:

    * a UNIX socket gets ``umask=007``: its group (the web server's, through
      a set-group-ID directory, see docs/permissions.rst) may connect, other
      users may not;
    * TCP beyond loopback gets ``allow=`` (``allow``, else a placeholder to
      fill in): a back end on another host must name its web servers, or
      protected mode refuses them;
    * ``ajpsecret`` when given.
    """
    if socket is not None and "socketmode" not in options:
        options.setdefault("umask", "007")
    if socket is None and host is not None and not is_loopback(host):
        options["allow"] = _safe("allow", allow or WEB_SERVER_ADDRESS)
    elif allow is not None:
        options["allow"] = _safe("allow", allow)
    if ajpsecret is not None:
        options["ajpsecret"] = _safe("ajpsecret", ajpsecret)
    return runfcgi_words(protocol, host, port, socket, **options)


def runfcgi_command(protocol="fcgi", host=None, port=None, socket=None, **options):
    """The ``manage.py runfcgi`` line a generated file shows for its Django
    side: ``hardened_words`` after the command."""
    return " ".join(["manage.py runfcgi", *hardened_words(protocol, host, port, socket,
                                                          **options)])


def is_loopback(host):
    """True for a loopback address or ``localhost``."""
    if host.strip("[]").lower() in ("localhost", "localhost6"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # Another host's name.


def _address(host, port):
    """host:port, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- rendering -----------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _template(name):
    from django.template import Engine

    source = resources.files(__package__).joinpath("templates", name).read_text()
    # Jinja's trim_blocks, by hand: a line holding only tags leaves no line.
    source = _TAG_LINE.sub(lambda match: match.group(0).rstrip("\n").strip(), source)
    return Engine(autoescape=False).from_string(source)


def render(template, /, **context):
    """Render ``templates/<template>`` with ``context``; usable for any template.

    Numbers are passed as text: a port must never be localized into ``8,000``.
    """
    from django.template import Context

    context = {
        key: str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        for key, value in context.items()
    }
    return _template(template).render(Context(context, autoescape=False, use_l10n=False))


# -- nginx -----------------------------------------------------------------------


def nginx(protocol="fcgi", host=None, port=None, socket=None, *, listen="80",
          server_name="_", prefix="", https=False, keepalive=0, max_body="20m",
          params_dir="/etc/nginx", upstream="django", static_url=None,
          static_root=None, allow=None, certificate=None, certificate_key=None,
          host_with_port=False):
    """Return an nginx snippet for the ``http`` context.

    ``keepalive`` > 0 keeps that many idle FastCGI connections open
    (``fastcgi_keep_conn on``); SCGI cannot keep connections.  ``https``
    sends ``HTTPS on`` for TLS that ends before nginx; ``certificate`` and
    ``certificate_key`` (PEM files) make nginx itself serve TLS.
    ``host_with_port`` sends the listening port in HTTP_HOST, for a server
    on a port other than 80 or 443: Debian's stock params send ``$host``,
    without it, and Django's CSRF checks compare the Referer with both.  Only the stock
    ``fastcgi_params``/``scgi_params`` are included: runfcgi_compat fixes
    SCRIPT_NAME and PATH_INFO itself.  ``allow``: nginx's addresses, for
    the runfcgi command shown (``hardened_words``).
    """
    protocol, host, port, socket = backend(protocol, host, port, socket)
    if protocol == "ajp":
        raise OptionError("protocol='ajp': nginx has no AJP module; use fcgi or scgi.")
    if keepalive and protocol != "fcgi":
        raise OptionError("keepalive needs protocol=fcgi (SCGI closes each connection).")
    _check_static(static_url, static_root)
    certificate, certificate_key = _tls(certificate, certificate_key)
    prefix = _as_prefix("prefix", prefix)
    return render(
        "nginx.conf",
        title=_title(protocol, host, port, socket, prefix),
        runfcgi=runfcgi_command(protocol, host, port, socket, allow=allow),
        protocol=protocol,
        upstream=_safe("upstream", upstream),
        nginx_backend=f"unix:{socket}" if socket else _address(host, port),
        keepalive=int(keepalive) or None,
        listen=_safe("listen", listen),
        server_name=_safe("server_name", server_name),
        max_body=_safe("max_body", max_body),
        params_dir=_safe("params_dir", params_dir).rstrip("/"),
        location=f"{prefix}/",
        prefix=prefix,
        prefix_regex=re.escape(prefix),
        https=https,
        static_url=static_url and _safe("static_url", static_url),
        static_root=static_root and _safe("static_root", static_root).rstrip("/"),
        certificate=certificate,
        certificate_key=certificate_key,
        host_with_port=host_with_port,
    )


def _check_static(static_url, static_root):
    if static_url and not static_root:
        raise OptionError("static_url needs static_root (the STATIC_ROOT directory).")
    if static_url and not (static_url.startswith("/") and static_url.endswith("/")):
        raise OptionError(f"static_url={static_url!r} must be a path that starts and "
                          "ends with '/' (e.g. /static/).")


def _tls(certificate, certificate_key):
    """Check the PEM files a front end that serves TLS itself needs."""
    if bool(certificate) != bool(certificate_key):
        raise OptionError("certificate and certificate_key go together (both PEM files).")
    if not certificate:
        return None, None
    return _safe("certificate", certificate), _safe("certificate_key", certificate_key)


def nginx_main(root, site, *, user=None, mime_types="/etc/nginx/mime.types"):
    """Return a whole nginx.conf that runs from ``root`` and includes ``site``.

    ``root`` needs a ``tmp`` directory for request bodies and buffers.
    """
    return render("nginx-main.conf", root=_safe("root", root), site=_safe("site", site),
                  user=user and _safe("user", user),
                  mime_types=_safe("mime_types", mime_types))


# -- Apache -------------------------------------------------------------------------


def apache_modules(protocol="fcgi", *, fcgid=False, tls=False):
    """Return the Apache modules a set-up needs (names as in ``a2enmod``);
    ``tls``: Apache serves TLS itself (mod_ssl)."""
    if fcgid:
        return APACHE_FCGID_MODULES
    modules = APACHE_PROXY_MODULES[_as_protocol("protocol", protocol)]
    return modules + ("ssl",) if tls else modules


def apache(protocol="fcgi", host=None, port=None, socket=None, *, listen="*:80",
           server_name="localhost", prefix="", secret=None, reuse=False, https=False,
           allow=None, static_url=None, static_root=None, certificate=None,
           certificate_key=None):
    """Return an Apache ``<VirtualHost>`` proxying to runfcgi.

    mod_proxy_fcgi reaches a UNIX socket as ``unix:/path|fcgi://localhost/``;
    mod_proxy_scgi and mod_proxy_ajp only over TCP.  ``secret`` is AJP's
    shared secret; ``reuse`` keeps backend connections (``enablereuse=on``);
    ``allow``: Apache's addresses, for the runfcgi command shown.
    ``static_url`` is served from ``static_root``; ``certificate`` and
    ``certificate_key`` make Apache serve TLS itself (mod_ssl).
    """
    protocol, host, port, socket = backend(protocol, host, port, socket)
    if socket and protocol != "fcgi":
        raise OptionError(f"protocol={protocol!r}: Apache reaches it over TCP only; "
                          "use host and port.")
    if secret is not None and protocol != "ajp":
        raise OptionError("secret is an AJP setting (protocol=ajp).")
    _check_static(static_url, static_root)
    certificate, certificate_key = _tls(certificate, certificate_key)
    scheme = {"fcgi": "fcgi", "scgi": "scgi", "ajp": "ajp"}[protocol]
    if socket:
        proxy_url = f"unix:{socket}|fcgi://localhost/"
    else:
        proxy_url = f"{scheme}://{_address(host, port)}/"
    prefix = _as_prefix("prefix", prefix)
    return render(
        "apache.conf",
        title=_title(protocol, host, port, socket, prefix),
        # With a secret, runfcgi must check it too, or the secret protects nothing.
        runfcgi=runfcgi_command(protocol, host, port, socket, allow=allow,
                                ajpsecret=secret and _safe("secret", secret)),
        modules=list(apache_modules(protocol, tls=bool(certificate))),
        protocol=protocol,
        listen=_safe("listen", listen),
        server_name=_safe("server_name", server_name),
        proxy_url=proxy_url,
        prefix=prefix,
        prefix_regex=re.escape(prefix),
        secret=secret and _safe("secret", secret),
        reuse=reuse,
        https=https,
        static_url=static_url and _safe("static_url", static_url),
        static_root=static_root and _safe("static_root", static_root).rstrip("/"),
        certificate=certificate,
        certificate_key=certificate_key,
    )


def apache_fcgid(docroot, *, listen="*:80", server_name="localhost",
                 script_name="mysite.fcgi", max_body_bytes=64 * 1024 * 1024):
    """Return a ``<VirtualHost>`` for the mod_fcgid recipe (with ``htaccess()``)."""
    return render(
        "apache-fcgid.conf",
        title=f"mod_fcgid starts {script_name} (FastCGI over fd 0)",
        docroot=_safe("docroot", docroot).rstrip("/"),
        listen=_safe("listen", listen),
        server_name=_safe("server_name", server_name),
        script_name=_safe("script_name", script_name),
        max_body_bytes=int(max_body_bytes),
    )


def htaccess(docroot="DOCUMENT_ROOT", *, script_name="mysite.fcgi"):
    """Return the ``.htaccess`` of the mod_fcgid recipe."""
    return render("htaccess", docroot=docroot, script_name=_safe("script_name", script_name))


def fcgi_script(python, project_dir, settings, *, pythonpath=()):
    """Return the ``mysite.fcgi`` script mod_fcgid runs.

    ``pythonpath`` entries are put first on ``sys.path`` (the project itself
    and, if needed, a virtualenv's site-packages).
    """
    return render(
        "mysite.fcgi",
        python=_safe("python", python),
        project_dir=str(project_dir),
        settings=str(settings),
        pythonpath=[str(path) for path in pythonpath],
    )


def apache_main(root, site, *, host="127.0.0.1", port=80, modules=(), user="www-data",
                group="www-data", modules_dir="/usr/lib/apache2/modules",
                log_level="warn"):
    """Return a whole httpd.conf that runs from ``root`` and includes ``site``.

    ``modules`` are added to the few every set-up needs.
    """
    wanted = list(APACHE_BASE_MODULES)
    wanted += [module for module in modules if module not in wanted]
    return render(
        "apache-main.conf",
        root=_safe("root", root),
        site=_safe("site", site),
        host=_safe("host", host),
        port=as_port("port", port),
        modules=wanted,
        modules_dir=_safe("modules_dir", modules_dir),
        user=user and _safe("user", user),
        group=group and _safe("group", group),
        log_level=_safe("log_level", log_level),
    )


# -- lighttpd ---------------------------------------------------------------------------


def lighttpd(protocol="fcgi", host=None, port=None, socket=None, *, prefix="",
             fix_root=True, bin_path=None, bin_environment=None, static_url=None,
             static_root=None, certificate=None, certificate_key=None):
    """Return lighttpd directives sending ``prefix`` to runfcgi.

    ``static_url`` is served from ``static_root``; ``certificate`` and
    ``certificate_key`` make lighttpd serve TLS itself (mod_openssl, Debian's
    lighttpd-mod-openssl).

    With ``bin_path`` (a command line, e.g. ``/venv/bin/python manage.py
    runfcgi``) lighttpd starts the application itself on ``socket`` and passes
    it on fd 0.  ``fix_root`` matters at the root: without it lighttpd splits
    the first path segment off into SCRIPT_NAME.
    """
    protocol, host, port, socket = backend(protocol, host, port, socket)
    if protocol == "ajp":
        # Seen with 1.4.69: mod_ajp13 sends an empty request URI, so every
        # request would reach Django as "/".
        raise OptionError("protocol='ajp': lighttpd's mod_ajp13 does not send the "
                          "request path; use fcgi or scgi.")
    module, directive = LIGHTTPD_BACKENDS[protocol]
    _check_static(static_url, static_root)
    certificate, certificate_key = _tls(certificate, certificate_key)
    prefix = _as_prefix("prefix", prefix)
    environment = sorted((bin_environment or {}).items())
    for name, value in environment:
        _safe(f"bin_environment[{name!r}]", value, empty=True)
    return render(
        "lighttpd.conf",
        title=_title(protocol, host, port, socket, prefix)
        + (" (lighttpd starts it)" if bin_path else ""),
        module=module,
        directive=directive,
        mount=prefix or "/",
        host=host,
        port=port,
        socket=socket,
        fix_root=fix_root and not prefix,
        bin_path=bin_path and _as_command("bin_path", bin_path),
        bin_environment=environment,
        static_url=static_url and _safe("static_url", static_url),
        static_url_regex=static_url and re.escape(static_url),
        static_root=static_root and _safe("static_root", static_root).rstrip("/"),
        certificate=certificate,
        certificate_key=certificate_key,
    )


def _as_command(name, value):
    if any(c in value for c in "\"\\$\n"):
        raise OptionError(f"{name}={value!r} cannot hold quotes, backslashes or $.")
    return value


def lighttpd_main(root, site, *, host="127.0.0.1", port=80, max_body_kbytes=65536):
    """Return a whole lighttpd.conf that runs from ``root`` and includes ``site``."""
    return render("lighttpd-main.conf", root=_safe("root", root), site=_safe("site", site),
                  host=_safe("host", host), port=as_port("port", port),
                  max_body_kbytes=int(max_body_kbytes))


# -- systemd ---------------------------------------------------------------------------


def systemd(protocol="fcgi", host=None, port=None, socket=None, *, python,
            project_dir, settings, unit="django-fcgi", user="www-data",
            group="www-data", method="prefork", activated=False, allow=None,
            ajpsecret=None):
    """Return a systemd service unit running runfcgi in the foreground.

    A socket under ``/run/<name>/`` gets ``RuntimeDirectory=<name>`` so
    systemd creates the directory for the service's user, and
    ``socketmode=660`` so only the account and its group (the web server's)
    may connect.  With ``activated`` the socket comes from ``systemd_socket()``
    (LISTEN_FDS) and the command names none.  ``allow`` and ``ajpsecret``
    go into the command as in ``hardened_words``.

    The unit is hardened where that cannot break serving (no new
    privileges, the system read-only, private /tmp and devices, no
    capabilities but binding a port below 1024 when the port is one);
    ``ProtectHome=`` only when neither the project nor Python lives in a
    home directory.
    """
    protocol, host, port, socket = backend(protocol, host, port, socket)
    runtime_directory = None
    secured = {"allow": allow, "ajpsecret": ajpsecret}
    if activated:
        words = runfcgi_words(protocol, method=method, daemonize="false",
                              **{k: _safe(k, v) for k, v in secured.items() if v})
    else:
        words = hardened_words(protocol, host, port, socket, method=method,
                               daemonize="false", socketmode="660" if socket else None,
                               **secured)
        parts = (socket or "").split("/")
        if len(parts) == 4 and parts[1] == "run":
            runtime_directory = parts[2]
    command = [_safe("python", python), "manage.py", "runfcgi"] + words
    return render(
        "systemd.service",
        title=_title(protocol, host, port, socket, "") if not activated
        else f"Django over {PROTOCOL_NAMES[protocol]}, socket from {unit}.socket",
        protocol_name=PROTOCOL_NAMES[protocol],
        unit=_safe("unit", unit),
        user=_safe("user", user),
        group=_safe("group", group),
        project_dir=_safe("project_dir", project_dir),
        settings=_safe("settings", settings),
        runtime_directory=runtime_directory,
        activated=activated,
        exec_start=shlex.join(command),
        protect_home=not any(str(path).startswith(HOME_DIRECTORIES)
                             for path in (project_dir, python, socket or "")),
        # A socket in /tmp must stay where the web server sees it.
        private_tmp=not (socket or "").startswith(("/tmp/", "/var/tmp/")),
        low_port=not activated and socket is None and port < 1024,
    )


# ProtectHome= would hide a project or a virtualenv kept in one of these.
HOME_DIRECTORIES = ("/home/", "/root/", "/run/user/")


def systemd_socket(protocol="fcgi", host=None, port=None, socket=None, *,
                   unit="django-fcgi", user="www-data", group="www-data"):
    """Return the ``.socket`` unit for ``systemd(..., activated=True)``."""
    protocol, host, port, socket = backend(protocol, host, port, socket)
    return render(
        "systemd.socket",
        title=_title(protocol, host, port, socket, ""),
        protocol_name=PROTOCOL_NAMES[protocol],
        unit=_safe("unit", unit),
        listen=socket or _address(host, port),
        socket=socket,
        user=_safe("user", user),
        group=_safe("group", group),
    )


def logrotate(logs, pidfile, *, name="django-fcgi"):
    """Return a logrotate rule for runfcgi's ``outlog``/``errlog`` files.

    runfcgi reopens its logs on SIGUSR1, sent to the pid in ``pidfile``.
    """
    logs = [_safe("logs", path) for path in logs]
    if not logs:
        raise OptionError("logs: name at least one log file (outlog or errlog).")
    return render("logrotate", title=f"pid in {pidfile}", name=_safe("name", name),
                  logs=logs, pidfile=_safe("pidfile", pidfile))


def _title(protocol, host, port, socket, prefix):
    where = f"UNIX socket {socket}" if socket else _address(host, port)
    mount = f" under {prefix}/" if prefix else ""
    return f"Django{mount} over {PROTOCOL_NAMES[protocol]} to {where}"


# Last: these modules use the helpers above.
from .balancer import apache_balancer, apache_balancer_modules, nginx_balancer  # noqa: E402,F401
from .caddy import caddy, caddy_main  # noqa: E402,F401
from .h2o import h2o, h2o_main, h2o_spawn_command  # noqa: E402,F401
from .haproxy import (  # noqa: E402,F401
    fcgi_app_section,
    fcgi_server_line,
    haproxy,
    haproxy_main,
)
from .haproxy_balancer import haproxy_balancer  # noqa: E402,F401
from .spawnfcgi import spawn_fcgi, spawn_fcgi_argv  # noqa: E402,F401
