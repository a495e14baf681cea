"""
Requests that run too long: C{[server] request_warn}.

A view that hangs (on a lock, a remote service without a timeout, a
query that never returns) holds one of the pool's threads and says
nothing.  Each request still running in the application past the
threshold is logged once, with its method, path, thread and the stack the
thread is in now, so an admin finds the hung view in the log, without a
debugger.
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import Callable, Mapping

from twisted.logger import Logger

from backtracweb.http.request import Request

_log = Logger(namespace="backtracweb.app.slowrequests")

CHECK_EVERY = 1.0
"""Seconds between two looks at the running requests."""


class SlowRequestLog:
    """
    Looks at the requests the application is running (thread id -> (start,
    request), as L{backtracweb.app.wsgi.WSGIContainer.running} keeps them) and
    logs each past the threshold once.
    """

    def __init__(self, running: Mapping[int, tuple[float, Request]],
                 frames: Callable[[], dict] = sys._current_frames) -> None:
        self._running = running
        self._frames = frames  # the stack of every thread, by id
        self._warned: set[tuple[int, float]] = set()

    def check(self, threshold: float, now: float) -> int:
        """Log the requests running longer than C{threshold} seconds not logged yet; how many."""
        if threshold <= 0:
            return 0
        running = dict(self._running)  # the pool's threads change it meanwhile
        self._warned &= {(thread, start) for thread, (start, _) in running.items()}
        late = [(thread, start, request) for thread, (start, request) in running.items()
                if now - start >= threshold and (thread, start) not in self._warned]
        if not late:
            return 0
        frames = self._frames()
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        for thread, start, request in late:
            self._warned.add((thread, start))
            frame = frames.get(thread)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(gone)\n"
            _log.warn(
                "request running for {seconds:.0f} s ([server] request_warn = {threshold:g}): "
                "{method} {path} from {client}, in thread {thread}; it is at:\n{stack}",
                seconds=now - start, threshold=threshold,
                method=request.method.decode("latin-1"),
                path=request.target.decode("latin-1"), client=request.client or request.peer,
                thread=names.get(thread, thread), stack=stack.rstrip("\n"),
            )
        return len(late)
