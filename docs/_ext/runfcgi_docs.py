"""Write the parts of the docs that come from the code, at build time.

Nothing under ``docs/_generated/`` is written by hand: before Sphinx reads a
page, this extension asks the code for

* the options reference (``options.rst``) and ``runfcgi help``'s text,
  from the option table ``runfcgi_compat.options.OPTIONS``;
* the error messages the docs quote (``errors-*.rst``), by feeding real
  mistakes to the real parser and start-up checks;
* every web server, systemd and shared-host configuration (``conf/*``), by
  calling ``runfcgi_compat.frontends`` — the functions the integration tests
  use to configure the real nginx, Apache and lighttpd they run;
* the benchmark section (``performance.rst``), which shows
  ``_static/bench.png`` only when that file exists, and the figures table
  (``bench-results.rst``) from ``bench/results/latest.json`` when a
  benchmark has been run in this checkout.

So a page cannot show an option, a default, a message or a configuration the
code does not have.  The functions here import nothing from Sphinx, so
``tests/unit/test_docs.py`` calls them directly.
"""
import inspect
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent
GENERATED = DOCS / "_generated"
BENCH_FIGURE = DOCS / "_static" / "bench.png"
# A full bench run copies its figures next to the chart (committed); a local
# run's bench/results/latest.json is only a fallback for a checkout without it.
BENCH_RESULTS = DOCS / "_static" / "bench.json"
if not BENCH_RESULTS.exists():
    BENCH_RESULTS = DOCS.parent / "bench" / "results" / "latest.json"

# Where the examples say the project lives; the names every page uses.
SOCKET = "/run/mysite/fcgi.sock"
PIDFILE = "/run/mysite/fcgi.pid"
PROJECT = "/srv/mysite"
PYTHON = "/srv/mysite/venv/bin/python"
SETTINGS = "mysite.settings"
PORT = 3033


# -- the options reference ----------------------------------------------------


def accepted_values(option):
    """Return, in words, what ``option``'s caster accepts (read from the caster)."""
    from runfcgi_compat import options as o

    caster = option.caster
    if caster is o.as_bool:
        return (f"true: {', '.join(o.TRUE_WORDS)}; false: {', '.join(o.FALSE_WORDS)}; "
                "a bare word means true")
    if caster in (o.as_count, o.as_nonnegative, o.as_port):
        low, high = _int_range(caster)
        return f"a whole number from {low} to {high}"
    if caster is getattr(o, "as_seconds", None):
        low, high = _int_range(caster)
        return f"a whole number of seconds from {low} to {high}"
    if caster is getattr(o, "as_user", None):
        return "an account name or numeric uid that exists on this machine"
    if caster is getattr(o, "as_group", None):
        return "a group name or numeric gid that exists on this machine"
    if caster is getattr(o, "as_networks", None):
        return ("IP addresses or networks, comma separated, IPv4 or IPv6, "
                "e.g. 127.0.0.1,10.0.0.0/24,::1")
    if caster is getattr(o, "as_peers", None):
        return ("IP addresses or networks, comma separated, IPv4 or IPv6, "
                "e.g. 10.0.0.5,10.0.1.0/24,fd00::/64; or ``any`` alone for every peer")
    if caster is getattr(o, "as_secret", None):
        return "one word without spaces (the same as Apache's secret=)"
    if caster is o.as_octal:
        return "an octal number from 000 to 777, e.g. 022 or 0o022"
    if caster is o.as_host:
        return "a host name, an IPv4 address, or an IPv6 address (brackets optional)"
    if caster is o.as_path:
        return "a path; a relative path is taken from the directory runfcgi starts in"
    if caster.__name__ == "as_choice":
        free = inspect.getclosurevars(caster).nonlocals
        words = ", ".join(free["names"])
        aliases = ", ".join(f"{alias} for {name}" for alias, name in free["aliases"].items())
        return f"{words} (aliases: {aliases})" if aliases else words
    raise LookupError(
        f"docs/_ext/runfcgi_docs.py cannot describe the caster of {option.name!r} "
        f"({caster.__name__}): teach accepted_values() about it."
    )


