"""
A call repeated at an interval on a given reactor.

Twisted's L{LoopingCall} imports the global reactor when it is made,
whatever clock it is given afterwards; code that takes its reactor as an
argument (and is tested with a fake one) uses L{Repeating} instead.
"""

from __future__ import annotations

from typing import Callable


class Repeating:
    """Calls C{function} every C{interval} seconds (which it may change) once started, until stopped."""

    def __init__(self, reactor, interval: float, function: Callable[[], object]) -> None:
        self._reactor = reactor
        self.interval = interval
        self._function = function
        self._call = None

    @property
    def running(self) -> bool:
        return self._call is not None

    def start(self) -> None:
        """The first call is one interval from now."""
        if self._call is None:
            self._call = self._reactor.callLater(self.interval, self._run)

    def stop(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _run(self) -> None:
        self._call = self._reactor.callLater(self.interval, self._run)
        self._function()
