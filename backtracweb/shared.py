"""
Listening sockets shared by worker processes (C{[server] workers}): bound
once by the supervisor, inherited by every worker, which take turns
accepting on them.
"""

from __future__ import annotations

import os
import socket

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ServerFactory

from backtracweb.server import ListeningService, accept_pending
from backtracweb.website import BacktracSite


class SharedSocketService(ListeningService):
    """
    In a supervisor: binds like L{ListeningService} (before twistd drops
    privileges) but never accepts; its worker processes inherit the
    socket and accept on it.
    """

    def __init__(self, description: str, reactor) -> None:
        factory = ServerFactory()
        factory.noisy = False  # it never starts a protocol: nothing to say
        super().__init__(description, factory, reactor)
        self.port = None

    def stopService(self) -> Deferred[None]:
        # Close our copy only: the workers accept what is queued, and the
        # socket stays open until the last of them closes theirs.
        return StreamServerEndpointService.stopService(self)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()

        def keep(port):
            # Nothing has been accepted yet: the reactor is not running.
            port.stopReading()
            self.port = port
            return port

        self._waitingForPort.addCallback(keep)

    def fileno(self) -> int:
        """The listening socket, for the workers to inherit."""
        return self.port.fileno()


class InheritedSocketService(Service):
    """
    In a worker process: accepts on a listening socket inherited from the
    supervisor as file descriptor C{fd}, bound to C{description}.
    """

    def __init__(self, fd: int, description: str, site: BacktracSite, reactor) -> None:
        self.fd = fd
        self.description = description
        self._site = site
        self._reactor = reactor
        self._port = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        with socket.socket(fileno=os.dup(self.fd)) as inherited:
            family = inherited.family
        factory = self._site
        if self.description.startswith("ssl:"):
            # The adopted socket is plain TCP; TLS is layered on top as the
            # ssl: endpoint would have done it, with the context it builds.
            from twisted.protocols.tls import TLSMemoryBIOFactory  # needs pyOpenSSL

            endpoint = serverFromString(self._reactor, self.description)
            factory = TLSMemoryBIOFactory(endpoint._sslContextFactory, False, self._site)
        self._port = _adopt(self._reactor, self.fd, family, factory)
        os.close(self.fd)  # the port holds a duplicate

    def startService(self) -> None:
        super().startService()
        if self._port is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._port is None:
            return None
        # Take what is queued before letting go (see ListeningService); the
        # socket is not shut down, which would stop the other workers too.
        accept_pending(self._port)
        return self._port.stopListening()


class _TakeTurnsAccepting:
    """
    A listening port that accepts one connection each time the reactor
    finds it readable.

    Twisted's ports accept as many pending connections as they can (up to
    100 and growing), which suits one process; with several processes on
    one socket, the first to wake takes a whole burst of new connections
    and the others idle.  One at a time, a busy worker leaves the next
    connection to an idle one.
    """

    numberAccepts = property(lambda self: 1, lambda self, value: None)


class _SharedTCPPort(_TakeTurnsAccepting, tcp.Port):
    pass


class _SharedUNIXPort(_TakeTurnsAccepting, unix.Port):
    pass


def _adopt(reactor, fd: int, family: int, factory) -> tcp.Port:
    """C{reactor.adoptStreamPort}, with ports that take turns accepting."""
    if family == socket.AF_UNIX:
        port = _SharedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    else:
        port = _SharedTCPPort._fromListeningDescriptor(reactor, fd, family, factory)
    port.startListening()
    return port