def _int_range(caster):
    """Read a number caster's range from the message it gives for -1."""
    from runfcgi_compat.options import OptionError

    try:
        caster("n", -1)
    except OptionError as exc:
        found = re.search(r"from (\d+) to (\d+)", str(exc))
        if found:
            return tuple(f"{int(number):,}" for number in found.groups())
    raise LookupError(f"cannot read the range of {caster.__name__}")


# Django 1.8's FASTCGI_OPTIONS, in its order: history, so it never changes.
DJANGO_18_OPTIONS = (
    "protocol", "host", "port", "socket", "method", "maxrequests", "maxspare",
    "minspare", "maxchildren", "daemonize", "pidfile", "workdir", "debug",
    "outlog", "errlog", "umask",
)


# A pointer from an option's entry to the page that explains it in use.
# Keys must be option names; tests/unit/test_docs.py checks that.
SEE_ALSO = {
    "protocol": "The web server pages: :doc:`/frontends/nginx`, :doc:`/frontends/apache`, "
                ":doc:`/frontends/lighttpd`, :doc:`/frontends/caddy`, "
                ":doc:`/frontends/haproxy`, :doc:`/frontends/h2o` (FastCGI only).",
    "socket": ":doc:`/permissions` for who may connect; :ref:`systemd-socket` for a "
              "socket that systemd creates.",
    "method": ":doc:`/performance` for choosing between them.",
    "maxchildren": "Idle connections nginx or Apache keep open do not use it up; "
                   "see :ref:`kept-connections`.",
    "daemonize": ":doc:`/running` for what daemonizing does and when it is the default.",
    "pidfile": ":doc:`/running` for the stale and live pidfile rules.",
    "workdir": "Relative paths in other options do not depend on it (:doc:`/migrating`).",
    "debug": "Leave it off in production: tracebacks would reach visitors "
             "(:ref:`debug-pages`).",
    "outlog": ":ref:`logrotate` for rotating it with ``SIGUSR1``.",
    "errlog": ":ref:`logrotate` for rotating it with ``SIGUSR1``.",
    "umask": ":doc:`/permissions` for the values to use.",
    "socketmode": ":ref:`starting-as-root`.",
    "user": ":ref:`starting-as-root`.",
    "group": ":ref:`starting-as-root`.",
    "allow": ":ref:`tcp-peers`; unset on an address beyond loopback: "
             ":ref:`protected-mode`.",
    "ajpsecret": ":ref:`ajp-secret`.",
    "idletimeout": "Matters for connections the web server keeps open "
                   "(:ref:`kept-connections`).",
    "gracetimeout": ":doc:`/running`, section *Stopping, reloading and signals*; "
                    ":ref:`reload`.",
}


def options_reference():
    """Return the reStructuredText of the options reference.

    Django 1.8's options come first, then the ones runfcgi_compat added; each
    group is a summary table followed by one ``.. option::`` entry per
    option, which other pages link to with ``:option:`runfcgi NAME```.
    """
    from runfcgi_compat.options import OPTIONS

    groups = (
        ("Django 1.8's options",
         "Same names, defaults and meanings as in Django 1.8.",
         [o for o in OPTIONS if o.name in DJANGO_18_OPTIONS]),
        ("Added by runfcgi_compat",
         "Not in Django 1.8. Left out, they change nothing, except that the two "
         "time limits bound what 1.8 left open: how long an idle connection stays "
         "and how long a stop waits.",
         [o for o in OPTIONS if o.name not in DJANGO_18_OPTIONS]),
    )
    out = [
        ".. This file is generated from runfcgi_compat.options.OPTIONS",
        "   by docs/_ext/runfcgi_docs.py.  Do not edit it.",
        "",
        ".. program:: runfcgi",
        "",
    ]
    for title, intro, group in groups:
        if not group:
            continue
        out += [title, "-" * len(title), "", intro, ""]
        out += [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 20 12 68",
            "",
            "   * - Option",
            "     - Default",
            "     - Meaning",
        ]
        for option in group:
            out += [
                f"   * - :option:`{option.name} <runfcgi {option.name}>`",
                f"     - ``{option.default_text}``",
                f"     - {option.help}",
            ]
        out.append("")
        for option in group:
            out += [
                f".. option:: {option.name}={option.metavar}",
                "",
                f"   {option.help}",
                "",
                f"   :Default: ``{option.default_text}``",
                f"   :Accepts: {accepted_values(option)}",
            ]
            if option.name in SEE_ALSO:
                out.append(f"   :See also: {SEE_ALSO[option.name]}")
            out.append("")
    return "\n".join(out)


