"""Serve the bench project with flup's own servers, as Django 1.8's runfcgi did.

    python flup_serve.py PROTOCOL METHOD PORT THREADS

PROTOCOL is fcgi, scgi or ajp; METHOD prefork or threaded.  This mirrors
django/core/servers/fastcgi.py of Django 1.8: the module is
``flup.server.<protocol>`` (``_fork`` for prefork), prefork gets
maxSpare/minSpare/maxChildren/maxRequests, threaded gets maxSpare/minSpare/
maxThreads, and debug is off.  It is "what flup does today", the reference
the issue's targets are measured against.
"""
import importlib
import os
import sys


def main():
    protocol, method, port, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
    import django
    from django.core.servers.basehttp import get_internal_wsgi_application

    django.setup(set_prefix=False)
    app = get_internal_wsgi_application()
    module = "flup.server." + protocol + ("_fork" if method == "prefork" else "")
    server_class = importlib.import_module(module).WSGIServer
    if method == "prefork":
        opts = {"maxSpare": 2, "minSpare": 2, "maxChildren": 2, "maxRequests": 0}
    else:
        opts = {"maxSpare": 2, "minSpare": 2, "maxThreads": threads}
    server_class(app, bindAddress=("127.0.0.1", port), debug=False, **opts).run()


if __name__ == "__main__":
    main()
