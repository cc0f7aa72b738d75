"""checks.py: the system checks."""
from django.test import override_settings

from runfcgi_compat import checks


def ids(messages):
    return [message.id for message in messages]


def test_flup_is_importable_and_supported():
    assert checks.check_flup() == []


def test_no_prefix_no_warning():
    assert checks.check_script_prefix() == []


@override_settings(FORCE_SCRIPT_NAME="/app")
def test_good_prefix():
    assert checks.check_script_prefix() == []


@override_settings(FORCE_SCRIPT_NAME="app/")
def test_prefix_without_leading_slash_and_with_trailing_slash():
    assert ids(checks.check_script_prefix()) == ["runfcgi_compat.W003", "runfcgi_compat.W004"]


@override_settings(FORCE_SCRIPT_NAME="/")
def test_root_prefix():
    messages = checks.check_script_prefix()
    assert ids(messages) == ["runfcgi_compat.W005"]
    assert messages[0].msg == "FORCE_SCRIPT_NAME='/' makes every reversed URL start with '//'."
