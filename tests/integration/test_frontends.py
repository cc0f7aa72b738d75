"""Django behind real nginx, Apache and lighttpd, configured from runfcgi_compat.frontends.

Each set-up (see ``frontends.SETUPS``) is started once per method with the real
``runfcgi`` command serving ``testproject``, then gets the same checks:
a non-ASCII path with a query string, a 1 MiB echo, an 8 MiB upload, a 10 MiB
streamed response, a 500 without a traceback, and those of ``validation.py``
(form, multipart and raw POST, HEAD, a client leaving mid-stream).  The
project is served inside ``wsgiref.validate``: after every test, no log of
the set-up may hold a finding.
"""
import hashlib
import os
import shutil
import subprocess
import time

import pytest

from runfcgi_compat import frontends as conf
from tests.integration import frontends, validation
from tests.integration.conftest import require_binary

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def body_of(size, seed):
    """A deterministic, incompressible-looking body of ``size`` bytes."""
    block = hashlib.sha512(seed.encode()).digest() * 1024  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def streamed(size):
    """What ``/stream/<size>`` sends: testproject.views.PATTERN repeated."""
    pattern = bytes(range(256)) * 256
    return (pattern * (size // len(pattern) + 1))[:size]


@pytest.fixture(scope="module", params=frontends.cases(),
                ids=lambda case: f"{case[0].name}-{case[1]}")
def site(request):
    setup, method = request.param
    tmp = frontends.make_tmp()
    try:
        site = frontends.launch(setup, method, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    yield site
    site.stop()
    if not os.environ.get("RUNFCGI_KEEP_TMP"):  # keep the logs to look at
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def nothing_for_the_validator(request):
    """After each test served by a set-up: no validator finding in its logs."""
    yield
    if "site" in request.fixturenames:
        validation.assert_no_findings(request.getfixturevalue("site"))


# The validator's checks this module does not already make below.
NEW_CHECKS = [validation.post_form, validation.post_multipart, validation.post_raw,
              validation.head, validation.client_leaves]


@pytest.mark.parametrize("check", NEW_CHECKS, ids=lambda check: check.__name__)
def test_validated(site, check):
    check(site)


def test_non_ascii_path_and_query(site):
    seen = site.json("GET", "/caf%C3%A9/x?q=1&r=%C3%A9t%C3%A9")
    assert seen["path"] == site.prefix + "/café/x", site.logs()
    assert seen["path_info"] == "/café/x"
    assert seen["script_prefix"] == site.prefix + "/"
    assert seen["query"] == {"q": ["1"], "r": ["été"]}
    assert seen["method"] == "GET"
    assert seen["is_secure"] is site.secure
    assert seen["wsgi_input"] == "wsgiref.validate.InputWrapper"  # The validator is on.


def test_echo_post_1mib(site):
    body = body_of(MiB, "echo")
    seen = site.json("POST", "/echo/", body, {"Content-Type": "application/octet-stream"})
    assert (seen["method"], seen["body_len"]) == ("POST", len(body))
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_upload_8mib(site):
    body = body_of(8 * MiB, "upload")
    seen = site.json("POST", "/upload/", body, {"Content-Type": "application/octet-stream"})
    assert seen["body_len"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_streamed_10mib(site):
    size = 10 * MiB
    status, _, data = site.request("GET", f"/stream/{size}")
    assert status == 200, site.logs()
    assert len(data) == size
    assert data == streamed(size)


def test_error_is_500_without_traceback(site):
    status, _, data = site.request("GET", "/error/")
    text = data.decode("latin-1")
    assert status == 500, f"HTTP {status}: {text[:500]}\n{site.logs()}"
    assert "Traceback" not in text
    assert "must not reach the client" not in text


# -- every generated configuration passes the server's own syntax check ------------


SNIPPETS = {
    "nginx-fcgi-tcp": lambda: conf.nginx(port=9000, listen="127.0.0.1:8080"),
    "nginx-fcgi-unix-keepalive": lambda: conf.nginx(socket="/run/x/fcgi.sock", keepalive=8),
    "nginx-fcgi-prefix-https": lambda: conf.nginx(prefix="/my.app", https=True),
    "nginx-scgi-prefix": lambda: conf.nginx("scgi", prefix="/app", https=True),
    "nginx-static": lambda: conf.nginx(static_url="/static/", static_root="/srv/static"),
}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_nginx_accepts_snippet(name, tmp_path):
    nginx = require_binary("nginx")
    (tmp_path / "tmp").mkdir()
    site = tmp_path / "site.conf"
    site.write_text(SNIPPETS[name]())
    main = tmp_path / "nginx.conf"
    main.write_text(conf.nginx_main(str(tmp_path), str(site), user="root"))
    check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(main)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


APACHE_SITES = {
    "fcgi-tcp-reuse": lambda: (conf.apache(port=9000, reuse=True), "fcgi"),
    "fcgi-unix": lambda: (conf.apache(socket="/run/x/fcgi.sock"), "fcgi"),
    "fcgi-prefix-https": lambda: (conf.apache(prefix="/app", https=True), "fcgi"),
    "scgi": lambda: (conf.apache("scgi"), "scgi"),
    "ajp-secret": lambda: (conf.apache("ajp", secret="abc"), "ajp"),
}


@pytest.mark.parametrize("name", sorted(APACHE_SITES))
def test_apache_accepts_site(name, tmp_path):
    apache = require_binary("apache2")
    text, protocol = APACHE_SITES[name]()
    site = tmp_path / "site.conf"
    site.write_text(text)
    main = tmp_path / "httpd.conf"
    main.write_text(conf.apache_main(str(tmp_path), str(site), port=8080,
                                     modules=conf.apache_modules(protocol)))
    check = subprocess.run([apache, "-t", "-f", str(main)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_apache_accepts_fcgid_recipe(tmp_path):
    apache = require_binary("apache2")
    site = tmp_path / "site.conf"
    site.write_text(conf.apache_fcgid(str(tmp_path)))
    (tmp_path / ".htaccess").write_text(conf.htaccess(str(tmp_path)))
    main = tmp_path / "httpd.conf"
    main.write_text(conf.apache_main(str(tmp_path), str(site), port=8080,
                                     modules=conf.apache_modules(fcgid=True)))
    check = subprocess.run([apache, "-t", "-f", str(main)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("protocol", ["fcgi", "scgi"])
def test_lighttpd_accepts_config(protocol, tmp_path):
    lighttpd = require_binary("lighttpd")
    (tmp_path / "htdocs").mkdir()
    site = tmp_path / "site.conf"
    site.write_text(conf.lighttpd(protocol, port=9000, prefix="/app", fix_root=False))
    main = tmp_path / "lighttpd.conf"
    main.write_text(conf.lighttpd_main(str(tmp_path), str(site), port=8080))
    check = subprocess.run([lighttpd, "-tt", "-f", str(main)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout


def test_systemd_accepts_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    python = shutil.which("python3") or "/usr/bin/python3"
    units = {
        "mysite.service": conf.systemd(python=python, project_dir=str(tmp_path),
                                       settings="p.settings", unit="mysite", activated=True),
        "mysite.socket": conf.systemd_socket(socket="/run/mysite/fcgi.sock", unit="mysite"),
        "plain.service": conf.systemd("scgi", port=9000, python=python,
                                      project_dir=str(tmp_path), settings="p.settings",
                                      unit="plain"),
        # Every hardening line, and the capability a port below 1024 needs.
        "unix.service": conf.systemd(socket="/run/unix/fcgi.sock", python="/usr/bin/python3",
                                     project_dir="/srv/p", settings="p.settings",
                                     unit="unix"),
        "ajp.service": conf.systemd("ajp", "10.0.0.5", 80, python=python,
                                    project_dir=str(tmp_path), settings="p.settings",
                                    unit="ajp", allow="10.0.0.1", ajpsecret="s3"),
    }
    assert "ProtectHome=yes" in units["unix.service"]
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in units["ajp.service"]
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    check = subprocess.run([analyze, "verify", *(str(tmp_path / name) for name in units)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    # A directive this systemd does not know is only a warning: none here.
    assert "Unknown" not in check.stderr and "ignoring" not in check.stderr, check.stderr


def test_touching_mysite_fcgi_restarts_it_under_mod_fcgid():
    """The shared-host habit: ``touch mysite.fcgi`` makes mod_fcgid start a new process."""
    setup = frontends.SETUPS["apache-fcgid"]
    tmp = frontends.make_tmp()
    site = frontends.launch(setup, "threaded", tmp)
    try:
        first = site.json("GET", "/who")["pid"]
        script = tmp / "www" / "mysite.fcgi"
        later = time.time() + 1  # newer than the running process
        os.utime(script, (later, later))
        deadline = time.monotonic() + 30
        while True:
            now = site.json("GET", "/who")["pid"]
            if now != first:
                break
            assert time.monotonic() < deadline, f"still served by pid {first}\n{site.logs()}"
            time.sleep(0.2)
        assert site.json("GET", "/who")["pid"] == now
    finally:
        site.stop()
        shutil.rmtree(tmp, ignore_errors=True)
