"""
The site: Twisted's L{Site} with settings that can be swapped while it
runs, an access log, counters for the status page, and a graceful drain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Site

from backtracweb.accesslog import AccessLog
from backtracweb.channel import BacktracChannel
from backtracweb.proxy import Addresses, TrustedProxies
from backtracweb.request import BacktracRequest


IDLE_LINGER = 0.25
"""
Seconds a draining server keeps an idle keep-alive connection open.  A
proxy may be writing a request on it as the drain starts (or on a
connection just accepted from the queue); closing it under that request
fails it, and a proxy resends only idempotent ones.  Answered instead, with
C{Connection: close}, it tells the proxy the connection is done.
"""


@dataclass(frozen=True)
class SiteSettings:
    """
    Everything about serving that SIGHUP may change, swapped as one value
    so a reload is never half-applied.

    @ivar routes: the static mappings, as L{resource.SiteRoot} routes them.
    """

    routes: tuple
    access_log: AccessLog
    proxies: TrustedProxies
    max_body: int
    max_header_bytes: int
    max_headers: int
    idle_timeout: float
    max_queue: int
    status_path: bytes | None
    status_allow: Addresses
    graceful_timeout: float
    config_file: str
    loaded_at: float


class Stats:
    """Counters for the status page, updated on the reactor thread only."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.by_class = {f"{n}xx": 0 for n in range(1, 6)}
        self.bytes_sent = 0
        self.refused_overload = 0

    def count(self, status: int, sent: int) -> None:
        self.requests += 1
        key = f"{status // 100}xx"
        if key in self.by_class:
            self.by_class[key] += 1
        self.bytes_sent += sent


class BacktracSite(Site):
    """
    The site every listening endpoint shares.

    It speaks HTTP/1.1 through L{BacktracChannel} directly: Twisted's
    default wrapper exists to switch to HTTP/2, which needs an optional
    library, and it hides the channel from the site.
    """

    displayTracebacks = False
    noisy = False
    requestFactory = BacktracRequest
    protocol = BacktracChannel
    _log = Logger()
    connections_changed: Callable[[int], None] | None = None
    """Told the number of open connections whenever it changes (by a worker)."""

    def __init__(self, root, settings: SiteSettings, reactor) -> None:
        super().__init__(root, reactor=reactor)
        self.settings = settings
        self.connections: set[BacktracChannel] = set()
        self.stats = Stats()
        self.draining = False
        self._drained: Deferred[None] | None = None

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        settings = self.settings
        channel.timeOut = channel.idle_timeout = settings.idle_timeout
        channel.totalHeadersSize = settings.max_header_bytes
        # One header line may be as long as all of them together.
        channel.MAX_LENGTH = settings.max_header_bytes
        channel.maxHeaders = settings.max_headers
        return channel

    # -- connections --------------------------------------------------------

    def connection_made(self, channel: BacktracChannel) -> None:
        self.connections.add(channel)
        if self.connections_changed is not None:
            self.connections_changed(len(self.connections))

    def connection_lost(self, channel: BacktracChannel) -> None:
        self.connections.discard(channel)
        if self.connections_changed is not None:
            self.connections_changed(len(self.connections))
        if self._drained is not None and not self.connections and not self._drained.called:
            self._drained.callback(None)

    def in_flight(self) -> list[BacktracRequest]:
        """The requests received and not yet answered in full."""
        return [r for c in self.connections for r in c.requests if r.received]

    # -- logging --------------------------------------------------------------

    def log(self, request: BacktracRequest) -> None:
        """Count a finished (or abandoned) request and write its access-log line."""
        self.stats.count(request.code, request.sentLength)
        access_log = self.settings.access_log
        if access_log.enabled:
            access_log.write(request.entry())

    def log_refused(self, channel: BacktracChannel, code: int, sent: int) -> None:
        """Count a request the channel refused as it arrived, and write its line."""
        self.stats.count(code, sent)
        access_log = self.settings.access_log
        if access_log.enabled:
            access_log.write(channel.refused_entry(code, sent))

    # -- stopping -------------------------------------------------------------

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Close idle connections after L{IDLE_LINGER} seconds and the others
        once their response is complete; after C{timeout} seconds close
        whatever is left, logging the requests it cuts short.  Fires when no
        connection remains.
        """
        self.draining = True
        self._drained = Deferred()
        for channel in list(self.connections):
            if channel.requests:
                channel.persistent = False  # closes once its response is done
                for request in channel.requests:
                    if not request.startedWriting:
                        request.setHeader(b"connection", b"close")
        if not self.connections:
            self._drained.callback(None)
            return self._drained
        linger = self.reactor.callLater(IDLE_LINGER, self._close_idle)
        deadline = self.reactor.callLater(timeout, self.cut_short, timeout)

        def drained(result: object) -> object:
            for call in (linger, deadline):
                if call.active():
                    call.cancel()
            return result

        return self._drained.addBoth(drained)

    def _close_idle(self) -> None:
        # A request that arrived meanwhile keeps its connection until it is
        # answered (with Connection: close, see BacktracChannel).
        for channel in list(self.connections):
            if not channel.requests:
                channel.transport.loseConnection()

    def cut_short(self, timeout: float | None = None) -> None:
        """Abort every remaining connection, naming the requests cut short."""
        for request in self.in_flight():
            client = getattr(request.getClientAddress(), "host", "-")
            after = f" after {timeout:g} s ([server] graceful_timeout)" if timeout is not None else ""
            self._log.warn(
                "stopping: cut short {method} {path} from {client}{after}",
                method=request.method.decode("latin-1"),
                path=request.uri.decode("latin-1"),
                client=client,
                after=after,
            )
        for channel in list(self.connections):
            channel.transport.abortConnection()

