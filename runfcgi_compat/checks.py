"""Django system checks for what can be known before serving.

Imported in every process that loads the project (the app registers the
checks); what only a check needs is imported inside it: runfcgi runs the
checks in a child process (management/commands/runfcgi.py), so the
prefork master and its workers never carry it.
"""
from django.conf import settings
from django.core.checks import Error, Info, Warning, register

SUPPORTED_FLUP = ("1.0",)


@register("runfcgi")
def check_flup(app_configs=None, **kwargs):
    from importlib import metadata  # zipfile, csv, email...: ~1 MiB

    try:
        import flup.server.fcgi_base  # noqa: F401
    except ImportError as exc:
        return [Error(
            f"flup cannot be imported ({exc}).",
            hint="Install it: pip install 'flup>=1.0.3,<1.1'.",
            id="runfcgi_compat.E001",
        )]
    try:
        version = metadata.version("flup")
    except metadata.PackageNotFoundError:
        return []  # Imported from a checkout: nothing to compare.
    if not version.startswith(SUPPORTED_FLUP):
        return [Warning(
            f"flup {version} is installed; runfcgi_compat is tested with flup 1.0.x.",
            hint="Install flup>=1.0.3,<1.1, or report what breaks.",
            id="runfcgi_compat.W002",
        )]
    return []


@register("runfcgi")
def check_script_prefix(app_configs=None, **kwargs):
    prefix = getattr(settings, "FORCE_SCRIPT_NAME", None)
    if prefix is None:
        return []
    problems = []
    if prefix and not prefix.startswith("/"):
        problems.append(Warning(
            f"FORCE_SCRIPT_NAME={prefix!r} does not start with '/'.",
            hint="Use the URL prefix the site is mounted at, e.g. '/app', or '' for the root.",
            id="runfcgi_compat.W003",
        ))
    if prefix.endswith("/") and prefix != "/":
        problems.append(Warning(
            f"FORCE_SCRIPT_NAME={prefix!r} ends with '/': reversed URLs will contain '//'.",
            hint=f"Use {prefix.rstrip('/')!r}.",
            id="runfcgi_compat.W004",
        ))
    if prefix == "/":
        problems.append(Warning(
            "FORCE_SCRIPT_NAME='/' makes every reversed URL start with '//'.",
            hint="Use '' for a site mounted at the root.",
            id="runfcgi_compat.W005",
        ))
    return problems


@register("runfcgi", deploy=True)
def check_fast_path(app_configs=None, **kwargs):
    """Say which path will serve: the C module or its pure-Python twins.

    A deploy check, so only ``check --deploy`` prints it.  It reads this
    process's environment: run it with the server's (RUNFCGI_PURE_PYTHON).
    """
    from .servers import speedups

    if speedups.WIRE is not None:
        hint = None
    elif speedups.forced():
        hint = f"Unset {speedups.FORCE_VARIABLE} to use the C module, if it is installed."
    else:
        hint = ("Optional: reinstall with a C compiler and Python's headers at hand "
                "(e.g. gcc and python3-dev) for the C module; the results are the same.")
    return [Info(f"runfcgi serves its fast path in {speedups.DESCRIPTION}.", hint=hint,
                 id="runfcgi_compat.I006")]
