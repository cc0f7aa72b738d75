from django.apps import AppConfig


class RunfcgiCompatConfig(AppConfig):
    name = "runfcgi_compat"
    verbose_name = "runfcgi (FastCGI, SCGI and AJP server)"
