"""servers/speedups.py: one place decides whether the C module or its Python twins serve."""
import os
import subprocess
import sys

import pytest

from runfcgi_compat.servers import speedups
from tests import modes

from .test_wire import TWINS

NOT_INSTALLED = ("pure Python (the C module is not installed: it is built only when a C"
                 " compiler is found at install time)")


@pytest.mark.parametrize("value, expected", [
    (None, False), ("", False), ("0", False), ("1", True), ("yes", True),
])
def test_what_forces_the_python_twins(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("RUNFCGI_PURE_PYTHON", raising=False)
    else:
        monkeypatch.setenv("RUNFCGI_PURE_PYTHON", value)
    assert speedups.forced() is expected


def test_forced_twins_name_the_variable(monkeypatch):
    monkeypatch.setenv("RUNFCGI_PURE_PYTHON", "1")
    assert speedups.load() == (None, "pure Python (forced by RUNFCGI_PURE_PYTHON=1)")


def test_a_missing_module_is_named_as_not_installed(monkeypatch):
    monkeypatch.delenv("RUNFCGI_PURE_PYTHON", raising=False)
    monkeypatch.setattr(speedups, "MODULE", "runfcgi_compat.servers._not_built")
    assert speedups.load() == (None, NOT_INSTALLED)


def test_a_module_that_fails_to_load_is_named_with_the_error(monkeypatch, tmp_path):
    monkeypatch.delenv("RUNFCGI_PURE_PYTHON", raising=False)
    (tmp_path / "broken_wire.py").write_text("raise ImportError('undefined symbol: x')\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setattr(speedups, "MODULE", "broken_wire")
    assert speedups.load() == (
        None, "pure Python (the C module cannot be imported: undefined symbol: x)")


def test_this_run_says_which_path_serves():
    if modes.PORTABLE:
        assert speedups.WIRE is None
        assert speedups.DESCRIPTION == NOT_INSTALLED
    else:
        assert speedups.WIRE is modes.wire()
        assert speedups.DESCRIPTION == "the C module (runfcgi_compat.servers._wire)"


def test_pick_gives_the_twin_without_the_module(monkeypatch):
    def twin():
        pass

    monkeypatch.setattr(speedups, "WIRE", None)
    assert speedups.pick("parse_whole", twin) is twin


def test_a_forced_process_binds_every_python_twin():
    # A new interpreter: the choice is made once, when the servers are
    # imported.  (Run from "/", so it imports what this run tests, not the checkout.)
    bound_in = [(name, module.__name__) for name, (module, _) in TWINS.items()]
    code = ("import importlib, sys\n"
            "from runfcgi_compat.servers import speedups\n"
            f"for name, module in {bound_in!r}:\n"
            "    got = getattr(importlib.import_module(module), name)\n"
            "    print(name, got.__module__, got.__qualname__)\n"
            "print(speedups.WIRE, speedups.MODULE in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True,
                          text=True, check=True, env=dict(os.environ, RUNFCGI_PURE_PYTHON="1"))
    *lines, last = done.stdout.splitlines()
    assert last == "None False"  # Not even imported.
    assert sorted(lines) == sorted(f"{name} {twin.__module__} {twin.__qualname__}"
                                   for name, (_, twin) in TWINS.items())
