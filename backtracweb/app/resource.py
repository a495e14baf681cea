"""
The web root: the status page, then static mappings, then the WSGI
application for every other path.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from backtracweb.app.pool import WorkerPool
from backtracweb.app.static import StaticDirectory
from backtracweb.app.status import render_status
from backtracweb.config.settings import StaticMapping
from backtracweb.http.request import Request

_NOT_READY = b"The application is not loaded yet.\n"
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
    WSGI application.

    Prefixes match whole, percent-decoded path segments, so C{/staticfoo}
    is not under C{/static}, and C{/st%61tic} is.  The application
    sees C{SCRIPT_NAME} empty and the whole path in C{PATH_INFO}.  The
    routes and limits come from the site's current settings, so a reload
    applies to the next request.

    @ivar app: the WSGI container; set when the application has been
        loaded, which happens after twistd forks.
    @ivar pool: the application's thread pool, watched for overload.
    @ivar whole_server: in a worker of several, asks the supervisor for
        the whole server's numbers, for the status page.
    """

    _log = Logger()

    def __init__(self, whole_server: Callable[[], Deferred[dict]] | None = None) -> None:
        self.app = None
        self.pool: WorkerPool | None = None
        self.whole_server = whole_server
        self._last_warning = float("-inf")

    def handle(self, request: Request) -> None:
        settings = request.channel.site.settings
        if settings.status_path is not None and request.path == settings.status_path:
            render_status(request, self.pool, self.whole_server)
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
        if self.app is None:
            _busy(request, _NOT_READY)
            return
        if self._overloaded(settings.max_queue, request):
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
