"""The web server configurations rendered by runfcgi_compat.frontends.

These check the text; tests/integration/test_frontends.py runs each recipe
behind the real server and has nginx, Apache and lighttpd check the syntax.
"""
import re
from importlib import resources

import pytest
from django.test import override_settings

from runfcgi_compat import frontends as conf
from runfcgi_compat.options import OptionError


def lines(text):
    return [line.strip() for line in text.splitlines()]


ALL_RENDERED = {
    "nginx": lambda: conf.nginx(),
    "nginx-everything": lambda: conf.nginx(socket="/run/s/fcgi.sock", prefix="/app",
                                           https=True, keepalive=4, static_url="/static/",
                                           static_root="/srv/static"),
    "nginx-scgi": lambda: conf.nginx("scgi", prefix="/app", https=True),
    "nginx-main": lambda: conf.nginx_main("/srv/n", "/srv/n/site.conf", user="www-data"),
    "nginx-tls": lambda: conf.nginx(certificate="/c.pem", certificate_key="/k.pem",
                                    host_with_port=True),
    "nginx-scgi-tls": lambda: conf.nginx("scgi", certificate="/c.pem",
                                         certificate_key="/k.pem", host_with_port=True),
    "apache": lambda: conf.apache(prefix="/app", https=True, reuse=True),
    "apache-tls-static": lambda: conf.apache(certificate="/c.pem", certificate_key="/k.pem",
                                             static_url="/static/", static_root="/srv/s"),
    "lighttpd-tls-static": lambda: conf.lighttpd(certificate="/c.pem",
                                                 certificate_key="/k.pem",
                                                 static_url="/static/", static_root="/srv/s"),
    "apache-ajp": lambda: conf.apache("ajp", secret="abc"),
    "apache-fcgid": lambda: conf.apache_fcgid("/srv/www"),
    "htaccess": lambda: conf.htaccess(),
    "fcgi-script": lambda: conf.fcgi_script("/usr/bin/python3", "/srv/p", "p.settings",
                                            pythonpath=["/srv/p"]),
    "apache-main": lambda: conf.apache_main("/srv/a", "/srv/a/site.conf", modules=["fcgid"]),
    "lighttpd": lambda: conf.lighttpd(socket="/run/s/fcgi.sock"),
    "lighttpd-spawn": lambda: conf.lighttpd(socket="/run/s/fcgi.sock",
                                            bin_path="/v/bin/python /p/manage.py runfcgi",
                                            bin_environment={"A": "1"}),
    "lighttpd-main": lambda: conf.lighttpd_main("/srv/l", "/srv/l/site.conf"),
    "systemd": lambda: conf.systemd(python="/v/bin/python", project_dir="/srv/p",
                                    settings="p.settings"),
    "systemd-activated": lambda: conf.systemd(python="/v/bin/python", project_dir="/srv/p",
                                              settings="p.settings", activated=True),
    "systemd-socket": lambda: conf.systemd_socket(socket="/run/s/fcgi.sock"),
    "logrotate": lambda: conf.logrotate(["/var/log/s/err.log"], "/run/s/fcgi.pid"),
    "nginx-balancer": lambda: conf.nginx_balancer("fcgi", [("10.0.0.5", 3033)]),
    "haproxy-balancer": lambda: conf.haproxy_balancer([("10.0.0.5", 3033), "/run/s.sock"],
                                                      allow="10.0.0.2"),
    "apache-balancer": lambda: conf.apache_balancer("fcgi", [("10.0.0.5", 3033)],
                                                    allow="10.0.0.2"),
}


@pytest.mark.parametrize("name", sorted(ALL_RENDERED))
def test_rendered_text_is_clean(name):
    text = ALL_RENDERED[name]()
    assert "{%" not in text and "{{" not in text and "%}" not in text
    assert "\n\n\n" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert not re.search(r"[ \t]+$", text, re.M), "trailing whitespace"


def test_every_template_is_used():
    names = {entry.name for entry in resources.files(conf).joinpath("templates").iterdir()}
    # Every module of the package may render templates.
    source = "".join(entry.read_text() for entry in resources.files(conf).iterdir()
                     if entry.name.endswith(".py"))
    unused = sorted(name for name in names if f'"{name}"' not in source)
    assert not unused


