"""Settings of the Django project the integration tests serve through real web servers."""
import os

SECRET_KEY = "runfcgi-compat-integration-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["runfcgi_compat"]
MIDDLEWARE = []
ROOT_URLCONF = "testproject.urls"
# Wrapped in wsgiref.validate unless TESTPROJECT_WSGI_VALIDATOR=0 (see wsgi.py).
WSGI_APPLICATION = "testproject.wsgi.application"
DATABASES = {}
USE_TZ = True
# Some set-ups cannot tell the mount point (Apache ProxyPass under a prefix).
FORCE_SCRIPT_NAME = os.environ.get("TESTPROJECT_FORCE_SCRIPT_NAME")
# The views read bodies as streams; nothing here may cap them.
DATA_UPLOAD_MAX_MEMORY_SIZE = None
# An error inside a view (a validator finding among them) reaches the
# server's log, not only the 500 it becomes.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
