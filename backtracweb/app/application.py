"""
The site's application: known from the configuration when the service
tree is built, imported only when the server starts, after twistd forks
(importing it may start threads, which the fork would lose).
"""

from __future__ import annotations

from typing import Callable

from backtracweb.app.pool import ReactorCalls, ThreadPool
from backtracweb.app.wsgi import WSGIContainer
from backtracweb.config.apps import WSGIApplication
from backtracweb.http.request import Request

_NOT_READY = b"The application is not loaded yet.\n"


class Application:
    """
    Serves requests with the WSGI application C{load} imports, run in
    C{pool}, once L{start} has imported it; until then every request is
    answered 503.

    @ivar container: the L{WSGIContainer} serving it, once started.
    """

    def __init__(self, load: Callable[[], WSGIApplication], pool: ThreadPool, reactor,
                 multiprocess: bool = False) -> None:
        self._load = load
        self._pool = pool
        self._reactor = reactor
        self._multiprocess = multiprocess
        self.container: WSGIContainer | None = None

    def start(self) -> None:
        """
        Import the application.

        @raise backtracweb.errors.StartupError: it cannot be imported.
        """
        self.container = WSGIContainer(ReactorCalls(self._reactor), self._pool, self._load(),
                                       self._multiprocess)

    @property
    def in_flight(self) -> int:
        """Requests handed to the application and not yet answered."""
        return self.container.in_flight if self.container is not None else 0

    @property
    def running(self) -> dict[int, tuple[float, Request]]:
        """The requests the application is running, by thread id (see L{WSGIContainer})."""
        return self.container.running if self.container is not None else {}

    def handle(self, request: Request) -> None:
        """Answer C{request} with the application, or 503 if it is not loaded yet."""
        if self.container is None:
            request.code = 503
            request.response_headers = [(b"Content-Type", b"text/plain")]
            request.respond(_NOT_READY)
            return
        self.container.handle(request)
