"""
The web root: the status page, then static mappings, then the
application for every other path.
"""

from __future__ import annotations

import time
from typing import Iterable
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger

from backtracweb.app.pool import ThreadPool
from backtracweb.app.static import StaticDirectory
from backtracweb.app.status import StatusPage
from backtracweb.config.settings import StaticMapping
from backtracweb.http.request import Request

_OVERLOADED = b"The server is busy; please retry shortly.\n"
RETRY_AFTER = b"5"
_WARN_EVERY = 10.0  # seconds between two overload warnings


Route = tuple[list[bytes], StaticDirectory]


def static_routes(mappings: Iterable[StaticMapping]) -> tuple[Route, ...]:
    """The mappings as routes for L{SiteRoot}, longest prefix first."""
    routes = [([s.encode("utf-8") for s in m.segments], StaticDirectory(m.directory))
              for m in mappings]
    return tuple(sorted(routes, key=lambda route: len(route[0]), reverse=True))


class SiteRoot:
    """
    Routes each request: the status page if it is enabled and asked for,
    else the static directory with the longest matching prefix, else the
    application.

    Prefixes match whole, percent-decoded path segments, so C{/staticfoo}
    is not under C{/static}, and C{/st%61tic} is.  The application
    sees C{SCRIPT_NAME} empty and the whole path in C{PATH_INFO}.  The
    routes and limits come from the site's current settings, so a reload
    applies to the next request.

    @ivar app: the application (L{Application}), or anything that handles
        a request and counts those it has in flight.
    @ivar pool: the application's thread pool, watched for overload; none
        for an application that needs no threads.
    @ivar status: the status page.
    """

    _log = Logger()

    def __init__(self, app, pool: ThreadPool | None = None,
                 status: StatusPage | None = None) -> None:
        self.app = app
        self.pool = pool
        self.status = status if status is not None else StatusPage(pool)
        self._last_warning = float("-inf")

    def handle(self, request: Request) -> None:
        settings = request.channel.site.settings
        if settings.status_path is not None and request.path == settings.status_path:
            self.status.render(request)
            return
        if settings.routes:
            segments = request.path[1:].split(b"/")
            decoded = ([unquote_to_bytes(s) for s in segments] if b"%" in request.path
                       else segments)
            for prefix, directory in settings.routes:
                if decoded[: len(prefix)] == prefix:
                    # Still encoded: the directory decodes each segment once.
                    directory.serve(request, segments[len(prefix):])
                    return
        if self._overloaded(settings.limits.max_queue, request):
            _busy(request, _OVERLOADED, RETRY_AFTER)
            return
        self.app.handle(request)

    def _overloaded(self, max_queue: int, request: Request) -> bool:
        """
        Whether the request would wait beyond C{[limits] max_queue}: every
        thread is busy and the queue is full.
        """
        pool, app = self.pool, self.app
        if pool is None:
            return False
        # The container's own count: cheaper than the pool's, on every request.
        if app.in_flight < pool.max + max_queue:
            return False
        busy, queued = pool.busy, pool.queued
        request.channel.site.stats.refused_overload += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            self._log.warn(
                "overloaded: {busy} threads busy and {queued} requests waiting; answering 503. "
                "Raise [threadpool] max (now {max}) if the application can take more at once, "
                "or [limits] max_queue (now {max_queue}) to let more wait.",
                busy=busy, queued=queued, max=pool.max, max_queue=max_queue,
            )
        return True


def _busy(request: Request, message: bytes, retry_after: bytes | None = None) -> None:
    """503: the application cannot take the request now."""
    request.code = 503
    request.response_headers = [(b"Content-Type", b"text/plain")]
    if retry_after is not None:
        request.response_headers.append((b"Retry-After", retry_after))
    request.respond(message)
