"""options.py: every caster, every default, every invalid combination."""
import os

import pytest

from runfcgi_compat import options
from runfcgi_compat.options import OptionError, parse_words

DJANGO_1_8_OPTIONS = (
    "protocol host port socket method maxrequests maxspare minspare maxchildren "
    "daemonize pidfile workdir debug outlog errlog umask").split()


def test_every_1_8_option_is_in_the_table_in_1_8_order():
    assert [o.name for o in options.OPTIONS][:16] == DJANGO_1_8_OPTIONS


def test_options_beyond_1_8_and_their_defaults():
    assert {k: v for k, v in options.DEFAULTS.items() if k not in DJANGO_1_8_OPTIONS} == {
        "socketmode": None, "user": None, "group": None, "allow": None, "ajpsecret": None,
        "idletimeout": 60, "gracetimeout": 30,
    }


def test_user_and_group_resolve_names_and_ids():
    parsed = parse_words(["user=0", "group=root"])
    assert (parsed.user, parsed.group) == ("root", "root")


def test_allow_parses_addresses_and_networks():
    parsed = parse_words(["allow=127.0.0.1, ::1,10.0.0.0/8"])
    assert parsed.allow == ("127.0.0.1/32", "::1/128", "10.0.0.0/8")


def test_allow_any_admits_every_peer_on_purpose():
    assert parse_words(["allow=any"]).allow == "any"
    assert parse_words(["allow= ANY "]).allow == "any"
    assert options.from_mapping({"allow": "any"}).allow == "any"
    assert options.peer_allowlist(parse_words(["allow=any"]), {
        "FCGI_WEB_SERVER_ADDRS": "127.0.0.1"}) == "any"


def test_peer_allowlist_falls_back_to_fcgi_web_server_addrs():
    assert options.peer_allowlist(parse_words([]), {}) is None
    assert options.peer_allowlist(parse_words([]), {"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"}) == (
        "127.0.0.1/32",)
    assert options.peer_allowlist(parse_words(["allow=::1"]), {
        "FCGI_WEB_SERVER_ADDRS": "127.0.0.1"}) == ("::1/128",)


def error_of(words):
    with pytest.raises(OptionError) as caught:
        parse_words(words)
    return str(caught.value)


def test_defaults_match_django_1_8():
    assert {k: v for k, v in options.DEFAULTS.items() if k in DJANGO_1_8_OPTIONS} == {
        "protocol": "fcgi", "host": None, "port": None, "socket": None,
        "method": "prefork", "maxrequests": 0, "maxspare": 5, "minspare": 2,
        "maxchildren": 50, "daemonize": None, "pidfile": None, "workdir": "/",
        "debug": False, "outlog": None, "errlog": None, "umask": None,
    }


def test_every_default_passes_its_own_caster():
    for option in options.OPTIONS:
        if option.default is not None:
            assert option.caster(option.name, option.default) is not None


def test_no_words_mean_fd0_in_the_foreground():
    parsed = parse_words([])
    assert parsed.bind is None
    assert parsed.daemonize is False
    assert parsed.method == "prefork"


def test_every_option_parses():
    parsed = parse_words([
        "protocol=scgi", "host=127.0.0.1", "port=3033", "method=threaded",
        "maxrequests=100", "maxspare=8", "minspare=3", "maxchildren=20",
        "daemonize=false", "pidfile=/tmp/x.pid", "workdir=/tmp", "debug=true",
        "outlog=/tmp/out.log", "errlog=/tmp/err.log", "umask=002",
    ])
    assert parsed == options.Options(
        protocol="scgi", host="127.0.0.1", port=3033, socket=None, method="threaded",
        maxrequests=100, maxspare=8, minspare=3, maxchildren=20, daemonize=False,
        pidfile="/tmp/x.pid", workdir="/tmp", debug=True, outlog="/tmp/out.log",
        errlog="/tmp/err.log", umask=0o002,
    )


def test_host_and_port_daemonize_by_default_like_1_8():
    assert parse_words(["host=127.0.0.1", "port=3033"]).daemonize is True
    assert parse_words(["socket=/tmp/s.sock"]).daemonize is True


def test_method_aliases():
    assert parse_words(["method=fork"]).method == "prefork"
    assert parse_words(["method=thread"]).method == "threaded"
    assert parse_words(["method=THREADED"]).method == "threaded"


def test_keys_are_case_insensitive_and_bare_words_mean_true():
    assert parse_words(["DEBUG"]).debug is True
    assert parse_words(["Protocol=ajp"]).protocol == "ajp"


@pytest.mark.parametrize("word", ["false", "no", "f", "off", "0", "FALSE"])
def test_false_words_turn_debug_off(word):
    # 1.8 turned tracebacks on for any value, even debug=false.
    assert parse_words([f"debug={word}"]).debug is False


@pytest.mark.parametrize("word", ["true", "yes", "t", "on", "1", "True"])
def test_true_words(word):
    assert parse_words([f"debug={word}"]).debug is True


def test_relative_paths_are_taken_from_the_starting_directory():
    parsed = parse_words(["socket=run/site.sock"])
    assert parsed.socket == os.path.join(os.getcwd(), "run", "site.sock")


