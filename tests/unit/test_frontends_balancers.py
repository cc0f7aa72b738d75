"""The balancer configurations: nginx, HAProxy and Apache over several backends.

These check the text; tests/integration/test_failover.py runs each one in
front of real backends and kills, restarts and drains one under load.
"""
import pytest

from runfcgi_compat import frontends as conf
from runfcgi_compat.options import OptionError

MACHINES = [("10.0.0.5", 3033), ("10.0.0.6", 3033)]


def lines(text):
    return [line.strip() for line in text.splitlines()]


def test_each_backend_is_shown_with_its_runfcgi_command_and_allow():
    for text in (conf.nginx_balancer("fcgi", MACHINES, allow="10.0.0.2"),
                 conf.haproxy_balancer(MACHINES, allow="10.0.0.2"),
                 conf.apache_balancer("fcgi", MACHINES, allow="10.0.0.2")):
        assert "#   manage.py runfcgi protocol=fcgi host=10.0.0.5 port=3033 allow=10.0.0.2" \
            in text.splitlines()
        assert "#   manage.py runfcgi protocol=fcgi host=10.0.0.6 port=3033 allow=10.0.0.2" \
            in text.splitlines()


def test_allow_may_list_several_balancers():
    text = conf.haproxy_balancer(MACHINES, allow=["10.0.0.2", "10.0.0.3"])
    assert "allow=10.0.0.2,10.0.0.3" in text
    assert "allow=10.0.0.2,10.0.0.3" in conf.nginx_balancer("fcgi", MACHINES,
                                                             allow="10.0.0.2,10.0.0.3")


def test_without_allow_the_commands_name_a_placeholder_runfcgi_refuses():
    text = conf.nginx_balancer("fcgi", MACHINES)
    assert text.count("allow=WEB_SERVER_ADDRESS") == len(MACHINES)


# -- nginx ---------------------------------------------------------------------


def test_nginx_balancer_upstream_and_retries():
    text = lines(conf.nginx_balancer("fcgi", MACHINES, fail_timeout="1s"))
    assert "server 10.0.0.5:3033 max_fails=1 fail_timeout=1s;" in text
    assert "server 10.0.0.6:3033 max_fails=1 fail_timeout=1s;" in text
    assert ("fastcgi_next_upstream error timeout invalid_header http_503 non_idempotent;"
            in text)


def test_nginx_balancer_unix_socket_and_scgi():
    text = lines(conf.nginx_balancer("scgi", ["/run/a.sock", ("::1", 4000)]))
    assert "server unix:/run/a.sock max_fails=1 fail_timeout=10s;" in text
    assert "server [::1]:4000 max_fails=1 fail_timeout=10s;" in text
    assert "scgi_pass django;" in text


# -- HAProxy -------------------------------------------------------------------


def test_haproxy_balancer_checks_over_fastcgi():
    text = lines(conf.haproxy_balancer(MACHINES, server_name="example.com",
                                       check_path="/health/", check_interval="5s"))
    # proto fcgi on every server: requests and checks speak FastCGI.
    assert {
        "use-fcgi-app django",
        "option httpchk",
        "http-check send meth GET uri /health/ ver HTTP/1.1 hdr Host example.com",
        "http-check expect status 200",
        "default-server proto fcgi check inter 5s fall 2 rise 1",
        "server django1 10.0.0.5:3033",
        "server django2 10.0.0.6:3033",
    } <= set(text)


def test_haproxy_balancer_retries_only_idempotent_requests_once_sent():
    text = lines(conf.haproxy_balancer(MACHINES))
    assert {
        "retries 3",
        "option redispatch 1",
        "retry-on conn-failure empty-response junk-response response-timeout 503",
        "acl idempotent method GET HEAD OPTIONS",
        "http-request disable-l7-retry unless idempotent",
    } <= set(text)


def test_haproxy_balancer_unix_socket_and_ipv6():
    text = lines(conf.haproxy_balancer(["/run/mysite/fcgi.sock", ("fd00::5", 3033)]))
    assert "server django1 /run/mysite/fcgi.sock" in text
    assert "server django2 [fd00::5]:3033" in text


@pytest.mark.parametrize("kwargs, message", [
    (dict(backends=()), "backends: give at least one"),
    (dict(check_path="health"), "check_path='health' must be a URL path"),
    (dict(balance="fastest"), "balance='fastest' is not one of"),
    (dict(check_interval="2 s"), "check_interval='2 s' is not an HAProxy time"),
    (dict(fall=0), "fall=0 is not a whole number"),
    (dict(allow="10.0.0.300"), "'10.0.0.300' is not an IP address or network"),
    (dict(listen="*:80;"), r"listen='\*:80;' cannot be written"),
])
def test_haproxy_balancer_refuses(kwargs, message):
    kwargs.setdefault("backends", MACHINES)
    with pytest.raises(OptionError, match=message):
        conf.haproxy_balancer(**kwargs)


# -- Apache --------------------------------------------------------------------


def test_apache_balancer_members_and_health_checks():
    text = lines(conf.apache_balancer("fcgi", MACHINES, retry=5, check_interval=3))
    member = ("BalancerMember \"fcgi://10.0.0.5:3033\" retry=5 connectiontimeout=1 "
              "hcmethod=TCP hcinterval=3 hcfails=1 hcpasses=1")
    assert member in text
    assert "ProxySet lbmethod=byrequests" in text
    assert 'ProxyPass "/" "balancer://django/"' in text
    assert ("# Needs: a2enmod proxy proxy_fcgi slotmem_shm proxy_balancer "
            "lbmethod_byrequests proxy_hcheck") in text


def test_apache_balancer_modules_follow_the_protocol():
    assert conf.apache_balancer_modules("ajp")[:2] == ("proxy", "proxy_ajp")
    assert "BalancerMember \"scgi://10.0.0.5:3033\"" in conf.apache_balancer(
        "scgi", MACHINES)


@pytest.mark.parametrize("kwargs, message", [
    (dict(backends=["/run/a.sock"]), "over TCP only"),
    (dict(retry=-1), "retry=-1 is not a whole number"),
    (dict(protocol="http"), "protocol='http' is not one of"),
])
def test_apache_balancer_refuses(kwargs, message):
    kwargs.setdefault("backends", MACHINES)
    with pytest.raises(OptionError, match=message):
        conf.apache_balancer(**kwargs)