def help_output():
    """Return what ``manage.py runfcgi help`` prints, as a literal block."""
    from runfcgi_compat.options import help_text

    return ".. code-block:: text\n\n" + textwrap.indent(help_text(), "   ") + "\n"


# -- error messages, exactly as users see them ----------------------------------

OPTION_MISTAKES = (
    ("host=127.0.0.1", "port=80x"),
    ("protocol=fastcgi",),
    ("daemonise=false", "socket=/run/mysite/fcgi.sock"),
    ("socket=/run/mysite/fcgi.sock", "port=3033"),
    ("host=127.0.0.1",),
    ("minspare=8", "maxspare=4"),
    ("debug=maybe",),
    ("umask=999",),
    ("daemonize=true",),
)


def option_error(words):
    """Return the message the parser gives for ``words`` (which must be wrong)."""
    from runfcgi_compat.options import OptionError, parse_words

    try:
        parse_words(list(words))
    except OptionError as exc:
        return str(exc)
    raise AssertionError(f"runfcgi {' '.join(words)} is accepted; pick another mistake")


def option_errors():
    """Return a console block: each mistake, its one line, and exit status 1."""
    lines = []
    for words in OPTION_MISTAKES:
        lines += [f"$ ./manage.py runfcgi {' '.join(words)}",
                  f"CommandError: {option_error(words)}"]
    lines += ["$ echo $?", "1"]
    return ".. code-block:: console\n\n" + textwrap.indent("\n".join(lines), "   ") + "\n"


def runfastcgi_error():
    """Return a Python session showing ``runfastcgi``'s error line and False."""
    from runfcgi_compat.fastcgi import build_options
    from runfcgi_compat.options import OptionError

    try:
        build_options(method="threded", daemonize="false")
    except OptionError as exc:
        message = str(exc)
    else:
        raise AssertionError("method='threded' is accepted")
    session = (
        '>>> runfastcgi(method="threded", daemonize="false")\n'
        f"Error: {message}\n"
        "False\n"
    )
    return ".. code-block:: pycon\n\n" + textwrap.indent(session, "   ") + "\n"


def startup_errors():
    """Return {name: message} for start-up failures, produced for real.

    Each probe builds the situation in a temporary directory (a busy port, a
    pidfile naming a live process, a live UNIX socket, a file in the way) and
    keeps the message the start-up checks give; temporary paths and numbers
    are then shown as the docs' usual ones.
    """
    from runfcgi_compat import pidfile, sockets
    from runfcgi_compat.errors import StartupError

    messages = {}
    with tempfile.TemporaryDirectory() as tmp:
        shown = {tmp: "/run/mysite"}

        def keep(name, call, *args):
            try:
                call(*args)
            except (StartupError, pidfile.PidfileError) as exc:
                text = str(exc)
            else:
                raise AssertionError(f"the {name} probe did not fail")
            # Longest first, so a path inside tmp is replaced before tmp itself.
            for real in sorted(shown, key=len, reverse=True):
                text = text.replace(real, shown[real])
            messages[name] = text

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            shown[f"port={port}"] = f"port={PORT}"
            keep("port-in-use", sockets.listen_tcp, "127.0.0.1", port)

        live_pid = os.getppid()
        shown[f"process {live_pid}"] = "process 4242"
        pid_path = os.path.join(tmp, "fcgi.pid")
        Path(pid_path).write_text(f"{live_pid}\n")
        keep("pidfile-live", pidfile.check, pid_path)

        sock_path = os.path.join(tmp, "fcgi.sock")
        with socket.socket(socket.AF_UNIX) as live:
            live.bind(sock_path)
            live.listen()
            keep("socket-in-use", sockets.listen_unix, sock_path)
        os.unlink(sock_path)

        Path(sock_path).write_text("not a socket")
        keep("socket-not-a-socket", sockets.listen_unix, sock_path)

        missing = os.path.join(tmp, "missing")
        shown[missing] = "/run/mysite"
        keep("socket-no-directory", sockets.listen_unix, os.path.join(missing, "fcgi.sock"))

    # Standard input that is not a socket: probe in a child, whose fd 0 we choose.
    probe = ("from runfcgi_compat import sockets\n"
             "try:\n    sockets.fd0_socket()\n"
             "except Exception as exc:\n    print(exc)\n")
    # The child sees the same runfcgi_compat as this build (installed or checkout).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-c", probe], stdin=subprocess.DEVNULL, env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    messages["no-socket"] = done.stdout.strip()
    return messages


