"""Fixtures for integration tests: real processes, stopped by pid."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from tests.helpers import (
    BANNER,
    example_env,
    expect_root_warning,
    kill_group,
    kill_quietly,
    manage_command,
    wait_for_connect,
    wait_for_exit,
)
from tests.integration.tinysite import Site


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def require_binary(name):
    """Return the path of ``name``; under CI=true a missing binary fails the test."""
    path = shutil.which(name) or (os.path.exists(f"/usr/sbin/{name}") and f"/usr/sbin/{name}")
    if path:
        return path
    message = f"{name} is not installed (scripts/system-packages installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class Backend:
    """A ``manage.py runfcgi`` process in the foreground.

    Its output goes to files, not pipes, so a chatty server never blocks on
    a full pipe and nothing is left open when a test reaps it itself.
    """

    def __init__(self, words, address, env=None, cwd=None):
        self.words = list(words)
        self.address = address
        self._out = tempfile.TemporaryFile(mode="w+")
        self._err = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            manage_command("runfcgi", "daemonize=false", *self.words),
            env=env or example_env(), cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=self._out, stderr=self._err, text=True,
            # Its own process group, so workers can be stopped with it by pid.
            start_new_session=True)
        try:
            self._wait_for_banner()
            wait_for_connect(address, process=self.process)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            out, err = self.output()
            raise AssertionError(f"{exc}\nstdout: {out}\nstderr: {err}") from None
        # Logged before the banner, so it is there by now.
        expect_root_warning(self.words, self._errors())

    def _errors(self):
        errlog = [word.partition("=")[2] for word in self.words if word.startswith("errlog=")]
        if errlog:
            with open(errlog[-1], encoding="utf-8", errors="replace") as f:
                return f.read()
        return self.output()[1]

    def _wait_for_banner(self, timeout=30.0):
        # Its own banner before any connect: a port from free_port() can be
        # taken by another test run (tox runs its cells side by side) before
        # this server binds it, and then the other server would answer.
        outlog = [word.partition("=")[2] for word in self.words if word.startswith("outlog=")]
        deadline = time.monotonic() + timeout
        while True:
            if outlog:  # The banner goes where standard output was sent.
                try:
                    with open(outlog[-1], encoding="utf-8", errors="replace") as f:
                        text = f.read()
                except FileNotFoundError:
                    text = ""
            else:
                self._out.seek(0)
                text = self._out.read()
            if BANNER in text:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"runfcgi exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("runfcgi printed no banner")
            time.sleep(0.05)

    @property
    def pid(self):
        return self.process.pid

    def output(self):
        """Return (stdout, stderr) written so far."""
        texts = []
        for handle in (self._out, self._err):
            handle.seek(0)
            texts.append(handle.read())
        return tuple(texts)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Stop the server; return (stdout, stderr) it wrote."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"runfcgi did not stop within {timeout} s of {sig!r}")
        return self.output()

    def kill(self):
        """SIGKILL the whole process group (master and workers); reap the master."""
        kill_group(self.process)

    def close(self):
        self.kill()
        self._out.close()
        self._err.close()


@pytest.fixture
def start_backend():
    """Start ``runfcgi`` processes; every one is stopped by pid at the end."""
    started = []

    def start(words, address, **kwargs):
        backend = Backend(words, address, **kwargs)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        # The group's id is the master's pid: this reaches workers that
        # outlived their master too.
        backend.close()


@pytest.fixture
def daemons():
    """pids of daemonized servers to kill at the end, whatever happened."""
    pids = []
    yield pids
    for pid in pids:
        kill_quietly(pid, signal.SIGKILL)
        wait_for_exit(pid, timeout=5)


@pytest.fixture
def site(tmp_path):
    """The tiny project of ``tinysite.py``; every server started on it is
    killed by process group at the end (orphaned workers too)."""
    site = Site(tmp_path)
    yield site
    site.stop()


@pytest.fixture
def tmp():
    """``(directory, processes)`` for a front end and its back ends: every
    process appended is stopped, and the directory removed, at the end."""
    from tests.integration import frontends

    path = frontends.make_tmp()
    processes = []
    yield path, processes
    for process in reversed(processes):
        process.stop()
    shutil.rmtree(path, ignore_errors=True)
