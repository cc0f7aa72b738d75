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


def test_the_fast_path_is_reported_by_check_deploy_only():
    from django.core.checks import registry

    assert checks.check_fast_path in registry.registry.get_checks(include_deployment_checks=True)
    assert checks.check_fast_path not in registry.registry.get_checks()


def test_the_fast_path_check_says_which_path_serves():
    from runfcgi_compat.servers import speedups

    [message] = checks.check_fast_path()
    assert message.id == "runfcgi_compat.I006"
    assert message.msg == f"runfcgi serves its fast path in {speedups.DESCRIPTION}."
    assert (message.hint is None) == (speedups.WIRE is not None)


def test_the_fast_path_check_when_forced(monkeypatch):
    from runfcgi_compat.servers import speedups

    monkeypatch.setenv("RUNFCGI_PURE_PYTHON", "1")
    monkeypatch.setattr(speedups, "WIRE", None)
    monkeypatch.setattr(speedups, "DESCRIPTION", speedups.load()[1])
    [message] = checks.check_fast_path()
    assert message.msg == ("runfcgi serves its fast path in pure Python "
                           "(forced by RUNFCGI_PURE_PYTHON=1).")
    assert message.hint == "Unset RUNFCGI_PURE_PYTHON to use the C module, if it is installed."
