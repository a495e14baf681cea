"""Settings of the lbsite test site: nothing but what Django insists on."""

SECRET_KEY = "test-only-not-secret"
DEBUG = False
# The name the tests' clients ask nginx for; nginx passes it on.
ALLOWED_HOSTS = ["site.test"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "lbsite.urls"
DATABASES: dict = {}
USE_TZ = True
TIME_ZONE = "UTC"

WORK_SECONDS = 0.005
"""How long /work takes: long enough for requests to be caught in flight."""