def startup_errors_rst():
    """Return one ``errors-startup-<name>.rst`` fragment per start-up message."""
    return {
        f"errors-startup-{name}.rst":
            ".. code-block:: text\n\n" + textwrap.indent(f"CommandError: {text}", "   ") + "\n"
        for name, text in startup_errors().items()
    }


# -- configurations, from runfcgi_compat.frontends ---------------------------------


@dataclass(frozen=True)
class Example:
    """One configuration shown in the docs: ``frontends.<function>(**kwargs)``."""

    filename: str
    function: str
    kwargs: dict = field(default_factory=dict)
    args: tuple = ()
    optional: bool = False  # shown only once frontends has the function
    base: str = None  # another example's filename: highlight what this one adds
    # The set-up in tests/integration/frontends.py (SETUPS) that runs this
    # configuration against the real server; None marks it untested on the page.
    tested_by: str = None
    # Or the integration test module that runs it, for a configuration no
    # set-up in SETUPS uses (e.g. several backends behind one nginx).
    tested_in: str = None
    # Shown (reStructuredText) while an optional example cannot be rendered.
    fallback: str = None


SITE = dict(server_name="example.com")
# The machines of docs/scaling.rst: two backends and the balancer in front.
BACKENDS = [("10.0.0.5", PORT), ("10.0.0.6", PORT)]
BALANCER = "10.0.0.2"
TCP = dict(host="127.0.0.1", port=PORT)
UNIX = dict(socket=SOCKET)
# A certificate and its key, for front ends that serve TLS themselves.
TLS_CERT = "/etc/ssl/certs/mysite.pem"
TLS_KEY = "/etc/ssl/private/mysite.key"

