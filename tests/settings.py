"""Settings for the unit tests: the app and nothing else."""
SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["runfcgi_compat"]
MIDDLEWARE = []
ROOT_URLCONF = "tests.urls"
WSGI_APPLICATION = None
DATABASES = {}
USE_TZ = True
