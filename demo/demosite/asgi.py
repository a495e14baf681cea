"""
The demo through ASGI (settings.ASGI_APPLICATION, which backtracweb's django
loader serves with [app] interface = asgi): Django for HTTP, and, when
Django Channels is installed (pip install channels), a WebSocket echo at
/ws/echo.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demosite.settings")
django_application = get_asgi_application()

try:
    from channels.routing import ProtocolTypeRouter, URLRouter
except ImportError:  # without Channels: HTTP only
    application = django_application
else:
    from django.urls import path

    from demosite.consumers import EchoConsumer

    application = ProtocolTypeRouter({
        "http": django_application,
        "websocket": URLRouter([path("ws/echo", EchoConsumer.as_asgi())]),
    })
