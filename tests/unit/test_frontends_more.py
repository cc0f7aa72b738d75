"""Caddy, HAProxy, h2o and spawn-fcgi as runfcgi_compat.frontends writes them.

These check the text; tests/integration/frontends_more.py runs each recipe
behind the real server, and test_frontends.py has each server check the
syntax of the variants the suite does not run.
"""
import re
import shlex

import pytest

from runfcgi_compat import frontends as conf
from runfcgi_compat.options import OptionError


def lines(text):
    return [line.strip() for line in text.splitlines()]


RENDERED = {
    "caddy": lambda: conf.caddy(port=3033),
    "caddy-everything": lambda: conf.caddy(socket="/run/s/fcgi.sock", prefix="/app",
                                           https=True),
    "caddy-https-root": lambda: conf.caddy(https=True),
    "caddy-main": lambda: conf.caddy_main("/srv/c", "/srv/c/site", bind="::1"),
    "haproxy": lambda: conf.haproxy(),
    "haproxy-everything": lambda: conf.haproxy(socket="/run/s/fcgi.sock", prefix="/app",
                                               https=True, keep_conn=False),
    "haproxy-main": lambda: conf.haproxy_main("/srv/h", "/srv/h/site.cfg"),
    "fcgi-app": lambda: conf.fcgi_app_section("x", get_values=False),
    "h2o": lambda: conf.h2o(),
    "h2o-everything": lambda: conf.h2o(socket="/run/s/fcgi.sock", prefix="/app", https=True,
                                       keepalive=10, listen="[::1]:8080"),
    "h2o-spawn": lambda: conf.h2o(spawn="exec /v/bin/python manage.py runfcgi",
                                  spawn_user="www-data", prefix="/app"),
    "h2o-main": lambda: conf.h2o_main("/srv/o", "/srv/o/site.yaml", user="www-data"),
    "caddy-tls-static": lambda: conf.caddy(address="https://:8443", static_url="/static/",
                                           static_root="/s", certificate="/c.pem",
                                           certificate_key="/k.pem"),
    "caddy-tls-static-prefix": lambda: conf.caddy(
        address="https://:8443", prefix="/app", static_url="/static/", static_root="/s",
        certificate="/c.pem", certificate_key="/k.pem"),
    "haproxy-tls": lambda: conf.haproxy(certificate="/c.pem", prefix="/app"),
    "h2o-tls-static": lambda: conf.h2o(static_url="/static/", static_root="/s",
                                       certificate="/c.pem", certificate_key="/k.pem"),
    "spawn-fcgi": lambda: conf.spawn_fcgi(python="/v/bin/python"),
    "spawn-fcgi-pidfile": lambda: conf.spawn_fcgi(socket="/run/s/f.sock", python="/v/bin/python",
                                                  pidfile="/run/s/f.pid"),
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_rendered_text_is_clean(name):
    text = RENDERED[name]()
    assert "{%" not in text and "{{" not in text and "%}" not in text
    assert "\n\n\n" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert not re.search(r"[ \t]+$", text, re.M), "trailing whitespace"


@pytest.mark.parametrize("function", [conf.caddy, conf.haproxy, conf.h2o])
@pytest.mark.parametrize("protocol", ["scgi", "ajp"])
def test_fastcgi_only(function, protocol):
    with pytest.raises(OptionError, match=f"protocol='{protocol}': .* speaks FastCGI only"):
        function(protocol)


# -- Caddy -------------------------------------------------------------------------


def test_caddy_at_the_root_sends_the_whole_path():
    text = conf.caddy(port=3033, address="http://127.0.0.1:8080")
    assert "http://127.0.0.1:8080 {" in lines(text)
    assert "reverse_proxy 127.0.0.1:3033 {" in lines(text)
    assert "transport fastcgi" in lines(text)
    assert "split" not in text and "handle" not in text and "HTTPS" not in text


def test_caddy_unix_socket_prefix_and_https():
    text = conf.caddy(socket="/run/s/fcgi.sock", prefix="/app/", https=True)
    assert "handle /app/* {" in lines(text)
    assert "handle_path" not in text  # it would hide the prefix from Django
    assert "reverse_proxy unix//run/s/fcgi.sock {" in lines(text)
    assert "split /app" in lines(text)
    assert "env HTTPS on" in lines(text)


def test_caddy_ipv6_backend():
    assert "reverse_proxy [::1]:3033 {" in lines(conf.caddy(host="::1", port=3033))


def test_caddy_main_turns_off_admin_and_automatic_https():
    text = conf.caddy_main("/srv/c", "/srv/c/site")
    assert {"admin off", "auto_https off", "import /srv/c/site"} <= set(lines(text))
    assert "default_bind" not in text
    assert "default_bind 127.0.0.1" in lines(conf.caddy_main("/c", "/c/s", bind="127.0.0.1"))


# -- HAProxy -----------------------------------------------------------------------


def test_haproxy_tcp_at_the_root():
    text = conf.haproxy(port=3033, listen="127.0.0.1:8080")
    assert "frontend django_http" in lines(text) and "bind 127.0.0.1:8080" in lines(text)
    assert "default_backend django" in lines(text)
    assert "use-fcgi-app runfcgi" in lines(text)
    assert "server runfcgi 127.0.0.1:3033 proto fcgi" in lines(text)
    assert {"fcgi-app runfcgi", "docroot /srv/mysite", "option keep-conn",
            "option get-values", "no option mpxs-conns"} <= set(lines(text))
    assert "path-info" not in text and "HTTPS" not in text


def test_haproxy_unix_socket_prefix_and_https():
    text = conf.haproxy(socket="/run/s/fcgi.sock", prefix="/my.app", https=True)
    assert "use_backend django if { path_beg /my.app/ }" in lines(text)
    assert "server runfcgi /run/s/fcgi.sock proto fcgi" in lines(text)
    assert r"path-info ^(/my\.app)(/.*)$" in lines(text)
    assert "set-param HTTPS on" in lines(text)


def test_haproxy_pieces_are_reusable():
    section = conf.fcgi_app_section("app2", docroot="/srv/x", keep_conn=False)
    assert section.startswith("fcgi-app app2\n")
    assert "option keep-conn" not in section and "no option mpxs-conns" in lines(section)
    assert conf.fcgi_server_line("b1", "10.0.0.5", 3033, options="check") == (
        "server b1 10.0.0.5:3033 proto fcgi check")
    assert conf.fcgi_server_line("b2", socket="/run/s.sock") == (
        "server b2 /run/s.sock proto fcgi")


@pytest.mark.parametrize("kwargs, message", [
    (dict(app="my app"), "is not an HAProxy section name"),
    (dict(docroot="/srv/my site"), "cannot be written into a web server configuration"),
    (dict(prefix="app"), "must start with '/'"),
])
def test_haproxy_refuses(kwargs, message):
    with pytest.raises(OptionError, match=message):
        conf.haproxy(**kwargs)


# -- h2o ---------------------------------------------------------------------------


def test_h2o_tcp_with_keepalive():
    text = conf.h2o(port=3033, listen="127.0.0.1:8080", keepalive=10)
    assert ["host: 127.0.0.1", "port: 8080"] == lines(text)[lines(text).index("listen:") + 1:][:2]
    assert {'"/":', "fastcgi.connect:", "host: 127.0.0.1", "port: 3033", "type: tcp",
            "fastcgi.timeout.keepalive: 10000"} <= set(lines(text))
    assert "FORCE_SCRIPT_NAME" not in text


def test_h2o_unix_socket_under_a_prefix_names_force_script_name():
    text = conf.h2o(socket="/run/s/fcgi.sock", prefix="/app", https=True)
    assert {'"/app":', "port: /run/s/fcgi.sock", "type: unix", 'HTTPS: "on"'} <= set(lines(text))
    assert 'it is mounted: set FORCE_SCRIPT_NAME = "/app" in the Django settings.' in text
    assert "fastcgi.timeout.keepalive" not in text


def test_h2o_spawn():
    command = conf.h2o_spawn_command("/v/bin/python", "/p/manage.py", settings="p.settings",
                                     method="threaded", options=["maxchildren=4"])
    assert shlex.split(command) == [
        "exec", "/usr/bin/env", "DJANGO_SETTINGS_MODULE=p.settings", "/v/bin/python",
        "/p/manage.py", "runfcgi", "protocol=fcgi", "method=threaded", "maxchildren=4"]
    text = conf.h2o(spawn=command)
    assert f'fastcgi.spawn: "{command}"' in lines(text)
    assert "Django side" not in text and "fastcgi.connect" not in text
    text = conf.h2o(spawn=command, spawn_user="www-data")
    assert f'command: "{command}"' in lines(text) and "user: www-data" in lines(text)


@pytest.mark.parametrize("kwargs, message", [
    (dict(spawn="x", port=9000), "give no host, port or socket"),
    (dict(spawn_user="www-data"), "spawn_user needs spawn"),
    (dict(spawn='echo "x"'), "cannot hold double quotes"),
    (dict(listen="localhost:http"), "is not a port or host:port"),
])
def test_h2o_refuses(kwargs, message):
    with pytest.raises(OptionError, match=message):
        conf.h2o(**kwargs)


# -- spawn-fcgi ---------------------------------------------------------------------


def test_spawn_fcgi_foreground_over_tcp_and_ipv6():
    assert conf.spawn_fcgi_argv(port=3033, python="/v/bin/python", method="threaded") == [
        "spawn-fcgi", "-n", "-a", "127.0.0.1", "-p", "3033", "--",
        "/v/bin/python", "manage.py", "runfcgi", "protocol=fcgi", "method=threaded"]
    argv = conf.spawn_fcgi_argv(host="[::1]", port=3033, python="/v/bin/python",
                                settings="p.settings", project_dir="/srv/p")
    assert argv[:8] == ["spawn-fcgi", "-n", "-a", "::1", "-p", "3033", "-d", "/srv/p"]
    assert argv[8:11] == ["--", "/usr/bin/env", "DJANGO_SETTINGS_MODULE=p.settings"]


def test_spawn_fcgi_init_style_on_a_unix_socket():
    argv = conf.spawn_fcgi_argv(socket="/run/s/f.sock", python="/v/bin/python",
                                pidfile="/run/s/f.pid", socket_mode="660",
                                socket_user="www-data", socket_group="www-data",
                                user="mysite", group="mysite", options=["errlog=/l/e.log"])
    assert argv[:15] == ["spawn-fcgi", "-P", "/run/s/f.pid", "-s", "/run/s/f.sock",
                         "-M", "0660", "-U", "www-data", "-G", "www-data",
                         "-u", "mysite", "-g", "mysite"]
    assert argv[-1] == "errlog=/l/e.log" and "-n" not in argv


def test_spawn_fcgi_text_is_the_argv():
    kwargs = dict(socket="/run/s/f.sock", python="/v/bin/python", pidfile="/run/s/f.pid")
    text = conf.spawn_fcgi(**kwargs)
    command = " ".join(line.rstrip("\\").strip() for line in text.splitlines()
                       if not line.startswith("#"))
    assert shlex.split(command) == conf.spawn_fcgi_argv(**kwargs)
    assert "add\n# errlog=" in text  # the forked runfcgi's output is /dev/null
    assert "errlog=" not in conf.spawn_fcgi(python="/v/bin/python")


def test_spawn_fcgi_refuses_socket_settings_over_tcp():
    with pytest.raises(OptionError, match="need a socket"):
        conf.spawn_fcgi_argv(port=3033, python="/v/bin/python", socket_mode="660")


# -- TLS and static files served by the front end itself ------------------------------


def test_caddy_serves_tls_and_static_files():
    text = conf.caddy(port=3033, address="https://:8443", prefix="/app",
                      static_url="/static/", static_root="/srv/static/",
                      certificate="/etc/c.pem", certificate_key="/etc/k.pem")
    assert "tls /etc/c.pem /etc/k.pem" in lines(text)
    # handle_path drops /static/ before looking under the root.
    block = lines(text)[lines(text).index("handle_path /static/* {"):][:4]
    assert block == ["handle_path /static/* {", "root * /srv/static", "file_server", "}"]
    assert "handle /app/* {" in lines(text)
    assert "env HTTPS on" not in text  # Caddy ends TLS and says so itself


def test_caddy_without_tls_or_static_files_names_neither():
    text = conf.caddy(port=3033)
    assert "tls" not in text and "file_server" not in text and "handle_path" not in text


def test_haproxy_serves_tls_with_one_pem_file():
    text = conf.haproxy(port=3033, listen="127.0.0.1:8443", certificate="/etc/site.pem")
    assert "bind 127.0.0.1:8443 ssl crt /etc/site.pem" in lines(text)
    assert "bind *:80" in lines(conf.haproxy())
    assert "ssl" not in conf.haproxy()


def test_h2o_serves_tls_and_static_files():
    text = conf.h2o(port=3033, listen="127.0.0.1:8443", prefix="/app",
                    static_url="/static/", static_root="/srv/static/",
                    certificate="/etc/c.pem", certificate_key="/etc/k.pem")
    after_listen = lines(text)[lines(text).index("listen:") + 1:]
    assert after_listen[:6] == ["host: 127.0.0.1", "port: 8443", after_listen[2], "ssl:",
                                "certificate-file: /etc/c.pem", "key-file: /etc/k.pem"]
    assert after_listen[2].startswith("#")
    assert lines(text)[lines(text).index('"/static/":') + 1] == "file.dir: /srv/static"
    assert '"/app":' in lines(text)
    assert "ssl:" not in conf.h2o() and "file.dir" not in conf.h2o()


@pytest.mark.parametrize("function", [conf.caddy, conf.h2o])
@pytest.mark.parametrize("kwargs, message", [
    (dict(certificate="/c.pem"), "certificate and certificate_key go together"),
    (dict(static_url="/static/"), "static_url needs static_root"),
    (dict(static_url="static", static_root="/s"), "must be a path that starts and ends"),
    (dict(certificate="/my c.pem", certificate_key="/k.pem"), "cannot be written into"),
])
def test_tls_and_static_options_are_checked(function, kwargs, message):
    with pytest.raises(OptionError, match=message):
        function(**kwargs)


def test_haproxy_certificate_is_checked():
    with pytest.raises(OptionError, match="certificate='/my site.pem' cannot be written"):
        conf.haproxy(certificate="/my site.pem")
