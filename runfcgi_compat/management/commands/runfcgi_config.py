"""``manage.py runfcgi_config KIND [key=value ...]``

KIND is nginx, apache, lighttpd, caddy, haproxy, h2o, spawn-fcgi, systemd or
systemd-socket.

Print a front end's configuration for the runfcgi you would start with the
same key=value words.  The text comes from ``runfcgi_compat.frontends``, the
same source the docs show and the integration tests run, so a printed
configuration is a tested one.
"""
import os
import sys

from django.core.management.base import BaseCommand, CommandError

from ... import frontends, options

KINDS = ("nginx", "apache", "lighttpd", "caddy", "haproxy", "h2o", "spawn-fcgi", "systemd",
         "systemd-socket")

# Words that shape the front end's side rather than runfcgi's.
FRONTEND_WORDS = {
    "prefix": str,              # URL prefix the site is mounted under, e.g. /app
    "listen": str,              # listen address (Caddy: the site address)
    "servername": str,          # server_name / ServerName / Caddy's site / h2o's host
    "keepalive": int,           # nginx: idle kept connections; h2o: seconds kept
    "https": options.as_bool,   # TLS ends in front of the web server
    "docroot": str,             # HAProxy fcgi-app docroot
    "certificate": str,         # the web server serves TLS itself: its PEM certificate
    "certificatekey": str,      # and the certificate's PEM key
    "staticurl": str,           # served from staticroot by the web server, e.g. /static/
    "staticroot": str,          # STATIC_ROOT
    "secret": str,              # Apache mod_proxy_ajp secret=
    "unit": str,                # systemd unit name
    "activated": options.as_bool,  # systemd: the service of a .socket unit
    "spawnsocket": str,         # lighttpd bin-path: where lighttpd makes the socket
}

# Debian's lighttpd owns /run/lighttpd, so a spawned backend's socket fits there.
DEFAULT_SPAWN_SOCKET = "/run/lighttpd/django-fcgi.sock"


class Command(BaseCommand):
    help = ("Prints the nginx, Apache, lighttpd, Caddy, HAProxy, h2o, spawn-fcgi or systemd "
            "configuration for runfcgi started with the same key=value options.")
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=KINDS)
        parser.add_argument("words", nargs="*", metavar="key=value",
                            help="runfcgi's options (protocol, host, port, socket, method, "
                                 "...) and prefix=, listen=, servername=, keepalive=, "
                                 "https=, certificate=, certificatekey=, staticurl=, "
                                 "staticroot=, secret=, unit=, activated=, spawnsocket=, "
                                 "docroot=")

    def handle(self, *args, kind, words, **kwargs):
        try:
            given = options.split_words(words)
            extra = {}
            for name, cast in FRONTEND_WORDS.items():
                if name in given:
                    value = given.pop(name)
                    extra[name] = cast(name, value) if cast is options.as_bool else _cast(
                        name, value, cast)
            parsed = options.from_mapping(given)
            text = render(kind, parsed, extra, given)
        except options.OptionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(text, ending="" if text.endswith("\n") else "\n")


def _cast(name, value, cast):
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise options.OptionError(f"{name}={value!r} is not valid.") from None


# runfcgi's words a spawning front end handles itself: the rest are passed on.
SPAWNER_WORDS = ("protocol", "host", "port", "socket", "method", "pidfile", "user", "group",
                 "socketmode", "daemonize")


