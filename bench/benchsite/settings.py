"""The example project's settings, plus one view the benchmark needs.

Every backend in the benchmark (runfcgi, flup, uWSGI, gunicorn, the
in-process loop) serves this same project.
"""
from exampleproject.settings import *  # noqa: F401,F403

ROOT_URLCONF = "benchsite.urls"
WSGI_APPLICATION = "benchsite.wsgi.application"
