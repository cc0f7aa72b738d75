"""Several runfcgi backends behind one balancer, and GET load through it.

Each backend listens on its own loopback address (127.0.0.2, 127.0.0.3,
...), standing for a machine of its own, with ``allow=127.0.0.1``: the
balancer's address, as docs/scaling.rst tells each machine to set.  The
balancers (nginx, HAProxy, Apache) run the configurations of
``runfcgi_compat.frontends`` and are stopped by pid at the end of the test.

``load()`` sends GET requests from a few client threads and does something
to a backend (kill it, stop it) once a third of them have been answered, so
requests are in flight when it happens; every answer records when it
started and finished and which backend (process group) served it.
"""
import http.client
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from runfcgi_compat import frontends as conf
from tests.helpers import free_port, wait_until
from tests.integration import hostile
from tests.integration.conftest import require_binary
from tests.integration.frontends import accepts, start, start_apache, start_nginx

REQUESTS = 300
CLIENTS = 4
PATH = "/slow/20/"  # long enough that requests are in flight when a backend goes
BALANCER = "127.0.0.1"  # where every balancer connects from

# Only what a test run needs around frontends.haproxy_balancer()'s sections:
# log to standard output (haproxy -db keeps it in the foreground).
HAPROXY_MAIN = """\
global
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
"""


# -- backends ----------------------------------------------------------------


def backend_words(host, port, tmp, name):
    return ["protocol=fcgi", "method=prefork", f"host={host}", f"port={port}",
            f"allow={BALANCER}", "maxchildren=4", "maxspare=4", "minspare=2",
            f"errlog={tmp / f'{name}.err'}", f"outlog={tmp / f'{name}.out'}"]


def start_machines(start_backend, tmp, count=2):
    """Start ``count`` prefork backends on 127.0.0.2, 127.0.0.3, ..."""
    backends = []
    for number in range(count):
        host = f"127.0.0.{number + 2}"
        port = free_port(host)
        backends.append(start_backend(backend_words(host, port, tmp, f"machine{number}"),
                                      (host, port)))
    return backends


def restart(start_backend, old, tmp):
    """Start a backend again where ``old`` listened (a machine back from a deploy)."""
    host, port = old.address
    return start_backend(backend_words(host, port, tmp, f"again-{port}"), old.address)


def group_gone(pgid):
    """True once no live process is left in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and hostile.alive(int(entry.name)):
                return False
    return True


# -- balancers ----------------------------------------------------------------------


@pytest.fixture
def balancer_front():
    """``start(kind, tmp, site_text_for(listen, port)) -> (process, port)``.

    ``kind`` is nginx, haproxy or apache; each is stopped by pid at the end.
    """
    started = []

    def start_front(kind, tmp, site_text_for):
        port = free_port()
        listen = f"{BALANCER}:{port}"
        if kind == "nginx":
            process = start_nginx(tmp, site_text_for(listen), port)
        elif kind == "haproxy":
            process = start_haproxy(tmp, site_text_for(listen), port)
        else:
            process = start_apache(tmp, site_text_for(listen), port,
                                   conf.apache_balancer_modules("fcgi"))
        started.append(process)
        return process, port

    yield start_front
    for process in started:
        process.stop()


def start_haproxy(tmp, site_text, port):
    haproxy = require_binary("haproxy")
    root = tmp / "haproxy"
    root.mkdir()
    main, site = root / "main.cfg", root / "site.cfg"
    main.write_text(HAPROXY_MAIN)
    site.write_text(site_text)
    argv = [haproxy, "-db", "-f", str(main), "-f", str(site)]
    check = subprocess.run([haproxy, "-c", "-f", str(main), "-f", str(site)],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check.returncode:
        raise RuntimeError(f"haproxy -c refused the configuration:\n{check.stdout}")
    return start("haproxy", argv, root / "haproxy.log", ready=accepts((BALANCER, port)))


# -- load -----------------------------------------------------------------------------


@dataclass
class Answer:
    status: object  # the HTTP status, or None when the request failed below HTTP
    body: bytes
    started: float
    finished: float
    group: object  # the serving backend's process group (its master's pid)


def serving_group(body):
    """The process group (= backend master pid) of the worker that answered."""
    try:
        pid = int(body.split(b"pid ")[1].split()[0])
        return os.getpgid(pid)
    except (IndexError, ValueError):
        return None
    except ProcessLookupError:
        return "gone"


def get(port, path):
    """One GET through the balancer on ``port``."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(BALANCER, port, timeout=15)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        status, body = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        status, body = None, repr(exc).encode()
    finally:
        connection.close()
    group = serving_group(body) if status == 200 else None
    return Answer(status, body, started, time.monotonic(), group)


def load(port, action, *, requests=REQUESTS, clients=CLIENTS, path=PATH):
    """Send ``requests`` GETs; call ``action()`` once a third are answered.

    Return (answers, what ``action`` returned).
    """
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(get, port, path) for _ in range(requests)]
        wait_until(lambda: sum(f.done() for f in futures) >= requests // 3, 60,
                           f"{requests // 3} requests to be answered")
        outcome = action()
        answers = [future.result() for future in futures]
    return answers, outcome


def failures(answers):
    return [(a.status, a.body[:200]) for a in answers if a.status != 200]


def served_by(answers):
    """{process group: number of answers} for ``answers``."""
    counts = {}
    for answer in answers:
        counts[answer.group] = counts.get(answer.group, 0) + 1
    return counts


def back_in_rotation(port, backend, timeout=30):
    """GET / until ``backend`` answers one; every answer must be a 200.

    Return how many requests it took.
    """
    answers = []

    def served():
        answers.append(get(port, "/"))
        assert answers[-1].status == 200, failures(answers[-1:])
        return answers[-1].group == backend.pid

    wait_until(served, timeout, f"backend {backend.address} to serve again",
                       interval=0.05)
    return len(answers)
