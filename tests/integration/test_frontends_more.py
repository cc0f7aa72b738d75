"""Caddy, HAProxy and h2o accept every variant runfcgi_compat writes.

The set-ups the suite serves are in frontends_more.py (checked by
test_frontends.py); these are the variants it does not run, checked by each
server's own configuration test.
"""
import os
import subprocess

import pytest

from runfcgi_compat import frontends as conf
from tests.integration.conftest import require_binary

pytestmark = pytest.mark.integration

CADDY_SITES = {
    "domain-unix": lambda: conf.caddy(socket="/run/x/fcgi.sock"),
    "domain-prefix-https": lambda: conf.caddy(port=3033, prefix="/my.app", https=True),
    "https-root": lambda: conf.caddy(host="::1", port=3033, https=True, address=":8080"),
}


@pytest.mark.parametrize("name", sorted(CADDY_SITES))
def test_caddy_accepts_site(name, tmp_path):
    caddy = require_binary("caddy")
    site = tmp_path / "site.caddy"
    site.write_text(CADDY_SITES[name]())
    main = tmp_path / "Caddyfile"
    main.write_text(conf.caddy_main(str(tmp_path), str(site)))
    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_DATA_HOME=str(tmp_path / "data"))
    check = subprocess.run([caddy, "validate", "--adapter", "caddyfile", "--config", str(main)],
                           capture_output=True, text=True, env=env, timeout=60)
    assert check.returncode == 0, check.stderr


HAPROXY_SITES = {
    "tcp-no-keep-conn": lambda: conf.haproxy(port=3033, keep_conn=False),
    "ipv6-prefix": lambda: conf.haproxy(host="::1", port=3033, prefix="/app"),
    "unix-https": lambda: conf.haproxy(socket="/run/x/fcgi.sock", https=True),
}


@pytest.mark.parametrize("name", sorted(HAPROXY_SITES))
def test_haproxy_accepts_site(name, tmp_path):
    haproxy = require_binary("haproxy")
    site = tmp_path / "site.cfg"
    site.write_text(HAPROXY_SITES[name]())
    main = tmp_path / "haproxy.cfg"
    main.write_text(conf.haproxy_main(str(tmp_path), str(site)))
    check = subprocess.run([haproxy, "-c", "-f", str(main), "-f", str(site)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


H2O_SITES = {
    "tcp-prefix": lambda: conf.h2o(port=3033, prefix="/app", listen="8080"),
    "spawn-as-user": lambda: conf.h2o(
        spawn=conf.h2o_spawn_command("/usr/bin/python3", "/srv/p/manage.py"),
        spawn_user="root", listen="[::1]:8080"),
}


@pytest.mark.parametrize("name", sorted(H2O_SITES))
def test_h2o_accepts_site(name, tmp_path):
    h2o = require_binary("h2o")
    site = tmp_path / "site.yaml"
    site.write_text(H2O_SITES[name]())
    main = tmp_path / "h2o.conf"
    main.write_text(conf.h2o_main(str(tmp_path), str(site)))
    check = subprocess.run([h2o, "-t", "-c", str(main)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
