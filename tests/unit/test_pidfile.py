"""pidfile.py: refuse live, replace stale, atomic write, remove only if ours."""
import os
import subprocess
import sys

import pytest

from runfcgi_compat import pidfile


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_write_then_read(tmp_path):
    path = str(tmp_path / "s.pid")
    pidfile.write(path)
    with open(path) as handle:
        assert handle.read() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == ["s.pid"]  # no temporary file left behind


def test_live_pid_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "s.pid"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.write_text(f"{live.pid}\n")
        with pytest.raises(pidfile.PidfileError) as caught:
            pidfile.check(str(path))
        assert str(caught.value) == (
            f"pidfile={str(path)!r} names process {live.pid}, which is still running: "
            "is the server already started?")
        assert path.read_text() == f"{live.pid}\n"
    finally:
        live.kill()
        live.wait()


def test_stale_pid_is_accepted_and_replaced(tmp_path):
    path = tmp_path / "s.pid"
    path.write_text(f"{dead_pid()}\n")
    pidfile.check(str(path))
    pidfile.write(str(path))
    assert path.read_text() == f"{os.getpid()}\n"


def test_garbage_counts_as_stale(tmp_path):
    path = tmp_path / "s.pid"
    path.write_text("not a pid")
    pidfile.check(str(path))


def test_missing_directory_is_refused(tmp_path):
    path = str(tmp_path / "nope" / "s.pid")
    with pytest.raises(pidfile.PidfileError) as caught:
        pidfile.check(path)
    assert str(caught.value) == (
        f"pidfile={path!r}: directory {str(tmp_path / 'nope')!r} does not exist.")


def test_remove_only_if_ours(tmp_path):
    path = tmp_path / "s.pid"
    path.write_text("12345\n")
    pidfile.remove(str(path), pid=os.getpid())
    assert path.exists()
    pidfile.remove(str(path), pid=12345)
    assert not path.exists()
