"""Which path serves: the optional C module (``_wire.c``) or its Python twins.

Decided once, here, when the servers are imported; every module that has
a C function binds it through ``pick``, so one process never mixes the
two paths.  The C module is there when a C compiler was at hand when the
package was built; ``RUNFCGI_PURE_PYTHON=1`` leaves it unused even then,
to tell a fault of the C code from one of ours, or to compare speeds.
The start-up banner and ``manage.py check --deploy`` print ``DESCRIPTION``.
"""
import importlib
import os

FORCE_VARIABLE = "RUNFCGI_PURE_PYTHON"
MODULE = "runfcgi_compat.servers._wire"


def forced():
    """Return True when the environment asks for the Python twins.

    Like Python's own PYTHON* variables: any value but empty or ``0``.
    """
    return os.environ.get(FORCE_VARIABLE, "") not in ("", "0")


def load():
    """Return (the C module or None, a phrase saying which path serves and why)."""
    if forced():
        value = os.environ[FORCE_VARIABLE]
        return None, f"pure Python (forced by {FORCE_VARIABLE}={value})"
    try:
        wire = importlib.import_module(MODULE)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == MODULE:
            return None, ("pure Python (the C module is not installed: it is built"
                          " only when a C compiler is found at install time)")
        return None, f"pure Python (the C module cannot be imported: {exc})"  # A bad build.
    return wire, f"the C module ({MODULE})"


WIRE, DESCRIPTION = load()


def pick(name, twin):
    """Return the C module's ``name`` when the C module serves, else ``twin``."""
    return twin if WIRE is None else getattr(WIRE, name)
