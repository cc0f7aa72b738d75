"""A backend dies under load behind a balancer, comes back, and one is drained.

Two prefork ``runfcgi`` backends, on two loopback addresses standing for two
machines, sit behind one real nginx, HAProxy or Apache configured by
``runfcgi_compat.frontends``' balancers (the configuration is printed for
the record).  Client threads send GET requests through the balancer; a third
of the way in, one backend's whole process group (master and workers) is
SIGKILLed.

* nginx and HAProxy send a request whose backend died to the other one:
  every request gets its 200.
* Apache makes no promise for a request its backend took before dying
  (2.4.71 does send a GET to the other member): only the requests in flight
  at the kill may fail, and every request that starts after it is served by
  the survivor.
* Started again on its address, the killed backend serves again.
* Then the other backend is stopped with SIGTERM (runfcgi's graceful stop,
  how a machine is drained for a deploy) under the same load: no request
  fails behind any of the three.
"""
import os
import re
import signal
import time

from runfcgi_compat import frontends as conf
from tests.helpers import wait_until
from tests.integration import hostile
from tests.integration.balancers import (  # noqa: F401  (balancer_front is a fixture)
    BALANCER,
    CLIENTS,
    PATH,
    REQUESTS,
    back_in_rotation,
    balancer_front,
    failures,
    group_gone,
    load,
    restart,
    served_by,
    start_machines,
)
from tests.integration.conftest import require_binary


def kill(backend):
    """SIGKILL a backend's master and workers; return (killed at, all gone at)."""
    killed_at = time.monotonic()
    os.killpg(backend.pid, signal.SIGKILL)
    wait_until(lambda: group_gone(backend.pid), 10, "the killed backend to die")
    return killed_at, time.monotonic()


def report(kind, answers, event, moment, started):
    print(f"{kind}: {REQUESTS} GET {PATH} by {CLIENTS} clients over 2 backends; {event} "
          f"at {moment - started:.2f} s; {REQUESTS - len(failures(answers))} x 200, "
          f"{len(failures(answers))} failed; answers by backend: {served_by(answers)}")
    for failure in failures(answers)[:10]:
        print(f"  failed: {failure}")


def first_answers(answers, moment):
    return [answer for answer in answers if answer.finished < moment]


def later_answers(answers, moment):
    return [answer for answer in answers if answer.started > moment]


def drain_under_load(kind, port, draining, serving):
    """SIGTERM ``draining`` a third of the way into a load, as for a deploy.

    runfcgi's graceful stop lets the requests in progress finish: no request
    fails, and once it is gone ``serving`` answers everything.
    """
    def drain():
        stopped_at = time.monotonic()
        draining.process.send_signal(signal.SIGTERM)
        status = draining.process.wait(timeout=60)
        wait_until(lambda: group_gone(draining.pid), 10, "the drained backend's workers")
        return stopped_at, time.monotonic(), status

    started = time.monotonic()
    answers, (stopped_at, gone_at, status) = load(port, drain)
    report(kind, answers, f"backend {draining.pid} sent SIGTERM", stopped_at, started)
    assert status == 0, "runfcgi's graceful stop ends with status 0"
    assert not failures(answers)
    after = later_answers(answers, gone_at)
    assert served_by(after) == {serving.pid: len(after)}
    return answers


def start_front(balancer_front, kind, tmp_path, render):  # noqa: F811
    texts = []

    def site(listen):
        texts.append(render(listen))
        return texts[-1]

    process, port = balancer_front(kind, tmp_path, site)
    print(f"{kind} configuration:\n{texts[-1]}")
    return process, port


