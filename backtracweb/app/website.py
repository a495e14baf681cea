"""
The site: the factory of HTTP connections every listening endpoint
shares, with settings that can be swapped while it runs, the forwarding
headers of trusted proxies, an access log, counters for the status page,
and a graceful drain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from backtracweb.app.accesslog import AccessLog, Entry
from backtracweb.app.proxy import Addresses, TrustedProxies
from backtracweb.config.settings import Values
from backtracweb.http.channel import HTTPChannel
from backtracweb.http.request import Request

IDLE_LINGER = 0.25
"""
Seconds a draining server keeps an idle keep-alive connection open.  A
proxy may be writing a request on it as the drain starts (or on a
connection just accepted from the queue); closing it under that request
fails it, and a proxy resends only idempotent ones.  Answered instead, with
C{Connection: close}, it tells the proxy the connection is done.
"""

TUNNEL_CLOSE = 1.0
"""Seconds a tunnel (a WebSocket) told the server is going away has to close before it is cut."""

_FORWARDING = (b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
_SERVER_ERROR = b"Internal Server Error\n"


@dataclass(frozen=True)
class SiteSettings:
    """
    Everything about serving that SIGHUP may change, swapped as one value
    so a reload is never half-applied.

    @ivar routes: the static mappings, as L{resource.SiteRoot} routes them.
    @ivar limits: the C{[limits]} section, as L{Values}.
    @ivar server: the keys of C{[server]} a reload may change, as L{Values}.
    """

    routes: tuple
    access_log: AccessLog
    proxies: TrustedProxies
    limits: Values
    server: Values
    status_path: bytes | None
    status_allow: Addresses
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
        key = _CLASSES.get(status // 100)
        if key is not None:
            self.by_class[key] += 1
        self.bytes_sent += sent


_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


class BacktracSite(ServerFactory):
    """
    The site every listening endpoint shares: each connection is an
    L{HTTPChannel}, whose requests this site hands to its C{resource}
    (L{resource.SiteRoot}), the forwarding headers of a trusted proxy
    applied first, and counts and logs once answered.
    """

    noisy = False
    _log = Logger()
    connections_changed: Callable[[int], None] | None = None
    """Told the number of open connections whenever it changes (by a worker)."""

    def __init__(self, resource, settings: SiteSettings, reactor,
                 async_bodies: bool = False) -> None:
        self.resource = resource
        self.settings = settings
        self.reactor = reactor
        self.async_bodies = async_bodies
        """
        Whether requests are handed over at their head, their bodies read
        as they arrive on the reactor thread (by an ASGI application).
        """
        self.connections: set[HTTPChannel] = set()
        self.stats = Stats()
        self.draining = False
        self._drained: Deferred[None] | None = None

    def buildProtocol(self, addr) -> HTTPChannel:
        channel = HTTPChannel(self)
        channel.factory = self
        return channel

    # -- requests ---------------------------------------------------------------------

    def handle(self, request: Request) -> None:
        """Answer C{request}, whose head and (unless it waits for 100 Continue) body are in."""
        proxies = self.settings.proxies
        if proxies:
            apply_forwarding(request, proxies)
        try:
            self.resource.handle(request)
        except Exception:
            self._log.failure("answering {method} {target} failed",
                              method=request.method.decode("latin-1"),
                              target=request.target.decode("latin-1"))
            if request.started_writing:
                request.close_connection()
                request.finish()
            else:
                request.code, request.reason = 500, None
                request.response_headers = [(b"Content-Type", b"text/plain")]
                request.respond(_SERVER_ERROR)

    def request_done(self, request: Request) -> None:
        """Count a finished, refused or abandoned request and write its access-log line."""
        self.stats.count(request.code, request.sent)
        access_log = self.settings.access_log
        if access_log.enabled:
            access_log.write(Entry.of(request))
        if self.draining:
            self._release_tunnels()

    @property
    def limits(self) -> Values:
        """The C{[limits]} in force, which the connections read."""
        return self.settings.limits

    def numbers(self) -> dict:
        """What the site is doing, for the status page."""
        stats = self.stats
        return {
            "status": "draining" if self.draining else "serving",
            "started": stats.started,
            "connections": {
                "open": len(self.connections),
                "busy": sum(1 for c in self.connections if c.queue or c.receiving),
            },
            "requests_in_flight": sum(1 for c in self.connections
                                      if c.active is not None and c.active.tunnel is None),
            "websockets": len(self.tunnels()),
            "requests": stats.requests,
            "responses": dict(stats.by_class),
            "refused_overload": stats.refused_overload,
            "bytes_sent": stats.bytes_sent,
        }

    def in_flight(self) -> list[Request]:
        """The HTTP requests received whole and not yet answered in full (no tunnel)."""
        return [r for c in self.connections for r in c.queue
                if r.complete and r.refusal is None and r.tunnel is None]

    def tunnels(self) -> list[Request]:
        """The requests whose connection switched protocols (WebSockets), still open."""
        return [c.tunneled for c in self.connections
                if c.tunneled is not None and not c.tunneled.finished]

    # -- connections --------------------------------------------------------------------

    def connection_made(self, channel: HTTPChannel) -> None:
        self.connections.add(channel)
        if self.draining:
            channel.draining = True
        if self.connections_changed is not None:
            self.connections_changed(len(self.connections))

    def connection_lost(self, channel: HTTPChannel) -> None:
        self.connections.discard(channel)
        if self.connections_changed is not None:
            self.connections_changed(len(self.connections))
        if self._drained is not None and not self.connections and not self._drained.called:
            self._drained.callback(None)

    # -- stopping -------------------------------------------------------------------------

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Close idle connections after L{IDLE_LINGER} seconds and the others
        once their response is complete; after C{timeout} seconds close
        whatever is left, logging the requests it cuts short.  Fires when no
        connection remains.
        """
        self.draining = True
        self._drained = Deferred()
        for channel in self.connections:
            channel.draining = True  # its next response says Connection: close, and is its last
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
        # answered (with Connection: close).
        for channel in list(self.connections):
            if not channel.queue and not channel.receiving:
                channel.close()
        self._release_tunnels()

    def _release_tunnels(self, anyway: bool = False) -> None:
        """
        Once no HTTP request is in flight (or C{anyway}), tell each tunnel
        (WebSocket) that the server is going away: it closes (told again,
        it does nothing more).
        """
        if not anyway and self.in_flight():
            return
        for request in self.tunnels():
            request.tunnel.going_away()

    def cut_short(self, timeout: float | None = None) -> None:
        """
        Abort every remaining connection, naming the requests cut short;
        tunnels (WebSockets) are told first and get L{TUNNEL_CLOSE} seconds
        to close.
        """
        self._release_tunnels(anyway=True)
        tunneled = {request.channel for request in self.tunnels()}
        for request in self.in_flight():
            after = f" after {timeout:g} s ([server] graceful_timeout)" if timeout is not None else ""
            self._log.warn(
                "stopping: cut short {method} {path} from {client}{after}",
                method=request.method.decode("latin-1"),
                path=request.target.decode("latin-1"),
                client=request.client or request.peer,
                after=after,
            )
        for channel in list(self.connections):
            if channel not in tunneled:
                channel.abort()
        if tunneled:
            self.reactor.callLater(TUNNEL_CLOSE, lambda: [c.abort() for c in tunneled])


def apply_forwarding(request: Request, proxies: TrustedProxies) -> None:
    """Believe a trusted proxy about the client, the scheme and the host of C{request}."""
    headers = {}
    for name, value in request.headers:
        if name in _FORWARDING:
            key = name.decode("ascii")
            text = value.decode("latin-1")
            headers[key] = headers[key] + "," + text if key in headers else text
    forwarded = proxies.resolve(request.peer, headers) if headers else None
    if forwarded is None:
        return
    if forwarded.client is not None:
        request.client, request.client_port = forwarded.client, 0
    if forwarded.scheme or forwarded.host:
        secure = (forwarded.scheme or ("https" if request.secure else "http")) == "https"
        host = forwarded.host.encode("latin-1") if forwarded.host else request.host
        request.secure = secure
        request.host = host
        _, port = _split_port(host)
        request.server_port = int(port) if port else (443 if secure else 80)


def _split_port(host: bytes) -> tuple[bytes, bytes]:
    """C{name:port} as C{(name, port)}; an IPv6 literal keeps its colons."""
    name, _, port = host.rpartition(b":")
    if not name or not port.isdigit() or host.endswith(b"]"):
        return host, b""
    return name, port
