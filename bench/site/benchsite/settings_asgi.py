"""
The settings the ASGI servers in bench/ run the site with (benchsite.asgi):
those of benchsite.settings without WhiteNoise's middleware.

WhiteNoise's middleware is sync-only: under ASGI, Django would call it in
a thread (sync_to_async) and the async view from there back on the event
loop (async_to_sync), two hand-overs between threads a request, for every
server alike, and /tiny-async would measure those instead of the server.
The ASGI servers are not run on the WhiteNoise endpoints.
"""

from benchsite.settings import *  # noqa: F401,F403

MIDDLEWARE: list[str] = []