EXAMPLES = (
    # nginx
    Example("nginx-unix.conf", "nginx", dict(UNIX, **SITE),
            tested_by="nginx-fcgi-unix"),
    Example("nginx-tcp.conf", "nginx", dict(TCP, **SITE),
            tested_by="nginx-fcgi-tcp"),
    Example("nginx-keepalive.conf", "nginx", dict(TCP, keepalive=16, **SITE),
            base="nginx-tcp.conf",
            tested_by="nginx-fcgi-keepalive"),
    Example("nginx-prefix.conf", "nginx", dict(UNIX, prefix="/app", **SITE),
            base="nginx-unix.conf",
            tested_by="nginx-fcgi-prefix"),
    Example("nginx-https.conf", "nginx", dict(UNIX, https=True, **SITE),
            base="nginx-unix.conf",
            tested_by="nginx-fcgi-https"),
    Example("nginx-static.conf", "nginx", dict(
        UNIX, static_url="/static/", static_root=f"{PROJECT}/static", **SITE),
        base="nginx-unix.conf"),
    Example("nginx-scgi.conf", "nginx", dict(TCP, protocol="scgi", **SITE),
            base="nginx-tcp.conf",
            tested_by="nginx-scgi-tcp"),
    # Apache
    Example("apache-fcgi-tcp.conf", "apache", dict(TCP, **SITE),
            tested_by="apache-fcgi-tcp"),
    Example("apache-fcgi-unix.conf", "apache", dict(UNIX, **SITE),
            tested_by="apache-fcgi-unix"),
    Example("apache-fcgi-reuse.conf", "apache", dict(TCP, reuse=True, **SITE),
            base="apache-fcgi-tcp.conf"),
    Example("apache-fcgi-prefix.conf", "apache", dict(TCP, prefix="/app", **SITE),
            base="apache-fcgi-tcp.conf",
            tested_by="apache-fcgi-prefix"),
    Example("apache-scgi.conf", "apache", dict(TCP, protocol="scgi", **SITE),
            tested_by="apache-scgi-tcp"),
    Example("apache-ajp.conf", "apache", dict(
        host="127.0.0.1", port=8009, protocol="ajp", secret="change-me", **SITE),
        tested_by="apache-ajp-secret"),
    Example("apache-fcgid.conf", "apache_fcgid", dict(SITE),
            args=("/home/user/public_html",),
            tested_by="apache-fcgid"),
    Example("htaccess", "htaccess", args=("/home/user/public_html",),
            tested_by="apache-fcgid"),
    Example("mysite.fcgi", "fcgi_script", dict(pythonpath=["/home/user/mysite"]),
            args=("/home/user/venv/bin/python", "/home/user/mysite", SETTINGS),
            tested_by="apache-fcgid"),
    # lighttpd
    Example("lighttpd-socket.conf", "lighttpd", dict(UNIX),
            tested_by="lighttpd-fcgi-unix"),
    Example("lighttpd-tcp.conf", "lighttpd", dict(TCP)),
    Example("lighttpd-scgi.conf", "lighttpd", dict(TCP, protocol="scgi"),
            base="lighttpd-tcp.conf", tested_by="lighttpd-scgi-tcp"),
    Example("lighttpd-prefix.conf", "lighttpd", dict(UNIX, prefix="/app"),
            base="lighttpd-socket.conf",
            tested_by="lighttpd-fcgi-prefix"),
    Example("lighttpd-bin-path.conf", "lighttpd", dict(
        socket="/run/lighttpd/mysite.sock",
        bin_path=f"{PYTHON} {PROJECT}/manage.py runfcgi",
        bin_environment={"DJANGO_SETTINGS_MODULE": SETTINGS}),
        base="lighttpd-socket.conf", tested_by="lighttpd-spawn"),
    # Caddy
    Example("caddy-tcp.conf", "caddy", dict(TCP, address="example.com"),
            tested_by="caddy-fcgi-tcp"),
    Example("caddy-unix-prefix.conf", "caddy", dict(
        UNIX, address="example.com", prefix="/app", https=True),
        base="caddy-tcp.conf", tested_by="caddy-fcgi-unix-prefix-https"),
    Example("caddy-tls-static.conf", "caddy", dict(
        TCP, address="example.com", certificate=TLS_CERT, certificate_key=TLS_KEY,
        static_url="/static/", static_root=f"{PROJECT}/static"),
        base="caddy-tcp.conf", tested_in="tests/sampleproject/notes/tests/test_live.py"),
    # HAProxy
    Example("haproxy-tcp.cfg", "haproxy", dict(TCP, docroot=PROJECT),
            tested_by="haproxy-fcgi-tcp"),
    Example("haproxy-unix-prefix.cfg", "haproxy", dict(
        UNIX, docroot=PROJECT, prefix="/app", https=True),
        base="haproxy-tcp.cfg", tested_by="haproxy-fcgi-unix-prefix-https"),
    Example("haproxy-tls.cfg", "haproxy", dict(
        TCP, docroot=PROJECT, listen="*:443", certificate="/etc/ssl/private/mysite.pem"),
        base="haproxy-tcp.cfg", tested_in="tests/sampleproject/notes/tests/test_live.py"),
    # h2o
    Example("h2o-tcp.conf", "h2o", dict(TCP, keepalive=10, **SITE),
            tested_by="h2o-fcgi-tcp-keepalive"),
    Example("h2o-unix-prefix.conf", "h2o", dict(
        UNIX, keepalive=10, prefix="/app", https=True, **SITE),
        base="h2o-tcp.conf", tested_by="h2o-fcgi-unix-prefix-https"),
    Example("h2o-tls-static.conf", "h2o", dict(
        TCP, keepalive=10, listen="443", certificate=TLS_CERT, certificate_key=TLS_KEY,
        static_url="/static/", static_root=f"{PROJECT}/static", **SITE),
        base="h2o-tcp.conf", tested_in="tests/sampleproject/notes/tests/test_live.py"),
    Example("h2o-spawn.conf", "h2o", dict(
        spawn=f"exec /usr/bin/env DJANGO_SETTINGS_MODULE={SETTINGS} {PYTHON} "
              f"{PROJECT}/manage.py runfcgi protocol=fcgi method=prefork",
        spawn_user="mysite", **SITE),
        tested_by="h2o-spawn"),
    # spawn-fcgi
    Example("spawn-fcgi-tcp.sh", "spawn_fcgi", dict(
        TCP, python=PYTHON, project_dir=PROJECT, settings=SETTINGS, user="mysite"),
        tested_in="tests/integration/test_spawners.py"),
    Example("spawn-fcgi-ipv6.sh", "spawn_fcgi", dict(
        host="::1", port=PORT, python=PYTHON, project_dir=PROJECT, settings=SETTINGS,
        user="mysite"),
        tested_by="spawn-fcgi-ipv6"),
    Example("spawn-fcgi-unix-pidfile.sh", "spawn_fcgi", dict(
        UNIX, python=PYTHON, project_dir=PROJECT, settings=SETTINGS, user="mysite",
        group="mysite", socket_user="www-data", socket_group="www-data", socket_mode="660",
        pidfile=PIDFILE, options=["errlog=/var/log/mysite/err.log"]),
        tested_by="spawn-fcgi-unix-pidfile"),
    # several machines behind one balancer (docs/scaling.rst); each runs
    # runfcgi with allow= set to the balancer's address
    Example("nginx-balancer.conf", "nginx_balancer", dict(
        protocol="fcgi", backends=BACKENDS, allow=BALANCER, **SITE),
        tested_in="tests/integration/test_failover.py"),
    Example("haproxy-balancer.cfg", "haproxy_balancer", dict(
        backends=BACKENDS, allow=BALANCER, **SITE),
        tested_in="tests/integration/test_failover.py"),
    Example("apache-balancer.conf", "apache_balancer", dict(
        protocol="fcgi", backends=BACKENDS, allow=BALANCER, **SITE),
        tested_in="tests/integration/test_failover.py"),
    # systemd and log rotation
    Example("django-fcgi.service", "systemd", dict(
        UNIX, python=PYTHON, project_dir=PROJECT, settings=SETTINGS)),
    Example("django-fcgi.socket", "systemd_socket", dict(UNIX), optional=True),
    Example("django-fcgi-activated.service", "systemd", dict(
        python=PYTHON, project_dir=PROJECT, settings=SETTINGS, activated=True),
        optional=True),
    Example("logrotate", "logrotate", dict(
        logs=[f"/var/log/mysite/{name}.log" for name in ("out", "err")], pidfile=PIDFILE),
        optional=True),
)


