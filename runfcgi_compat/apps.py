from django.apps import AppConfig


class RunfcgiCompatConfig(AppConfig):
    name = "runfcgi_compat"
    verbose_name = "runfcgi (FastCGI, SCGI and AJP server)"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