def render(kind, parsed, extra, given=None):
    """Return the configuration text of ``kind`` for ``parsed`` options.

    Hardened by default (docs/security.rst): the runfcgi command shown
    names its web servers in ``allow=`` when it listens beyond loopback, a
    UNIX socket is for the web server's group only, and AJP gets a shared
    secret on both sides.  ``given`` holds runfcgi's words as typed; the
    ones a spawning front end (h2o's fastcgi.spawn, spawn-fcgi) does not
    handle itself are passed on to the runfcgi it starts.
    """
    passed_on = [f"{name}={value}" for name, value in (given or {}).items()
                 if name not in SPAWNER_WORDS]
    where = {"protocol": parsed.protocol, "host": parsed.host, "port": parsed.port,
             "socket": parsed.socket}
    allow = _allow_text(parsed.allow)
    prefix = extra.get("prefix", "")
    served = {"static_url": extra.get("staticurl"), "static_root": extra.get("staticroot"),
              "certificate": extra.get("certificate"),
              "certificate_key": extra.get("certificatekey")}
    if kind == "nginx":
        return frontends.nginx(
            **where, prefix=prefix,
            listen=extra.get("listen", "443" if served["certificate"] else "80"),
            server_name=extra.get("servername", "_"), https=extra.get("https", False),
            keepalive=extra.get("keepalive", 0), allow=allow, **served)
    if kind == "apache":
        return frontends.apache(
            **where, prefix=prefix,
            listen=extra.get("listen", "*:443" if served["certificate"] else "*:80"),
            server_name=extra.get("servername", "localhost"),
            secret=_ajp_secret(parsed, extra), https=extra.get("https", False), allow=allow,
            **served)
    if kind == "lighttpd":
        if parsed.bind is not None:
            return frontends.lighttpd(**where, prefix=prefix, **served)
        # No address: lighttpd starts runfcgi itself (bin-path, socket on fd 0).
        bin_path = " ".join([sys.executable, _manage_py(), "runfcgi",
                             f"protocol={parsed.protocol}", f"method={parsed.method}"])
        environment = {"DJANGO_SETTINGS_MODULE": _settings_module(),
                       "PYTHONPATH": os.path.dirname(_manage_py())}
        return frontends.lighttpd(
            parsed.protocol, socket=extra.get("spawnsocket", DEFAULT_SPAWN_SOCKET),
            prefix=prefix, bin_path=bin_path, bin_environment=environment)
    if kind == "caddy":
        address = (extra.get("listen") or extra.get("servername")
                   or (":443" if served["certificate"] else ":80"))
        return frontends.caddy(**where, prefix=prefix, address=address,
                               https=extra.get("https", False), allow=allow, **served)
    if kind == "haproxy":
        if served["certificate_key"]:
            raise options.OptionError("certificatekey: HAProxy reads the key from the "
                                      "certificate's PEM file (the certificate, then its key).")
        if served["static_url"] or served["static_root"]:
            raise options.OptionError("staticurl: HAProxy serves no files; serve them from "
                                      "another web server.")
        return frontends.haproxy(**where, prefix=prefix,
                                 listen=extra.get("listen",
                                                  "*:443" if served["certificate"] else "*:80"),
                                 https=extra.get("https", False),
                                 docroot=extra.get("docroot", os.path.dirname(_manage_py())),
                                 allow=allow, certificate=served["certificate"])
    if kind == "h2o":
        common = dict(prefix=prefix,
                      listen=extra.get("listen", "443" if served["certificate"] else "80"),
                      server_name=extra.get("servername", "default"),
                      https=extra.get("https", False), keepalive=extra.get("keepalive", 0),
                      **served)
        if parsed.bind is not None:
            return frontends.h2o(**where, **common, allow=allow)
        # No address: h2o starts runfcgi itself (fastcgi.spawn, socket on fd 0).
        command = frontends.h2o_spawn_command(
            sys.executable, _manage_py(), settings=_settings_module(), method=parsed.method,
            options=passed_on)
        return frontends.h2o(parsed.protocol, spawn=command, spawn_user=parsed.user, **common)
    if kind == "spawn-fcgi":
        if parsed.bind is None:
            raise options.OptionError("spawn-fcgi needs host and port or socket: it makes "
                                      "the socket runfcgi gets on fd 0.")
        return frontends.spawn_fcgi(
            **where, python=sys.executable, manage_py=_manage_py(),
            project_dir=os.path.dirname(_manage_py()), settings=_settings_module(),
            method=parsed.method, pidfile=parsed.pidfile, user=parsed.user,
            group=parsed.group, socket_mode=parsed.socketmode, options=passed_on)
    if parsed.bind is None and kind.startswith("systemd"):
        raise options.OptionError(f"{kind} needs host and port or socket.")
    account = {"user": parsed.user or "www-data", "group": parsed.group or "www-data",
               "unit": extra.get("unit", "django-fcgi")}
    if kind == "systemd":
        return frontends.systemd(
            **where, python=sys.executable, project_dir=os.path.dirname(_manage_py()),
            settings=_settings_module(),
            method=parsed.method, activated=extra.get("activated", False), allow=allow,
            ajpsecret=_ajp_secret(parsed, extra), **account)
    return frontends.systemd_socket(**where, **account)


def _allow_text(allow):
    if allow is None or allow == "any":
        return allow
    return ",".join(allow)


def _ajp_secret(parsed, extra):
    """AJP's shared secret: the one given (secret= or ajpsecret=), else one
    derived from the project's SECRET_KEY, so that the Apache and systemd
    files generated apart carry the same secret."""
    if parsed.protocol != "ajp":
        return extra.get("secret")
    given = extra.get("secret") or parsed.ajpsecret
    if given:
        return given
    from django.utils.crypto import salted_hmac

    return salted_hmac("runfcgi_compat.runfcgi_config", "ajpsecret").hexdigest()[:32]


def _settings_module():
    return os.environ.get("DJANGO_SETTINGS_MODULE", "mysite.settings")


def _manage_py():
    return os.path.abspath(sys.argv[0]) if sys.argv[0].endswith("manage.py") else os.path.join(
        os.getcwd(), "manage.py")
