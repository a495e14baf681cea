"""
Unit tests for C{[limits]} as L{BacktracSite}'s channel enforces them:
body size (413), header size and count (400), and the deadline for a
request head (slow clients, slowloris), against raw bytes.

No reactor runs: each connection is a real L{BacktracChannel} over a
L{StringTransport}, and the site's reactor is a L{Clock} that the tests
advance.
"""

from __future__ import annotations

from helpers import site_settings
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from backtracweb.channel import BacktracChannel
from backtracweb.website import BacktracSite

MAX_BODY = 100
MAX_HEADER_BYTES = 512
MAX_HEADERS = 5
IDLE = 10.0

REFUSED_413 = (
    b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n"
    b"Connection: close\r\n\r\nContent Too Large\n"
)
REFUSED_408 = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
    b"Connection: close\r\n\r\nRequest Timeout\n"
)
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    b"Connection: close\r\n\r\nBad Request\n"
)
PEER = IPv4Address("TCP", "198.51.100.4", 40000)


class Root(Resource):
    """Records every request it is given; C{/slow} is answered by the test."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bytes, bytes]] = []
        self.pending: list = []

    def render(self, request):
        self.calls.append((request.uri, request.content.read()))
        if request.path == b"/slow":
            self.pending.append(request)
            return NOT_DONE_YET
        return b"ok:" + request.uri


class Connection:
    """One client connection to a fresh site with small limits."""

    def __init__(self, **limits) -> None:
        values = dict(
            max_body=MAX_BODY,
            max_header_bytes=MAX_HEADER_BYTES,
            max_headers=MAX_HEADERS,
            idle_timeout=IDLE,
        )
        values.update(limits)
        settings = site_settings(**values)
        self.clock = Clock()
        self.root = Root()
        self.site = BacktracSite(self.root, settings, self.clock)
        self.channel = self.site.buildProtocol(PEER)
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=PEER
        )
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    @property
    def output(self) -> bytes:
        return self.transport.value()

    @property
    def closed(self) -> bool:
        """Whether the server closed (or aborted) the connection."""
        return self.transport.disconnecting or self.transport.disconnected

    def responses(self) -> list[bytes]:
        """The status lines written so far."""
        return [line for line in self.output.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def head(method: bytes = b"GET", path: bytes = b"/", *headers: bytes) -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\nHost: example.com\r\n" + b"".join(
        h + b"\r\n" for h in headers
    ) + b"\r\n"


# -- body size ----------------------------------------------------------------------


class TestMaxBody:
    def test_content_length_over_limit(self):
        """
        A Content-Length over C{max_body} gets exactly one 413 as soon as
        the head is in, before any body byte arrives, and the connection is
        closed; the request is never processed and body bytes that follow
        are ignored.
        """
        c = Connection()
        with capturedLogs() as events:
            c.send(head(b"POST", b"/upload", b"Content-Length: 101"))
        assert c.output == REFUSED_413
        assert c.transport.disconnecting
        c.send(b"x" * 101 + head(b"GET", b"/next"))
        assert c.output == REFUSED_413
        assert c.root.calls == []
        assert [formatEvent(e) for e in events] == [
            "refused a request from 198.51.100.4: its body of 101 bytes is over "
            "[limits] max_body = 100 (413)"
        ]

    def test_content_length_over_limit_with_body_in_same_packet(self):
        """The 413 is the same when the body arrives in the same packet as the head."""
        c = Connection()
        c.send(head(b"POST", b"/upload", b"Content-Length: 5000") + b"x" * 5000)
        assert c.output == REFUSED_413
        assert c.root.calls == []

    def test_content_length_at_limit(self):
        """A body of exactly C{max_body} bytes is accepted and handed to the resource."""
        c = Connection()
        c.send(head(b"POST", b"/upload", b"Content-Length: 100") + b"y" * 100)
        assert c.root.calls == [(b"/upload", b"y" * 100)]
        assert c.responses() == [b"HTTP/1.1 200 OK"]
        assert not c.closed

    def test_chunked_over_limit(self):
        """
        A chunked body is counted as it arrives: going over C{max_body}
        gets one 413 and a closed connection, and the request is never
        processed.
        """
        c = Connection()
        with capturedLogs() as events:
            c.send(head(b"POST", b"/upload", b"Transfer-Encoding: chunked"))
            c.send(b"50\r\n" + b"a" * 80 + b"\r\n")
            assert c.output == b""
            c.send(b"15\r\n" + b"b" * 21 + b"\r\n0\r\n\r\n")
        assert c.output == REFUSED_413
        assert c.transport.disconnecting
        assert c.root.calls == []
        assert [formatEvent(e) for e in events] == [
            "refused a request from 198.51.100.4: its chunked body is over "
            "[limits] max_body = 100 (413)"
        ]

    def test_chunked_over_limit_in_one_packet(self):
        """Chunks over the limit followed by the last chunk, in one packet: one 413 only."""
        c = Connection()
        c.send(
            head(b"POST", b"/upload", b"Transfer-Encoding: chunked")
            + b"64\r\n" + b"a" * 100 + b"\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"
        )
        assert c.output == REFUSED_413
        assert c.root.calls == []

    def test_chunked_at_limit(self):
        """A chunked body of exactly C{max_body} bytes is accepted."""
        c = Connection()
        c.send(
            head(b"POST", b"/upload", b"Transfer-Encoding: chunked")
            + b"32\r\n" + b"a" * 50 + b"\r\n32\r\n" + b"b" * 50 + b"\r\n0\r\n\r\n"
        )
        assert c.root.calls == [(b"/upload", b"a" * 50 + b"b" * 50)]
        assert c.responses() == [b"HTTP/1.1 200 OK"]

    def test_expect_continue_oversized(self):
        """
        C{Expect: 100-continue} with an oversized body gets the 413 and no
        C{100 Continue}, so the client never sends the body.
        """
        c = Connection()
        c.send(head(b"POST", b"/upload", b"Content-Length: 1000", b"Expect: 100-continue"))
        assert c.output == REFUSED_413
        assert b"100 Continue" not in c.output
        assert c.root.calls == []

    def test_expect_continue_within_limit(self):
        """A body within the limit gets C{100 Continue}, then the response."""
        c = Connection()
        c.send(head(b"POST", b"/upload", b"Content-Length: 10", b"Expect: 100-continue"))
        assert c.output == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"0123456789")
        assert c.root.calls == [(b"/upload", b"0123456789")]

    def test_refused_connection_leaves_site(self):
        """Once the refused connection is lost, the site no longer counts it."""
        c = Connection()
        assert c.site.connections == {c.channel}
        c.send(head(b"POST", b"/upload", b"Content-Length: 101"))
        c.channel.connectionLost(Failure(ConnectionDone()))
        assert c.site.connections == set()
        assert c.clock.getDelayedCalls() == []


# -- header size and count ------------------------------------------------------------


def padded(total: int) -> bytes:
    """A request whose request line and header lines add up to C{total} bytes."""
    # "GET / HTTP/1.1" (14) + "Host: example.com" (17) + "X-Pad: " (7) + padding
    return head(b"GET", b"/", b"X-Pad: " + b"p" * (total - 38))


class TestHeaderLimits:
    def test_header_bytes_at_limit(self):
        """A request line plus headers of exactly C{max_header_bytes} is accepted."""
        c = Connection()
        c.send(padded(MAX_HEADER_BYTES))
        assert c.responses() == [b"HTTP/1.1 200 OK"]
        assert len(c.root.calls) == 1

    def test_header_bytes_over_limit(self):
        """
        One byte more gets 400 and a closed connection, with the reason in
        twistd's log; nothing is processed.
        """
        c = Connection()
        with capturedLogs() as events:
            c.send(padded(MAX_HEADER_BYTES + 1))
        assert c.output == BAD_REQUEST
        assert c.transport.disconnecting
        assert c.root.calls == []
        assert [formatEvent(e) for e in events] == [
            "refused a request from 198.51.100.4: its head is over [limits] max_header_bytes (400)"
        ]

    def test_header_bytes_over_limit_across_packets(self):
        """The header bytes are counted across packets."""
        c = Connection(max_headers=50)
        c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n")  # 31 bytes
        for _ in range(8):  # 8 x 55 bytes: 471 in all
            c.send(b"X-A: " + b"a" * 50 + b"\r\n")
        assert c.output == b"" and not c.closed
        c.send(b"X-A: " + b"a" * 50 + b"\r\n")  # 526
        assert c.output == BAD_REQUEST
        assert c.transport.disconnecting
        assert c.root.calls == []

    def test_header_count_at_limit(self):
        """C{max_headers} header lines (Host included) are accepted."""
        c = Connection()
        c.send(head(b"GET", b"/", *(b"X-%d: v" % n for n in range(MAX_HEADERS - 1))))
        assert c.responses() == [b"HTTP/1.1 200 OK"]

    def test_header_count_over_limit(self):
        """One header line more gets 400 and a closed connection, with the reason logged."""
        c = Connection()
        with capturedLogs() as events:
            c.send(head(b"GET", b"/", *(b"X-%d: v" % n for n in range(MAX_HEADERS))))
        assert c.output == BAD_REQUEST
        assert c.transport.disconnecting
        assert c.root.calls == []
        assert [formatEvent(e) for e in events] == [
            "refused a request from 198.51.100.4: it has more headers than [limits] max_headers "
            "(400)"
        ]

    def test_malformed_head(self):
        """A head Twisted cannot parse gets the same 400, with the reason logged."""
        c = Connection()
        with capturedLogs() as events:
            c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\nno colon here\r\n\r\n")
        assert c.output == BAD_REQUEST
        assert c.transport.disconnecting
        assert [formatEvent(e) for e in events] == [
            "refused a request from 198.51.100.4: it is malformed (request line, a header, or "
            "the chunked body) (400)"
        ]

    def test_limits_from_settings(self):
        """Each connection takes the limits of the site's settings when it is made."""
        c = Connection(max_header_bytes=2048, max_headers=7, idle_timeout=3.5)
        assert (c.channel.totalHeadersSize, c.channel.maxHeaders, c.channel.timeOut) == (
            2048, 7, 3.5,
        )
        assert isinstance(c.channel, BacktracChannel)

    def test_long_header_line_within_limit(self):
        """
        With C{max_header_bytes = 64K}, one 20000-byte header line is within
        the limit: the request is served.
        """
        c = Connection(max_header_bytes=64 * 1024)
        c.send(head(b"GET", b"/", b"Cookie: " + b"c" * 20000))
        assert c.responses() == [b"HTTP/1.1 200 OK"]


