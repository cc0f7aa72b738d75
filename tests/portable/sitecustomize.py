"""The portable mode: Python as on a POSIX system without Linux's epoll and
eventfd, and without runfcgi's C module (tox -e py312-django52-portable).

tox copies this file into that environment's site-packages (see tox.ini),
so every Python process of the environment runs it at start-up: the test
runner, and every server the tests start, whatever PYTHONPATH the tests
give them.

* ``select.epoll`` and the ``EPOLL*`` constants are gone, so
  ``selectors.DefaultSelector`` is the poll one (as where the system has
  neither epoll nor kqueue);
* ``os.eventfd`` and its helpers and constants are gone (macOS, the BSDs);
* ``runfcgi_compat.servers._wire`` cannot be imported, so each function of
  the C module runs as its Python twin.

tests/unit/test_wire.py checks that all of this holds in the mode.
"""
import os
import select
import sys

HIDDEN_MODULE = "runfcgi_compat.servers._wire"

if "selectors" in sys.modules:
    # It chose its DefaultSelector when imported; too late to hide epoll.
    raise RuntimeError("the portable mode must run before selectors is imported")
for name in [n for n in dir(select) if n == "epoll" or n.startswith("EPOLL")]:
    delattr(select, name)
for name in [n for n in dir(os) if n.startswith(("eventfd", "EFD_"))]:
    delattr(os, name)


class HideCModule:
    """A finder that answers every import of the C module with ImportError.

    A finder, not ``sys.modules[HIDDEN_MODULE] = None``: the tests' set-up
    clears runfcgi_compat's entries from ``sys.modules`` (tests/conftest.py).
    """

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == HIDDEN_MODULE:
            raise ModuleNotFoundError(f"{name} is hidden in the portable mode", name=name)
        return None  # Any other module: the next finder's.


sys.meta_path.insert(0, HideCModule)
