"""runfcgi_compat: Django 1.8's ``manage.py runfcgi`` for today's Django."""

__version__ = "1.0.0"


def runfastcgi(argset=(), **kwargs):
    """Serve the project over FastCGI/SCGI/AJP; see runfcgi_compat.fastcgi."""
    from .fastcgi import runfastcgi as _runfastcgi

    return _runfastcgi(argset, **kwargs)
