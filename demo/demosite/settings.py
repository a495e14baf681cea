"""
Settings of the demo site that demo/backtrac.ini serves: a page of its own
and Django's admin, on sqlite.  Not for production.

Everything the demo writes stays inside demo/ and out of git (.gitignore):
the database and collectstatic's output.  Paths are relative to this file,
so a copy of demo/ (the tests make one per test) writes only into itself.
"""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "demo-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "demosite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "demosite" / "templates"],
        # The admin's templates come from its app directory.
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]
WSGI_APPLICATION = "demosite.wsgi.application"
# Created by `manage.py migrate`.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}
USE_TZ = True
# Django sets the process time zone from TIME_ZONE; UTC keeps the twistd log in UTC.
TIME_ZONE = "UTC"

# backtracweb serves this directory at /static/ ([static] in demo/backtrac.ini);
# Django serves no static file.  It holds the committed site.css, which no
# finder collects so that a fresh clone's page is styled before collectstatic
# ever ran, and beside it the admin's files that `manage.py collectstatic`
# copies.  (collectstatic --clear would delete site.css too: don't.)
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "static"

# What backtracweb serves with [app] interface = asgi (demo/backtrac-asgi.ini):
# Django, and with Channels installed, the WebSocket echo of demosite/asgi.py.
ASGI_APPLICATION = "demosite.asgi.application"

# The demo's own messages (the ticks view's) go to standard error, which
# twistd writes to its log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"demosite": {"handlers": ["stderr"], "level": "INFO"}},
}