def test_numbers_are_never_localized():
    with override_settings(USE_THOUSAND_SEPARATOR=True, NUMBER_GROUPING=3):
        text = conf.nginx(port=8000, keepalive=1000)
    assert "server 127.0.0.1:8000;" in lines(text)
    assert "keepalive 1000;" in lines(text)


# -- nginx ---------------------------------------------------------------------


def test_nginx_default_uses_stock_fastcgi_params_only():
    text = conf.nginx()
    assert "include /etc/nginx/fastcgi_params;" in lines(text)
    assert "fastcgi_pass django;" in lines(text)
    assert "server 127.0.0.1:8000;" in lines(text)
    assert "location / {" in lines(text)
    # runfcgi_compat fixes SCRIPT_NAME/PATH_INFO; the recipe must not need it.
    assert "SCRIPT_NAME" not in text and "PATH_INFO" not in text
    assert "keepalive" not in text
    assert "# Django side: manage.py runfcgi protocol=fcgi host=127.0.0.1 port=8000" in text


def test_nginx_unix_socket_and_keepalive():
    text = conf.nginx(socket="/run/mysite/fcgi.sock", keepalive=8)
    assert "server unix:/run/mysite/fcgi.sock;" in lines(text)
    assert "keepalive 8;" in lines(text)
    assert "fastcgi_keep_conn on;" in lines(text)


def test_nginx_ipv6_backend():
    assert "server [::1]:9000;" in lines(conf.nginx(host="::1", port=9000))


def test_nginx_prefix_splits_path_info():
    text = conf.nginx(prefix="/my.app/")
    assert "location /my.app/ {" in lines(text)
    assert r"fastcgi_split_path_info ^(/my\.app)(/.*)$;" in lines(text)
    assert "fastcgi_param PATH_INFO $fastcgi_path_info;" in lines(text)


def test_nginx_https():
    assert "fastcgi_param HTTPS on;" in lines(conf.nginx(https=True))
    assert "HTTPS" not in conf.nginx()


def test_tls_served_by_the_front_end():
    text = lines(conf.nginx(listen="127.0.0.1:8443", certificate="/c.pem",
                            certificate_key="/k.pem"))
    assert "listen 127.0.0.1:8443 ssl;" in text
    assert {"ssl_certificate /c.pem;", "ssl_certificate_key /k.pem;"} <= set(text)
    assert "fastcgi_param HTTPS on;" not in text  # fastcgi_params send $https.
    text = lines(conf.apache(certificate="/c.pem", certificate_key="/k.pem"))
    assert {"SSLEngine on", "SSLCertificateFile /c.pem",
            "SSLCertificateKeyFile /k.pem"} <= set(text)
    assert conf.apache_modules("fcgi", tls=True) == ("proxy", "proxy_fcgi", "ssl")
    text = lines(conf.lighttpd(certificate="/c.pem", certificate_key="/k.pem"))
    assert {'ssl.engine = "enable"', 'ssl.pemfile = "/c.pem"',
            'ssl.privkey = "/k.pem"'} <= set(text)
    with pytest.raises(OptionError, match="certificate and certificate_key go together"):
        conf.nginx(certificate="/c.pem")


def test_static_files_from_apache_and_lighttpd():
    text = lines(conf.apache(static_url="/static/", static_root="/srv/s/"))
    assert text.index('ProxyPass "/static/" "!"') < text.index(
        'ProxyPass "/" "fcgi://127.0.0.1:8000/"')
    assert 'Alias "/static/" "/srv/s/"' in text
    text = lines(conf.lighttpd(static_url="/static/", static_root="/srv/s"))
    assert 'alias.url += ( "/static/" => "/srv/s/" )' in text
    assert '$HTTP["url"] !~ "^/static/" {' in text
    with pytest.raises(OptionError, match="static_url='static' must be a path"):
        conf.apache(static_url="static", static_root="/srv/s")


def test_nginx_host_with_port():
    assert "fastcgi_param HTTP_HOST $host:$server_port;" in lines(
        conf.nginx(host_with_port=True))
    assert "scgi_param HTTP_HOST $host:$server_port;" in lines(
        conf.nginx("scgi", host_with_port=True))
    assert "HTTP_HOST" not in conf.nginx()


def test_nginx_scgi():
    text = conf.nginx("scgi", prefix="/app", https=True)
    assert "include /etc/nginx/scgi_params;" in lines(text)
    assert "scgi_param SCRIPT_NAME /app;" in lines(text)
    assert "scgi_param HTTPS on;" in lines(text)
    assert "scgi_pass django;" in lines(text)
    assert "fastcgi" not in text


