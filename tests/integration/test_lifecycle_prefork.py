"""The prefork pool as a real process tree: signals, pool size, recycling."""
import itertools
import os
import select
import signal
import socket
import threading

import pytest

from runfcgi_compat import client

from .lifecycle import server_starter, wait_until

PROTOCOLS = ["fcgi", "scgi", "ajp"]


@pytest.fixture
def start_server(tmp_path_factory):
    yield from server_starter(tmp_path_factory)


def get(server, path="/pid", query="", protocol=None, timeout=30.0):
    protocol = protocol or server.protocol
    return client.request(server.address, protocol, path=path, query=query,
                          timeout=timeout)


def start_prefork(start_server, protocol="fcgi", bind="tcp", handler_attrs=None,
                  pool_attrs=None, **options):
    server = start_server({"protocol": protocol, "method": "prefork", **options},
                          bind=bind, handler_attrs=handler_attrs, pool_attrs=pool_attrs)
    server.protocol = protocol
    return server


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stop_signal_ends_an_idle_server_and_its_workers(start_server, protocol, signum):
    server = start_prefork(start_server, protocol)
    assert get(server).status == 200
    workers = server.children()
    assert workers
    server.signal(signum)
    code, waited = server.wait()
    print(f"{protocol} {signum.name}: master exited {waited:.3f}s after the signal")
    assert code == 0
    assert server.stdout().count("SERVE-RETURNED") == 1
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sigterm_lets_the_request_in_flight_finish(start_server, protocol):
    server = start_prefork(start_server, protocol)
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=get(server, "/wait", "a")))
    thread.start()
    server.wait_started("a")
    server.signal(signal.SIGTERM)
    # The idle workers go at once; the busy one stays until its request ends.
    wait_until(lambda: len(server.children()) == 1, 20, "idle workers to exit")
    assert server.process.poll() is None
    server.release("a")
    thread.join(30)
    assert result["r"].status == 200
    code, _ = server.wait()
    assert code == 0


def run_in_thread(function, *args):
    result = {}

    def target():
        try:
            result["value"] = function(*args)
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


def test_graceful_timeout_ends_with_sigkill(start_server):
    server = start_prefork(start_server, "fcgi", gracetimeout=1)
    thread, result = run_in_thread(get, server, "/wait", "never")
    worker = server.wait_started("never")
    server.signal(signal.SIGTERM)
    code, _ = server.wait()
    thread.join(30)
    assert code == 0
    assert isinstance(result.get("error"), client.ClientError)
    assert f"killing 1 workers that did not stop in time: {worker}" in server.stderr()


def test_second_stop_signal_kills_at_once(start_server):
    server = start_prefork(start_server, "scgi")
    thread, result = run_in_thread(get, server, "/wait", "never")
    server.wait_started("never")
    server.signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in server.stderr(), 20, "the stop to begin")
    server.signal(signal.SIGINT)
    code, waited = server.wait()
    thread.join(30)
    print(f"second signal: exited {waited:.3f}s after it")
    assert code == 0 and "error" in result


def test_two_sighups_under_load_lose_no_request(start_server):
    server = start_prefork(start_server, "fcgi", minspare=2, maxspare=4)
    outcomes = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                response = get(server, timeout=30)
                outcomes.append(("ok", int(response.body)) if response.status == 200
                                else ("bad", response.status))
            except OSError as exc:
                outcomes.append(("error", str(exc)))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            wait_until(lambda: len(outcomes) > 20, 30, "some requests")
            old = {pid for kind, pid in outcomes if kind == "ok"}
            seen = len(outcomes)
            server.signal(signal.SIGHUP)
            wait_until(lambda old=old, seen=seen: any(kind == "ok" and pid not in old
                                                      for kind, pid in outcomes[seen:]),
                       30, "a response from a new worker")
            assert server.process.poll() is None
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    failures = [o for o in outcomes if o[0] != "ok"]
    print(f"two SIGHUPs: {len(outcomes)} requests, {len(failures)} failures")
    assert failures == []
    assert server.process.poll() is None


