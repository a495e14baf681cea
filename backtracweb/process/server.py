"""
The web server: the shared site, listening on every configured endpoint,
with the WSGI application loaded when the service starts.
"""

from __future__ import annotations

import gc
import socket
import time
from typing import Iterable

from twisted.application.service import IService, MultiService, Service
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from backtracweb.app.application import Application
from backtracweb.app.repeat import Repeating
from backtracweb.app.slowrequests import CHECK_EVERY, SlowRequestLog
from backtracweb.app.website import BacktracSite
from backtracweb.config.spec import readable_endpoint
from backtracweb.errors import CANNOT_START, StartupError
from backtracweb.process.tls import make_renewable

_log = Logger(namespace="backtracweb.process.server")


class ListeningService(Service):
    """
    Listens on one endpoint, binding in C{privilegedStartService} (before
    twistd drops privileges) and turning a bind failure into a
    L{StartupError} that names the address, which twistd reports before
    exiting.

    @ivar port: the listening port, once bound.
    """

    def __init__(self, description: str, factory: IProtocolFactory, reactor) -> None:
        try:
            endpoint = serverFromString(reactor, description)
        except IndexError:
            # The configuration accepts a systemd endpoint without sockets
            # so that `backtracweb check` works outside socket activation.
            raise StartupError(
                f"[server] listen = {description!r}: systemd passed no socket at that index "
                "(LISTEN_FDS is unset or too small); start the daemon through its .socket "
                "unit, or listen on a port"
            ) from None
        self.endpoint = endpoint
        self.factory = factory
        self.description = description
        self.port: IListeningPort | None = None
        self.tls = (make_renewable(endpoint, description, reactor)
                    if description.startswith("ssl:") else None)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        failed: list[Failure] = []
        binding = True

        def settle(result: object) -> None:
            if not isinstance(result, Failure):
                self.port = result
            elif binding:
                failed.append(result)
            else:  # an endpoint that binds later (a plugin's) failed then
                _log.failure("cannot listen on {address}", result,
                             address=readable_endpoint(self.description))

        # Endpoints that bind (tcp:, unix:, ssl:, systemd:) have done so by
        # the time listen returns: an error is raised now, for twistd to exit.
        self.endpoint.listen(self.factory).addBoth(settle)
        binding = False
        if failed:
            if not failed[0].check(CannotListenError):
                failed[0].raiseException()
            error = failed[0].value.socketError
            reason = getattr(error, "strerror", None) or str(error or failed[0].value)
            message = f"cannot listen on {readable_endpoint(self.description)}: {reason}"
            raise fatal(StartupError(message)) from None

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None] | None:
        """
        Stop listening without resetting a connection: those the kernel
        has queued are accepted (and drained like the others), and the
        socket refuses new ones at once, where closing it a moment later
        would reset whatever queued in between, a request a proxy could
        not safely send elsewhere if it was a POST.
        """
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        if isinstance(port, tcp.Port):  # (unix ports are tcp.Ports too)
            accept_pending(port)
            try:
                port.socket.shutdown(socket.SHUT_RD)
            except OSError:  # not a socket the kernel lets us shut down: closing will do
                pass
        return port.stopListening()


def accept_pending(port) -> int:
    """Accept every connection queued on a listening C{port}; how many there were."""
    accepted = port.sessionno
    for _ in range(10_000):  # bounded: clients may keep connecting meanwhile
        before = port.sessionno
        tcp.Port.doRead(port)  # unconditionally, whatever a subclass would decide
        if port.sessionno == before:
            break
    return port.sessionno - accepted


def fatal(error: StartupError) -> StartupError:
    """
    Log C{error} now, and return it to be raised: twistd's parent exits as
    soon as the daemon reports it, and the log must already say why.
    """
    _log.critical(CANNOT_START + "{error}", error=error)
    return error


class WebService(MultiService):
    """
    Serves the site on every endpoint.  The application is loaded in
    C{startService}, after twistd has forked, because importing it may
    start threads.  Stopping drains: see L{BacktracSite.drain}.
    """

    _log = Logger()

    def __init__(
        self, listeners: Iterable[IService], site: BacktracSite, application: Application, reactor
    ) -> None:
        super().__init__()
        self.site = site
        self.application = application
        self.ready: Deferred[None] | None = None
        """Fires once serving, after the application started (see L{Application.start})."""
        self._reactor = reactor
        self._slow_requests = Repeating(reactor, CHECK_EVERY, self._log_slow_requests)
        self._slow_request_log: SlowRequestLog | None = None
        for listener in listeners:
            listener.setServiceParent(self)

    def startService(self) -> None:
        # An ASGI application's lifespan startup runs the event loop (before
        # the reactor does, or in a worker while it does): no connection is
        # accepted until it is over.
        paused = [listener.port for listener in self
                  if callable(getattr(getattr(listener, "port", None), "stopReading", None))]
        for port in paused:
            port.stopReading()
        try:
            ready = self.application.start()
        except StartupError as e:
            raise fatal(e)

        def serve(_: object) -> None:
            for port in paused:
                port.startReading()
            self._serve()

        self.ready = ready.addCallbacks(serve, self._not_ready)

    def _not_ready(self, failure: Failure) -> Failure:
        # In a worker, whose loop was running: the supervisor is told (and
        # the ports stay paused: the worker exits).
        error = failure.value
        if isinstance(error, StartupError):
            fatal(error)
        return failure

    def _serve(self) -> None:
        self._slow_request_log = SlowRequestLog(self.application.running,
                                                describe=self.application.describe_running)
        self._slow_requests.start()
        # What exists now (the application, Django, Twisted: some 60,000
        # objects for a small site) lives as long as the process.  Frozen,
        # it is left out of the collector's full passes, which otherwise
        # scan it every few seconds under load, holding the GIL and every
        # request for 5 to 15 ms.
        gc.collect()
        gc.freeze()
        MultiService.startService(self)
        for listening in self:
            self._log.info("serving on {address}", address=readable_endpoint(listening.description))

    def _log_slow_requests(self) -> None:
        self._slow_request_log.check(self.site.settings.server.request_warn, time.monotonic())

    def stopService(self) -> Deferred[None]:
        """Stop listening, then drain the open connections."""
        timeout = self.site.settings.server.graceful_timeout
        busy = len(self.site.in_flight())
        self._log.info(
            "stopping: no new connections; waiting up to {timeout:g} s for {busy} "
            "request(s) in flight",
            timeout=timeout, busy=busy,
        )
        drained = super().stopService().addCallback(lambda _: self.site.drain(timeout))
        drained.addCallback(lambda _: self.application.stop(timeout))
        return drained.addBoth(self._stop_watching)

    def _stop_watching(self, result: object) -> object:
        # Requests that hang while draining are the ones worth knowing about.
        if self._slow_requests.running:
            self._slow_requests.stop()
        return result
