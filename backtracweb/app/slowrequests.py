"""
Requests that run too long: C{[server] request_warn}.

A view that hangs (on a lock, a remote service without a timeout, a
query that never returns) holds one of the pool's threads (or, under
ASGI, an asyncio task) and says nothing.  Each request still running in
the application past the threshold is logged once, with its method,
path, thread or task and the stack it is in now, so an admin finds the
hung view in the log, without a debugger.
"""

from __future__ import annotations

import asyncio
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
    request), as L{backtracweb.app.wsgi.WSGIContainer.running} keeps them;
    or, given C{describe}, any key -> (start, request), such as the asyncio
    tasks of L{backtracweb.app.asgi.ASGIContainer.running}) and logs each
    past the threshold once.

    @param describe: where a key's request runs and its stack, as text;
        by default the key is a thread id, whose stack is in C{frames}.
    """

    def __init__(self, running: Mapping[object, tuple[float, Request]],
                 frames: Callable[[], dict] = sys._current_frames,
                 describe: Callable[[object], tuple[str, str]] | None = None) -> None:
        self._running = running
        self._frames = frames  # the stack of every thread, by id
        self._describe = describe
        self._warned: set[tuple[object, float]] = set()

    def check(self, threshold: float, now: float) -> int:
        """Log the requests running longer than C{threshold} seconds not logged yet; how many."""
        if threshold <= 0:
            return 0
        running = dict(self._running)  # the pool's threads change it meanwhile
        self._warned &= {(key, start) for key, (start, _) in running.items()}
        late = [(key, start, request) for key, (start, request) in running.items()
                if now - start >= threshold and (key, start) not in self._warned]
        if not late:
            return 0
        describe = self._describe or self._thread_describer()
        for key, start, request in late:
            self._warned.add((key, start))
            where, stack = describe(key)
            _log.warn(
                "request running for {seconds:.0f} s ([server] request_warn = {threshold:g}): "
                "{method} {path} from {client}, in {where}; it is at:\n{stack}",
                seconds=now - start, threshold=threshold,
                method=request.method.decode("latin-1"),
                path=request.target.decode("latin-1"), client=request.client or request.peer,
                where=where, stack=stack.rstrip("\n"),
            )
        return len(late)

    def _thread_describer(self) -> Callable[[object], tuple[str, str]]:
        frames = self._frames()
        names = {thread.ident: thread.name for thread in threading.enumerate()}

        def describe(thread: object) -> tuple[str, str]:
            frame = frames.get(thread)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(gone)\n"
            return f"thread {names.get(thread, thread)}", stack

        return describe


def describe_task(task: asyncio.Task) -> tuple[str, str]:
    """
    Where an asyncio task's request runs, and its stack: the chain of
    coroutines (and generators) each awaits, outermost first.
    """
    frames, awaited = [], task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            frames.append((frame, frame.f_lineno))
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    stack = "".join(traceback.StackSummary.extract(frames).format()) if frames else "(done)\n"
    return f"asyncio task {task.get_name()}", stack
