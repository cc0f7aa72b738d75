"""A small project, as a user's would be, tested through runfcgi_compat.testing.

The test database is a file, so that a prefork runfcgi (another process)
can open it; ``SAMPLE_TEST_DATABASE=memory`` makes it Django's in-memory
SQLite, which only a threaded runfcgi inside the test process can share.
"""
import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "sample-project-tests-only"
DEBUG = False
ALLOWED_HOSTS = []
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "notes",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
# The failure tests point a child process at a broken URLconf, or at broken settings.
ROOT_URLCONF = os.environ.get("SAMPLE_ROOT_URLCONF", "sampleproject.urls")
if os.environ.get("SAMPLE_BREAK_SETTINGS"):
    raise ValueError("the sample settings are broken on purpose")
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
}]
WSGI_APPLICATION = "sampleproject.wsgi.application"

_test_database = os.environ.get("SAMPLE_TEST_DATABASE") or os.path.join(
    tempfile.gettempdir(), f"runfcgi-sample-{os.getpid()}.sqlite3")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "unused.sqlite3",
        "TEST": {"NAME": None if _test_database == "memory" else _test_database},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
STATIC_URL = "/static/"
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