def test_pool_grows_to_serve_slow_requests_then_shrinks(start_server):
    server = start_prefork(start_server, "fcgi", minspare=2, maxspare=5, maxchildren=30)
    threads = [threading.Thread(target=get, args=(server, "/wait", f"r{i}"))
               for i in range(20)]
    for thread in threads:
        thread.start()
    pids = {server.wait_started(f"r{i}") for i in range(20)}
    peak = len(server.children())
    print(f"20 slow requests: 20 distinct workers busy, {peak} workers in all")
    assert len(pids) == 20
    assert peak <= 30
    for i in range(20):
        server.release(f"r{i}")
    for thread in threads:
        thread.join(30)
    wait_until(lambda: len(server.children()) <= 5, 20, "the pool to shrink to maxspare")


def test_maxrequests_recycles_workers(start_server):
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1, maxrequests=2)
    pids = [int(get(server).body) for _ in range(6)]
    assert all(pids.count(pid) <= 2 for pid in pids)
    assert len(set(pids)) >= 3


def test_workers_and_their_replacements_start_with_the_masters_objects_frozen(start_server):
    # Frozen in the master before forking (servers/memory.py), so no
    # collection in a worker copies the pages it shares with the master.
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1, maxrequests=1)
    answers = [get(server, "/frozen").body.split() for _ in range(3)]
    assert len({pid for pid, _ in answers}) == 3  # maxrequests=1: three workers
    assert all(int(frozen) > 0 for _, frozen in answers)


def test_killed_worker_is_replaced(start_server):
    server = start_prefork(start_server, "scgi", minspare=1, maxspare=1)
    victim = int(get(server).body)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.children(), 20, "the worker to go")
    assert int(get(server).body) != victim
    assert "died (signal SIGKILL)" in server.stderr()


def test_workers_failing_at_start_are_retried_with_backoff(start_server, tmp_path):
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1)
    assert get(server).status == 200
    (server.dir / "fail-load").touch()
    server.signal(signal.SIGHUP)  # New workers load the app again: and fail.
    wait_until(lambda: server.stderr().count("failed to start") >= 3, 30,
               "three failed starts")
    delays = [float(line.rsplit("in ", 1)[1].rstrip("s"))
              for line in server.stderr().splitlines() if "failed to start" in line]
    assert delays == sorted(delays) and delays[0] < delays[-1]
    (server.dir / "fail-load").unlink()
    assert get(server).status == 200
    server.signal(signal.SIGTERM)
    assert server.wait()[0] == 0


def test_sigusr1_reopens_logs_in_master_and_workers(start_server):
    server = start_prefork(start_server, "ajp", minspare=2, maxspare=2)
    wait_until(lambda: len(server.children()) == 2, 20, "two workers")
    assert get(server).status == 200
    workers = server.children()
    server.signal(signal.SIGUSR1)
    reopened = server.dir / "reopened"
    wanted = {server.pid} | workers
    wait_until(lambda: reopened.exists()
               and wanted <= {int(p) for p in reopened.read_text().split()},
               20, "every process to reopen its logs")
    assert get(server).status == 200
    assert server.process.poll() is None


def test_kept_fastcgi_connections_do_not_starve_new_ones(start_server):
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1, maxchildren=10)
    kept = []
    try:
        for _ in range(4):  # Each pins a worker while it stays open.
            conn = client.FastCGIConnection(server.address, timeout=30)
            kept.append(conn)
            assert conn.request(path="/pid", keep_conn=True).status == 200
        assert get(server).status == 200
    finally:
        for conn in kept:
            conn.close()


def test_idle_kept_connection_is_closed_after_the_idle_timeout(start_server):
    server = start_prefork(start_server, "fcgi", idletimeout=1)
    with client.FastCGIConnection(server.address, timeout=30) as conn:
        assert conn.request(path="/pid", keep_conn=True).status == 200
        sock = conn._channel.sock
        sock.settimeout(30)
        assert sock.recv(1) == b""  # The server closed the connection.


def test_stop_does_not_wait_for_idle_kept_connections(start_server):
    server = start_prefork(start_server, "fcgi")
    with client.FastCGIConnection(server.address, timeout=30) as conn:
        assert conn.request(path="/pid", keep_conn=True).status == 200
        server.signal(signal.SIGTERM)
        code, waited = server.wait()
    print(f"stop with an idle kept connection: {waited:.3f}s")
    assert code == 0