# -- the head deadline ------------------------------------------------------------------


class TestHeadDeadline:
    def test_slow_head(self):
        """
        A request head not complete C{idle_timeout} seconds after the
        connection was made gets 408 and the connection is closed; not a
        moment before.
        """
        c = Connection()
        with capturedLogs() as events:
            c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n")
            c.clock.advance(IDLE - 0.1)
            assert c.output == b"" and not c.closed
            c.clock.advance(0.1)
        assert REFUSED_408 in c.output
        assert c.output.count(b"HTTP/1.1 ") == 1
        assert c.closed
        assert c.root.calls == []
        assert (
            "refused a request from 198.51.100.4: the request head took longer than "
            "[limits] idle_timeout (408)"
        ) in [formatEvent(e) for e in events]

    def test_slowloris(self):
        """
        A client sending one header byte a second still gets 408 at
        C{idle_timeout}: the deadline does not restart with each byte.
        """
        c = Connection()
        c.send(b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: ")
        for _ in range(int(IDLE) - 1):
            c.clock.advance(1)
            c.send(b"z")
        assert c.output == b"" and not c.closed
        c.clock.advance(1)
        assert c.output == REFUSED_408
        assert c.transport.disconnecting
        c.send(b"\r\n\r\n")
        assert c.root.calls == []

    def test_slowloris_request_line(self):
        """
        A client trickling even the request line is disconnected at
        C{idle_timeout}, without a response (there is no request to answer).
        """
        c = Connection()
        for byte in b"GET /verylongpath":
            c.send(bytes([byte]))
            c.clock.advance(IDLE / 20)
        assert not c.closed
        c.clock.advance(IDLE - IDLE / 20 * len(b"GET /verylongpath"))
        assert c.transport.disconnected
        assert c.output == b""

    def test_silent_connection(self):
        """A connection that never sends a byte is closed at C{idle_timeout}, without a response."""
        c = Connection()
        c.clock.advance(IDLE - 0.1)
        assert not c.closed
        c.clock.advance(0.1)
        assert c.closed
        assert c.output == b""

    def test_slow_body_not_cut(self):
        """
        The deadline covers only the head: a body trickling in, a byte a
        second, is read to the end and the request served.
        """
        c = Connection()
        c.send(head(b"POST", b"/upload", b"Content-Length: 30"))
        for _ in range(30):
            c.clock.advance(1)
            c.send(b"b")
        assert c.root.calls == [(b"/upload", b"b" * 30)]
        assert c.responses() == [b"HTTP/1.1 200 OK"]

    def test_idle_keep_alive_closed(self):
        """
        A keep-alive connection left idle after a response is closed
        C{idle_timeout} seconds after it.
        """
        c = Connection()
        c.send(head(b"GET", b"/one"))
        assert c.responses() == [b"HTTP/1.1 200 OK"] and not c.closed
        c.clock.advance(IDLE - 0.1)
        assert not c.closed
        c.clock.advance(0.1)
        assert c.closed
        assert c.responses() == [b"HTTP/1.1 200 OK"]

    def test_keep_alive_second_request_served(self):
        """A second request on a keep-alive connection, sent in time, is served."""
        c = Connection()
        c.send(head(b"GET", b"/one"))
        c.clock.advance(IDLE - 1)
        c.send(head(b"GET", b"/two"))
        assert [uri for uri, _ in c.root.calls] == [b"/one", b"/two"]
        assert not c.closed

    def test_slowloris_after_keep_alive(self):
        """
        The deadline also holds for the next request on a keep-alive
        connection: trickling its head a byte a second gets 408
        C{idle_timeout} seconds after the previous response.
        """
        c = Connection()
        c.send(head(b"GET", b"/one"))
        answered = len(c.output)
        c.send(b"GET /two HTTP/1.1\r\nX-Slow: ")
        for _ in range(3 * int(IDLE)):
            c.clock.advance(1)
            c.send(b"z")
        assert c.output[answered:] == REFUSED_408
        assert c.closed

    def test_pipelined_requests(self):
        """
        Two requests in one packet, the first answered only after several
        idle timeouts: the second is not cut by the head deadline (its head
        arrived in time) and is served right after the first.
        """
        c = Connection()
        c.send(head(b"GET", b"/slow") + head(b"GET", b"/second"))
        c.clock.advance(3 * IDLE)
        assert c.output == b"" and not c.closed
        [first] = c.root.pending
        first.write(b"first")
        first.finish()
        assert [uri for uri, _ in c.root.calls] == [b"/slow", b"/second"]
        assert c.responses() == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
        assert c.output.endswith(b"ok:/second")
        assert not c.closed

    def test_pipelined_requests_answered_at_once(self):
        """Pipelined requests answered at once are all served, and the connection stays open."""
        c = Connection()
        c.send(head(b"GET", b"/a") + head(b"GET", b"/b") + head(b"GET", b"/c"))
        assert [uri for uri, _ in c.root.calls] == [b"/a", b"/b", b"/c"]
        c.clock.advance(IDLE - 0.1)
        assert not c.closed

    def test_deadline_cancelled_on_close(self):
        """A connection lost before its deadline leaves no timer behind."""
        c = Connection()
        c.send(b"GET / HTTP/1.1\r\n")
        c.channel.connectionLost(Failure(ConnectionDone()))
        assert c.clock.getDelayedCalls() == []
        assert c.site.connections == set()
