"""The runfcgi_ping command: in-process for its messages, as manage.py for its exit codes."""
import io
import re
import socket

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from tests.helpers import free_port, run_manage

TIME_LINE = re.compile(r"time: \d+\.\d ms")


@pytest.fixture(scope="module")
def fcgi_server(fcgi_peer):
    return fcgi_peer


@pytest.fixture(scope="module")
def ajp_server(ajp_peer):
    return ajp_peer


def ping(*words, verbosity=1):
    """Run the command in-process; return (stdout, stderr) or raise CommandError."""
    out, err = io.StringIO(), io.StringIO()
    call_command("runfcgi_ping", *words, stdout=out, stderr=err, verbosity=verbosity)
    return out.getvalue(), err.getvalue()


def at(address):
    return [f"host={address[0]}", f"port={address[1]}"]


@pytest.mark.parametrize("words, message", [
    ([], "Say where the server listens: host=… port=…, or socket=…."),
    (["protocol=scgi"], "Say where the server listens: host=… port=…, or socket=…."),
    (["host=127.0.0.1"], "host='127.0.0.1' needs a port as well."),
    (["port=9000"], "port='9000' needs a host as well (e.g. host=127.0.0.1)."),
    (["host=127.0.0.1", "port=http"], "port='http' is not a whole number."),
    (["host=127.0.0.1", "port=70000"],
     "port='70000' is out of range: use a number from 1 to 65535."),
    (["host=a b", "port=1"], "host='a b' is not a host name or IP address."),
    (["socket=/run/x.sock", "host=127.0.0.1", "port=1"],
     "socket='/run/x.sock' cannot be combined with host or port: "
     "use either socket, or host and port."),
    (["socket=/run/x.sock", "protocol=http"],
     "protocol='http' is not one of: fcgi, scgi, ajp."),
    (["socket=/run/x.sock", "timeout=soon"], "timeout='soon' is not a number of seconds."),
    (["socket=/run/x.sock", "timeout=0"],
     "timeout='0' is out of range: use more than 0 and at most 3600 seconds."),
    (["socket=/run/x.sock", "method=threaded"],
     "Unknown option 'method': use host, port, socket, protocol, timeout "
     "and a path starting with /."),
    (["socket=/run/x.sock", "health/"],
     "Unknown option 'health/': use host, port, socket, protocol, timeout "
     "and a path starting with /."),
    (["socket=/run/x.sock", "timeout"], "timeout needs a value, e.g. timeout=…"),
    (["socket=/run/x.sock", "/a/", "/b/"], "Give one path, not 2 (/a/ /b/)."),
    (["port=1", "port=2"], "port is given twice (port='1' and 'port=2')."),
])
def test_bad_words_name_the_option(words, message):
    with pytest.raises(CommandError) as caught:
        ping(*words)
    assert str(caught.value) == message


def test_no_server_at_a_port():
    port = free_port()
    with pytest.raises(CommandError) as caught:
        ping("host=127.0.0.1", f"port={port}")
    assert str(caught.value) == f"no server at 127.0.0.1:{port} (Connection refused)"


def test_no_server_at_a_socket(tmp_path):
    with pytest.raises(CommandError) as caught:
        ping(f"socket={tmp_path}/fcgi.sock")
    assert str(caught.value) == f"no server at {tmp_path}/fcgi.sock (No such file or directory)"


def test_an_answer_is_printed_with_the_time_taken(fcgi_server):
    out, err = ping(*at(fcgi_server), "/hello/")
    lines = out.splitlines()
    assert lines[:5] == ["200 OK", "Content-Type: application/json", "Set-Cookie: a=1",
                         "Set-Cookie: b=2", lines[4]]
    assert lines[4].startswith("Content-Length: ")
    assert TIME_LINE.fullmatch(lines[5]) and len(lines) == 6
    assert err == ""


def test_path_and_query_are_sent(ajp_server):
    out, _ = ping(*at(ajp_server), "protocol=ajp", "/caf%C3%A9/?q=1", verbosity=2)
    assert '"REQUEST_URI": "/caf%C3%A9/"' in out
    assert '"QUERY_STRING": "q=1"' in out


@pytest.mark.parametrize("allowed, host", [
    (["*"], "localhost"), ([], "localhost"), ([".example.com", "www.example.org"], "example.com"),
])
def test_host_header_is_one_the_project_allows(fcgi_server, allowed, host):
    with override_settings(ALLOWED_HOSTS=allowed):
        out, _ = ping(*at(fcgi_server), verbosity=2)
    assert f'"HTTP_HOST": "{host}"' in out


def test_verbosity_2_prints_the_body_and_fastcgi_stderr(fcgi_server):
    out, err = ping(*at(fcgi_server), "/stderr/", verbosity=2)
    head, _, rest = out.partition("\n\n")
    assert head.startswith("200 OK\n")
    assert rest.startswith('{"') and '"PATH_INFO": "/stderr/"' in rest
    assert TIME_LINE.fullmatch(out.splitlines()[-1])
    assert err == "FastCGI stderr: written to wsgi.errors\n"


def test_verbosity_0_prints_nothing(fcgi_server):
    assert ping(*at(fcgi_server), verbosity=0) == ("", "")


def test_an_error_status_is_printed_then_fails(fcgi_server):
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("runfcgi_ping", *at(fcgi_server), "/status/503", stdout=out)
    host, port = fcgi_server
    assert str(caught.value) == f"{host}:{port} answered 503 Service Unavailable"
    assert out.getvalue().startswith("503 Service Unavailable\nContent-Type: text/plain\n")


def test_a_timeout_names_the_address():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host, port = silent.getsockname()
        with pytest.raises(CommandError) as caught:
            ping(f"host={host}", f"port={port}", "protocol=scgi", "timeout=0.2")
    assert str(caught.value) == (
        f"{host}:{port} did not answer within 0.2 s (reading the response)")


# -- as manage.py, for the exit codes -----------------------------------------------------


def test_exit_status_0_on_an_answer(fcgi_server):
    out, err, code = run_manage("runfcgi_ping", *at(fcgi_server))
    assert (code, err) == (0, "")
    assert out.startswith("200 OK\n")


def test_exit_status_1_and_one_line_when_nobody_answers():
    port = free_port()
    out, err, code = run_manage("runfcgi_ping", "host=127.0.0.1", f"port={port}")
    assert (out, err, code) == (
        "", f"CommandError: no server at 127.0.0.1:{port} (Connection refused)\n", 1)


def test_exit_status_1_on_a_server_error(fcgi_server):
    out, err, code = run_manage("runfcgi_ping", *at(fcgi_server), "/status/500")
    host, port = fcgi_server
    assert (code, err) == (1, f"CommandError: {host}:{port} answered 500 Internal Server Error\n")
    assert out.startswith("500 Internal Server Error\n")