def _frontends():
    from runfcgi_compat import frontends

    return frontends


def render_example(example):
    """Return the text of ``example``, or None if it is optional and not there yet."""
    function = getattr(_frontends(), example.function, None)
    if function is None:
        if example.optional:
            return None
        raise LookupError(f"runfcgi_compat.frontends.{example.function}() does not exist")
    try:
        return function(*example.args, **example.kwargs)
    except TypeError:
        if example.optional:  # the function exists but takes other arguments (yet)
            return None
        raise


def missing_example_rst(example):
    """Return the fragment used while an optional example cannot be rendered:
    a comment, so the page's prose stands alone until the file can be shown."""
    call = ", ".join([*map(repr, example.args),
                      *(f"{key}={value!r}" for key, value in example.kwargs.items())])
    comment = (f".. Not available yet: runfcgi_compat.frontends.{example.function}({call}).\n"
               f"   {example.filename} will be shown here once it is.\n")
    return comment + ("\n" + example.fallback if example.fallback else "")


def example_files():
    """Return {relative path: text} for every configuration and its include stub.

    ``conf/<file>`` is the configuration itself (pages ``literalinclude`` it);
    ``conf/<file>.rst`` includes it with a caption, or says why it cannot.
    """
    files = {}
    rendered = {}
    for example in EXAMPLES:
        text = render_example(example)
        stub = f"conf/{example.filename}.rst"
        if text is None:
            files[stub] = missing_example_rst(example)
            continue
        files[f"conf/{example.filename}"] = text
        caption = example.filename
        if example.tested_by is None and example.tested_in is None:
            caption += " (not run by the test suite)"
        options = [f":language: {language(example.filename)}", f":caption: {caption}"]
        if example.base:
            added = added_lines(rendered[example.base], text)
            if added:
                options.append(f":emphasize-lines: {','.join(map(str, added))}")
        rendered[example.filename] = text
        files[stub] = (f".. literalinclude:: /_generated/conf/{example.filename}\n"
                       + "".join(f"   {option}\n" for option in options))
    return files