def test_ipv6_hosts():
    assert parse_words(["host=::1", "port=9000"]).bind == ("::1", 9000)
    assert parse_words(["host=[::1]", "port=9000"]).bind == ("::1", 9000)


def test_umask_forms():
    assert parse_words(["umask=022"]).umask == 0o022
    assert parse_words(["umask=0o007"]).umask == 0o007
    assert parse_words(["umask=7"]).umask == 0o007


@pytest.mark.parametrize("words, message", [
    (["port=abc", "host=127.0.0.1"], "port='abc' is not a whole number."),
    (["port=0", "host=127.0.0.1"], "port='0' is out of range: use a number from 1 to 65535."),
    (["port=70000", "host=127.0.0.1"],
     "port='70000' is out of range: use a number from 1 to 65535."),
    (["maxchildren=0"], "maxchildren='0' is out of range: use a number from 1 to 10000."),
    (["maxspare=-1"], "maxspare='-1' is out of range: use a number from 1 to 10000."),
    (["minspare=two"], "minspare='two' is not a whole number."),
    (["maxrequests=-5"], "maxrequests='-5' is out of range: use a number from 0 to 2147483647."),
    (["maxrequests=1.5"], "maxrequests='1.5' is not a whole number."),
    (["protocol=http"], "protocol='http' is not one of: fcgi, scgi, ajp."),
    (["method=async"], "method='async' is not one of: prefork, threaded, fork, thread."),
    (["debug=maybe"], "debug='maybe' is not a boolean: use true/yes/on or false/no/off."),
    (["daemonize=sometimes", "socket=/tmp/s"],
     "daemonize='sometimes' is not a boolean: use true/yes/on or false/no/off."),
    (["umask=999"], "umask='999' is not an octal number such as 022."),
    (["umask=abc"], "umask='abc' is not an octal number such as 022."),
    (["umask=7777"], "umask='7777' is out of range: use 000 to 777."),
    (["host=not a host", "port=1"], "host='not a host' is not a host name or IP address."),
    (["host=:::1", "port=1"], "host=':::1' is not a host name or IP address."),
    (["bogus=1"], "Unknown option 'bogus': run 'runfcgi help' for the list."),
    (["maxchild=3"], "Unknown option 'maxchild': run 'runfcgi help' for the list."),
    (["host=127.0.0.1"], "host='127.0.0.1' needs a port as well."),
    (["port=3033"], "port='3033' needs a host as well (e.g. host=127.0.0.1)."),
    (["socket=/tmp/s", "host=127.0.0.1", "port=1"],
     "socket='/tmp/s' cannot be combined with host or port: use either socket, "
     "or host and port."),
    (["socket=/tmp/s", "port=1"],
     "socket='/tmp/s' cannot be combined with host or port: use either socket, "
     "or host and port."),
    (["minspare=6"], "minspare='6' is above maxspare=5."),
    (["maxspare=1", "minspare=2"], "minspare='2' is above maxspare=1."),
    (["daemonize=true"],
     "daemonize='true' needs host and port or socket: a server started by the web server "
     "(socket on fd 0) must stay in the foreground."),
    (["port=1", "port=2"], "port is given twice (port='1' and 'port=2')."),
    (["ajpsecret=abc"], "ajpsecret needs protocol=ajp (protocol='fcgi')."),
    (["ajpsecret=a b", "protocol=ajp"], "ajpsecret=... must be a non-empty word without spaces."),
    (["user=nosuchuser"], "user='nosuchuser' is not an account on this machine."),
    (["group=nosuchgroup"], "group='nosuchgroup' is not a group on this machine."),
    (["allow=127.0.0.1,localhost"],
     "allow='127.0.0.1,localhost': 'localhost' is not an IP address, a network or any."),
    (["allow=any,10.0.0.1"], "allow='any,10.0.0.1': any admits every peer; give it alone."),
    (["idletimeout=-1"], "idletimeout='-1' is out of range: use a number from 0 to 86400."),
    (["socketmode=660", "host=127.0.0.1", "port=1"],
     "socketmode='660' needs socket=PATH (it sets the UNIX socket's permissions)."),
])
def test_invalid_input_is_one_line_naming_option_and_value(words, message):
    assert error_of(words) == message
    assert "\n" not in message


def test_python_values_are_accepted():
    parsed = options.from_mapping({"daemonize": False, "umask": 0o022, "maxchildren": 10,
                                   "host": "127.0.0.1", "port": 3033, "debug": None})
    assert (parsed.daemonize, parsed.umask, parsed.maxchildren, parsed.port) == (
        False, 0o022, 10, 3033)


def test_true_is_not_a_number():
    with pytest.raises(OptionError, match=r"^maxchildren=True is not a whole number\.$"):
        options.from_mapping({"maxchildren": True})


def test_help_lists_every_option_with_its_default():
    text = options.help_text()
    for option in options.OPTIONS:
        line = next(line for line in text.splitlines()
                    if line.strip().startswith(option.name + "="))
        assert line.endswith(f"[{option.default_text}]"), line
