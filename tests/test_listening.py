"""
Listening services: an endpoint that binds later is waited for, and
stopping to listen does not reset a connection: what the kernel has
queued is accepted first, then the socket refuses new connections at once.
Real sockets on 127.0.0.1; the reactor is a L{MemoryReactorClock} that only
records what would be watched, and nothing runs it.
"""

from __future__ import annotations

import os
import socket

import pytest
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent

from backtracweb.process.server import ListeningService, WebService, accept_pending
from backtracweb.process.shared import InheritedSocketService


class Recording(ServerFactory):
    protocol = Protocol
    noisy = False

    def __init__(self) -> None:
        self.built = 0

    def buildProtocol(self, addr):
        self.built += 1
        return super().buildProtocol(addr)


class LaterEndpoint:
    """An endpoint that binds when the test says (as a plugin's may)."""

    def __init__(self) -> None:
        self.listening: Deferred = Deferred()

    def listen(self, factory) -> Deferred:
        return self.listening


def test_an_endpoint_that_binds_later_is_waited_for():
    service = ListeningService("tcp:0:interface=127.0.0.1", Recording(), MemoryReactorClock())
    service.endpoint = later = LaterEndpoint()
    service.privilegedStartService()
    assert service.port is None
    bound = object()
    later.listening.callback(bound)
    assert service.port is bound


def test_an_endpoint_that_fails_later_is_logged():
    service = ListeningService("tcp:0:interface=127.0.0.1", Recording(), MemoryReactorClock())
    service.endpoint = later = LaterEndpoint()
    service.privilegedStartService()
    with capturedLogs() as events:
        later.listening.errback(CannotListenError("127.0.0.1", 80, OSError("no")))
    assert [formatEvent(e) for e in events] == ["cannot listen on 127.0.0.1:0"]
    assert events[0]["log_failure"].check(CannotListenError)
    assert service.port is None


@pytest.fixture
def port():
    reactor = MemoryReactorClock()
    factory = Recording()
    port = tcp.Port(0, factory, interface="127.0.0.1", reactor=reactor)
    port.startListening()
    yield port
    port.socket.close()


def connect(port: tcp.Port) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return client


def test_accept_pending_takes_every_queued_connection(port):
    clients = [connect(port) for _ in range(3)]
    try:
        assert accept_pending(port) == 3
        assert port.factory.built == 3
        assert accept_pending(port) == 0
    finally:
        for client in clients:
            client.close()


def test_stopping_accepts_what_is_queued_then_refuses_at_once(port):
    """
    The queued connection is accepted (the site will answer it), and a new
    one is refused before the port is even closed (Twisted closes it a
    reactor turn later): none is left in the queue to be reset.
    """
    service = ListeningService("tcp:0:interface=127.0.0.1", Recording(), MemoryReactorClock())
    service.port = port  # as if privilegedStartService had listened
    queued = connect(port)
    try:
        service.running = True
        service.stopService()
        assert port.factory.built == 1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    finally:
        queued.close()


def test_a_worker_stopping_accepts_what_is_queued_then_lets_go_at_once():
    """
    A worker's copy of a shared socket: the queued connection is accepted,
    and the copy is closed before the reactor runs again, so once every
    holder has let go a new connection is refused rather than queued to
    be reset.
    """
    shared = socket.create_server(("127.0.0.1", 0))
    shared.setblocking(False)  # as Twisted made the supervisor's
    address = shared.getsockname()
    factory = Recording()
    service = InheritedSocketService(os.dup(shared.fileno()), "tcp:0", factory,
                                     MemoryReactorClock())
    service.privilegedStartService()
    service.running = True
    shared.close()  # the supervisor's copy: now the worker's is the only one
    queued = socket.create_connection(address, timeout=5)
    try:
        service.stopService()
        assert factory.built == 1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5)
    finally:
        queued.close()


class PausablePort:
    """A listening port that records whether it reads (accepts)."""

    def __init__(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class StartingApplication:
    """An application whose start (an ASGI lifespan startup) is over when the test says."""

    describe_running = None  # (its requests run in threads)

    def __init__(self) -> None:
        self.started: Deferred = Deferred()
        self.running = {}

    def start(self) -> Deferred:
        return self.started


def test_no_connection_is_accepted_until_the_application_has_started():
    listening = ListeningService("tcp:0:interface=127.0.0.1", Recording(), MemoryReactorClock())
    listening.port = port = PausablePort()
    listening.privilegedStartService = lambda: None  # bound already
    application = StartingApplication()
    web = WebService([listening], site=None, application=application,
                     reactor=MemoryReactorClock())
    with capturedLogs():
        web.startService()
        assert not port.reading and not web.running
        application.started.callback(None)
    assert port.reading and web.running and listening.running
    web._slow_requests.stop()