def test_nginx_listen_and_limits():
    text = conf.nginx(listen="127.0.0.1:8080", server_name="example.com", max_body="1g",
                      params_dir="/usr/local/nginx/conf/")
    assert "listen 127.0.0.1:8080;" in lines(text)
    assert "server_name example.com;" in lines(text)
    assert "client_max_body_size 1g;" in lines(text)
    assert "include /usr/local/nginx/conf/fastcgi_params;" in lines(text)


@pytest.mark.parametrize("kwargs, message", [
    ({"protocol": "ajp"}, "nginx has no AJP module"),
    ({"protocol": "scgi", "keepalive": 2}, "keepalive needs protocol=fcgi"),
    ({"socket": "/a b.sock"}, "cannot be written"),
    ({"socket": "/x.sock", "port": 9000}, "cannot be combined"),
    ({"server_name": "a;b"}, "cannot be written"),
    ({"prefix": "app"}, "must start with '/'"),
    ({"static_url": "/static/"}, "needs static_root"),
    ({"protocol": "uwsgi"}, "is not one of"),
    ({"port": 70000}, "out of range"),
])
def test_nginx_refuses(kwargs, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        conf.nginx(**kwargs)


# -- Apache -----------------------------------------------------------------------


def test_apache_proxy_fcgi_tcp():
    text = conf.apache(port=9000, listen="*:8080")
    assert "<VirtualHost *:8080>" in lines(text)
    assert 'ProxyPass "/" "fcgi://127.0.0.1:9000/"' in lines(text)
    assert "# Needs: a2enmod proxy proxy_fcgi" in text


def test_apache_proxy_fcgi_unix_socket():
    text = conf.apache(socket="/run/mysite/fcgi.sock", reuse=True)
    assert 'ProxyPass "/" "unix:/run/mysite/fcgi.sock|fcgi://localhost/" enablereuse=on' in (
        lines(text))


def test_apache_scgi_and_ajp():
    assert 'ProxyPass "/" "scgi://127.0.0.1:8000/"' in lines(conf.apache("scgi"))
    text = conf.apache("ajp", host="::1", port=8009, secret="s3cret")
    assert 'ProxyPass "/" "ajp://[::1]:8009/" secret=s3cret' in lines(text)
    assert "# Needs: a2enmod proxy proxy_ajp" in text


def test_apache_ajp_uses_64_kib_packets():
    # Fewer round trips for request bodies; the other protocols keep the default.
    assert "ProxyIOBufferSize 65536" in lines(conf.apache("ajp"))
    assert "ProxyIOBufferSize" not in conf.apache("fcgi")


def test_apache_ajp_prefix_asks_for_force_script_name():
    assert 'set FORCE_SCRIPT_NAME = "/app"' in conf.apache("ajp", prefix="/app")
    assert "FORCE_SCRIPT_NAME" not in conf.apache("fcgi", prefix="/app")


def test_apache_prefix_and_https():
    text = conf.apache(prefix="/app", https=True)
    assert 'ProxyPass "/app/" "fcgi://127.0.0.1:8000/"' in lines(text)
    assert 'RedirectMatch 301 "^/app$" "/app/"' in lines(text)
    assert "SetEnv HTTPS on" in lines(text)


@pytest.mark.parametrize("kwargs, message", [
    ({"protocol": "scgi", "socket": "/x.sock"}, "over TCP only"),
    ({"protocol": "ajp", "socket": "/x.sock"}, "over TCP only"),
    ({"secret": "abc"}, "secret is an AJP setting"),
    ({"protocol": "ajp", "secret": "a b"}, "cannot be written"),
])
def test_apache_refuses(kwargs, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        conf.apache(**kwargs)


def test_apache_modules():
    assert conf.apache_modules("fcgi") == ("proxy", "proxy_fcgi")
    assert conf.apache_modules("ajp") == ("proxy", "proxy_ajp")
    assert conf.apache_modules(fcgid=True) == ("fcgid", "rewrite")


def test_apache_main_loads_each_module_once():
    text = conf.apache_main("/srv/a", "/srv/a/site.conf", port=8080,
                            modules=["proxy", "proxy_fcgi", "mime"])
    loads = re.findall(r"LoadModule (\w+)_module", text)
    assert len(loads) == len(set(loads))
    assert {"mpm_event", "authz_core", "unixd", "proxy", "proxy_fcgi"} <= set(loads)
    assert "Listen 127.0.0.1:8080" in lines(text)
    assert "User www-data" in lines(text) and "Group www-data" in lines(text)
    assert 'Include "/srv/a/site.conf"' in lines(text)


def test_fcgid_recipe():
    vhost = conf.apache_fcgid("/srv/www/", max_body_bytes=10 * 1024 * 1024)
    assert 'DocumentRoot "/srv/www"' in lines(vhost)
    assert "FcgidMaxRequestLen 10485760" in lines(vhost)
    assert int(re.search(r"FcgidMaxRequestLen (\d+)", conf.apache_fcgid("/w")).group(1)) > (
        128 * 1024)
    assert "AllowOverride FileInfo Options" in lines(vhost)
    htaccess = lines(conf.htaccess())
    assert "AddHandler fcgid-script .fcgi" in htaccess
    assert "RewriteCond %{REQUEST_FILENAME} !-f" in htaccess
    assert "RewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]" in htaccess


def test_fcgi_script_is_python_calling_runfastcgi():
    text = conf.fcgi_script("/opt/venv/bin/python", "/srv/my project", "mysite.settings",
                            pythonpath=["/srv/my project", "/opt/lib's"])
    assert text.startswith("#!/opt/venv/bin/python\n")
    compile(text, "mysite.fcgi", "exec")
    assert "from runfcgi_compat.fastcgi import runfastcgi" in lines(text)
    assert 'runfastcgi(method="threaded", daemonize="false")' in lines(text)
    assert "sys.path.insert(0, '/srv/my project')" in lines(text)
    assert 'sys.path.insert(1, "/opt/lib\'s")' in lines(text)
    assert "os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", 'mysite.settings')" in lines(text)


# -- lighttpd ----------------------------------------------------------------------


def test_lighttpd_socket_at_root():
    text = conf.lighttpd(socket="/run/s/fcgi.sock")
    assert 'server.modules += ( "mod_fastcgi" )' in lines(text)
    assert '"/" => ((' in lines(text)
    assert '"socket" => "/run/s/fcgi.sock",' in lines(text)
    assert '"check-local" => "disable",' in lines(text)
    assert '"fix-root-scriptname" => "enable",' in lines(text)
    assert "bin-path" not in text


def test_lighttpd_without_fix_root_and_under_a_prefix():
    text = conf.lighttpd(fix_root=False)
    assert '"fix-root-scriptname" => "enable",' not in lines(text)
    assert 'SCRIPT_NAME: set FORCE_SCRIPT_NAME = "" in the Django settings.' in text
    text = conf.lighttpd("scgi", port=9000, prefix="/app")
    assert '"/app" => ((' in lines(text)
    assert "scgi.server = (" in lines(text)
    assert '"host" => "127.0.0.1",' in lines(text) and '"port" => 9000,' in lines(text)
    assert "fix-root-scriptname" not in text  # only meaningful at "/"


def test_lighttpd_spawning_runfcgi():
    text = conf.lighttpd(socket="/tmp/app.sock", bin_path="/v/bin/python /p/manage.py runfcgi",
                         bin_environment={"DJANGO_SETTINGS_MODULE": "p.settings", "EMPTY": ""})
    assert '"bin-path" => "/v/bin/python /p/manage.py runfcgi",' in lines(text)
    assert '"DJANGO_SETTINGS_MODULE" => "p.settings",' in lines(text)
    assert '"EMPTY" => "",' in lines(text)
    assert '"max-procs" => 1,' in lines(text)


def test_lighttpd_refuses_ajp_and_quotes():
    with pytest.raises(OptionError, match="mod_ajp13 does not send the request path"):
        conf.lighttpd("ajp")
    with pytest.raises(OptionError, match="cannot hold quotes"):
        conf.lighttpd(bin_path='/bin/sh -c "x"')


# -- systemd ---------------------------------------------------------------------------


def test_systemd_unit_for_a_unix_socket():
    text = conf.systemd(socket="/run/mysite/fcgi.sock", python="/v/bin/python",
                        project_dir="/srv/p", settings="p.settings", method="threaded",
                        user="mysite", group="www-data")
    assert ("ExecStart=/v/bin/python manage.py runfcgi protocol=fcgi method=threaded "
            "socket=/run/mysite/fcgi.sock daemonize=false socketmode=660") in lines(text)
    assert "RuntimeDirectory=mysite" in lines(text)
    assert "WorkingDirectory=/srv/p" in lines(text)
    assert "Environment=DJANGO_SETTINGS_MODULE=p.settings" in lines(text)
    assert ("User=mysite", "Group=www-data") == tuple(
        line for line in lines(text) if line.startswith(("User=", "Group=")))


def test_systemd_unit_for_tcp():
    text = conf.systemd("scgi", port=3033, python="/v/bin/python", project_dir="/srv/p",
                        settings="p.settings")
    assert ("ExecStart=/v/bin/python manage.py runfcgi protocol=scgi method=prefork "
            "host=127.0.0.1 port=3033 daemonize=false") in lines(text)
    assert "RuntimeDirectory" not in text


def test_systemd_socket_activation():
    service = conf.systemd(python="/v/bin/python", project_dir="/srv/p", settings="p.settings",
                           activated=True, unit="mysite")
    assert ("ExecStart=/v/bin/python manage.py runfcgi protocol=fcgi method=prefork "
            "daemonize=false") in lines(service)
    assert "Requires=mysite.socket" in lines(service)
    assert "#   systemctl daemon-reload && systemctl enable --now mysite.socket" in lines(service)
    assert "RuntimeDirectory" not in service
    unix = conf.systemd_socket(socket="/run/mysite/fcgi.sock", unit="mysite", group="nginx")
    assert "ListenStream=/run/mysite/fcgi.sock" in lines(unix)
    assert "SocketGroup=nginx" in lines(unix) and "SocketMode=0660" in lines(unix)
    tcp = conf.systemd_socket("scgi", "::1", 9000)
    assert "ListenStream=[::1]:9000" in lines(tcp)
    assert "SocketMode" not in tcp


def test_logrotate_signals_runfcgi_to_reopen():
    text = conf.logrotate(["/var/log/m/out.log", "/var/log/m/err.log"], "/run/m/fcgi.pid")
    assert "/var/log/m/out.log /var/log/m/err.log {" in lines(text)
    assert '[ -s /run/m/fcgi.pid ] && kill -USR1 "$(cat /run/m/fcgi.pid)" || true' in (
        lines(text))
    assert "copytruncate" not in text
    with pytest.raises(OptionError, match="at least one log file"):
        conf.logrotate([], "/run/m/fcgi.pid")


def test_runfcgi_words():
    assert conf.runfcgi_words("ajp", "::1", 8009, method="threaded", maxrequests=10) == [
        "protocol=ajp", "method=threaded", "host=::1", "port=8009", "maxrequests=10"]
    assert conf.runfcgi_words() == ["protocol=fcgi"]


# -- hardened by default (docs/security.rst) -----------------------------------------


def test_the_runfcgi_command_shown_is_hardened():
    assert conf.hardened_words(socket="/run/m/fcgi.sock") == [
        "protocol=fcgi", "socket=/run/m/fcgi.sock", "umask=007"]
    assert conf.hardened_words(host="127.0.0.1", port=3033) == [
        "protocol=fcgi", "host=127.0.0.1", "port=3033"]
    assert conf.hardened_words(host="localhost", port=3033) == [
        "protocol=fcgi", "host=localhost", "port=3033"]
    # Another host: its web servers must be named, or protected mode refuses them.
    assert conf.hardened_words("scgi", "10.0.0.5", 3033) == [
        "protocol=scgi", "host=10.0.0.5", "port=3033", "allow=WEB_SERVER_ADDRESS"]
    assert conf.hardened_words("ajp", "10.0.0.5", 8009, allow="10.0.0.1/32",
                               ajpsecret="s3") == [
        "protocol=ajp", "host=10.0.0.5", "port=8009", "allow=10.0.0.1/32", "ajpsecret=s3"]
    assert "# Django side: manage.py runfcgi protocol=fcgi host=10.0.0.5 port=9000 " \
           "allow=WEB_SERVER_ADDRESS" in lines(conf.nginx(host="10.0.0.5", port=9000))
    assert "# Django side: manage.py runfcgi protocol=fcgi host=10.0.0.5 port=9000 " \
           "allow=10.0.0.9" in lines(conf.apache(host="10.0.0.5", port=9000, allow="10.0.0.9"))


def test_the_placeholder_cannot_be_run_unfilled():
    from runfcgi_compat.options import parse_words
    with pytest.raises(OptionError, match="'WEB_SERVER_ADDRESS' is not an IP address"):
        parse_words(conf.hardened_words("fcgi", "10.0.0.5", 3033))


HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=full", "ProtectHome=yes", "PrivateTmp=yes",
             "PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
             "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectClock=yes",
             "ProtectHostname=yes", "RestrictNamespaces=yes", "RestrictRealtime=yes",
             "RestrictSUIDSGID=yes", "LockPersonality=yes",
             "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
             "CapabilityBoundingSet="]


