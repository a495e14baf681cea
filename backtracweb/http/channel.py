"""
One HTTP/1.1 connection: the bytes a client sends, parsed by llhttp into
requests, checked, handed to the site in order, and answered.

Requests are answered one at a time, in the order they came (pipelined
ones wait in L{HTTPChannel.queue}).  A request is handed to the site once
its body has arrived whole, so that a slow client holds no thread; one
that expects C{100 Continue} is handed over at once, and its body streams
to the application, which may not want it.  Whatever the RFCs forbid, or
the C{[limits]} exceed, is refused with the status they name, after the
responses to the requests before it, and the connection is closed.

Deadlines (C{[limits]}): C{idle_timeout} for a request head to arrive
(counted from the connection or the previous response, so a client
trickling bytes does not extend it), and for each next part of a body;
C{send_timeout} for a client to take more of a response it has stopped
reading, after which the connection is closed and the application's thread
freed.
"""

from __future__ import annotations

import re
import time
from collections import deque
from functools import partial
from typing import Protocol as TypingProtocol

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from httptools.parser.errors import (
    HttpParserCallbackError, HttpParserInvalidMethodError, HttpParserInvalidURLError,
)
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IPushProducer, ISSLTransport, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from backtracweb.http import head
from backtracweb.http.body import ArrivingBody, BodyBuffer, StreamingInput
from backtracweb.http.errors import Refused
from backtracweb.http.request import REASONS, Request
from backtracweb.twisted_internals import (
    is_plain_socket, resume_when_writable, unsent_bytes, write_through,
)

MAX_PIPELINED = 16
"""Requests read ahead of the one being answered before the client is made to wait."""
MAX_READ_AHEAD_BODY = 1024 * 1024
"""Body bytes of such requests read ahead before the client is made to wait."""
CLIENT_GONE = 499
"""Status logged for a response the client did not take whole (as nginx does)."""
UNIX_PEER = "unix"
"""How a unix-socket peer is named (in C{[proxy] trusted}, and in logs)."""

# method SP request-target SP HTTP-version CRLF (RFC 9112 3), for telling an
# unknown method (501) from a line that is not a request line at all (400).
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) [^ \x00-\x1f\x7f]+ HTTP/[0-9]\.[0-9]\r\n")
_VERSIONS = {"1.1": head.HTTP_11, "1.0": head.HTTP_10}
_HEADER_LINE = 4  # ": " and CRLF around a header's name and value
_SPECIAL = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"})


class Limits(TypingProtocol):
    """The C{[limits]} the channel enforces, read from its site as they are now."""

    max_body: int
    max_header_bytes: int
    max_headers: int
    max_request_line: int
    max_header_field: int
    idle_timeout: float
    send_timeout: float


class Site(TypingProtocol):
    """What a channel needs of the site it serves."""

    reactor: object
    limits: Limits
    draining: bool
    async_bodies: bool
    """
    Whether every request is handed over at its head, its body arriving
    as an L{ArrivingBody} read on the reactor thread (an ASGI
    application's); if not, a body is kept whole first, but for a request
    asking for C{100 Continue}, read from a thread as it arrives (WSGI).
    """

    def handle(self, request: Request) -> None: ...
    def request_done(self, request: Request) -> None: ...
    def connection_made(self, channel: HTTPChannel) -> None: ...
    def connection_lost(self, channel: HTTPChannel) -> None: ...


class Connection:
    """Who is at each end of a connection, worked out once for its requests."""

    __slots__ = ("peer", "client", "client_port", "secure", "server_port", "server_name")

    def __init__(self, transport) -> None:
        peer, host = transport.getPeer(), transport.getHost()
        self.secure = ISSLTransport.providedBy(transport)
        if isinstance(peer, (IPv4Address, IPv6Address)):
            self.peer = self.client = peer.host
            self.client_port = peer.port
        else:
            # A unix socket has no peer address and no port: WSGI still
            # wants REMOTE_ADDR and REMOTE_PORT.
            self.peer, self.client, self.client_port = UNIX_PEER, "", 0
        if isinstance(host, (IPv4Address, IPv6Address)):
            self.server_port: int | None = host.port
            self.server_name = host.host
        else:  # a unix socket: the port comes from Host, as the client saw it
            self.server_port = None
            self.server_name = "localhost"


