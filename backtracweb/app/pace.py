"""
The client's pace, for coroutines: what an ASGI application writes (a
response, WebSocket messages) waits while the client is slow to take it.
"""

from __future__ import annotations

import asyncio


class ClientPace:
    """
    Paused and resumed as the transport pauses and resumes its producer;
    a writer awaits L{wait} after each write.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._resumed: asyncio.Future | None = None  # while paused

    def pause(self) -> None:
        if self._resumed is None:
            self._resumed = self._loop.create_future()

    def resume(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    async def wait(self) -> None:
        """Return once the client takes what is sent (at once if it does)."""
        if self._resumed is not None:
            await asyncio.shield(self._resumed)