def test_the_systemd_unit_is_hardened():
    text = conf.systemd(socket="/run/mysite/fcgi.sock", python="/srv/venv/bin/python",
                        project_dir="/srv/p", settings="p.settings", user="mysite")
    assert [line for line in lines(text) if line in HARDENING] == HARDENING
    assert "User=mysite" in lines(text)
    assert "AmbientCapabilities" not in text


def test_systemd_hardening_leaves_out_what_would_break_serving():
    home = conf.systemd(port=3033, python="/home/me/venv/bin/python", project_dir="/srv/p",
                        settings="p.settings")
    assert "ProtectHome" not in home  # Python lives in a home directory.
    tmp = conf.systemd(socket="/tmp/mysite.sock", python="/v/bin/python", project_dir="/srv/p",
                       settings="p.settings")
    assert "PrivateTmp" not in tmp  # nginx must see the socket.
    low = conf.systemd("ajp", "10.0.0.5", 80, python="/v/bin/python", project_dir="/srv/p",
                       settings="p.settings", allow="10.0.0.1", ajpsecret="s3")
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in lines(low)
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in lines(low)
    assert ("ExecStart=/v/bin/python manage.py runfcgi protocol=ajp method=prefork "
            "host=10.0.0.5 port=80 daemonize=false allow=10.0.0.1 ajpsecret=s3") in lines(low)


