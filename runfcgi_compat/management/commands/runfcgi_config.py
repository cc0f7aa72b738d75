"""``manage.py runfcgi_config nginx|apache|lighttpd|systemd|systemd-socket [key=value ...]``

Print a front end's configuration for the runfcgi you would start with the
same key=value words.  The text comes from ``runfcgi_compat.frontends``, the
same source the docs show and the integration tests run, so a printed
configuration is a tested one.
"""
import os
import sys

from django.core.management.base import BaseCommand, CommandError

from ... import frontends, options

KINDS = ("nginx", "apache", "lighttpd", "systemd", "systemd-socket")

# Words that shape the front end's side rather than runfcgi's.
FRONTEND_WORDS = {
    "prefix": str,              # URL prefix the site is mounted under, e.g. /app
    "listen": str,              # nginx/Apache listen address
    "servername": str,          # server_name / ServerName
    "keepalive": int,           # nginx: idle kept FastCGI connections per worker
    "https": options.as_bool,   # TLS ends in front of nginx/Apache
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
    help = ("Prints the nginx, Apache, lighttpd or systemd configuration for runfcgi "
            "started with the same key=value options.")
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=KINDS)
        parser.add_argument("words", nargs="*", metavar="key=value",
                            help="runfcgi's options (protocol, host, port, socket, method, "
                                 "...) and prefix=, listen=, servername=, keepalive=, "
                                 "https=, certificate=, certificatekey=, staticurl=, "
                                 "staticroot=, secret=, unit=, activated=, spawnsocket=")

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
            text = render(kind, parsed, extra)
        except options.OptionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(text, ending="" if text.endswith("\n") else "\n")


def _cast(name, value, cast):
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise options.OptionError(f"{name}={value!r} is not valid.") from None


def render(kind, parsed, extra):
    """Return the configuration text of ``kind`` for ``parsed`` options."""
    where = {"protocol": parsed.protocol, "host": parsed.host, "port": parsed.port,
             "socket": parsed.socket}
    prefix = extra.get("prefix", "")
    served = {"static_url": extra.get("staticurl"), "static_root": extra.get("staticroot"),
              "certificate": extra.get("certificate"),
              "certificate_key": extra.get("certificatekey")}
    if kind == "nginx":
        return frontends.nginx(
            **where, prefix=prefix,
            listen=extra.get("listen", "443" if served["certificate"] else "80"),
            server_name=extra.get("servername", "_"), https=extra.get("https", False),
            keepalive=extra.get("keepalive", 0), **served)
    if kind == "apache":
        return frontends.apache(
            **where, prefix=prefix,
            listen=extra.get("listen", "*:443" if served["certificate"] else "*:80"),
            server_name=extra.get("servername", "localhost"),
            secret=extra.get("secret"), https=extra.get("https", False), **served)
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
    if parsed.bind is None and kind.startswith("systemd"):
        raise options.OptionError(f"{kind} needs host and port or socket.")
    account = {"user": parsed.user or "www-data", "group": parsed.group or "www-data",
               "unit": extra.get("unit", "django-fcgi")}
    if kind == "systemd":
        return frontends.systemd(
            **where, python=sys.executable, project_dir=os.path.dirname(_manage_py()),
            settings=_settings_module(),
            method=parsed.method, activated=extra.get("activated", False), **account)
    return frontends.systemd_socket(**where, **account)


def _settings_module():
    return os.environ.get("DJANGO_SETTINGS_MODULE", "mysite.settings")


def _manage_py():
    return os.path.abspath(sys.argv[0]) if sys.argv[0].endswith("manage.py") else os.path.join(
        os.getcwd(), "manage.py")
