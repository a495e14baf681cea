"""
The listening web server: Twisted's Site behind an endpoint, with the WSGI
application loaded when the service starts.
"""

from __future__ import annotations

import weakref
from typing import Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.http import HTTPChannel
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource

from backtracweb.apps import WSGIApplication
from backtracweb.errors import StartupError
from backtracweb.request import BacktracRequest
from backtracweb.resource import SiteRoot


class TrackingSite(Site):
    """
    A L{Site} that remembers its open connections, so that stopping the
    server can close them instead of waiting for the reactor's final
    disconnect, which only comes after every service has stopped.

    It speaks HTTP/1.1 through L{HTTPChannel} directly: Twisted's default
    wrapper exists to switch to HTTP/2 after TLS negotiation, which a
    plain-TCP server never does, and it hides the channel's transport.
    """

    displayTracebacks = False
    requestFactory = BacktracRequest
    protocol = HTTPChannel

    def __init__(self, root: SiteRoot, *args, **kwargs) -> None:
        super().__init__(root, *args, **kwargs)
        self.connections: weakref.WeakSet = weakref.WeakSet()

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            self.connections.add(protocol)
        return protocol

    def close_connections(self) -> None:
        """Close every open connection once its pending output is sent."""
        for channel in list(self.connections):
            if channel.transport is not None:
                channel.transport.loseConnection()


class WebService(StreamServerEndpointService):
    """
    Serves the site on an endpoint.

    The port is bound in C{privilegedStartService}, before twistd drops
    privileges; the application is loaded in C{startService}, after twistd
    has forked, because importing it may start threads.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        address: str,
        site: TrackingSite,
        load_app: Callable[[], WSGIApplication],
        pool: ThreadPool,
        reactor,
    ) -> None:
        super().__init__(endpoint, site)
        self._raiseSynchronously = True  # so twistd reports bind errors and exits
        self.address = address
        self._load_app = load_app
        self._pool = pool
        self._reactor = reactor

    @property
    def root(self) -> SiteRoot:
        return self.factory.resource

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            error = e.socketError
            reason = getattr(error, "strerror", None) or str(error or e)
            raise StartupError(f"cannot listen on {self.address}: {reason}") from None

    def startService(self) -> None:
        application = self._load_app()
        self.root.app = WSGIResource(self._reactor, self._pool, application)
        super().startService()
        self._log.info("serving on {address}", address=self.address)

    def stopService(self) -> Deferred[None]:
        stopped = super().stopService()
        self.factory.close_connections()
        return stopped
