"""The demo's WebSocket: a Django Channels consumer (with demo/backtrac-asgi.ini)."""

import os

from channels.generic.websocket import AsyncWebsocketConsumer


class EchoConsumer(AsyncWebsocketConsumer):
    """
    Echoes each text message, after the id of the process that serves it:
    behind a balancer, a client sees which instance it reached.
    """

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=f"{os.getpid()}: {text_data}")
