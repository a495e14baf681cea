"""
The request class of backtracweb's site: Twisted's, with the request
target, headers and client address settled before any resource sees them.
"""

from __future__ import annotations

import re
import time
from typing import Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import datetimeToString, unquote

from backtracweb.accesslog import Entry

# scheme://authority, then the path and query (RFC 9112 3.2.2).
_ABSOLUTE_FORM = re.compile(rb"^[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)(.*)$", re.S)
_BAD_TARGET = b"Bad request target: expected a path beginning with /.\n"
_FORWARDING = ("forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")
UNIX_PEER = "unix"
"""How a unix-socket peer is named in C{[proxy] trusted}."""
SERVER = b"backtracweb"
"""
The Server header: the product without a version, which would only tell
a scanner which exploits to try (nginx's server_tokens off, waitress).
"""
ABORTED = 499
"""Status logged for a request whose client went away first (as nginx does)."""


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The Date header's value for now, formatted at most once a second."""
    global _date_cache
    now = int(time.time())
    second, text = _date_cache
    if second != now:
        _date_cache = now, text = now, datetimeToString(now)
    return text


class BacktracRequest(server.Request):
    """
    A L{server.Request} that

      - accepts absolute-form targets (C{GET http://host/path}), which
        RFC 9112 requires servers to accept and Twisted takes for a path;
      - answers 400 for any other target that is not a path or C{*};
      - drops headers whose names contain an underscore: WSGI spells
        C{X-Forwarded-For} and C{X_Forwarded_For} alike, so a client could
        use the second to spoof the first as a proxy would send it;
      - takes the client address, scheme and host from a trusted proxy's
        forwarding headers (C{[proxy] trusted}), so the application and the
        access log see the real client;
      - counts a chunked body against C{[limits] max_body} as it arrives;
      - times itself and is logged even when the client goes away first.
    """

    _bad_target = False
    peer = ""
    """The address of the connection's other end (a proxy, maybe), or C{unix}."""
    _body_bytes = 0
    received = False
    """Whether the whole request has arrived (Twisted's placeholders say nothing)."""
    on_connection_lost: Callable[[], None] | None = None
    """
    Called if the connection is lost before the response is finished: a
    lighter way than L{notifyFinish} for the WSGI container, which would
    otherwise make a Deferred for every request to hear of the rare loss.
    """

    def __init__(self, channel, *args, **kwargs) -> None:
        super().__init__(channel, *args, **kwargs)
        self.started_at = time.time()
        self._started = time.monotonic()

    def handleContentChunk(self, data: bytes) -> None:
        self._body_bytes += len(data)
        limit = self.channel.site.settings.max_body
        if self._body_bytes > limit:
            self.channel.refuse(413, f"its chunked body is over [limits] max_body = {limit}")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.received = True
        absolute = _ABSOLUTE_FORM.match(path)
        if absolute:
            authority, path = absolute.group(1), absolute.group(2) or b"/"
            if not path.startswith(b"/"):
                path = b"/" + path
            if authority:
                self.requestHeaders.setRawHeaders(b"host", [authority])
        elif not path.startswith(b"/") and path != b"*":
            self._bad_target = True
            path = b"/"
        for name, _ in list(self.requestHeaders.getAllRawHeaders()):
            if b"_" in name:
                self.requestHeaders.removeHeader(name)
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if self._bad_target:
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"text/plain")
            self.setHeader(b"connection", b"close")
            self.write(_BAD_TARGET)
            self.finish()
            return
        self.peer = peer = getattr(self.client, "host", None)
        if peer is None:
            # A unix socket has no peer address and no port: WSGI still
            # wants REMOTE_ADDR and SERVER_PORT.
            self.peer = peer = UNIX_PEER
            self.client = IPv4Address("TCP", "", 0)
            # PEP 3333 wants a SERVER_NAME even without a Host header.
            self._set_host(self.getHeader(b"host") or b"localhost", self.isSecure())
        self._apply_forwarding(peer)
        # Twisted's Request.process but for three things: the Date header is
        # formatted once a second, not for every request, the Server header
        # has no version, and there is no content-encoding hook (no
        # resource of backtracweb's has one).
        self.site = site = self.channel.site
        headers = self.responseHeaders
        headers.setRawHeaders(b"server", [SERVER])
        headers.setRawHeaders(b"date", [_http_date()])
        self.prepath = []
        self.postpath = list(map(unquote, self.path[1:].split(b"/")))
        if self.path == b"*":
            self._handleStar()
            return
        try:
            self.render(site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())

    def _apply_forwarding(self, peer: str) -> None:
        """Believe a trusted proxy about the client, the scheme and the host."""
        proxies = self.channel.site.settings.proxies
        if not proxies:
            return
        headers = {}
        for name in _FORWARDING:
            values = self.requestHeaders.getRawHeaders(name.encode("ascii"))
            if values:
                headers[name] = ",".join(v.decode("latin-1") for v in values)
        forwarded = proxies.resolve(peer, headers) if headers else None
        if forwarded is None:
            return
        if forwarded.client is not None:
            family = IPv6Address if ":" in forwarded.client else IPv4Address
            self.client = family("TCP", forwarded.client, 0)
        if forwarded.scheme or forwarded.host:
            secure = (forwarded.scheme or ("https" if self.isSecure() else "http")) == "https"
            host = forwarded.host.encode("latin-1") if forwarded.host else None
            self._set_host(host or self.getHeader(b"host") or b"", secure)

    def _set_host(self, host: bytes, secure: bool) -> None:
        """Point the request at C{host} (C{name[:port]}), as seen by the client."""
        name, _, port = host.rpartition(b":")
        if not name or not port.isdigit() or host.endswith(b"]"):
            name, port = host, b""
        self.setHost(name, int(port) if port else (443 if secure else 80), ssl=secure)

    def connectionLost(self, reason) -> None:
        # A request the channel refused has been logged as such.
        unfinished = self.received and not self.finished and not self.channel.refused
        site = self.channel.site  # the parent class forgets the channel
        super().connectionLost(reason)
        if self.on_connection_lost is not None:
            self.on_connection_lost()
        if unfinished:
            # A client may close as soon as it has every byte it was promised,
            # before the application's thread has finished the request.
            length = self.responseHeaders.getRawHeaders(b"content-length")
            delivered = self.startedWriting and length and self.sentLength >= int(length[0])
            if not delivered:
                self.code = ABORTED
            site.log(self)

    def entry(self) -> Entry:
        """This request as an access-log entry."""
        client = self.getClientAddress()
        return Entry(
            client=getattr(client, "host", "") or "-",
            started=self.started_at,
            duration=time.monotonic() - self._started,
            method=self.method,
            path=self.uri,
            protocol=self.clientproto,
            host=self.getHeader(b"host"),
            status=self.code,
            sent=self.sentLength,
            referrer=self.getHeader(b"referer"),
            user_agent=self.getHeader(b"user-agent"),
        )
