"""
The ASGI application the ASGI servers in bench/ run (benchsite.asgi:application):
Django's own ASGI handler, so that an async view (/tiny-async) runs on the
server's event loop; a sync view would be sent to a thread by Django.  Its
settings are benchsite.settings_asgi (no sync-only middleware).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings_asgi")
application = get_asgi_application()