def added_lines(base, text):
    """Return the 1-based numbers of the lines ``text`` adds to or changes in
    ``base``, leaving out the comment block at the top (it names the set-up)."""
    import difflib

    old, new = base.splitlines(), text.splitlines()
    header = next((n for n, line in enumerate(new) if not line.startswith("#")), len(new))
    numbers = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, _, _, start, end in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            numbers += [n + 1 for n in range(start, end) if n >= header and new[n].strip()]
    return numbers


def language(filename):
    """Return the Pygments lexer for a generated configuration file."""
    if filename.startswith("nginx"):
        return "nginx"
    if filename.startswith(("apache", "htaccess")):
        return "apache"
    if filename.startswith("lighttpd"):
        return "lighttpd"
    if filename.startswith("caddy"):
        return "caddyfile"
    if filename.startswith("h2o"):
        return "yaml"
    if filename.endswith(".sh"):
        return "bash"
    if filename.endswith((".service", ".socket")):
        return "systemd"
    if filename.endswith(".fcgi"):
        return "python"
    return "none"


# -- performance -------------------------------------------------------------------


def performance_rst(figure=BENCH_FIGURE):
    """Return the benchmark figure's include, or a sentence when there is none yet."""
    if Path(figure).exists():
        return (
            ".. figure:: /_static/bench.png\n"
            "   :alt: Requests per second and CPU per request for each set-up, from bench/\n"
            "   :width: 100%\n"
            "   :target: _static/bench.png\n\n"
            "   Requests per second (left) and the backend's CPU time per request\n"
            "   (right) for each set-up behind the same nginx, from one run of\n"
            "   ``bench/`` on one machine. Compare the bars with each other, not\n"
            "   with other machines.\n"
        )
    return ("No benchmark figure is part of this build yet: ``bench/`` writes it to\n"
            "``docs/_static/bench.png`` and the next docs build shows it here.\n")


def _number(value, digits=0):
    if value is None:
        return "--"
    return f"{value:,.{digits}f}"


