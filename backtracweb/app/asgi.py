"""
The ASGI container: runs an ASGI 3 application's coroutines on the
asyncio event loop under Twisted's asyncio reactor, so the application,
the reactor and every connection share one thread and no message crosses
threads.

Each request is one task: C{receive} gives it the body (kept whole before
the request is handed over, as for WSGI) in parts, then
C{http.disconnect} once the client is gone or the response is sent;
C{send} writes the response as it comes, waiting while the client is slow
to take it.  A task that fails before its response starts is answered
500; one that fails after, or returns before finishing its response, has
its connection closed, so the client cannot mistake a part for the whole.

The C{lifespan} protocol runs in L{Lifespan}: startup before the server
accepts a connection, shutdown once it has drained.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from typing import Any, Awaitable, Callable
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from backtracweb.app.pace import ClientPace
from backtracweb.app.sendfile import send_part
from backtracweb.app.websocket import (
    ClientDisconnected, WebSocketSession, handshake_problem, refuse_handshake, wants_websocket,
)
from backtracweb.errors import StartupError
from backtracweb.http.body import ArrivingBody
from backtracweb.http.head import sendable_field
from backtracweb.http.request import Request

_log = Logger(namespace="backtracweb.app.asgi")

ASGI = {"version": "3.0", "spec_version": "2.4"}
"""The C{asgi} key of every scope: ASGI 3, HTTP spec 2.4 (disconnects raise in send)."""
BODY_PART = 64 * 1024
"""The most body bytes one C{http.request} message carries."""
AFTER_DISCONNECT = 1.0
"""
Seconds the tasks of requests cut short by a stop get to end once told
their client is gone, before they are cancelled and the lifespan shutdown
runs.
"""
EXTENSIONS = {"http.response.pathsend": {}}
"""Extensions offered in the scope: files sent by their path (with sendfile where possible)."""

_SERVER_ERROR = b"Internal Server Error\n"

ASGIApplication = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                           Awaitable[None]]


def make_scope(request: Request, state: dict | None = None) -> dict[str, Any]:
    """The ASGI C{http} scope of C{request}, as a trusted proxy may have told it."""
    path = request.path
    decoded = unquote_to_bytes(path) if b"%" in path else path
    headers = request.headers
    if request.host is not None and request.header(b"host") != request.host:
        # An absolute-form target's authority, or a trusted proxy's host.
        headers = [(name, value) for name, value in headers if name != b"host"]
        headers.append((b"host", request.host))
    connection = request.channel.connection
    scope = {
        "type": "http",
        "asgi": ASGI,
        "http_version": request.version[5:].decode("ascii"),
        "method": request.method.decode("ascii"),
        "scheme": "https" if request.secure else "http",
        "path": decoded.decode("utf-8", "surrogateescape"),
        "raw_path": path,
        "query_string": request.query,
        "root_path": "",
        "headers": headers,
        "client": (request.client, request.client_port) if request.client else None,
        "server": (request.server_name, request.server_port) if connection.server_port else None,
        "extensions": EXTENSIONS,
    }
    if state is not None:
        scope["state"] = dict(state)  # each request its own copy (ASGI lifespan state)
    return scope


class ASGIContainer:
    """
    Serves every request it is given with an ASGI application, each as a
    task on C{loop}, the event loop the reactor runs.

    @ivar state: what the application's lifespan startup kept for its
        requests (a copy in each scope), if it supports lifespan.
    """

    def __init__(self, application: ASGIApplication, loop: asyncio.AbstractEventLoop,
                 state: dict | None = None) -> None:
        self.application = application
        self.state = state
        self.running: dict[asyncio.Task, tuple[float, Request]] = {}
        """The HTTP requests the application is running: (start, request) by task."""
        self.loop = loop
        """The event loop its tasks run on."""
        self._tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        """Requests handed to the application and not yet done."""
        return len(self._tasks)

    def handle(self, request: Request) -> None:
        if wants_websocket(request):
            self._websocket(request)
            return
        cycle = _Cycle(self, request)
        task = self.loop.create_task(
            self.application(make_scope(request, self.state), cycle.receive, cycle.send))
        self._tasks.add(task)
        self.running[task] = (time.monotonic(), request)
        task.add_done_callback(self._ended)
        task.add_done_callback(cycle.done)

    def _ended(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self.running.pop(task, None)

    def _websocket(self, request: Request) -> None:
        problem = handshake_problem(request)
        if problem is not None:
            refuse_handshake(request, *problem)
            return
        session = WebSocketSession(request, self.loop)
        scope = session.scope(make_scope(request, self.state))
        task = self.loop.create_task(self.application(scope, session.receive, session.send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def done(task: asyncio.Task) -> None:
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, ClientDisconnected):
                _log.failure("ASGI application error in WebSocket {path}", _failure_of(error),
                             path=request.target.decode("latin-1"))
            session.application_done(error)

        task.add_done_callback(done)

    def wind_down(self, grace: float = AFTER_DISCONNECT) -> Deferred[None]:
        """
        Fires once every request's task has ended: those still running after
        C{grace} seconds are cancelled (the server is stopping; their clients
        are gone).
        """
        return Deferred.fromFuture(self.loop.create_task(self._wind_down(grace)))

    async def _wind_down(self, grace: float) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=grace)


class _Cycle:
    """One request's trip through the application: its C{receive}, C{send} and end."""

    def __init__(self, container: ASGIContainer, request: Request) -> None:
        self._container = container
        self._loop = container.loop
        self.request = request
        # The site hands requests over at their head: a body arrives as an
        # ArrivingBody (any other input is no body).
        self._body = request.input
        self._receiving_body = True  # until its last http.request message
        self._body_error: str | None = None  # why the body could not be read whole
        self._started = False  # http.response.start received
        self._status = 200
        self._headers: list[tuple[bytes, bytes]] = []
        self._ended = False  # the response is complete (or abandoned)
        self._gone = False  # the client went away
        self._disconnected: asyncio.Future | None = None  # what receive waits on, once read
        self._pace = ClientPace(self._loop)
        request.on_connection_lost = self._lost

    # -- receive ----------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self._receiving_body and not self._gone:
            message = await self._request_part()
            if message is not None:
                return message
        if self._body_error is not None:
            return {"type": "http.disconnect"}  # the rest of the body will not come
        if not self._gone and not self._ended:
            if self._disconnected is None:
                self._disconnected = self._loop.create_future()
            await asyncio.shield(self._disconnected)
        return {"type": "http.disconnect"}

    async def _request_part(self) -> dict[str, Any] | None:
        """The next part of the request's body, as it arrives; None if the rest will not come."""
        body = self._body
        if not isinstance(body, ArrivingBody):  # no body: one empty message
            self._receiving_body = False
            return {"type": "http.request", "body": b"", "more_body": False}
        while not self._gone:
            part = body.take(BODY_PART)
            if part or body.exhausted:
                self._receiving_body = not body.exhausted
                return {"type": "http.request", "body": part, "more_body": self._receiving_body}
            if body.error is not None:
                self._receiving_body, self._body_error = False, body.error
                return None
            more = self._loop.create_future()
            body.when_more(lambda: more.done() or more.set_result(None))
            await more
        self._receiving_body = False
        return None

    # -- send -----------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        if self._gone:
            raise ClientDisconnected("the client went away")
        kind = message.get("type")
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("http.response.start was sent twice")
            self._start(message)
        elif kind == "http.response.body":
            if not self._started or self._ended:
                raise RuntimeError("http.response.body was sent "
                                   + ("after the response ended" if self._ended else
                                      "before http.response.start"))
            body = message.get("body", b"")
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError(f"the response body must be bytes, not {type(body).__name__}")
            await self._body_part(bytes(body), bool(message.get("more_body", False)))
        elif kind == "http.response.pathsend":
            if not self._started or self._ended:
                raise RuntimeError("http.response.pathsend needs http.response.start first, "
                                   "and no body")
            self._send_path(message.get("path"))
        else:
            raise ValueError(f"an HTTP application cannot send a {kind!r} message")

    def _start(self, message: dict[str, Any]) -> None:
        status = message.get("status")
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"the status must be an integer from 100 to 599, not {status!r}")
        if message.get("trailers"):
            raise ValueError("response trailers are not supported (http.response.trailers)")
        headers = []
        for header in message.get("headers", ()):
            try:
                name, value = header
                name, value = bytes(name), bytes(value)
            except (TypeError, ValueError):
                raise TypeError(f"a header must be a pair of bytes, not {header!r}") from None
            if not sendable_field(name, value):
                raise ValueError(f"header {header!r} cannot be sent: names are tokens, values "
                                 "latin-1 without control characters")
            headers.append((name, value))
        self._started, self._status, self._headers = True, status, headers

    def _head(self) -> None:
        request = self.request
        request.code = self._status
        # (The request replaces the application's Server and Date.)
        request.response_headers = self._headers

    async def _body_part(self, body: bytes, more: bool) -> None:
        request = self.request
        if not more:
            self._ended = True
            if not request.started_writing:
                self._head()
                request.respond(body)  # whole: with its length, in one write
            else:
                if request.producer is self:
                    request.unregister_producer()
                request.write(body)
                request.finish()
            self._wake_receive()
            return
        if not request.started_writing:
            self._head()
            request.register_producer(self)
        if body:
            request.write(body)
        await self._pace.wait()
        if self._gone:
            raise ClientDisconnected("the client went away")

    def _send_path(self, path: object) -> None:
        if not isinstance(path, str):
            raise TypeError(f"http.response.pathsend needs a path (str), not {path!r}")
        file = open(path, "rb")  # noqa: SIM115 - send_part closes it
        try:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"http.response.pathsend: {path} is not a regular file")
        except BaseException:
            file.close()
            raise
        self._ended = True
        self._head()
        send_part(self.request, file, 0, info.st_size)
        self._wake_receive()

    # -- the connection ---------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._pace.pause()

    def resumeProducing(self) -> None:
        self._pace.resume()

    def stopProducing(self) -> None:
        self._lost()

    def _lost(self) -> None:
        """The client went away before the response was complete."""
        self._gone = True
        self.resumeProducing()  # a send waiting for the client raises
        self._wake_receive()

    def _wake_receive(self) -> None:
        waiting, self._disconnected = self._disconnected, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)
        if waiting is not None:
            self._disconnected = waiting  # later receives return at once

    # -- the end --------------------------------------------------------------------

    def done(self, task: asyncio.Task) -> None:
        request = self.request
        if task.cancelled():
            if self._gone:
                return  # cut short by a stop, its client gone: nothing to say
            failure = "was cancelled"
        else:
            error = task.exception()
            if error is None:
                if self._ended or self._gone:
                    return
                failure = "returned without completing its response"
            elif self._gone and isinstance(error, (ClientDisconnected, asyncio.CancelledError)):
                return  # it noticed the client left
            else:
                _log.failure("ASGI application error in {method} {path}",
                             _failure_of(error), method=request.method.decode("latin-1"),
                             path=request.target.decode("latin-1"))
                failure = None
        if (failure is not None and self._body_error is not None
                and not request.started_writing and not self._gone):
            # It stopped because its body could not be read whole: say why.
            self._ended = True
            request.code, request.reason = 400, None
            request.response_headers = [(b"Content-Type", b"text/plain; charset=utf-8")]
            request.respond(f"The request body could not be read: {self._body_error}.\n"
                            .encode("utf-8"))
            return
        if failure is not None:
            _log.error("the ASGI application {failure} for {method} {path}", failure=failure,
                       method=request.method.decode("latin-1"),
                       path=request.target.decode("latin-1"))
        self._ended = True
        self._wake_receive()
        if self._gone:
            return
        if request.started_writing:
            request.close_connection()  # the client must not take a part for the whole
        else:
            request.code, request.reason = 500, None
            request.response_headers = [(b"Content-Type", b"text/plain")]
            request.respond(_SERVER_ERROR)


