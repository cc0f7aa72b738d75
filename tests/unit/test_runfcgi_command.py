"""The runfcgi management command, run as a user runs it: manage.py in a subprocess."""
import os
import socket
import subprocess
import sys

import pytest

from runfcgi_compat import fastcgi
from tests.helpers import EXAMPLE, example_env, free_port, run_manage


def test_runfcgi_help_prints_the_option_list():
    out, err, code = run_manage("runfcgi", "help")
    assert (out, err, code) == (fastcgi.FASTCGI_HELP, "", 0)


def test_manage_help_runfcgi_lists_every_option_with_its_default():
    out, err, code = run_manage("help", "runfcgi")
    assert code == 0, err
    assert fastcgi.FASTCGI_HELP.strip() in out


@pytest.mark.parametrize("words, message", [
    (["port=abc", "host=127.0.0.1"], "port='abc' is not a whole number."),
    (["protocl=fcgi"], "Unknown option 'protocl': run 'runfcgi help' for the list."),
    (["method=async"], "method='async' is not one of: prefork, threaded, fork, thread."),
    (["debug=maybe"], "debug='maybe' is not a boolean: use true/yes/on or false/no/off."),
    (["umask=8"], "umask='8' is not an octal number such as 022."),
    (["host=127.0.0.1"], "host='127.0.0.1' needs a port as well."),
    (["minspare=9"], "minspare='9' is above maxspare=5."),
    (["host=127.0.0.1", "port=9", "workdir=/no/such/dir"],
     "workdir='/no/such/dir' is not an existing directory."),
])
def test_bad_input_is_a_command_error(words, message):
    out, err, code = run_manage("runfcgi", *words)
    assert (out, err, code) == ("", f"CommandError: {message}\n", 1)


def test_port_in_use(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        out, err, code = run_manage("runfcgi", "host=127.0.0.1", f"port={port}",
                                    f"pidfile={tmp_path}/s.pid")
    finally:
        holder.close()
    assert (out, err, code) == (
        "", f"CommandError: host=127.0.0.1 port={port}: That port is already in use.\n", 1)
    assert os.listdir(tmp_path) == []  # no pidfile written


def test_paths_in_missing_directories(tmp_path):
    missing = tmp_path / "nope"
    for word, prefix in [(f"socket={missing}/s.sock", f"socket={missing}/s.sock"),
                         (f"pidfile={missing}/s.pid", f"pidfile={str(missing / 's.pid')!r}"),
                         (f"outlog={missing}/o.log", f"outlog={str(missing / 'o.log')!r}")]:
        words = [word] if word.startswith("socket") else [f"socket={tmp_path}/s.sock", word]
        out, err, code = run_manage("runfcgi", *words)
        assert code == 1 and out == ""
        assert err == f"CommandError: {prefix}: directory {str(missing)!r} does not exist.\n"
        assert os.listdir(tmp_path) == []


def test_live_pidfile_is_refused_and_untouched(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pid = tmp_path / "s.pid"
    pid.write_text(f"{live.pid}\n")
    try:
        out, err, code = run_manage("runfcgi", f"socket={tmp_path}/s.sock", f"pidfile={pid}")
    finally:
        live.kill()
        live.wait()
    assert code == 1
    assert err == (f"CommandError: pidfile={str(pid)!r} names process {live.pid}, which is "
                   "still running: is the server already started?\n")
    assert pid.read_text() == f"{live.pid}\n"
    assert sorted(os.listdir(tmp_path)) == ["s.pid"]


def test_started_from_a_terminal_without_a_socket_says_so():
    out, err, code = run_manage("runfcgi")
    assert code == 1
    assert err == ("CommandError: no host/port or socket given, and standard input is not a "
                   "listening socket: give socket=PATH or host=HOST port=PORT, or let the "
                   "web server start runfcgi.\n")


def test_free_port_helper_gives_a_bindable_port():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_project_import_error_is_reported_in_the_terminal(tmp_path):
    (tmp_path / "broken_settings.py").write_text(
        "from exampleproject.settings import *  # noqa\n"
        "WSGI_APPLICATION = 'nosuchproject.wsgi.application'\n")
    env = example_env(DJANGO_SETTINGS_MODULE="broken_settings",
                      PYTHONPATH=f"{tmp_path}:{EXAMPLE}")
    out, err, code = run_manage("runfcgi", f"socket={tmp_path}/s.sock",
                                f"pidfile={tmp_path}/s.pid", env=env)
    assert code == 1 and out == ""
    assert err.startswith("CommandError: cannot load the project's WSGI application: ")
    assert "nosuchproject.wsgi.application" in err and err.count("\n") == 1
    assert not {"s.sock", "s.pid"} & set(os.listdir(tmp_path))


def test_system_checks_run_in_a_child_and_their_errors_stop_the_start(monkeypatch):
    from django.core.management.base import BaseCommand, SystemCheckError

    from runfcgi_compat.management.commands.runfcgi import Command

    ran = []

    def failing_check(self, *args, **kwargs):
        ran.append(os.getpid())
        raise SystemCheckError("System check identified some issues:\n\nERRORS:\nboom")

    monkeypatch.setattr(BaseCommand, "check", failing_check)
    with pytest.raises(SystemCheckError) as raised:
        Command().check()
    assert str(raised.value) == "System check identified some issues:\n\nERRORS:\nboom"
    assert ran == []  # It ran in the child.
    monkeypatch.setattr(BaseCommand, "check", lambda self, *a, **k: ran.append(1))
    assert Command().check() is None and ran == []