def test_nginx_resends_and_drains(start_backend, balancer_front,  # noqa: F811
                                                 tmp_path):
    require_binary("nginx")
    victim, survivor = start_machines(start_backend, tmp_path)
    nginx, port = start_front(balancer_front, "nginx", tmp_path, lambda listen: (
        conf.nginx_balancer("fcgi", [victim.address, survivor.address], listen=listen,
                            fail_timeout="1s", allow=BALANCER)))
    started = time.monotonic()
    answers, (killed_at, gone_at) = load(port, lambda: kill(victim))
    report("nginx", answers, f"backend {victim.pid} killed", killed_at, started)
    error_log = (nginx.log.parent / "error.log").read_text(errors="replace")
    print(f"nginx logged {error_log.count('upstream')} upstream errors it retried")

    assert set(served_by(first_answers(answers, killed_at))) >= {victim.pid, survivor.pid}
    assert not failures(answers)
    assert survivor.process.poll() is None
    assert hostile.children(victim.pid) == set()
    after = later_answers(answers, gone_at)
    assert served_by(after) == {survivor.pid: len(after)}

    again = restart(start_backend, victim, tmp_path)
    print(f"nginx: the restarted backend served again after "
          f"{back_in_rotation(port, again)} requests")
    drain_under_load("nginx", port, survivor, again)


def test_haproxy_resends_and_drains(start_backend, balancer_front, tmp_path):  # noqa: F811
    require_binary("haproxy")
    victim, survivor = start_machines(start_backend, tmp_path)
    haproxy, port = start_front(balancer_front, "haproxy", tmp_path, lambda listen: (
        conf.haproxy_balancer([victim.address, survivor.address], listen=listen,
                              check_interval="500ms", allow=BALANCER)))
    started = time.monotonic()
    answers, (killed_at, gone_at) = load(port, lambda: kill(victim))
    report("haproxy", answers, f"backend {victim.pid} killed", killed_at, started)

    assert set(served_by(first_answers(answers, killed_at))) >= {victim.pid, survivor.pid}
    assert not failures(answers)
    after = later_answers(answers, gone_at)
    assert served_by(after) == {survivor.pid: len(after)}

    # The victim is django1: its health checks fail until it is back, and
    # then a FastCGI GET answered 200 brings it back.
    wait_until(lambda: "django1 is DOWN" in haproxy.log.read_text(), 10,
               "HAProxy's health check to take the killed backend out")
    again = restart(start_backend, victim, tmp_path)
    print(f"haproxy: the restarted backend served again after "
          f"{back_in_rotation(port, again)} requests")
    wait_until(lambda: "django1 is UP, reason: Layer7 check passed, code: 200"
               in haproxy.log.read_text(), 10, "HAProxy's health check to take it back")

    answers = drain_under_load("haproxy", port, survivor, again)
    retried = len(re.findall(r" \d+/\d+/\d+/\d+/\+?[1-9]\d* \d+/\d+ ",
                             haproxy.log.read_text(errors="replace")))
    print(f"haproxy logged {retried} requests it sent again, over both loads")


def test_apache_skips_a_dead_member(start_backend, balancer_front, tmp_path):  # noqa: F811
    require_binary("apache2")
    victim, survivor = start_machines(start_backend, tmp_path)
    apache, port = start_front(balancer_front, "apache", tmp_path, lambda listen: (
        conf.apache_balancer("fcgi", [victim.address, survivor.address], listen=listen,
                             retry=1, check_interval=1, allow=BALANCER)))
    started = time.monotonic()
    answers, (killed_at, gone_at) = load(port, lambda: kill(victim))
    report("apache", answers, f"backend {victim.pid} killed", killed_at, started)

    assert set(served_by(first_answers(answers, killed_at))) >= {victim.pid, survivor.pid}
    # Apache need not resend a request its backend took: those in flight at
    # the kill (one a client at most) may fail ...
    failed = [answer for answer in answers if answer.status != 200]
    assert len(failed) <= CLIENTS
    assert all(answer.started < gone_at and answer.finished > killed_at
               for answer in failed), failures(answers)
    # ... and from then on the dead member is skipped.
    after = later_answers(answers, gone_at)
    assert served_by(after) == {survivor.pid: len(after)}

    again = restart(start_backend, victim, tmp_path)
    print(f"apache: the restarted backend served again after "
          f"{back_in_rotation(port, again)} requests")
    drain_under_load("apache", port, survivor, again)
