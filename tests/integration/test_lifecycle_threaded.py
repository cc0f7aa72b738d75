"""The threaded pool as a real process: signals, thread limits, idle connections."""
import json
import os
import signal
import socket
import struct
import threading

import pytest

from runfcgi_compat import client

from .lifecycle import server_starter, wait_until

PROTOCOLS = ["fcgi", "scgi", "ajp"]


@pytest.fixture
def start_server(tmp_path_factory):
    yield from server_starter(tmp_path_factory)


def start_threaded(start_server, protocol="fcgi", handler_attrs=None, **options):
    server = start_server({"protocol": protocol, "method": "threaded", **options},
                          handler_attrs=handler_attrs)
    server.protocol = protocol
    return server


def get(server, path="/pid", query="", timeout=30.0):
    return client.request(server.address, server.protocol, path=path, query=query,
                          timeout=timeout)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stop_signal_ends_an_idle_server(start_server, protocol, signum):
    server = start_threaded(start_server, protocol)
    assert get(server).status == 200
    server.signal(signum)
    code, waited = server.wait()
    print(f"threaded {protocol} {signum.name}: exited {waited:.3f}s after the signal")
    assert code == 0
    assert server.stdout().count("SERVE-RETURNED") == 1


@pytest.mark.parametrize("protocol", ["fcgi", "ajp"])
def test_stop_does_not_hang_on_idle_kept_connections(start_server, protocol):
    server = start_threaded(start_server, protocol)
    if protocol == "fcgi":
        conns = [client.FastCGIConnection(server.address, timeout=30) for _ in range(3)]
        for conn in conns:
            assert conn.request(path="/pid", keep_conn=True).status == 200
    else:
        conns = [client.AJPConnection(server.address, timeout=30) for _ in range(3)]
        for conn in conns:
            assert conn.request(path="/pid").status == 200
    try:
        server.signal(signal.SIGTERM)
        code, waited = server.wait()
    finally:
        for conn in conns:
            conn.close()
    print(f"threaded {protocol} stop with 3 idle kept connections: {waited:.3f}s")
    assert code == 0


def test_sigterm_lets_the_request_in_flight_finish(start_server):
    server = start_threaded(start_server, "scgi")
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=get(server, "/wait", "a")))
    thread.start()
    server.wait_started("a")
    server.signal(signal.SIGTERM)
    # Stopped accepting, still finishing the request.
    wait_until(lambda: "stopping gracefully" in server.stderr(), 20, "the stop to begin")
    assert server.process.poll() is None
    server.release("a")
    thread.join(30)
    assert result["r"].status == 200
    assert server.wait()[0] == 0


def test_idle_kept_connections_time_out_and_free_their_threads(start_server):
    server = start_threaded(start_server, "fcgi", maxchildren=2, maxspare=2, minspare=1,
                            idletimeout=1)
    kept = [client.FastCGIConnection(server.address, timeout=30) for _ in range(2)]
    try:
        for conn in kept:
            assert conn.request(path="/pid", keep_conn=True).status == 200
        # Both threads are pinned by idle connections until they time out.
        assert get(server).status == 200
        for conn in kept:
            conn._channel.sock.settimeout(30)
            assert conn._channel.sock.recv(1) == b""
    finally:
        for conn in kept:
            conn.close()


def test_at_most_maxchildren_threads_serve_at_once(start_server):
    server = start_threaded(start_server, "fcgi", maxchildren=3, maxspare=3, minspare=1)
    threads = [threading.Thread(target=get, args=(server, "/wait", f"r{i}"))
               for i in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(list(server.dir.glob("*.started"))) == 3, 20, "three requests")
    started = {p.stem for p in server.dir.glob("*.started")}
    for name in started:  # Free the running ones; the other two follow.
        server.release(name)
    wait_until(lambda: len(list(server.dir.glob("*.started"))) == 5, 20, "all five")
    for i in range(5):
        server.release(f"r{i}")
    for thread in threads:
        thread.join(30)


