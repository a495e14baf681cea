"""
One HTTP connection: Twisted's L{HTTPChannel}, with backtracweb's limits.
"""

from __future__ import annotations

import time

from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

from backtracweb.accesslog import Entry

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
    refused = False
    """Whether a request was refused on this connection (which then closes)."""
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

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's one way out for every request it cannot parse (a private
        # method, but the hook it offers): answer it like the other
        # refusals, said in twistd's log and written in the access log.
        if self._receivedHeaderSize > self.totalHeadersSize:
            why = "its head is over [limits] max_header_bytes"
        elif self._receivedHeaderCount > self.maxHeaders:
            why = "it has more headers than [limits] max_headers"
        else:
            why = "it is malformed (request line, a header, or the chunked body)"
        self.refuse(400, why)

    def allHeadersReceived(self) -> None:
        self._cancel_head_deadline()
        limit = self.site.settings.max_body
        if self.length is not None and self.length > limit:
            self.refuse(413, f"its body of {self.length} bytes is over [limits] max_body = {limit}")
            return
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if not self.refused:
            super().lineReceived(line)

    def allContentReceived(self) -> None:
        if not self.refused:
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
        # Twisted keeps the last request line until the next one parses: a
        # refusal before that must not log the previous request's.
        self._command = self._path = self._version = None
        super().requestDone(request)

    def refuse(self, code: int, why: str) -> None:
        """Answer C{code} to the request being received, then close."""
        if self.refused:
            return
        self.refused = True
        peer = self.transport.getPeer()
        self._log.info("refused a request from {peer}: {why} ({code})",
                       peer=getattr(peer, "host", peer), why=why, code=code)
        body = _REASONS[code] + b"\n"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (code, _REASONS[code], len(body), body)
        )
        self.site.log_refused(self, code, len(body))
        self.transport.loseConnection()

    def refused_entry(self, code: int, sent: int) -> Entry:
        """
        The access-log entry for the request refused with C{code}: as much
        of it as had arrived (C{-} for the rest), from the client as
        connected (forwarding headers are not read for a refused request).
        """
        request = self.requests[-1] if self.requests else None
        headers = request.requestHeaders if request is not None else Headers()
        first = headers.getRawHeaders

        def header(name: bytes) -> bytes | None:
            values = first(name)
            return values[0] if values else None

        # The request line, if it was parsed (Twisted keeps it there).
        method, path, protocol = (getattr(self, "_command", None) or b"-",
                                  getattr(self, "_path", None) or b"-",
                                  getattr(self, "_version", None) or b"-")
        started = getattr(request, "started_at", None) or time.time()
        peer = self.transport.getPeer()
        return Entry(
            client=getattr(peer, "host", None) or "-",
            started=started,
            duration=max(time.time() - started, 0.0),
            method=method,
            path=path,
            protocol=protocol,
            host=header(b"host"),
            status=code,
            sent=sent,
            referrer=header(b"referer"),
            user_agent=header(b"user-agent"),
        )

    def connectionLost(self, reason) -> None:
        self._head_since = None
        if self._head_timer is not None and self._head_timer.active():
            self._head_timer.cancel()
        self._head_timer = None
        try:
            super().connectionLost(reason)
        finally:
            self.site.connection_lost(self)
