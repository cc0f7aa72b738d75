"""manage.py runfcgi_config: what it prints is served by the real server."""
import shlex
import subprocess
import sys

import pytest

from runfcgi_compat import frontends as conf
from tests.helpers import free_port
from tests.integration import frontends as harness
from tests.integration import frontends_more as more
from tests.integration.conftest import require_binary


def generate(*words):
    done = subprocess.run([sys.executable, "-m", "django", "runfcgi_config", *words],
                          capture_output=True, text=True, env=harness.django_env(),
                          cwd=str(harness.PROJECT), stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_site(port, prefix=""):
    site = harness.Site("generated", port, prefix)
    answer = site.json("GET", "/caf%C3%A9/x?q=1")
    assert answer["path_info"] == "/café/x" and answer["query"] == {"q": ["1"]}, answer


def backend(tmp_dir, processes, protocol, *, socket_path=None):
    if socket_path:
        processes.append(harness.start_backend(tmp_dir, protocol, "prefork",
                                               socket_path=socket_path, extra=["umask=000"]))
        return [f"socket={socket_path}"]
    port = free_port()
    processes.append(harness.start_backend(tmp_dir, protocol, "prefork", host="127.0.0.1",
                                           port=port))
    return ["host=127.0.0.1", f"port={port}"]


@pytest.mark.parametrize("words", [["protocol=fcgi"], ["protocol=fcgi", "unix"],
                                   ["protocol=fcgi", "keepalive=4"],
                                   ["protocol=scgi", "prefix=/app"]])
def test_nginx(words, tmp):
    tmp_dir, processes = tmp
    protocol = words[0].split("=")[1]
    unix = "unix" in words
    where = backend(tmp_dir, processes, protocol,
                    socket_path=str(tmp_dir / "d.sock") if unix else None)
    listen = free_port()
    extra = [w for w in words[1:] if w != "unix"]
    text = generate("nginx", words[0], *where, f"listen=127.0.0.1:{listen}", *extra)
    assert text == conf.nginx(protocol, **_where(where), listen=f"127.0.0.1:{listen}",
                              **_extra(extra))
    processes.append(harness.start_nginx(tmp_dir, text, listen))
    check_site(listen, "/app" if "prefix=/app" in words else "")


@pytest.mark.parametrize("protocol, unix", [("fcgi", False), ("fcgi", True), ("scgi", False),
                                            ("ajp", False)])
def test_apache(protocol, unix, tmp):
    tmp_dir, processes = tmp
    listen = free_port()
    if protocol == "ajp":
        # The generated secret is on both sides: Apache's secret= and the
        # runfcgi command shown; a backend started with it serves.
        port = free_port()
        where = ["host=127.0.0.1", f"port={port}"]
        text = generate("apache", "protocol=ajp", *where, f"listen=127.0.0.1:{listen}")
        [secret] = [word for word in _django_side(text) if word.startswith("ajpsecret=")]
        assert f"secret={secret.partition('=')[2]}" in text.split("ProxyPass", 1)[1]
        processes.append(harness.start_backend(tmp_dir, "ajp", "prefork", host="127.0.0.1",
                                               port=port, extra=[secret]))
    else:
        where = backend(tmp_dir, processes, protocol,
                        socket_path=str(tmp_dir / "d.sock") if unix else None)
        text = generate("apache", f"protocol={protocol}", *where, f"listen=127.0.0.1:{listen}")
    processes.append(harness.start_apache(tmp_dir, text, listen, conf.apache_modules(protocol)))
    check_site(listen)


def test_generated_files_are_hardened():
    # A back end on another host names its web servers (placeholder or given).
    assert _django_side(generate("nginx", "host=10.0.0.5", "port=3033"))[-1] == (
        "allow=WEB_SERVER_ADDRESS")
    assert _django_side(generate("nginx", "host=10.0.0.5", "port=3033",
                                 "allow=10.0.0.1,10.0.0.2"))[-1] == (
        "allow=10.0.0.1/32,10.0.0.2/32")
    # A UNIX socket is for the web server's group only.
    assert _django_side(generate("nginx", "socket=/run/m/fcgi.sock"))[-1] == "umask=007"
    # AJP: the same secret in the Apache and systemd files, made apart.
    apache = generate("apache", "protocol=ajp", "host=127.0.0.1", "port=8009")
    unit = generate("systemd", "protocol=ajp", "host=127.0.0.1", "port=8009")
    [secret] = [word for word in _django_side(apache) if word.startswith("ajpsecret=")]
    assert len(secret) == len("ajpsecret=") + 32
    assert f" {secret}" in next(line for line in unit.splitlines()
                                if line.startswith("ExecStart="))
    assert "NoNewPrivileges=yes" in unit.splitlines()


def _django_side(text):
    line = next(line for line in text.splitlines() if line.startswith("# Django side: "))
    return line.split()[5:]


@pytest.mark.parametrize("protocol", ["fcgi", "scgi"])
def test_lighttpd(protocol, tmp):
    tmp_dir, processes = tmp
    where = backend(tmp_dir, processes, protocol,
                    socket_path=str(tmp_dir / "d.sock") if protocol == "fcgi" else None)
    text = generate("lighttpd", f"protocol={protocol}", *where)
    listen = free_port()
    processes.append(harness.start_lighttpd(tmp_dir, text, listen))
    check_site(listen)


def test_lighttpd_spawning_runfcgi(tmp):
    """No address: lighttpd starts manage.py runfcgi itself (bin-path)."""
    tmp_dir, processes = tmp
    text = generate("lighttpd", "method=threaded", f"spawnsocket={tmp_dir}/spawn.sock")
    assert '"bin-path" =>' in text and "runfcgi protocol=fcgi method=threaded" in text
    assert '"DJANGO_SETTINGS_MODULE" => "testproject.settings"' in text
    listen = free_port()
    processes.append(harness.start_lighttpd(tmp_dir, text, listen))
    check_site(listen)


def test_systemd_exec_start_runs(tmp):
    """The service unit's ExecStart, run as written, serves the project."""
    tmp_dir, processes = tmp
    port = free_port()
    unit = generate("systemd", "host=127.0.0.1", f"port={port}", "user=root", "group=root")
    exec_start = next(line.split("=", 1)[1] for line in unit.splitlines()
                      if line.startswith("ExecStart="))
    workdir = next(line.split("=", 1)[1] for line in unit.splitlines()
                   if line.startswith("WorkingDirectory="))
    argv = shlex.split(exec_start)
    assert argv[:3] == [sys.executable, "manage.py", "runfcgi"]
    processes.append(harness.start("systemd ExecStart", argv, tmp_dir / "unit.log",
                                   ready=harness.accepts(("127.0.0.1", port)),
                                   env=harness.django_env(), cwd=workdir))
    listen = free_port()
    site = conf.nginx("fcgi", "127.0.0.1", port, listen=f"127.0.0.1:{listen}")
    processes.append(harness.start_nginx(tmp_dir, site, listen))
    check_site(listen)


def test_caddy(tmp):
    tmp_dir, processes = tmp
    where = backend(tmp_dir, processes, "fcgi", socket_path=str(tmp_dir / "d.sock"))
    listen = free_port()
    text = generate("caddy", *where, f"listen=http://:{listen}", "prefix=/app")
    processes.append(more.start_caddy(tmp_dir, text, listen))
    check_site(listen, "/app")


def test_haproxy(tmp):
    tmp_dir, processes = tmp
    where = backend(tmp_dir, processes, "fcgi")
    listen = free_port()
    text = generate("haproxy", *where, f"listen=127.0.0.1:{listen}")
    processes.append(more.start_haproxy(tmp_dir, text, listen))
    check_site(listen)


def test_h2o_spawning_runfcgi(tmp):
    """No address: h2o starts manage.py runfcgi itself (fastcgi.spawn)."""
    tmp_dir, processes = tmp
    listen = free_port()
    text = generate("h2o", "method=threaded", "maxchildren=4", f"listen=127.0.0.1:{listen}")
    assert "runfcgi protocol=fcgi method=threaded maxchildren=4" in text
    assert "DJANGO_SETTINGS_MODULE=testproject.settings" in text
    processes.append(more.start_h2o(tmp_dir, text, listen, env=harness.django_env()))
    check_site(listen)


def test_spawn_fcgi_command_runs(tmp):
    """The printed command line, run by a shell as written, serves the project."""
    require_binary("spawn-fcgi")
    tmp_dir, processes = tmp
    port = free_port()
    text = generate("spawn-fcgi", "host=127.0.0.1", f"port={port}", "method=threaded")
    assert text.splitlines()[1].startswith("spawn-fcgi -n -a 127.0.0.1 ")
    processes.append(harness.start("spawn-fcgi", ["sh", "-c", text], tmp_dir / "spawn.log",
                                   ready=harness.accepts(("127.0.0.1", port)),
                                   env=harness.django_env()))
    listen = free_port()
    site = conf.nginx("fcgi", "127.0.0.1", port, listen=f"127.0.0.1:{listen}")
    processes.append(harness.start_nginx(tmp_dir, site, listen))
    check_site(listen)


@pytest.mark.parametrize("words, message", [
    (["nginx", "protocol=ajp", "host=127.0.0.1", "port=9"],
     "protocol='ajp': nginx has no AJP module; use fcgi or scgi."),
    (["nginx", "port=abc", "host=127.0.0.1"], "port='abc' is not a whole number."),
    (["nginx", "sockt=/x"], "Unknown option 'sockt': run 'runfcgi help' for the list."),
    (["systemd"], "systemd needs host and port or socket."),
    (["caddy", "protocol=scgi"], "protocol='scgi': Caddy speaks FastCGI only; use protocol=fcgi."),
    (["spawn-fcgi"], "spawn-fcgi needs host and port or socket: it makes the socket runfcgi "
                     "gets on fd 0."),
])
def test_bad_words_are_one_line_errors(words, message):
    done = subprocess.run([sys.executable, "-m", "django", "runfcgi_config", *words],
                          capture_output=True, text=True, env=harness.django_env(),
                          cwd=str(harness.PROJECT), stdin=subprocess.DEVNULL, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"CommandError: {message}\n")


def _where(words):
    found = dict(word.split("=", 1) for word in words)
    if "socket" in found:
        return {"socket": found["socket"]}
    return {"host": found["host"], "port": int(found["port"])}


def _extra(words):
    found = dict(word.split("=", 1) for word in words)
    out = {}
    if "keepalive" in found:
        out["keepalive"] = int(found["keepalive"])
    if "prefix" in found:
        out["prefix"] = found["prefix"]
    return out
