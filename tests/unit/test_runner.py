"""runner.py: the start-up checklist, with the server factory as the seam."""
import io
import logging
import os
import stat
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings

from runfcgi_compat import runner
from runfcgi_compat.errors import StartupError
from runfcgi_compat.options import parse_words
from runfcgi_compat.servers import speedups
from tests.helpers import ROOT_WARNING, free_port


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]


class FakeServer:
    """Records what the runner hands over, and what the filesystem looks like then."""

    def __init__(self, tmp_path):
        self.calls = []
        self.tmp_path = tmp_path

    def factory(self, options, load_app, **kwargs):
        self.calls.append(("make", options, load_app, sorted(kwargs)))
        return self

    def serve(self, sock):
        self.calls.append(("serve", sock.getsockname(), sorted(os.listdir(self.tmp_path))))
        self.mode = stat.S_IMODE(os.stat(sock.getsockname()).st_mode) if isinstance(
            sock.getsockname(), str) else None


def run(words, fake, **kwargs):
    out = io.StringIO()
    runner.run(parse_words(words), load_app=lambda: app, server_factory=fake.factory,
               stdout=out, **kwargs)
    return out.getvalue()


def test_unix_socket_pidfile_umask_then_cleanup(tmp_path):
    fake = FakeServer(tmp_path)
    sock, pid = str(tmp_path / "s.sock"), str(tmp_path / "s.pid")
    old = os.umask(0o022)
    try:
        out = run([f"socket={sock}", f"pidfile={pid}", "umask=007", "daemonize=false"], fake)
    finally:
        os.umask(old)
    make, serve = fake.calls
    assert make[0] == "make" and make[1].socket == sock
    assert make[2]() is app
    assert make[3] == ["on_reopen_logs"]
    assert serve == ("serve", sock, ["s.pid", "s.sock"])
    assert fake.mode == 0o770  # umask applied without daemonizing
    assert os.listdir(tmp_path) == []  # pidfile and socket removed at exit
    assert out == (f"runfcgi: serving fcgi on unix:{sock}, prefork (2-5 spare, at most 50 "
                   f"workers), pid {os.getpid()}, foreground\n"
                   f"runfcgi: fast path in {speedups.DESCRIPTION}\n")


def test_verbosity_zero_is_quiet(tmp_path):
    fake = FakeServer(tmp_path)
    port = free_port()
    assert run(["host=127.0.0.1", f"port={port}", "daemonize=false"], fake, verbosity=0) == ""
    assert fake.calls[1][1] == ("127.0.0.1", port)


def test_missing_workdir_is_refused_before_anything(tmp_path):
    fake = FakeServer(tmp_path)
    with pytest.raises(StartupError, match=r"^workdir='/no/such' is not an existing directory\.$"):
        run([f"socket={tmp_path}/s.sock", "workdir=/no/such"], fake)
    assert fake.calls == [] and os.listdir(tmp_path) == []


def test_log_in_missing_directory_is_refused(tmp_path):
    fake = FakeServer(tmp_path)
    log = str(tmp_path / "nope" / "err.log")
    with pytest.raises(StartupError) as caught:
        run([f"socket={tmp_path}/s.sock", f"errlog={log}", "daemonize=false"], fake)
    assert str(caught.value) == (
        f"errlog={log!r}: directory {str(tmp_path / 'nope')!r} does not exist.")
    assert fake.calls == [] and os.listdir(tmp_path) == []


def test_load_django_app_follows_wsgi_application():
    with override_settings(WSGI_APPLICATION="tests.unit.test_runner.app"):
        assert runner.load_django_app() is app
    with override_settings(WSGI_APPLICATION=None):
        assert isinstance(runner.load_django_app(), WSGIHandler)
    with override_settings(WSGI_APPLICATION="nosuchproject.wsgi.application"):
        with pytest.raises(ImproperlyConfigured) as caught:
            runner.load_django_app()
    assert str(caught.value) == ("WSGI_APPLICATION 'nosuchproject.wsgi.application' cannot be "
                                 "imported: No module named 'nosuchproject'")