def _failure_of(error: BaseException) -> Failure:
    """A task's exception as a Failure, with its traceback, for the log."""
    return Failure(error, type(error), error.__traceback__)


class Lifespan:
    """
    The ASGI C{lifespan} protocol of an application: L{startup} before
    the server serves, L{shutdown} once it has drained.  An application
    that does not support it (it raises before sending anything, as
    Django's does) is served without.

    @ivar state: the lifespan state the application filled at startup,
        copied into every request's scope.
    """

    def __init__(self, application: ASGIApplication, loop: asyncio.AbstractEventLoop) -> None:
        self._application = application
        self._loop = loop
        self.state: dict | None = {}
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.supported = True

    def startup(self, timeout: float) -> Deferred[None]:
        """
        Run the application's startup; fires when it is complete, or fails
        with a L{StartupError} saying why.  Where the loop does not run yet
        (twistd starts the services before the reactor), it is run until
        the startup is over: the Deferred has fired on return, and a
        failure is raised instead.

        @raise StartupError: the startup failed, and the loop was not running.
        """
        scope = {"type": "lifespan", "asgi": ASGI, "state": self.state}
        self._task = self._loop.create_task(self._application(scope, self._receive, self._send))
        step = self._loop.create_task(self._exchange("startup", timeout))
        if self._loop.is_running():
            return Deferred.fromFuture(step)
        self._loop.run_until_complete(step)
        return succeed(None)

    def shutdown(self, timeout: float) -> Deferred[None]:
        """Run the application's shutdown (if it took part in startup); fires when over."""
        if not self.supported or self._task is None or self._task.done():
            return succeed(None)
        step = self._loop.create_task(self._exchange("shutdown", timeout))

        def failed(failure):
            _log.error("{error}", error=failure.getErrorMessage())

        return Deferred.fromFuture(step).addErrback(failed)

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        await self._outbox.put(message)

    async def _exchange(self, phase: str, timeout: float) -> None:
        await self._inbox.put({"type": f"lifespan.{phase}"})
        answer = self._loop.create_task(self._outbox.get())
        done, _ = await asyncio.wait({answer, self._task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if answer not in done:
            answer.cancel()
            if self._task in done:
                error = None if self._task.cancelled() else self._task.exception()
                if phase == "startup":
                    self.supported = False
                    _log.info("the ASGI application does not take part in the lifespan "
                              "protocol ({error}); serving without", error=_one_line(error))
                    self.state = None
                    return
                raise StartupError(f"the ASGI application stopped during lifespan {phase}: "
                                   f"{_one_line(error)}")
            raise StartupError(f"the ASGI application's lifespan {phase} took longer than "
                               f"{timeout:g} s")
        message = answer.result()
        kind = message.get("type")
        if kind == f"lifespan.{phase}.complete":
            return
        if kind == f"lifespan.{phase}.failed":
            raise StartupError(f"the ASGI application's lifespan {phase} failed: "
                               f"{message.get('message') or '(no message)'}")
        raise StartupError(f"the ASGI application sent {kind!r} during lifespan {phase}")


def _one_line(error: BaseException | None) -> str:
    if error is None:
        return "it returned"
    return f"{type(error).__name__}: {error}".splitlines()[0]