def load_bench(results=BENCH_RESULTS):
    """Return the last benchmark run (``bench/results/latest.json``), or None.

    ``bench/run`` writes it; git ignores it.  Anything missing or unreadable
    is None, never an error, so a checkout without a run builds the same
    pages without the figures.
    """
    import json

    try:
        data = json.loads(Path(results).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    targets = data.get("targets")
    if not isinstance(targets, dict) or not targets or \
            not all(isinstance(target, dict) for target in targets.values()):
        return None
    return data


def bench_results_rst(results=BENCH_RESULTS):
    """Return the last benchmark run's figures as a table, or a sentence."""
    data = load_bench(results)
    if data is None:
        return ("No benchmark results are part of this build: run ``bench/run`` in a\n"
                "checkout and build the documentation again to see its figures here.\n")
    versions = data.get("versions") or {}
    settings = data.get("settings") or {}
    about = []
    if data.get("started"):
        about.append(str(data["started"]).replace("T", " ")[:16])
    if data.get("mode"):
        about.append(f"{data['mode']} run")
    if settings.get("rounds") and settings.get("seconds"):
        about.append(f"{settings['rounds']} rounds of {settings['seconds']} s per set-up")
    if settings.get("connections"):
        about.append(f"{settings['connections']} connections")
    if versions.get("cpus"):
        about.append(f"{versions['cpus']} CPUs")
    for name, shown in (("python", "{}"), ("Django", "Django {}"), ("nginx", "{}")):
        if versions.get(name):
            about.append(shown.format(versions[name]).replace("nginx version: ", ""))
    if versions.get("wire"):
        about.append(f"FastCGI fast path's byte work in {versions['wire']}")
    elif versions.get("params_decoder"):
        about.append(f"FastCGI parameters decoded in {versions['params_decoder']}")
    if versions.get("git"):
        dirty = " with uncommitted changes" if versions.get("git_dirty") else ""
        about.append(f"commit {versions['git']}{dirty}")
    out = [
        ".. This file is generated from bench/results/latest.json",
        "   by docs/_ext/runfcgi_docs.py.  Do not edit it.",
        "",
        ".. list-table:: The last benchmark run in this checkout",
        "   :header-rows: 1",
        "   :widths: 34 24 8 8 13 13",
        "",
        "   * - Set-up",
        "     - req/s (slowest–fastest round)",
        "     - p50 ms",
        "     - p99 ms",
        "     - CPU µs/request",
        "     - × uWSGI",
    ]
    for target in data["targets"].values():
        rps = _number(target.get("rps_median"))
        if target.get("rps_min") is not None and target.get("rps_max") is not None:
            rps += f" ({_number(target['rps_min'])}–{_number(target['rps_max'])})"
        ratio = target.get("ratio_vs_uwsgi")
        out += [
            f"   * - {_rst_escape(str(target.get('label', '?')))}",
            f"     - {rps}",
            f"     - {_number(target.get('p50_ms'), 1)}",
            f"     - {_number(target.get('p99_ms'), 1)}",
            f"     - {_number(target.get('cpu_us_per_request'))}",
            f"     - {'--' if ratio is None else f'{ratio:.2f}'}",
        ]
    if about:
        out += ["", _rst_escape("Measured: " + "; ".join(about) + ".")]
    return "\n".join(out) + "\n"


def bench_checks_rst(results=BENCH_RESULTS):
    """Return the targets the last run checked (PASS/MISS), or a comment."""
    data = load_bench(results)
    checks = data and data.get("checks")
    if not checks or not isinstance(checks, list):
        return ".. No benchmark targets: bench/results/latest.json is missing or has none.\n"
    out = []
    for check in checks:
        if not isinstance(check, dict):
            continue
        shown = _check_value(check.get("value"), str(check.get("goal", "")))
        goal = str(check.get("goal", "?")).replace(">=", "≥").replace("<=", "≤")
        line = f"{check.get('name', '?')}: {shown} (goal {goal})"
        if check.get("detail"):
            line += f"; {check['detail']}"
        out.append(f"* **{_rst_escape(str(check.get('status', '?')))}** {_rst_escape(line)}")
    return "\n".join(out) + "\n"


def _check_value(value, goal):
    """Show a check's value in its goal's unit: a ratio (x) or seconds (s)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "n/a"
    if goal.endswith("x"):
        return f"{value:.2f}x"
    if goal.endswith(" s"):
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:g}"


def _rst_escape(text):
    """Keep text from the JSON from being read as markup."""
    for char in "\\`*|_":
        text = text.replace(char, "\\" + char)
    return text


# -- writing -----------------------------------------------------------------------


def generated_files():
    """Return {path under _generated/: text} for everything this module writes."""
    files = {
        "options.rst": options_reference(),
        "help.rst": help_output(),
        "errors-options.rst": option_errors(),
        "errors-runfastcgi.rst": runfastcgi_error(),
        "performance.rst": performance_rst(),
        "bench-results.rst": bench_results_rst(),
        "bench-checks.rst": bench_checks_rst(),
    }
    files.update(startup_errors_rst())
    files.update(example_files())
    return files


def write_generated(outdir=GENERATED):
    """Write every generated file; leave unchanged ones alone (no needless rebuilds)."""
    outdir = Path(outdir)
    wanted = generated_files()
    for relative, text in wanted.items():
        path = outdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    # Drop files a renamed example left behind, so no page can include them.
    for path in outdir.rglob("*"):
        if path.is_file() and path.name != ".gitignore" and \
                path.relative_to(outdir).as_posix() not in wanted:
            path.unlink()
    return sorted(wanted)


def _on_builder_inited(app):
    write_generated()


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
