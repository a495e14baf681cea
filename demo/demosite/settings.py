"""Settings of the demo site that etc/backtrac.ini serves.  Not for production."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "demo-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = ["django.contrib.staticfiles"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "demosite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "demosite" / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {},
    }
]
WSGI_APPLICATION = "demosite.wsgi.application"
DATABASES = {}
USE_TZ = True
# Django sets the process time zone from TIME_ZONE; UTC keeps the twistd log in UTC.
TIME_ZONE = "UTC"

# backtracweb serves this directory at /static/ ([static] in etc/backtrac.ini).
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "static"