def test_load_django_app_imports_the_urlconf_before_any_request(monkeypatch):
    # As the system checks did in this process before they moved to a child:
    # the serving account and later workers never read the URLconf from disk.
    monkeypatch.delitem(sys.modules, "tests.unit.loaded_urls", raising=False)
    with override_settings(WSGI_APPLICATION="tests.unit.test_runner.app",
                           ROOT_URLCONF="tests.unit.loaded_urls"):
        assert runner.load_django_app() is app
        assert "tests.unit.loaded_urls" in sys.modules
    with override_settings(ROOT_URLCONF="tests.unit.no_such_urls"):
        with pytest.raises(ImportError):
            runner.load_django_app()


def test_a_prefork_fastcgi_master_imports_only_what_it_runs():
    # Every module the master imports is in every worker's memory.
    code = (
        "import sys, django; django.setup()\n"
        "from runfcgi_compat import runner\n"
        "from runfcgi_compat.options import parse_words\n"
        "from runfcgi_compat.servers import make_server\n"
        "make_server(parse_words(['method=prefork', 'protocol=fcgi']), runner.load_django_app)\n"
        "runner.load_django_app()\n"
        "watched = ('runfcgi_compat.servers.', 'flup.server.', 'django.core.servers',\n"
        "           'http.server')\n"
        "print(' '.join(name for name in sys.modules if name.startswith(watched)))\n")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert "runfcgi_compat.servers.prefork" in out and "flup.server.fcgi_base" in out
    assert not {"runfcgi_compat.servers.threaded", "runfcgi_compat.servers.scgi",
                "runfcgi_compat.servers.ajp", "flup.server.scgi_base", "flup.server.ajp_base",
                "django.core.servers.basehttp", "http.server"} & set(out)


def test_app_that_fails_to_load_leaves_nothing(tmp_path):
    fake = FakeServer(tmp_path)

    def broken():
        raise ImportError("No module named 'mysite.wsgi'")

    with pytest.raises(StartupError) as caught:
        runner.run(parse_words([f"socket={tmp_path}/s.sock", f"pidfile={tmp_path}/s.pid"]),
                   load_app=broken, server_factory=fake.factory, stdout=io.StringIO())
    assert str(caught.value) == (
        "cannot load the project's WSGI application: No module named 'mysite.wsgi'")
    assert fake.calls == [] and os.listdir(tmp_path) == []


def test_factory_failure_removes_pidfile_and_socket(tmp_path):
    def factory(options, load_app, **kwargs):
        raise RuntimeError("no such protocol handler")

    with pytest.raises(RuntimeError):
        runner.run(parse_words([f"socket={tmp_path}/s.sock", f"pidfile={tmp_path}/s.pid",
                                "daemonize=false"]),
                   load_app=lambda: app, server_factory=factory, stdout=io.StringIO())
    assert os.listdir(tmp_path) == []


def test_socketmode_sets_the_socket_permissions(tmp_path):
    fake = FakeServer(tmp_path)
    run([f"socket={tmp_path}/s.sock", "socketmode=600", "daemonize=false"], fake)
    assert fake.mode == 0o600


def test_naming_your_own_account_needs_no_root():
    import pwd
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert runner.check_account(parse_words([f"user={me}"])) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root may switch accounts")
def test_switching_account_needs_root():
    with pytest.raises(StartupError, match=r"^user=root: switching to another account needs root"):
        runner.check_account(parse_words(["user=root"]))


def test_a_garbled_reload_hand_over_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNFCGI_REEXEC", '{"version": 1, "listen_fd": 3}')
    fake = FakeServer(tmp_path)
    with pytest.raises(StartupError) as caught:
        run(["method=prefork", f"socket={tmp_path / 's.sock'}"], fake)
    assert str(caught.value) == "RUNFCGI_REEXEC lacks cwd, description, workdir."
    assert fake.calls == [] and os.listdir(tmp_path) == []


