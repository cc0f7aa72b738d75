"""The surface of Django 1.8's ``django.core.servers.fastcgi``.

A legacy ``mysite.fcgi`` script changes one import line::

    from runfcgi_compat.fastcgi import runfastcgi
    runfastcgi(method="threaded", daemonize="false")

``runfastcgi`` takes 1.8's ``key=value`` words and keyword arguments (strings
as in 1.8, or real Python values), prints ``Error: ...`` to stderr and
returns False for bad input, and returns True once the server has stopped.
"""
import sys

from . import options as _options
from .errors import StartupError

# 1.8's defaults; code that changed this dict changed runfastcgi's defaults.
FASTCGI_OPTIONS = dict(_options.DEFAULTS)

FASTCGI_HELP = _options.help_text()


def fastcgi_help(message=None, *, stream=None):
    """Print the option list (and ``message``); return False as 1.8 did."""
    stream = stream or sys.stdout
    stream.write(FASTCGI_HELP)
    if message:
        sys.stderr.write(f"Error: {message}\n")
    return False


def build_options(argset=(), **kwargs):
    """Return validated Options from 1.8-style words and keyword arguments.

    Keyword arguments override FASTCGI_OPTIONS and words override both, as
    in 1.8.  Raise OptionError for bad input.
    """
    given = dict(FASTCGI_OPTIONS)
    given.update({key.lower(): value for key, value in kwargs.items()})
    given.update(_options.split_words(argset))
    return _options.from_mapping(given)


def wants_help(argset=(), **kwargs):
    words = {word.partition("=")[0].strip().lower() for word in argset}
    return "help" in words or "help" in {key.lower() for key in kwargs}


def runfastcgi(argset=(), **kwargs):
    """Serve this Django project over FastCGI, SCGI or AJP until stopped."""
    if wants_help(argset, **kwargs):
        return fastcgi_help()
    try:
        options = build_options(argset, **kwargs)
        from . import runner

        runner.run(options)
    except (_options.OptionError, StartupError) as exc:
        sys.stderr.write(f"Error: {exc}\n")
        sys.stderr.flush()
        return False
    return True
