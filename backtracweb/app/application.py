"""
The site's application: known from the configuration when the service
tree is built, imported only when the server starts, after twistd forks
(importing it may start threads, which the fork would lose).  A WSGI
application runs in the thread pool, an ASGI one on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from twisted.internet.defer import Deferred, succeed

from backtracweb.app.asgi import ASGIContainer, Lifespan
from backtracweb.app.pool import ReactorCalls, ThreadPool
from backtracweb.app.slowrequests import describe_task
from backtracweb.app.wsgi import WSGIContainer
from backtracweb.config.apps import Application as AnyApplication
from backtracweb.http.request import Request

_NOT_READY = b"The application is not loaded yet.\n"


class Application:
    """
    Serves requests with the application C{load} imports, once L{start}
    has imported it (and, for ASGI, run its lifespan startup); until then
    every request is answered 503.  A WSGI application runs in C{pool}; an
    ASGI one (C{interface = "asgi"}) on the event loop of Twisted's asyncio
    reactor.

    @ivar container: the L{WSGIContainer} or L{ASGIContainer} serving it,
        once started.
    """

    def __init__(self, load: Callable[[], AnyApplication], pool: ThreadPool, reactor,
                 multiprocess: bool = False, interface: str = "wsgi",
                 start_timeout: float = 60.0) -> None:
        self._load = load
        self._pool = pool
        self._reactor = reactor
        self._multiprocess = multiprocess
        self.interface = interface
        self._start_timeout = start_timeout
        self._lifespan: Lifespan | None = None
        self.container: WSGIContainer | ASGIContainer | None = None

    def start(self) -> Deferred[None]:
        """
        Import the application and, for ASGI, run its lifespan startup;
        fires once it may serve.  It has fired on return unless the event
        loop is already running (in a worker process).

        @raise backtracweb.errors.StartupError: it cannot be imported, or
            its startup failed while the loop was not running.
        """
        application = self._load()
        if self.interface == "wsgi":
            self.container = WSGIContainer(ReactorCalls(self._reactor), self._pool, application,
                                           self._multiprocess)
            return succeed(None)
        # The loop of the asyncio reactor twistd backtracweb installed.
        loop = asyncio.get_event_loop_policy().get_event_loop()
        self._lifespan = lifespan = Lifespan(application, loop)

        def started(_: object) -> None:
            self.container = ASGIContainer(application, loop, lifespan.state)

        return lifespan.startup(self._start_timeout).addCallback(started)

    def stop(self, timeout: float) -> Deferred[None]:
        """
        Once the connections are closed: let an ASGI application's requests
        end, then run its lifespan shutdown; fires when it is over.
        """
        lifespan, container = self._lifespan, self.container
        if lifespan is None:
            return succeed(None)
        ended = container.wind_down() if isinstance(container, ASGIContainer) else succeed(None)
        return ended.addCallback(lambda _: lifespan.shutdown(timeout))

    @property
    def in_flight(self) -> int:
        """Requests handed to the application and not yet answered."""
        return self.container.in_flight if self.container is not None else 0

    @property
    def running(self) -> dict:
        """
        The requests the application is running: (start, request) by thread
        id (WSGI) or by asyncio task (ASGI).
        """
        return self.container.running if self.container is not None else {}

    @property
    def describe_running(self) -> Callable[[object], tuple[str, str]] | None:
        """How the slow-request log describes a key of L{running} (None: a thread id)."""
        return describe_task if self.interface == "asgi" else None

    def handle(self, request: Request) -> None:
        """Answer C{request} with the application, or 503 if it is not loaded yet."""
        if self.container is None:
            request.code = 503
            request.response_headers = [(b"Content-Type", b"text/plain")]
            request.respond(_NOT_READY)
            return
        self.container.handle(request)