def test_reload_passes_a_kept_connection_on_to_the_new_workers(start_server):
    # The old worker does not wait for the connection to go quiet: it
    # passes it to the master and exits; the connection stays open and a
    # new worker serves its next request.
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1)
    with client.FastCGIConnection(server.address, timeout=30) as conn:
        old = int(conn.request(path="/pid", keep_conn=True).body)
        server.signal(signal.SIGHUP)
        wait_until(lambda: old not in server.children(), 20, "the old worker to exit")
        assert not closed_by_server(conn)
        new = int(conn.request(path="/pid", keep_conn=True).body)
        assert new != old and new in server.children()
        server.signal(signal.SIGTERM)  # A stop does not wait for quiet.
        code, waited = server.wait()
    print(f"stop with a kept connection passed on: {waited:.3f}s")
    assert code == 0


def test_cleanup_after_serve_runs_in_the_master_only(start_server):
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=2, maxrequests=1)
    for _ in range(5):
        assert get(server).status == 200
    server.signal(signal.SIGTERM)
    assert server.wait()[0] == 0
    assert server.stdout().count("SERVE-RETURNED") == 1


@pytest.mark.parametrize("bind", ["unix", "tcp6"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unix_and_ipv6_sockets(start_server, protocol, bind):
    if bind == "tcp6" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = start_prefork(start_server, protocol, bind=bind)
    assert get(server).status == 200


# -- kept and stalled connections never starve the pool (issues #5, #6) -----------------


def closed_by_server(conn):
    """True if the server has already closed this kept connection."""
    sock = conn._channel.sock
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("protocol", ["fcgi", "ajp"])
def test_many_idle_kept_connections_leave_room_for_a_new_one(start_server, protocol):
    # Twice as many kept connections as workers, all idle, and a long idle
    # timeout: each worker holds several and still accepts new ones.
    server = start_prefork(start_server, protocol, minspare=1, maxspare=2, maxchildren=3)
    connection = {"fcgi": client.FastCGIConnection, "ajp": client.AJPConnection}[protocol]
    kept = []
    try:
        for _ in range(6):
            conn = connection(server.address, timeout=30)
            kept.append(conn)
            assert conn.request(path="/pid").status == 200
        assert get(server).status == 200
        assert len(server.children()) <= 3
        # None was closed to make room, and each one still serves.
        assert not any(closed_by_server(conn) for conn in kept)
        pids = {int(conn.request(path="/pid").body) for conn in kept}
        assert pids <= server.children()
    finally:
        for conn in kept:
            conn.close()


def test_held_connections_are_served_in_turn(start_server):
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1, maxchildren=1)
    kept = [client.FastCGIConnection(server.address, timeout=30) for _ in range(4)]
    try:
        # Answered after the one worker accepted the four silent ones (the
        # backlog is first in, first out): it holds all four now.
        assert get(server).status == 200
        for _ in range(2):
            for conn in kept:
                assert conn.request(path="/pid", keep_conn=True).status == 200
        # A request on each at once: every one is answered, in turn.
        results = {}
        threads = [threading.Thread(target=lambda i=i, conn=conn: results.update(
            {i: conn.request(path="/pid", keep_conn=True).status})) for i, conn in enumerate(kept)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == {0: 200, 1: 200, 2: 200, 3: 200}
        assert not any(closed_by_server(conn) for conn in kept)
    finally:
        for conn in kept:
            conn.close()


KEPT_CONNECTIONS = {"fcgi": client.FastCGIConnection, "ajp": client.AJPConnection}


@pytest.mark.parametrize("protocol", ["fcgi", "ajp"])
def test_a_request_on_an_idle_kept_connection_never_waits_behind_another(start_server,
                                                                          protocol):
    # Two workers, three kept connections: two of them were last served by
    # the same worker.  A slow request on one of those two keeps its worker
    # busy; the next request on the other one is answered meanwhile (a
    # worker that held both served it only after the slow one).
    server = start_prefork(start_server, protocol, minspare=2, maxspare=2, maxchildren=2)
    wait_until(lambda: len(server.children()) == 2, 20, "two workers")
    kept = [KEPT_CONNECTIONS[protocol](server.address, timeout=30) for _ in range(3)]
    slow_request = None
    try:
        pids = [int(conn.request(path="/pid").body) for conn in kept]
        slow, other = next((a, b) for a, b in itertools.combinations(range(3), 2)
                           if pids[a] == pids[b])
        slow_request, result = run_in_thread(
            lambda: kept[slow].request(path="/wait", query="slow"))
        server.wait_started("slow")
        assert kept[other].request(path="/pid").status == 200
        assert slow_request.is_alive()  # Answered while the slow one still waits.
        server.release("slow")
        slow_request.join(30)
        assert result["value"].status == 200
        assert not any(closed_by_server(conn) for conn in kept)
    finally:
        server.release("slow")
        if slow_request is not None:
            slow_request.join(30)
        for conn in kept:
            conn.close()


def test_maxrequests_passes_a_kept_connection_on(start_server):
    # The worker leaves right after its last request; the connection stays
    # open and its next requests go to the workers that replace it.
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1, maxrequests=2)
    with client.FastCGIConnection(server.address, timeout=30) as conn:
        pids = [int(conn.request(path="/pid").body) for _ in range(6)]
        assert not closed_by_server(conn)
    assert all(pids.count(pid) <= 2 for pid in pids)
    assert len(set(pids)) >= 3


def test_silent_new_connections_do_not_stop_a_worker_accepting(start_server):
    # A worker stops accepting while a new connection's first request is on
    # its way, but only briefly: silent ones are then held like kept ones.
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1, maxchildren=1)
    silent = [socket.create_connection(server.address) for _ in range(3)]
    try:
        assert get(server, timeout=30).status == 200
        assert not any(select.select([sock], [], [], 0)[0] for sock in silent)
    finally:
        for sock in silent:
            sock.close()


