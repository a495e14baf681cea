"""
The ASGI application of bench/wsload.py's WebSocket measurements
(wsecho:application): a WebSocket echo, and the benchmark site
(benchsite.asgi) for everything else, so that the servers answer the
harness's readiness check on /tiny-async as for the HTTP benchmark.

A plain ASGI callable rather than Django Channels: the echo is what every
server runs alike, and Channels' consumers and routing would add their own
cost per message, the same for every server, to what is measured.
"""

from benchsite.asgi import application as django_application


async def application(scope, receive, send):
    if scope["type"] == "websocket":
        await echo(receive, send)
    else:
        await django_application(scope, receive, send)


async def echo(receive, send):
    """Accept any WebSocket, then send every message back as it came (text or bytes)."""
    while True:
        event = await receive()
        kind = event["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            if event.get("text") is not None:
                await send({"type": "websocket.send", "text": event["text"]})
            else:
                await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
        elif kind == "websocket.disconnect":
            return
