"""Django system checks for what can be known before serving."""
from importlib import metadata

from django.conf import settings
from django.core.checks import Error, Warning, register

SUPPORTED_FLUP = ("1.0",)


@register("runfcgi")
def check_flup(app_configs=None, **kwargs):
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