class _StopParsing(Exception):
    """Raised in a parser callback to stop at the end of a request."""


@implementer(IPushProducer)
class HTTPChannel(Protocol):
    """
    One connection to the site: requests in, responses out.

    It is the transport's producer: the transport pauses it when its
    buffer is full (the client is not reading) and resumes it once
    drained; that is relayed to the producer of the response being sent,
    and a client that stays paused for C{send_timeout} is disconnected.

    @ivar queue: the requests whose heads have arrived and that are not yet
        answered, in order; the first is being answered if L{active} is it.
    @ivar paused: whether the transport has asked to wait (the client is
        not reading).
    """

    _log = Logger()
    paused = False
    _closing = False
    draining = False
    """Whether the site is draining: the response being sent is the last."""
    connection: Connection

    def __init__(self, site: Site) -> None:
        self.site = site
        self.queue: deque[Request] = deque()
        self.active: Request | None = None
        self._reader = None  # the transport as IPushProducer, to pause reading
        self._read_holds: set[str] = set()
        self._parser = HttpRequestParser(self)
        # llhttp's version check refuses HTTP/1.2; RFC 9110 2.5 says to
        # answer it as 1.1, and other versions with 505 (see head.http_version).
        self._parser.set_dangerous_leniencies(lenient_version=True)
        self._reading = True  # False once no more requests will be read
        self._parsing = False
        self._advancing = False
        self._gone = False
        self._refusal: Refused | None = None
        # The message being parsed.
        self._in_head = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._header_count = 0
        self._head_read = 0
        self._begun_in_read = 0  # requests begun in the current read
        self._began = 0.0
        self._began_monotonic = 0.0
        self._current: Request | None = None  # its head is in, its body arriving
        self._read_ahead = 0  # body bytes read for requests queued behind the active one
        # Deadlines: one timer for the head and body, one for sending.
        self._idle_since: float | None = None
        self._body_since: float | None = None
        self._timer = None
        self._send_timer = None
        self._unflushed: Request | None = None  # finished, but still in the transport's buffer
        # After a request asking to switch protocols: what the client sent
        # after its head, kept until the site answers it, and the request
        # whose tunnel then takes what the client sends.
        self._after_upgrade: bytearray | None = None
        self._upgrade_overrun = False
        self.tunneled: Request | None = None

    @property
    def receiving(self) -> bool:
        """Whether part of a request (its head or its body) has arrived and the rest is awaited."""
        return self._in_head or self._current is not None

    def write(self, data: bytes) -> None:
        """
        Write to the transport; for a plain socket, replaced when connected
        by L{write_through}, which sends at once what the socket takes.
        """
        self.transport.write(data)

    # -- the connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        self.connection = Connection(transport)
        if is_plain_socket(transport):
            self.write = partial(write_through, transport)
        if ITCPTransport.providedBy(transport):
            # A response's last part must not wait for the client to
            # acknowledge the one before (Nagle's algorithm): the head before
            # a file sent with sendfile, each part of a streamed response.
            try:
                transport.setTcpNoDelay(True)
            except OSError:
                pass  # a unix socket, which older Twisted calls TCP (twisted#12369)
        self._reader = IPushProducer(transport, None)
        transport.registerProducer(self, True)
        self.site.connection_made(self)
        self._wait_for_head()

    def connectionLost(self, reason=None) -> None:
        self._gone = True
        self._reading = False
        for timer in (self._timer, self._send_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._send_timer = None
        self._idle_since = self._body_since = None
        unflushed, self._unflushed = self._unflushed, None
        for request in list(self.queue):
            if request is self.active:
                self._lost(request, finished=request is unflushed)
            else:
                self._discard(request)
        self.queue.clear()
        self.active = None
        if self._current is not None and self._current.body is not None:
            self._fail_body(self._current, "the client went away")
        self._current = None
        self.site.connection_lost(self)

    def _lost(self, request: Request, finished: bool) -> None:
        """
        Stop and log the request being answered as its connection is lost:
        with the bytes the client took, and 499 unless it took all it was
        promised.
        """
        request.lost = True
        producer = request.producer
        if producer is not None:
            request.producer = None
            producer.stopProducing()
        if isinstance(request.input, (StreamingInput, ArrivingBody)):
            request.input.fail("the client went away")
        hook = request.on_connection_lost
        if hook is not None:
            request.on_connection_lost = None
            hook()
        # What the transport still held never left: the client did not get it.
        undelivered = min(unsent_bytes(self.transport), request.sent) if request.sent else 0
        request.sent -= undelivered
        declared = request.declared_length
        delivered = finished and not undelivered or (
            declared is not None and request.sent >= declared and request.started_writing)
        if not delivered and request.tunnel is None:  # (a tunnel's log line says 101)
            request.code = CLIENT_GONE
        self.site.request_done(request)

    def _discard(self, request: Request) -> None:
        """Forget a request that will not be answered (nor logged)."""
        body = request.body
        if isinstance(body, BodyBuffer):
            body.discard()
        request.body = None

    def close(self) -> None:
        """Close the connection once what was written is sent."""
        self._reading = False
        transport = self.transport
        if transport is None or self._gone or self._closing:
            return
        self._closing = True
        # A transport with a producer registered would wait for it rather
        # than close once its buffer is empty.
        transport.unregisterProducer()
        transport.loseConnection()

    def abort(self) -> None:
        """Close the connection at once, dropping what was not sent."""
        self._reading = False
        if self.transport is not None and not self._gone:
            self.transport.abortConnection()

    def _hold_reading(self, reason: str, hold: bool) -> None:
        """Stop (or start again) reading from the client, for one C{reason} of several."""
        holds, reader = self._read_holds, self._reader
        if hold:
            if not holds and reader is not None and not self._gone:
                reader.pauseProducing()
            holds.add(reason)
        elif reason in holds:
            holds.discard(reason)
            if not holds and reader is not None and not self._gone and not self._closing:
                reader.resumeProducing()

    # -- reading ---------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.tunneled is not None:
            self.tunneled.tunnel.data_received(data)
            return
        if not self._reading:
            if self._after_upgrade is not None:
                self._keep_after_upgrade(data)
            return  # refused, upgraded or closing: the rest is not read
        # Whether this read starts a request (not in the middle of one).
        fresh = not self._in_head and self._current is None
        self._begun_in_read = 0
        self._parsing = True
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            # llhttp stops at the end of a request asking to switch
            # protocols: that request is the last.  What follows it is kept
            # for the new protocol, should the site switch to it.
            self._last_request()
            if self._current is None and self.queue and self.queue[-1].refusal is None:
                self._after_upgrade = bytearray()
                self._keep_after_upgrade(data[upgrade.args[0]:])
        except HttpParserError as e:
            if not isinstance(e.__context__, _StopParsing):
                self._parse_failed(e, data, fresh and self._begun_in_read == 1)
        finally:
            self._parsing = False
        if self._in_head and self._reading:
            # llhttp keeps a partial header line to itself until it ends:
            # bound what it may keep (the exact limits are checked per line).
            self._head_read += len(data)
            if self._head_read > self.site.limits.max_header_bytes + len(data):
                self._refuse(Refused(431, f"its head is over [limits] max_header_bytes = "
                                          f"{self.site.limits.max_header_bytes}"))
        self._advance()

    def _keep_after_upgrade(self, data: bytes) -> None:
        kept = self._after_upgrade
        kept += data
        if len(kept) > self.site.limits.max_header_bytes:
            # More than a client should send before the switch is agreed:
            # forgotten (if the site does not switch, nothing is lost).
            self._after_upgrade = None
            self._upgrade_overrun = True

    def switch_to(self, request: Request) -> None:
        """
        Hand the connection to C{request}'s tunnel (see
        L{Request.switch_protocols}), with what the client sent after the
        request's head.
        """
        kept, self._after_upgrade = self._after_upgrade or b"", None
        self.tunneled = request
        if self._upgrade_overrun:
            self.abort()  # what it sent early is lost: the new protocol cannot start
            return
        if kept:
            request.tunnel.data_received(bytes(kept))

    def hold_reading_for_tunnel(self, hold: bool) -> None:
        """Stop (or start again) reading from the client, for the tunnel."""
        self._hold_reading("tunnel", hold)

    def _parse_failed(self, error: HttpParserError, data: bytes, starts_read: bool) -> None:
        refusal = self._refusal
        if refusal is None:
            reason = str(error)
            if isinstance(error, HttpParserInvalidMethodError):
                refusal = _bad_method(data if starts_read else None)
            elif isinstance(error, HttpParserInvalidURLError):
                refusal = Refused(400, f"its request target is malformed (llhttp: {reason})")
            elif isinstance(error, HttpParserCallbackError):  # a bug of ours, not the client's
                self._log.failure("parsing a request failed", failure=None)
                refusal = Refused(400, f"it could not be parsed ({reason})")
            else:
                refusal = Refused(400, f"it is malformed (llhttp: {reason})")
        self._refuse(refusal)

    def _refuse(self, refusal: Refused) -> None:
        """
        Answer the request being read with C{refusal}, after the ones
        before it, and read nothing more.
        """
        self._reading = False
        self._refusal = None
        request = self._current
        if request is None or request not in self.queue:
            request = self._partial_request()
            self.queue.append(request)
        elif request is self.active:
            # Its application runs already (it asked for 100 Continue): its
            # body fails, and the connection closes after its response.
            self._fail_body(request, refusal.why)
            request.persistent = False
            self._log.info("refused the rest of a request from {peer}: {why}",
                           peer=self.connection.peer, why=refusal)
            self._current = None
            return
        else:
            self._discard(request)
        request.refusal = refusal
        self._current = None
        self._in_head = False
        self._idle_since = self._body_since = None

    def _partial_request(self) -> Request:
        """As much of the request being read as arrived, for the access log."""
        parser = self._parser
        url = self._url
        method = parser.get_method() if url else b"-"
        version = parser.get_http_version()  # 0.0 until the request line is read
        version = b"-" if version == "0.0" else b"HTTP/" + version.encode("ascii")
        started_at, started = (self._began, self._began_monotonic) if url else (
            time.time(), time.monotonic())
        return Request(self, method, url or b"-", url, b"", version, self._headers,
                       b"", False, started_at, started)

    def _last_request(self) -> None:
        """No request after the ones read is read: the connection closes after them."""
        self._reading = False
        if self.queue:
            self.queue[-1].persistent = False

    # -- llhttp's callbacks (each in feed_data, on the reactor thread) ------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._begun_in_read += 1
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._header_count = 0
        self._head_read = 0
        self._began = time.time()
        self._began_monotonic = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url
        limit = self.site.limits.max_request_line
        # The line is the method, the target and "HTTP/1.1", between two spaces.
        if len(self._parser.get_method()) + len(self._url) + 10 > limit:
            self._refusal = Refused(414, f"its request line is over [limits] max_request_line "
                                         f"= {limit}")
            raise self._refusal

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.site.limits
        size = len(name) + len(value)
        self._head_size += size + _HEADER_LINE
        if not self._in_head:  # a trailer field: counted, not kept
            if self._head_size > limits.max_header_bytes:
                self._refusal = Refused(431, "its trailer fields are over [limits] "
                                             f"max_header_bytes = {limits.max_header_bytes}")
                raise self._refusal
            return
        if size > limits.max_header_field:
            self._refusal = Refused(431, f"a header field ({_field_name(name)}) is over [limits] "
                                         f"max_header_field = {limits.max_header_field}")
        elif self._header_count >= limits.max_headers:
            self._refusal = Refused(431, "it has more header fields than [limits] max_headers "
                                         f"= {limits.max_headers}")
        elif self._head_size + len(self._url) > limits.max_header_bytes:
            self._refusal = Refused(431, "its head is over [limits] max_header_bytes "
                                         f"= {limits.max_header_bytes}")
        if self._refusal is not None:
            raise self._refusal
        self._header_count += 1
        if b"_" in name:
            # WSGI spells X-Forwarded-For and X_Forwarded_For alike: a client
            # could pass the second for the first as a proxy sends it.
            return
        self._headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_size = 0  # from now on, trailer fields
        try:
            request = self._new_request()
        except Refused as refusal:
            self._refusal = refusal
            raise
        self.queue.append(request)
        self._idle_since = None
        if request.body is not None:
            self._current = request
            self._body_since = self.site.reactor.seconds()
            self._ensure_timer()
        if len(self.queue) > MAX_PIPELINED:
            self._hold_reading("queue", True)

    def _new_request(self) -> Request:
        parser = self._parser
        version_text = parser.get_http_version()
        version = _VERSIONS.get(version_text)
        if version is None:
            version = head.http_version(int(version_text[0]), int(version_text[2]))
        method = parser.get_method()
        hosts, length, codings, options, expect = [], None, None, None, None
        for name, value in self._headers:
            if name in _SPECIAL:
                if name == b"host":
                    hosts.append(value)
                elif name == b"content-length":
                    length = value
                elif name == b"transfer-encoding":
                    codings = (codings or []) + [value]
                elif name == b"connection":
                    options = (options or []) + [value]
                else:
                    expect = (expect or []) + [value]
        url = self._url
        if url[:1] == b"/" and b"#" not in url and method != b"CONNECT":  # as most are
            path, _, query = url.partition(b"?")
            authority = None
        else:
            path, query, authority = head.parse_target(method, url)
        host = head.request_host(hosts, version, authority)
        persistent = (version == head.HTTP_11 if options is None
                      else head.keeps_alive(version, head.connection_options(options)))
        request = Request(self, method, url, path, query, version, self._headers, host,
                          persistent and not self.draining, self._began, self._began_monotonic)
        if self.connection.server_port is None:
            port = head.split_host(host)[1] if host else b""
            request.server_port = int(port) if port else (443 if request.secure else 80)
        chunked = codings is not None and head.is_chunked(codings, version)
        limit = self.site.limits.max_body
        if length is not None and not chunked:
            request.content_length = int(length)  # llhttp checked it is digits, and one value
            if request.content_length > limit:
                raise Refused(413, f"its body of {request.content_length} bytes is over "
                                   f"[limits] max_body = {limit}")
        if expect is not None and head.expects_continue(expect, version):
            request.expects_continue = True
        if chunked or request.content_length:
            request.complete = False
            if self.site.async_bodies:
                request.streamed = True
                request.body = request.input = ArrivingBody(
                    on_first_read=(lambda: self.send_continue(request))
                    if request.expects_continue else None,
                    on_drained=lambda: self._hold_reading("body", False))
            elif request.expects_continue:
                request.streamed = True
                request.body = request.input = StreamingInput(
                    on_first_read=lambda: self._from_thread(self.send_continue, request),
                    on_drained=lambda: self._from_thread(self._hold_reading, "body", False))
            else:
                request.body = BodyBuffer()
        return request

    def on_body(self, data: bytes) -> None:
        request = self._current
        body = request.body
        if isinstance(body, BodyBuffer):
            body.append(data)
            size = body.size
            if not self.queue or request is not self.queue[0]:
                self._read_ahead += len(data)
                if self._read_ahead > MAX_READ_AHEAD_BODY:
                    self._hold_reading("queue", True)
        else:
            if body.feed(data):
                self._hold_reading("body", True)
            size = body.received
        self._body_since = self.site.reactor.seconds()
        limit = self.site.limits.max_body
        if size > limit:
            self._refusal = Refused(413, f"its chunked body is over [limits] max_body = {limit}")
            raise self._refusal

    def on_message_complete(self) -> None:
        request = self._current
        if request is not None:
            self._current = None
            self._body_since = None
            body = request.body
            if isinstance(body, BodyBuffer):
                request.body = None
                request.input = body.input()
                request.content_length = body.size
            else:
                body.end()
                request.content_length = body.received
            request.complete = True
        else:
            request = self.queue[-1]
        if not request.persistent:
            # Nothing after a last request is read (it would be answered
            # on a connection about to close).
            self._reading = False
            raise _StopParsing()

    # -- answering ---------------------------------------------------------------------

    def _advance(self) -> None:
        """Hand the next request to the site, if none is being answered and it is ready."""
        if self._advancing or self._parsing or self._gone:
            return
        self._advancing = True
        try:
            queue = self.queue
            while self.active is None and queue and not self._gone:
                request = queue[0]
                if request.refusal is not None:
                    self.active = request
                    self._answer_refusal(request)
                elif request.complete or request.streamed:
                    self.active = request
                    if request.path == b"*":
                        self._answer_asterisk(request)
                    else:
                        self.site.handle(request)
                else:
                    break  # its body is still arriving
        finally:
            self._advancing = False
        if self._gone:
            return
        if "queue" in self._read_holds:
            ahead = sum(1 for r in self.queue if r is not self.active)
            if ahead <= MAX_PIPELINED and self._read_ahead <= MAX_READ_AHEAD_BODY:
                self._hold_reading("queue", False)
        if self.active is None and not self.queue and not self._reading:
            self.close()

    def response_finished(self, request: Request) -> None:
        """Called by C{request} when its response is complete."""
        if self.paused and not self._gone:
            # Still in the transport's buffer: the request is over when the
            # client has taken it (or logged as cut short if it never does).
            self._unflushed = request
            return
        self._done(request)

    def _done(self, request: Request) -> None:
        if self.queue and self.queue[0] is request:
            self.queue.popleft()
        if self.active is request:
            self.active = None
        if self._read_ahead:
            self._read_ahead = sum(r.body.size for r in self.queue
                                   if isinstance(r.body, BodyBuffer) and r is not self._current)
        self.site.request_done(request)
        if not request.persistent or self.draining:
            for waiting in self.queue:
                self._discard(waiting)
            self.queue.clear()
            self.close()
            return
        if not self.queue:
            self._wait_for_head()
        self._advance()

    def send_continue(self, request: Request) -> None:
        """Tell a client waiting to send its body to go ahead."""
        if not request.started_writing and not request.lost and request is self.active:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _answer_refusal(self, request: Request) -> None:
        refusal = request.refusal
        self._log.info("refused a request from {peer}: {why}", peer=self.connection.peer,
                       why=refusal)
        request.persistent = False
        request.code = refusal.status
        request.response_headers = [(b"Content-Type", b"text/plain; charset=utf-8")]
        request.respond(b"%s: %s\n" % (REASONS[refusal.status], refusal.why.encode("utf-8")))

    def _answer_asterisk(self, request: Request) -> None:
        """C{OPTIONS *} asks about the server, not a resource: an empty 200 (RFC 9110 9.3.7)."""
        request.respond(b"")

    def _from_thread(self, function, *args) -> None:
        """Run C{function} on the reactor thread (from a worker)."""
        self.site.reactor.callFromThread(function, *args)

    def _fail_body(self, request: Request, why: str) -> None:
        body = request.body
        if isinstance(body, (StreamingInput, ArrivingBody)):
            body.fail(why)
        elif isinstance(body, BodyBuffer):
            body.discard()
        request.body = None

    # -- deadlines ------------------------------------------------------------------------

    # One timer per connection, which goes off at most every idle_timeout
    # and checks the deadline: starting and ending a wait costs nothing per
    # request, where a timer per request (set, then cancelled as soon as
    # the head arrives) costs a few microseconds each.

    def _wait_for_head(self) -> None:
        self._idle_since = self.site.reactor.seconds()
        self._ensure_timer()

    def _ensure_timer(self) -> None:
        if self._timer is None and self.site.limits.idle_timeout:
            self._timer = self.site.reactor.callLater(self.site.limits.idle_timeout, self._check)

    def _check(self) -> None:
        self._timer = None
        timeout = self.site.limits.idle_timeout
        since = self._idle_since if self._idle_since is not None else self._body_since
        if since is None or not timeout or self._gone:
            return
        left = since + timeout - self.site.reactor.seconds()
        if left > 0:
            self._timer = self.site.reactor.callLater(left, self._check)
        elif self._idle_since is not None:
            self._idle_since = None
            if self._in_head:
                self._refuse(Refused(408, "the request head took longer than [limits] "
                                          "idle_timeout"))
                self._advance()
            else:
                self.close()  # an idle keep-alive connection
        else:
            self._body_since = None
            request = self._current
            if request is self.active:  # its application reads the body as it comes
                self._refuse(Refused(408, "the request body stopped arriving for longer than "
                                          "[limits] idle_timeout"))
            else:
                self._refuse(Refused(408, "the request body took longer than [limits] "
                                          "idle_timeout between two parts"))
                self._advance()

    # -- writing: the transport's producer ----------------------------------------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: the client is not taking what is sent."""
        if self.paused or self._gone:
            return
        self.paused = True
        self._hold_reading("client", True)
        producer = self.active.producer if self.active is not None else None
        if producer is not None:
            producer.pauseProducing()
        self._start_send_timer()

    def resumeProducing(self) -> None:
        """The transport's buffer is empty again."""
        self._stop_send_timer()
        if not self.paused:
            # A producer writing to the socket itself asked to be resumed
            # when it is writable (see wait_until_writable).
            producer = self.active.producer if self.active is not None else None
            if producer is not None:
                producer.resumeProducing()
            return
        self.paused = False
        unflushed, self._unflushed = self._unflushed, None
        if unflushed is not None:
            self._hold_reading("client", False)
            self._done(unflushed)
            return
        producer = self.active.producer if self.active is not None else None
        if producer is not None:
            producer.resumeProducing()
        self._hold_reading("client", False)

    def stopProducing(self) -> None:
        """The connection is going: connectionLost follows."""

    def wait_until_writable(self) -> None:
        """
        Have the active response's producer resumed once the transport's
        buffer is empty and the socket writable (for a producer that
        writes to the socket itself), within C{send_timeout}.
        """
        resume_when_writable(self.transport)
        self._start_send_timer()

    def _start_send_timer(self) -> None:
        timeout = self.site.limits.send_timeout
        if self._send_timer is None and timeout:
            self._send_timer = self.site.reactor.callLater(timeout, self._send_timed_out)

    def _stop_send_timer(self) -> None:
        timer, self._send_timer = self._send_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _send_timed_out(self) -> None:
        self._send_timer = None
        request = self.active or self._unflushed
        self._log.info(
            "closed the connection from {peer}: it took nothing of the response to {method} "
            "{target} for {timeout:g} s ([limits] send_timeout)",
            peer=self.connection.peer, timeout=self.site.limits.send_timeout,
            method=request.method.decode("latin-1") if request else "-",
            target=request.target.decode("latin-1") if request else "-")
        self.abort()


def _bad_method(data: bytes | None) -> Refused:
    """
    llhttp knows a fixed set of methods: another token is a method this
    server does not implement (501, RFC 9110 9.1), anything else a
    malformed request line.  The method is known only when the request
    began the read that failed (C{data}); else llhttp has consumed it.
    """
    if data is not None:
        line = _REQUEST_LINE.match(data.lstrip(b"\r\n"))
        if line is not None:
            shown = line.group(1)[:40].decode("latin-1")
            return Refused(501, f"its method {shown!r} is not one this server implements")
    return Refused(400, "its request line is malformed (not method, target and version)")


def _field_name(name: bytes) -> str:
    return name[:40].decode("latin-1") + ("..." if len(name) > 40 else "")