def test_a_stop_waits_for_held_new_connections_together(start_server):
    # Three silent new connections held by one worker, then a stop: each
    # still gets its first request's grace, all at the same time, so the
    # last one's request is answered without waiting for the first one's.
    from .hostile import CLOSED, fcgi_request, read_until_end

    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1, maxchildren=1,
                           handler_attrs={"first_request_grace": 30.0})
    silent = [socket.create_connection(server.address) for _ in range(3)]
    try:
        assert get(server, timeout=30).status == 200  # The three are held now.
        server.signal(signal.SIGTERM)
        wait_until(lambda: "stopping 1 workers" in server.stderr(), 20, "the stop to begin")
        for sock in (silent[2], silent[0]):
            sock.sendall(fcgi_request("/pid"))
            outcome = read_until_end(sock, 10)
            assert outcome.end == CLOSED and b"Status: 200" in outcome.answer, str(outcome)
        silent[1].close()
        code, waited = server.wait()
    finally:
        for sock in silent:
            sock.close()
    print(f"stop with three held new connections: {waited:.3f}s")
    assert code == 0


def half_request(protocol):
    """A request cut short inside its body: the app has started and waits
    for the rest."""
    from .hostile import valid_request

    data = valid_request(protocol, "/echo", b"x" * 64)
    # The last FastCGI records: STDIN with the 64-byte body, then an empty STDIN.
    return data[:-8 - 32]


def test_all_workers_stalled_on_peers_refuse_new_connections(start_server):
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=2, maxchildren=2)
    stalled = []
    try:
        for _ in range(2):
            sock = socket.create_connection(server.address)
            stalled.append(sock)
            sock.sendall(half_request("fcgi"))
        wait_until(lambda: len(server.children()) == 2, 20, "two workers")
        # The idle timeout is 60 s: without refusal the request would wait
        # for it; refused, it ends at once with the connection closed.
        with pytest.raises(client.ClientError) as error:
            get(server, timeout=30)
        assert "did not answer" not in str(error.value)
        assert "refusing new connections" in server.stderr()
    finally:
        for sock in stalled:
            sock.close()
    wait_until(lambda: "a worker is free again" in server.stderr() or _answered(server),
               30, "the pool to serve again")
    assert get(server).status == 200


def _answered(server):
    try:
        return get(server, timeout=5).status == 200
    except client.ClientError:
        return False


def test_workers_busy_in_the_app_are_never_a_reason_to_refuse(start_server):
    server = start_prefork(start_server, "fcgi", minspare=1, maxspare=1, maxchildren=1)
    result = {}
    slow = threading.Thread(target=lambda: result.update(a=get(server, "/wait", "a")))
    slow.start()
    server.wait_started("a")
    queued = threading.Thread(target=lambda: result.update(b=get(server)))
    queued.start()
    server.release("a")
    slow.join(30)
    queued.join(30)
    assert result["a"].status == result["b"].status == 200
    assert "refusing" not in server.stderr()
