"""The option table: one place that defines every ``runfcgi`` option.

The key=value parser, ``runfastcgi(**kwargs)``, ``runfcgi help``, the
``manage.py help runfcgi`` text and the options page of the docs are all
built from ``OPTIONS`` below, so they cannot drift apart.

Values arrive either as strings (``port=8000`` on the command line, or 1.8's
string keyword arguments) or as real Python values (``port=8000``,
``daemonize=False``, ``umask=0o022``).  Every caster accepts both.
"""
import dataclasses
import grp
import ipaddress
import os
import pwd


class OptionError(ValueError):
    """A user's mistake in the options; its message is one printable line."""


# -- casters ---------------------------------------------------------------
# Each caster takes (name, value) and returns the cleaned value or raises
# OptionError quoting both.  ``None`` means "not set" and is handled before a
# caster is called.

TRUE_WORDS = ("true", "yes", "t", "y", "on", "1")
FALSE_WORDS = ("false", "no", "f", "n", "off", "0")


def as_bool(name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS:
        return True
    if isinstance(value, str) and value.strip().lower() in FALSE_WORDS:
        return False
    raise OptionError(
        f"{name}={value!r} is not a boolean: use true/yes/on or false/no/off."
    )


def _as_int(name, value, low, high):
    if isinstance(value, bool):  # bool is an int subclass; True is not 1 here.
        raise OptionError(f"{name}={value!r} is not a whole number.")
    if isinstance(value, int):
        number = value
    else:
        try:
            number = int(str(value).strip(), 10)
        except ValueError:
            raise OptionError(f"{name}={value!r} is not a whole number.") from None
    if not low <= number <= high:
        raise OptionError(
            f"{name}={value!r} is out of range: use a number from {low} to {high}."
        )
    return number


def as_count(name, value):
    """A number of processes or threads: at least 1."""
    return _as_int(name, value, 1, 10_000)


def as_nonnegative(name, value):
    """A number where 0 means "no limit" (maxrequests)."""
    return _as_int(name, value, 0, 2**31 - 1)


def as_port(name, value):
    return _as_int(name, value, 1, 65535)


def as_octal(name, value):
    """A umask: an int, or a string of octal digits such as ``022``."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip().lower()
        text = text[2:] if text.startswith("0o") else text
        try:
            number = int(text, 8)
        except ValueError:
            raise OptionError(
                f"{name}={value!r} is not an octal number such as 022."
            ) from None
    if not 0 <= number <= 0o777:
        raise OptionError(f"{name}={value!r} is out of range: use 000 to 777.")
    return number


def as_host(name, value):
    """A host name or IP address; ``[::1]`` is accepted for IPv6."""
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text or any(c.isspace() or c in "/[]" for c in text):
        raise OptionError(f"{name}={value!r} is not a host name or IP address.")
    if ":" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise OptionError(
                f"{name}={value!r} is not a host name or IP address."
            ) from None
    return text


def as_path(name, value):
    """A file path; relative paths are taken from the starting directory."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if not text.strip() or "\0" in text:
        raise OptionError(f"{name}={value!r} is not a usable path.")
    return os.path.abspath(os.path.expanduser(text))


def as_seconds(name, value):
    """A duration in whole seconds; 0 means "never"."""
    return _as_int(name, value, 0, 86_400)


def as_user(name, value):
    """An account name or uid that exists here; return the account name."""
    text = str(value).strip()
    try:
        entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except (KeyError, OverflowError):
        raise OptionError(f"{name}={value!r} is not an account on this machine.") from None
    return entry.pw_name


def as_group(name, value):
    """A group name or gid that exists here; return the group name."""
    text = str(value).strip()
    try:
        entry = grp.getgrgid(int(text)) if text.isdigit() else grp.getgrnam(text)
    except (KeyError, OverflowError):
        raise OptionError(f"{name}={value!r} is not a group on this machine.") from None
    return entry.gr_name


def as_networks(name, value):
    """Comma-separated IP addresses or networks (IPv4 or IPv6)."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    networks = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise OptionError(
                f"{name}={value!r}: {item!r} is not an IP address or network."
            ) from None
    if not networks:
        raise OptionError(f"{name}={value!r} names no address.")
    return tuple(networks)


def as_peers(name, value):
    """``any`` (every peer, on purpose), or addresses and networks as
    ``as_networks`` takes them."""
    if isinstance(value, str) and value.strip().lower() == "any":
        return "any"
    if isinstance(value, str) and "any" in value.lower().replace(" ", "").split(","):
        raise OptionError(f"{name}={value!r}: any admits every peer; give it alone.")
    try:
        return as_networks(name, value)
    except OptionError as exc:
        raise OptionError(str(exc).replace(
            "is not an IP address or network.",
            "is not an IP address, a network or any.")) from None


def as_secret(name, value):
    """A shared secret: one word; never echoed back in a message."""
    text = str(value)
    if not text or any(c.isspace() for c in text):
        raise OptionError(f"{name}=... must be a non-empty word without spaces.")
    return text


def choice(*names, aliases=None):
    """Return a caster accepting ``names`` (and ``aliases`` mapped to names)."""
    aliases = aliases or {}

    def as_choice(name, value):
        text = str(value).strip().lower()
        text = aliases.get(text, text)
        if text not in names:
            allowed = ", ".join(list(names) + list(aliases))
            raise OptionError(f"{name}={value!r} is not one of: {allowed}.")
        return text

    return as_choice


# -- the table ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    caster: object
    default: object
    help: str
    metavar: str = "VALUE"

    @property
    def default_text(self):
        if self.default is None:
            return "unset"
        if self.caster is as_octal:
            return format(self.default, "03o")
        return str(self.default).lower() if isinstance(self.default, bool) else str(self.default)


OPTIONS = (
    Option("protocol", choice("fcgi", "scgi", "ajp"), "fcgi",
           "Protocol the web server speaks: fcgi, scgi or ajp.", "PROTOCOL"),
    Option("host", as_host, None,
           "Address to listen on (needs port), e.g. 127.0.0.1 or ::1.", "HOST"),
    Option("port", as_port, None, "TCP port to listen on (needs host).", "PORT"),
    Option("socket", as_path, None,
           "UNIX socket to listen on, instead of host and port.", "PATH"),
    Option("method", choice("prefork", "threaded",
                            aliases={"fork": "prefork", "thread": "threaded"}),
           "prefork",
           "prefork (processes; alias fork) or threaded (one process; alias thread).",
           "METHOD"),
    Option("maxrequests", as_nonnegative, 0,
           "Requests a prefork worker serves before it is replaced (0: never).", "N"),
    Option("maxspare", as_count, 5, "Most idle workers kept ready.", "N"),
    Option("minspare", as_count, 2, "Fewest idle workers kept ready.", "N"),
    Option("maxchildren", as_count, 50,
           "Most workers: processes in prefork, threads in threaded.", "N"),
    Option("daemonize", as_bool, None,
           "Detach into the background; unset: yes when host/port or socket is given.",
           "BOOL"),
    Option("pidfile", as_path, None, "Write the server's process id to this file.", "PATH"),
    Option("workdir", as_path, "/",
           "Directory to change into when daemonizing.", "PATH"),
    Option("debug", as_bool, False,
           "Show tracebacks for errors that escape Django (never in production).",
           "BOOL"),
    Option("outlog", as_path, None, "Append the daemon's stdout to this file.", "PATH"),
    Option("errlog", as_path, None, "Append the daemon's stderr to this file.", "PATH"),
    Option("umask", as_octal, None,
           "umask to set before creating the socket and files, e.g. 002.", "OCTAL"),
    # Beyond 1.8: operators' options found in gunicorn and uWSGI.
    Option("socketmode", as_octal, None,
           "Permissions of the UNIX socket, e.g. 660 (overrides umask for it).", "OCTAL"),
    Option("user", as_user, None,
           "Run as this account after binding (needs root).", "USER"),
    Option("group", as_group, None,
           "Run as this group after binding; the UNIX socket is given to it.", "GROUP"),
    Option("allow", as_peers, None,
           "Peers allowed to connect, e.g. 10.0.0.5,10.0.1.0/24, or any "
           "(unset: FCGI_WEB_SERVER_ADDRS, else this machine only).",
           "ADDRS"),
    Option("ajpsecret", as_secret, None,
           "AJP only: refuse requests without this secret (Apache's secret=).", "SECRET"),
    Option("idletimeout", as_seconds, 60,
           "Seconds a connection may sit idle before it is closed (0: never).", "SECONDS"),
    Option("gracetimeout", as_seconds, 30,
           "Seconds running requests get to finish on stop or reload.", "SECONDS"),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}

# 1.8's dictionary of defaults, kept for code that imported it.
DEFAULTS = {option.name: option.default for option in OPTIONS}


@dataclasses.dataclass(frozen=True)
class Options:
    """Validated options; build with ``parse_words`` or ``from_mapping``."""

    protocol: str = "fcgi"
    host: str = None
    port: int = None
    socket: str = None
    method: str = "prefork"
    maxrequests: int = 0
    maxspare: int = 5
    minspare: int = 2
    maxchildren: int = 50
    daemonize: bool = False
    pidfile: str = None
    workdir: str = "/"
    debug: bool = False
    outlog: str = None
    errlog: str = None
    umask: int = None
    socketmode: int = None
    user: str = None
    group: str = None
    allow: tuple = None  # or "any"
    ajpsecret: str = None
    idletimeout: int = 60
    gracetimeout: int = 30

    @property
    def bind(self):
        """Where to listen: a (host, port) pair, a socket path, or None (fd 0)."""
        if self.socket:
            return self.socket
        if self.host is not None:
            return (self.host, self.port)
        return None


# -- parsing -----------------------------------------------------------------


def split_words(words):
    """Turn ``key=value`` words into a dict; a bare word means True (as in 1.8).

    Raise OptionError for a word given twice.
    """
    given = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        if key in given:
            raise OptionError(f"{key} is given twice ({key}={given[key]!r} and {word!r}).")
        given[key] = value if sep else True
    return given


def from_mapping(given):
    """Validate a dict of raw option values and return ``Options``.

    Unknown names are refused, each known value goes through its caster, then
    the combinations are checked.  Values equal to None mean "use the default".
    """
    unknown = sorted(set(given) - set(OPTIONS_BY_NAME))
    if unknown:
        raise OptionError(
            f"Unknown option {unknown[0]!r}: run 'runfcgi help' for the list."
        )
    values = {}
    for option in OPTIONS:
        raw = given.get(option.name)
        if raw is None or (raw == "" and option.default is None):
            values[option.name] = option.default
        else:
            values[option.name] = option.caster(option.name, raw)
    _check_combinations(values, given)
    return Options(**values)


def parse_words(words):
    """Parse ``manage.py runfcgi`` words into ``Options``."""
    return from_mapping(split_words(words))


def _check_combinations(values, given):
    host, port, sock = values["host"], values["port"], values["socket"]
    if sock is not None and (host is not None or port is not None):
        raise OptionError(
            f"socket={given['socket']!r} cannot be combined with host or port: "
            "use either socket, or host and port."
        )
    if host is not None and port is None:
        raise OptionError(f"host={given['host']!r} needs a port as well.")
    if port is not None and host is None:
        raise OptionError(f"port={given['port']!r} needs a host as well (e.g. host=127.0.0.1).")
    if values["minspare"] > values["maxspare"]:
        raise OptionError(
            f"minspare={given.get('minspare', values['minspare'])!r} is above "
            f"maxspare={values['maxspare']!r}."
        )
    if values["socketmode"] is not None and sock is None:
        raise OptionError(
            f"socketmode={given['socketmode']!r} needs socket=PATH (it sets the "
            "UNIX socket's permissions)."
        )
    if values["ajpsecret"] is not None and values["protocol"] != "ajp":
        raise OptionError(f"ajpsecret needs protocol=ajp (protocol={values['protocol']!r}).")
    owns_socket = sock is not None or host is not None
    if values["daemonize"] is None:
        # 1.8: daemonize when the server owns its socket, stay in the
        # foreground when the web server hands us one on fd 0.
        values["daemonize"] = owns_socket
    elif values["daemonize"] and not owns_socket:
        raise OptionError(
            f"daemonize={given['daemonize']!r} needs host and port or socket: a server "
            "started by the web server (socket on fd 0) must stay in the foreground."
        )


def peer_allowlist(options, environ=os.environ):
    """Return the networks allowed to connect, ``"any"``, or None (nothing set).

    The ``allow`` option wins; otherwise FastCGI's FCGI_WEB_SERVER_ADDRS
    variable applies (to every protocol).  What None means depends on the
    listening socket (``peers.decide``): every peer on loopback, only this
    machine's beyond it.  UNIX-socket peers are always let in: the socket's
    permissions decide who may connect there.
    """
    if options.allow is not None:
        return options.allow
    addresses = environ.get("FCGI_WEB_SERVER_ADDRS", "").strip()
    if not addresses:
        return None
    return as_networks("FCGI_WEB_SERVER_ADDRS", addresses)


def help_text():
    """Return the option list shown by ``runfcgi help``."""
    width = max(len(f"{o.name}={o.metavar}") for o in OPTIONS)
    lines = [
        "Run this project as a FastCGI, SCGI or AJP application (needs flup).",
        "",
        "Usage: manage.py runfcgi [key=value ...]",
        "",
        "Options (default in brackets):",
    ]
    for option in OPTIONS:
        left = f"{option.name}={option.metavar}"
        lines.append(f"  {left:<{width}}  {option.help} [{option.default_text}]")
    lines += [
        "",
        "Examples:",
        "  manage.py runfcgi method=threaded host=127.0.0.1 port=3033",
        "  manage.py runfcgi socket=/run/mysite/fcgi.sock pidfile=/run/mysite/fcgi.pid umask=002",
        "  manage.py runfcgi daemonize=false host=127.0.0.1 port=3033 maxrequests=1",
    ]
    return "\n".join(lines) + "\n"
