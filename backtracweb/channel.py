"""
One HTTP connection: Twisted's L{HTTPChannel}, with backtracweb's limits.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.http import HTTPChannel

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large"}


class BacktracChannel(HTTPChannel):
    """
    An L{HTTPChannel} that

      - gives a client C{idle_timeout} seconds, counted from the connection
        or the end of its previous response, to send a complete request
        head: Twisted's own idle timeout restarts at every byte, so a client
        trickling one header byte a minute (slowloris) would never time out;
      - refuses a body larger than C{max_body} with 413 as soon as the
        headers announce it, before reading it (chunked bodies are counted
        by the request as they arrive);
      - tells its site when it closes, so draining knows when it is done.
    """

    _log = Logger()
    _refused = False
    _head_since: float | None = None
    """When the wait for a request head began; None while a request is handled."""
    _head_timer = None
    idle_timeout: float | None = None
    """Seconds for a request head to arrive; set by the site for each connection."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.connection_made(self)
        self._start_head_deadline()

    # The deadline is a time, checked by one timer per connection that goes
    # off at most every idle_timeout: setting and clearing it costs nothing
    # per request, where a timer per request (scheduled, then cancelled as
    # soon as the head arrives) cost a few microseconds each.

    def _start_head_deadline(self) -> None:
        # Not self.timeOut: Twisted clears it while a request is handled.
        if not self.idle_timeout:
            return
        self._head_since = self.site.reactor.seconds()
        if self._head_timer is None:
            self._head_timer = self.callLater(self.idle_timeout, self._check_head_deadline)

    def _cancel_head_deadline(self) -> None:
        self._head_since = None

    def _check_head_deadline(self) -> None:
        self._head_timer = None
        if self._head_since is None:  # a request is being handled: requestDone starts again
            return
        remaining = self._head_since + self.idle_timeout - self.site.reactor.seconds()
        if remaining > 0:
            self._head_timer = self.callLater(remaining, self._check_head_deadline)
        else:
            self._head_too_slow()

    def _head_too_slow(self) -> None:
        self._head_since = None
        if self.requests:
            self.refuse(408, "the request head took longer than [limits] idle_timeout")
        else:
            self.transport.abortConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        # Twisted would just close the connection.
        self.refuse(400, "a header line is over [limits] max_header_bytes")

    def allHeadersReceived(self) -> None:
        self._cancel_head_deadline()
        limit = self.site.settings.max_body
        if self.length is not None and self.length > limit:
            self.refuse(413, f"its body of {self.length} bytes is over [limits] max_body = {limit}")
            return
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if not self._refused:
            super().lineReceived(line)

    def allContentReceived(self) -> None:
        if not self._refused:
            super().allContentReceived()

    def checkPersistence(self, request, version: bytes) -> bool:
        # A request whose head completes during a drain is the last one.
        if self.site.draining:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return super().checkPersistence(request, version)

    def requestDone(self, request) -> None:
        # Before the parent class runs: it may parse a pipelined request's
        # head at once, which must cancel this deadline.
        if self.persistent and not self.site.draining:
            self._start_head_deadline()
        super().requestDone(request)

    def refuse(self, code: int, why: str) -> None:
        """Answer C{code} to the request being received, then close."""
        if self._refused:
            return
        self._refused = True
        peer = self.transport.getPeer()
        self._log.info("refused a request from {peer}: {why} ({code})",
                       peer=getattr(peer, "host", peer), why=why, code=code)
        body = _REASONS[code] + b"\n"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (code, _REASONS[code], len(body), body)
        )
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self._head_since = None
        if self._head_timer is not None and self._head_timer.active():
            self._head_timer.cancel()
        self._head_timer = None
        try:
            super().connectionLost(reason)
        finally:
            self.site.connection_lost(self)