def test_beyond_loopback_the_banner_says_protected(tmp_path, caplog):
    fake = FakeServer(tmp_path)
    port = free_port("0.0.0.0")
    with caplog.at_level(logging.WARNING, "runfcgi_compat"):
        out = run(["host=0.0.0.0", f"port={port}", "daemonize=false", "method=threaded"], fake)
    assert out == (f"runfcgi: serving fcgi on 0.0.0.0:{port}, threaded (at most 50 threads), "
                   f"pid {os.getpid()}, foreground, protected mode (only this machine may "
                   "connect; allow= admits others)\n"
                   f"runfcgi: fast path in {speedups.DESCRIPTION}\n")
    # The suite runs as root: serving as root is the one warning here.
    assert [r.getMessage() for r in caplog.records] == (
        [ROOT_WARNING] if os.geteuid() == 0 else [])


def test_verbosity_zero_does_not_hide_warnings(tmp_path, caplog):
    fake = FakeServer(tmp_path)
    port = free_port("0.0.0.0")
    with caplog.at_level(logging.WARNING, "runfcgi_compat"):
        out = run(["host=0.0.0.0", f"port={port}", "daemonize=false", "allow=any"], fake,
                  verbosity=0)
    assert out == ""
    assert [r.getMessage() for r in caplog.records] == [
        f"listening beyond loopback on 0.0.0.0:{port} with allow=any: every peer that "
        "reaches the port is served and may claim any client address, Host or HTTPS; "
        "name your web servers with allow=ADDRESS/NETWORK instead."] + (
        [ROOT_WARNING] if os.geteuid() == 0 else [])
    assert all(r.levelname == "WARNING" for r in caplog.records)


def test_a_bad_fcgi_web_server_addrs_stops_before_listening(tmp_path, monkeypatch):
    from runfcgi_compat.options import OptionError
    monkeypatch.setenv("FCGI_WEB_SERVER_ADDRS", "10.0.0.1,webserver")
    fake = FakeServer(tmp_path)
    with pytest.raises(OptionError, match="^FCGI_WEB_SERVER_ADDRS='10.0.0.1,webserver': "
                       "'webserver' is not an IP address or network.$"):
        run([f"socket={tmp_path}/s.sock", "daemonize=false"], fake)
    assert fake.calls == [] and os.listdir(tmp_path) == []


def test_on_loopback_the_banner_is_as_before(tmp_path):
    fake = FakeServer(tmp_path)
    port = free_port()
    out = run(["host=127.0.0.1", f"port={port}", "daemonize=false"], fake)
    assert out == (f"runfcgi: serving fcgi on 127.0.0.1:{port}, prefork (2-5 spare, at most "
                   f"50 workers), pid {os.getpid()}, foreground\n"
                   f"runfcgi: fast path in {speedups.DESCRIPTION}\n")


def test_warnings_reach_stderr_whatever_logging_says(tmp_path, capsys, monkeypatch):
    import logging as stdlib_logging
    ours = stdlib_logging.getLogger("runfcgi_compat")
    to_file = stdlib_logging.FileHandler(tmp_path / "project.log")
    monkeypatch.setattr(ours, "handlers", [to_file])
    monkeypatch.setattr(ours, "propagate", False)
    try:
        runner._log_warnings(["serving as root: ..."])
        # The project's LOGGING sends our lines to a file: stderr gets them too.
        assert capsys.readouterr().err == "runfcgi: WARNING serving as root: ...\n"
        assert "serving as root: ..." in (tmp_path / "project.log").read_text()
        # A handler on stderr already shows them: once is enough.
        monkeypatch.setattr(ours, "handlers", [to_file, stdlib_logging.StreamHandler()])
        runner._log_warnings(["serving as root: ..."])
        assert capsys.readouterr().err == "serving as root: ...\n"
    finally:
        to_file.close()


def test_the_server_is_handed_the_app_loaded_once(tmp_path):
    # Prefork workers use the master's app rather than loading it again
    # after fork, which writes to pages they would otherwise share.
    fake = FakeServer(tmp_path)
    loads = []

    def load():
        loads.append(1)
        return object()

    runner.run(parse_words([f"socket={tmp_path / 's.sock'}", "daemonize=false"]),
               load_app=load, server_factory=fake.factory, stdout=io.StringIO())
    make = fake.calls[0]
    first = make[2]()
    assert make[2]() is first and len(loads) == 1
