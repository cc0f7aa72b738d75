"""Restart on ``touch mysite.fcgi``: the shared-host habit, kept working.

Shared hosts deploy by touching the ``.fcgi`` script.  mod_fcgid 2.3.9 does
not restart an application whose script changed (seen here: a touched
``mysite.fcgi`` kept its process for as long as we waited), so a server the
web server started (socket on fd 0) watches its own script and, when the
file's modification time changes, stops itself gracefully with SIGTERM:
requests in flight finish, and the web server starts a fresh process, with
fresh code, for the next request.

Only in threaded mode: a watching thread in a prefork master would be
copied into every fork (prefork servers reload with SIGHUP instead).
"""
import logging
import os
import signal
import threading

logger = logging.getLogger("runfcgi_compat")

INTERVAL = 1.0


def start(path, interval=INTERVAL):
    """Watch ``path`` in a daemon thread; return the thread, or None if unreadable."""
    try:
        first = os.stat(path).st_mtime_ns
    except OSError:
        return None
    stop = threading.Event()

    def watch():
        while not stop.wait(interval):
            try:
                now = os.stat(path).st_mtime_ns
            except OSError:
                continue  # Being replaced: look again next time.
            if now != first:
                logger.info("%s changed: stopping so the web server starts a fresh process",
                            path)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="runfcgi-script-watch", daemon=True)
    thread.stop = stop
    thread.start()
    return thread
