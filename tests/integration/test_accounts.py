"""user, group and socketmode: bind as root, serve as the web server's account."""
import os
import pwd
import stat

import pytest

from runfcgi_compat import client

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")


def uids_of(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Uid:"):
                return {int(part) for part in line.split()[1:]}
    raise AssertionError(f"no Uid line for {pid}")


def children_of(pid):
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found |= {int(child) for child in children.read().split()}
    return found


@pytest.mark.parametrize("method", ["prefork", "threaded"])
def test_serve_as_www_data_with_a_group_socket(method, start_backend, tmp_path):
    account = pwd.getpwnam("www-data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # The account must be able to remove its socket at exit.
    os.chown(run_dir, account.pw_uid, account.pw_gid)
    sock = str(run_dir / "s.sock")
    backend = start_backend([f"method={method}", f"socket={sock}", "user=www-data",
                             "group=www-data", "socketmode=660"], sock)
    info = os.lstat(sock)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
        account.pw_uid, account.pw_gid, 0o660)
    answer = client.request(sock, path="/")
    assert answer.status == 200 and answer.body.startswith(b"Hello from runfcgi"), \
        backend.output()
    assert uids_of(backend.pid) == {account.pw_uid}
    for worker in children_of(backend.pid):
        assert uids_of(worker) == {account.pw_uid}
    backend.stop()
    assert backend.process.returncode == 0
    assert not os.path.exists(sock)
