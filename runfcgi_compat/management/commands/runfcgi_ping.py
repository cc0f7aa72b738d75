"""``manage.py runfcgi_ping host=… port=… [path]``: is the server answering?

It sends one GET the way the web server would (FastCGI, SCGI or AJP13, with
nginx's or Apache's variables), prints the status line, the headers and the
time taken, and exits non-zero if nothing usable came back or the answer is
a 4xx or 5xx — so it fits a deploy script or a monitoring check::

    $ manage.py runfcgi_ping host=127.0.0.1 port=3033 /health/
    200 OK
    Content-Type: text/html; charset=utf-8
    time: 3.2 ms

The words are key=value, like ``runfcgi``'s, and the address options are
checked by the same casters; a word starting with ``/`` is the path (with an
optional ``?query``).  The Host header is the project's first plain
``ALLOWED_HOSTS`` entry, so the project does not refuse its own ping.
"""
import urllib.parse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ... import client, options

# The address options mean what they mean for runfcgi, checked the same way.
CASTERS = {
    "host": options.as_host,
    "port": options.as_port,
    "socket": options.as_path,
    "protocol": options.OPTIONS_BY_NAME["protocol"].caster,
}


def as_seconds(name, value):
    """A time limit: a positive number of seconds such as 5 or 0.5."""
    try:
        seconds = float(str(value).strip())
    except ValueError:
        raise options.OptionError(f"{name}={value!r} is not a number of seconds.") from None
    if not 0 < seconds <= 3600:
        raise options.OptionError(
            f"{name}={value!r} is out of range: use more than 0 and at most 3600 seconds.")
    return seconds


CASTERS["timeout"] = as_seconds


def parse_words(words):
    """Return ``(address, protocol, path, query, timeout)`` from the command's words.

    Raise OptionError, naming the word, for anything that does not fit.
    """
    # No option name starts with "/", so such a word is the path, "=" or not.
    paths = [word for word in words if word.startswith("/")]
    if len(paths) > 1:
        raise options.OptionError(f"Give one path, not {len(paths)} ({' '.join(paths)}).")
    given = options.split_words(word for word in words if word not in paths)
    for key, value in given.items():
        if key not in CASTERS:
            raise options.OptionError(
                f"Unknown option {key!r}: use host, port, socket, protocol, timeout "
                "and a path starting with /.")
        if value is True:  # a bare word: 1.8's runfcgi reads it as True
            raise options.OptionError(f"{key} needs a value, e.g. {key}=…")
    values = {key: CASTERS[key](key, value) for key, value in given.items()}

    host, port, sock = values.get("host"), values.get("port"), values.get("socket")
    if sock is not None and (host is not None or port is not None):
        raise options.OptionError(
            f"socket={given['socket']!r} cannot be combined with host or port: "
            "use either socket, or host and port.")
    if host is not None and port is None:
        raise options.OptionError(f"host={given['host']!r} needs a port as well.")
    if port is not None and host is None:
        raise options.OptionError(
            f"port={given['port']!r} needs a host as well (e.g. host=127.0.0.1).")
    if sock is None and host is None:
        raise options.OptionError(
            "Say where the server listens: host=… port=…, or socket=….")

    # The path is typed as in a URL: undo its percent-escapes like a web server.
    path, _, query = (paths[0] if paths else "/").partition("?")
    return (sock if sock is not None else (host, port), values.get("protocol", "fcgi"),
            urllib.parse.unquote(path), query, values.get("timeout", 10.0))


def host_header():
    """Return a Host this project accepts: its first plain ALLOWED_HOSTS entry.

    Without it a project that allows only its own domain would answer the
    ping with 400 (DisallowedHost).
    """
    for pattern in settings.ALLOWED_HOSTS:
        name = pattern.lstrip(".")
        if name and name != "*":
            return name
    return "localhost"


class Command(BaseCommand):
    help = ("Sends one GET to a running runfcgi server over FastCGI, SCGI or AJP "
            "and prints the answer; exits non-zero on no answer or a 4xx/5xx.")

    # A ping must work even when the project's own checks would fail.
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument(
            "words", nargs="*", metavar="key=value|/path",
            help="host=HOST port=PORT or socket=PATH; protocol=fcgi|scgi|ajp [fcgi]; "
                 "timeout=SECONDS [10]; and the path to ask for [/]. "
                 "With --verbosity 2 the body is printed too.",
        )

    def handle(self, *args, **kwargs):
        words = list(kwargs["words"]) + list(args)
        verbosity = kwargs["verbosity"]
        try:
            address, protocol, path, query, timeout = parse_words(words)
        except options.OptionError as exc:
            raise CommandError(str(exc)) from None
        try:
            response = client.request(address, protocol, path=path, query=query,
                                      headers={"Host": host_header()}, timeout=timeout)
        except client.ClientError as exc:
            raise CommandError(str(exc)) from None

        if verbosity >= 1:
            self.show(response, verbosity)
        if response.status >= 400:
            raise CommandError(
                f"{client.describe_address(address)} answered {response.status_line}")

    def show(self, response, verbosity):
        self.stdout.write(response.status_line)
        for name, value in response.headers:
            self.stdout.write(f"{name}: {value}")
        if verbosity >= 2 and response.body:
            self.stdout.write("")
            self.stdout.write(response.body.decode("utf-8", "replace"))
        if response.stderr:
            self.stderr.write("FastCGI stderr: " + response.stderr.decode("utf-8", "replace"),
                              ending="" if response.stderr.endswith(b"\n") else "\n")
        self.stdout.write(f"time: {response.elapsed * 1000:.1f} ms")
