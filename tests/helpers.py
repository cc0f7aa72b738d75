"""Helpers shared by the tests: run commands, find free ports, wait for sockets."""
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example"


# What runfcgi prints once it listens (runner._banner): the readiness sign
# that no other process on the same port can give.
BANNER = "runfcgi: serving"

# The start-up warning of a server that serves as root (risks.py).  The
# suite runs as root: a test that starts one sees it, and says so
# (``expect_root_warning``) rather than hiding it.
ROOT_WARNING = ("serving as root: Django would run with every privilege; give "
                "user=ACCOUNT (and group=GROUP) to switch after binding.")


def expect_root_warning(words, stderr):
    """Assert that a server started with ``words`` warned about root if it is root."""
    serving_as_root = os.geteuid() == 0 and not any(w.startswith("user=") for w in words)
    assert (ROOT_WARNING in stderr) is serving_as_root, stderr


def _first_ephemeral_port():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Below the kernel's ephemeral range: no outgoing connection takes these
# ports, and the kernel does not hand them out again to the next bind(0)
# of another test run (tox runs environments side by side), as it did.
PORTS = range(10000, max(10001, _first_ephemeral_port()))
_draw = random.Random()  # Seeded from the system: each process draws its own.


def free_port(host="127.0.0.1"):
    """A TCP port on ``host`` that nothing uses now, drawn at random."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        port = _draw.choice(PORTS)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # In use (or just closed, in TIME_WAIT): another.
            return port
    raise RuntimeError(f"no free port found on {host} in {PORTS}")


def example_env(**extra):
    """Environment for a process running the example project (no checkout on the path)."""
    env = dict(os.environ)
    env.pop("RUNFCGI_TEST_WHEEL", None)
    env["PYTHONPATH"] = str(EXAMPLE)
    env["DJANGO_SETTINGS_MODULE"] = "exampleproject.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def manage_command(*words):
    return [sys.executable, str(EXAMPLE / "manage.py"), *words]


def run_manage(*words, timeout=60, **popen):
    """Run ``manage.py words...`` to completion; return (stdout, stderr, exit code)."""
    popen.setdefault("env", example_env())
    done = subprocess.run(manage_command(*words), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **popen)
    return done.stdout, done.stderr, done.returncode


def wait_for_connect(address, timeout=30.0, process=None):
    """Return once ``address`` ((host, port) or a UNIX path) accepts connections."""
    deadline = time.monotonic() + timeout
    family = socket.AF_UNIX if isinstance(address, (str, Path)) else (
        socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    target = str(address) if family == socket.AF_UNIX else address
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before listening")
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(target)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing listens on {address} after {timeout} s")
        time.sleep(0.05)


def wait_for_exit(pid, timeout=15.0):
    """Return True once ``pid`` is gone (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def kill_quietly(pid, sig=9):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(condition, timeout, what, interval=0.02):
    """Return ``condition()``'s first true value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def kill_group(process):
    """SIGKILL a process started in its own session, with everything it forked; reap it."""
    try:
        os.killpg(process.pid, 9)
    except ProcessLookupError:
        pass
    process.wait()
