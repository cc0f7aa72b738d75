import threading, time, signal, subprocess
from tests.integration.test_lifecycle_prefork import start_prefork, get, start_server

def test_dbg(start_server):
    server = start_prefork(start_server, "fcgi", minspare=2, maxspare=4)
    outcomes = []
    stop = threading.Event()
    def hammer():
        while not stop.is_set():
            try:
                r = get(server, timeout=3)
                outcomes.append(r.status)
            except OSError as exc:
                outcomes.append(str(exc)); time.sleep(0.5)
                for pid in server.children():
                    print(pid, subprocess.run(["/work/main/bench/.venv/bin/py-spy","dump","--pid",str(pid)],capture_output=True,text=True).stdout[-1200:])
                stop.set()
    ts = [threading.Thread(target=hammer) for _ in range(4)]
    for t in ts: t.start()
    time.sleep(3)
    stop.set()
    for t in ts: t.join(10)
    print(len(outcomes), outcomes[-8:])
    assert 0