def test_sighup_is_logged_and_harmless(start_server):
    server = start_threaded(start_server, "fcgi")
    pid = int(get(server).body)
    server.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP ignored" in server.stderr(), 20, "the SIGHUP log line")
    assert int(get(server).body) == pid
    assert server.process.poll() is None


def test_sigusr1_reopens_logs(start_server):
    server = start_threaded(start_server, "scgi")
    server.signal(signal.SIGUSR1)
    reopened = server.dir / "reopened"
    wait_until(lambda: reopened.exists() and reopened.read_text().split() == [str(server.pid)],
               20, "the log reopening")
    assert get(server).status == 200


def test_idle_threads_shrink_back_to_maxspare(start_server):
    server = start_threaded(start_server, "fcgi", maxchildren=10, maxspare=2, minspare=1)

    def threads():
        return len(os.listdir(f"/proc/{server.pid}/task"))

    requests = [threading.Thread(target=get, args=(server, "/wait", f"r{i}"))
                for i in range(6)]
    for thread in requests:
        thread.start()
    for i in range(6):
        server.wait_started(f"r{i}")
    assert threads() >= 1 + 6  # the main thread and one per request
    for i in range(6):
        server.release(f"r{i}")
    for thread in requests:
        thread.join(30)
    wait_until(lambda: threads() <= 1 + 2, 20, "idle threads to shrink to maxspare")


# -- idle and stalled connections are parked, never holding a thread (issue #5) ---------


def test_sixty_idle_kept_connections_hold_no_thread(start_server):
    server = start_threaded(start_server, "fcgi", maxchildren=4, maxspare=4, minspare=1)
    kept = [client.FastCGIConnection(server.address, timeout=30) for _ in range(60)]
    try:
        for conn in kept:
            assert conn.request(path="/pid").status == 200
        assert get(server).status == 200
        assert len(os.listdir(f"/proc/{server.pid}/task")) <= 1 + 4
        # Parked, not closed: every kept connection still serves.
        for conn in kept:
            assert conn.request(path="/pid").status == 200
    finally:
        for conn in kept:
            conn.close()