@pytest.mark.parametrize("kind", ["nginx", "apache", "lighttpd"])
def test_runfcgi_config_prints_tls_and_static_files(kind):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("runfcgi_config", kind, "host=127.0.0.1", "port=3033",
                 "certificate=/c.pem", "certificatekey=/k.pem", "staticurl=/static/",
                 "staticroot=/srv/s", stdout=out)
    make = {"nginx": conf.nginx, "apache": conf.apache, "lighttpd": conf.lighttpd}[kind]
    listen = {"nginx": {"listen": "443"}, "apache": {"listen": "*:443"}}.get(kind, {})
    assert out.getvalue() == make("fcgi", "127.0.0.1", 3033, certificate="/c.pem",
                                  certificate_key="/k.pem", static_url="/static/",
                                  static_root="/srv/s", **listen)


@pytest.mark.parametrize("kind", ["caddy", "h2o", "haproxy"])
def test_runfcgi_config_prints_tls_and_static_files_of_the_newer_servers(kind):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    words = ["host=127.0.0.1", "port=3033", "certificate=/c.pem"]
    if kind == "haproxy":  # one PEM file, and no file server
        call_command("runfcgi_config", kind, *words, "docroot=/srv/p", stdout=out)
        assert out.getvalue() == conf.haproxy("fcgi", "127.0.0.1", 3033, listen="*:443",
                                              docroot="/srv/p", certificate="/c.pem")
        return
    call_command("runfcgi_config", kind, *words, "certificatekey=/k.pem",
                 "staticurl=/static/", "staticroot=/srv/s", stdout=out)
    make, listen = {"caddy": (conf.caddy, {"address": ":443"}),
                    "h2o": (conf.h2o, {"listen": "443"})}[kind]
    assert out.getvalue() == make("fcgi", "127.0.0.1", 3033, certificate="/c.pem",
                                  certificate_key="/k.pem", static_url="/static/",
                                  static_root="/srv/s", **listen)


@pytest.mark.parametrize("word, message", [
    ("certificatekey=/k.pem", "certificatekey: HAProxy reads the key from the certificate's "
                              "PEM file (the certificate, then its key)."),
    ("staticurl=/static/", "staticurl: HAProxy serves no files; serve them from another web "
                           "server."),
])
def test_runfcgi_config_haproxy_refuses_what_it_cannot_do(word, message):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as caught:
        call_command("runfcgi_config", "haproxy", "certificate=/c.pem", word)
    assert str(caught.value) == message
