"""fastcgi.py: the 1.8-compatible surface."""
import pytest

import runfcgi_compat
from runfcgi_compat import fastcgi


def test_importable_from_package_and_module():
    assert callable(runfcgi_compat.runfastcgi)
    assert callable(fastcgi.runfastcgi)


def test_fastcgi_options_are_1_8_defaults():
    assert fastcgi.FASTCGI_OPTIONS["protocol"] == "fcgi"
    assert fastcgi.FASTCGI_OPTIONS["method"] == "prefork"
    assert fastcgi.FASTCGI_OPTIONS["maxchildren"] == 50
    assert fastcgi.FASTCGI_OPTIONS["daemonize"] is None


def test_fastcgi_help_lists_every_option():
    for name in fastcgi.FASTCGI_OPTIONS:
        assert f"  {name}=" in fastcgi.FASTCGI_HELP


def test_keyword_arguments_accept_python_values():
    parsed = fastcgi.build_options(method="threaded", daemonize=False, umask=0o022,
                                   maxchildren=10)
    assert (parsed.method, parsed.daemonize, parsed.umask, parsed.maxchildren) == (
        "threaded", False, 0o022, 10)


def test_keyword_arguments_accept_1_8_strings():
    parsed = fastcgi.build_options(method="threaded", daemonize="false", umask="022")
    assert (parsed.daemonize, parsed.umask) == (False, 0o022)


def test_words_override_keywords():
    assert fastcgi.build_options(["method=prefork"], method="threaded").method == "prefork"


@pytest.mark.parametrize("call, message", [
    (lambda: fastcgi.runfastcgi(["port=abc", "host=127.0.0.1"]),
     "Error: port='abc' is not a whole number.\n"),
    (lambda: fastcgi.runfastcgi(maxchildren="lots"),
     "Error: maxchildren='lots' is not a whole number.\n"),
    (lambda: fastcgi.runfastcgi(bogus=1), "Error: Unknown option 'bogus': run 'runfcgi help' "
     "for the list.\n"),
    (lambda: fastcgi.runfastcgi(workdir="/no/such/dir", daemonize=False),
     "Error: workdir='/no/such/dir' is not an existing directory.\n"),
])
def test_bad_input_prints_one_error_line_and_returns_false(call, message, capsys):
    assert call() is False
    out, err = capsys.readouterr()
    assert err == message
    assert out == ""


def test_help_prints_the_help_and_returns_false(capsys):
    assert fastcgi.runfastcgi(["help"]) is False
    assert capsys.readouterr().out == fastcgi.FASTCGI_HELP