def test_requests_stalled_before_the_app_are_parked_too(start_server):
    from .hostile import valid_request

    server = start_threaded(start_server, "fcgi", maxchildren=2, maxspare=2, minspare=1)
    data = valid_request("fcgi", "/echo", b"x" * 64)
    stalled = []
    try:
        for _ in range(6):  # Three times the threads, half a request each.
            sock = socket.create_connection(server.address)
            stalled.append(sock)
            sock.sendall(data[:len(data) // 2])
        assert get(server).status == 200
        # The rest of a parked request arrives: it is served.
        stalled[0].sendall(data[len(data) // 2:])
        stalled[0].settimeout(30)
        assert b"Status: 200" in stalled[0].recv(65536)
    finally:
        for sock in stalled:
            sock.close()


def keep_busy_until(kept, done, cycles=400):
    """Send requests on ``kept`` in turn, each as soon as the last one is
    answered, until ``done()`` or ``cycles`` requests; return how many
    were sent."""
    for count in range(cycles):
        if done():
            return count
        assert kept[count % len(kept)].request(path="/pid").status == 200
    return cycles


@pytest.mark.parametrize("waiting", ["new connection", "parked kept connection"])
def test_busy_kept_connections_take_turns_with_waiting_ones(start_server, waiting):
    # Two threads, each busy with a kept connection whose next request
    # comes as soon as the last is answered: a third connection must still
    # get its turn (the threads hand their connections back while it waits),
    # where it once waited for as long as the load lasted.
    server = start_threaded(start_server, "fcgi", maxchildren=2, maxspare=2, minspare=2)
    busy = [client.FastCGIConnection(server.address, timeout=30) for _ in range(2)]
    third = client.FastCGIConnection(server.address, timeout=30)
    try:
        if waiting == "parked kept connection":
            assert third.request(path="/pid").status == 200
            keep_busy_until(busy, lambda: False, cycles=20)  # Parked by now.
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=third.request(path="/pid")))
        thread.start()
        sent = keep_busy_until(busy, lambda: "r" in result)
        thread.join(30)
        print(f"threaded, 2 threads, 2 busy kept connections: the {waiting} was "
              f"answered after {sent} of their requests")
        assert result["r"].status == 200
        assert sent < 400
    finally:
        for conn in busy + [third]:
            conn.close()


def kept_connections(server, protocol, count):
    """``count`` kept connections, each having served one request."""
    kind = client.FastCGIConnection if protocol == "fcgi" else client.AJPConnection
    conns = [kind(server.address, timeout=30) for _ in range(count)]
    for conn in conns:
        assert conn.request(path="/pid").status == 200
    return conns


def pool_stats(server):
    """The pool's ``stats()``, asked on a new connection of its own."""
    return json.loads(get(server, "/pool").body)


def idle_connections_reach(server, count):
    """Wait until ``count`` connections are idle in the main thread; return the stats."""
    def reached():
        stats = pool_stats(server)
        return stats if stats["idle_connections"] == count else None
    return wait_until(reached, 20, f"{count} idle connections")


@pytest.mark.parametrize("protocol", ["fcgi", "ajp"])
def test_idle_kept_connections_wait_in_the_main_thread_holding_no_thread(start_server,
                                                                          protocol):
    # Between requests a kept connection is handed back to the main thread's
    # selector: eight of them, with two threads, all stay open and usable.
    server = start_threaded(start_server, protocol, maxchildren=2, maxspare=2, minspare=1)
    conns = kept_connections(server, protocol, 8)
    try:
        for _ in range(2):
            for conn in conns:
                assert conn.request(path="/pid").status == 200
            stats = idle_connections_reach(server, 8)
            # Asked from inside a request: its thread is the only busy one.
            assert stats["threads"] - stats["idle_threads"] == 1
            assert stats["threads"] <= 2
    finally:
        for conn in conns:
            conn.close()


def test_a_buffered_next_request_is_served_by_the_same_thread(start_server):
    # Two requests in one write on an idle kept connection: the main thread
    # hands the connection to a thread once, and that thread serves both
    # (the second is already in its read buffer).  Each answer is the
    # pool's counters while it was being served.
    server = start_threaded(start_server, "fcgi")
    conn = client.FastCGIConnection(server.address, timeout=30)
    try:
        assert conn.request(path="/pid").status == 200
        idle_connections_reach(server, 1)
        conn._channel.send(fcgi_kept_request("/pool") * 2)
        first, second = (json.loads(conn._read_response().body) for _ in range(2))
    finally:
        conn.close()
    for name in ("resumed", "returned", "again", "accepted"):
        assert first[name] == second[name], name


def fcgi_kept_request(path):
    """The bytes of one FastCGI GET that keeps its connection (as nginx sends)."""
    begin = struct.pack(">HB5x", client.FCGI_RESPONDER, client.FCGI_KEEP_CONN)
    return (client._fcgi_record(client.FCGI_BEGIN_REQUEST, begin)
            + client._fcgi_params(client.cgi_params(path=path))
            + client._fcgi_stream(client.FCGI_STDIN, b""))


@pytest.mark.parametrize("protocol", ["fcgi", "ajp"])
def test_slow_requests_on_kept_connections_still_run_side_by_side(start_server, protocol):
    # Three slow views on three kept connections run at once, each in a
    # thread of its own: an idle kept connection holds no thread, and one
    # thread's slow view never holds up the next request on another.
    server = start_threaded(start_server, protocol)
    conns = kept_connections(server, protocol, 3)
    results = {}

    def ask(i):
        results[i] = conns[i].request(path="/wait", query=f"k{i}")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(list(server.dir.glob("k*.started"))) == 3, 20,
                   "three slow requests inside the app at once")
        for i in range(3):
            server.release(f"k{i}")
        for thread in threads:
            thread.join(30)
        assert [results[i].status for i in range(3)] == [200, 200, 200]
        # Held again afterwards, and served.
        for conn in conns:
            assert conn.request(path="/pid").status == 200
    finally:
        for conn in conns:
            conn.close()
