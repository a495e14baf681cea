"""
Unit tests for L{backtracweb.http.channel}: one connection's life, from
raw bytes to responses, where the conformance table
(tests/http_cases.py) does not reach: the C{[limits]} at and just past
their values, the deadlines (slow heads, slow bodies, idle connections,
clients that stop reading), pipelining and back-pressure, C{100 Continue},
what is logged for requests refused or cut short.

No reactor runs (see tests/helpers.py): the site's clock is advanced by
the test, and a full transport buffer is the channel's C{pauseProducing}.
"""

from __future__ import annotations

import pytest
from helpers import Client, FakeReactor, Recorder, make_site, requests_done
from twisted.logger import capturedLogs, formatEvent

from backtracweb.http import channel as channel_module
from backtracweb.http.channel import CLIENT_GONE, MAX_PIPELINED

MAX_BODY = 100
MAX_HEADER_BYTES = 512
MAX_HEADERS = 5
IDLE = 10.0
SEND = 20.0


class Logged:
    """A site's access log as (method, target, status, bytes) tuples."""

    def __init__(self, site) -> None:
        self._done = requests_done(site)

    @property
    def lines(self) -> list[tuple]:
        return [(r.method, r.target, r.code, r.sent) for r in self._done]


def connection(**limits) -> tuple[Client, Recorder, FakeReactor, Logged]:
    """A client of a fresh site with small limits: the client, the root, the clock, the log."""
    values = dict(max_body=MAX_BODY, max_header_bytes=MAX_HEADER_BYTES,
                  max_headers=MAX_HEADERS, idle_timeout=IDLE, send_timeout=SEND)
    values.update(limits)
    root, clock = Recorder(), FakeReactor()
    site = make_site(root, clock, **values)
    return Client(site), root, clock, Logged(site)


def head(method: bytes = b"GET", target: bytes = b"/", *headers: bytes) -> bytes:
    return (method + b" " + target + b" HTTP/1.1\r\nHost: example.com\r\n"
            + b"".join(h + b"\r\n" for h in headers) + b"\r\n")


def messages(events) -> list[str]:
    return [formatEvent(e) for e in events]


def bodies(client: Client) -> list[bytes]:
    """The content of each response written so far."""
    return [response.body for response in client.responses()]


# -- body size -----------------------------------------------------------------------


class TestMaxBody:
    def test_content_length_over_limit(self):
        """
        A Content-Length over C{max_body} gets exactly one 413 as soon as
        the head is in, before any body byte arrives; the connection closes,
        the request is never handled, and what follows is not read.
        """
        client, root, _, log = connection()
        with capturedLogs() as events:
            client.send(head(b"POST", b"/upload", b"Content-Length: 101"))
        assert client.statuses() == [413] and client.closed
        client.send(b"x" * 101 + head(b"GET", b"/next"))
        assert client.statuses() == [413]
        assert root.requests == []
        assert messages(events) == [
            "refused a request from 198.51.100.4: its body of 101 bytes is over [limits] "
            "max_body = 100 (413)"]
        assert log.lines == [(b"POST", b"/upload", 413, len(bodies(client)[0]))]

    @pytest.mark.parametrize("framing, body", [
        (b"Content-Length: 100", b"y" * 100),
        (b"Transfer-Encoding: chunked", b"32\r\n" + b"a" * 50 + b"\r\n32\r\n" + b"b" * 50
         + b"\r\n0\r\n\r\n"),
    ], ids=["content-length", "chunked"])
    def test_at_limit(self, framing, body):
        """A body of exactly C{max_body} bytes is handed to the site, whole."""
        client, root, _, _ = connection()
        client.send(head(b"POST", b"/upload", framing) + body)
        [request] = root.requests
        assert request.input.read() == (b"y" * 100 if b"Length" in framing
                                        else b"a" * 50 + b"b" * 50)
        assert request.content_length == 100
        assert client.statuses() == [200] and not client.closed

    @pytest.mark.parametrize("parts", [
        [b"50\r\n" + b"a" * 80 + b"\r\n", b"15\r\n" + b"b" * 21 + b"\r\n0\r\n\r\n"],
        [b"64\r\n" + b"a" * 100 + b"\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"],
    ], ids=["across-reads", "one-read"])
    def test_chunked_over_limit(self, parts):
        """A chunked body is counted as it arrives: past C{max_body}, one 413 and a close."""
        client, root, _, _ = connection()
        with capturedLogs() as events:
            client.send(head(b"POST", b"/upload", b"Transfer-Encoding: chunked"))
            for part in parts:
                client.send(part)
        assert client.statuses() == [413] and client.closed
        assert root.requests == []
        assert messages(events) == [
            "refused a request from 198.51.100.4: its chunked body is over [limits] max_body "
            "= 100 (413)"]

    def test_expect_continue_oversized(self):
        """C{Expect: 100-continue} with too large a body: the 413, never a 100."""
        client, root, _, _ = connection()
        client.send(head(b"POST", b"/upload", b"Content-Length: 1000", b"Expect: 100-continue"))
        assert client.statuses() == [413]
        assert root.requests == []


# -- the head's size and fields --------------------------------------------------------


def padded(total: int) -> bytes:
    """A request whose request target, header names and values add up to C{total} bytes."""
    # "/" (1) + "Host" "example.com" (15 + 4) + "X-Pad" (5 + 4) + padding
    return head(b"GET", b"/", b"X-Pad: " + b"p" * (total - 29))


class TestHeadLimits:
    def test_head_at_limit(self):
        """A head of exactly C{max_header_bytes} (as counted) is served."""
        client, root, _, _ = connection()
        client.send(padded(MAX_HEADER_BYTES))
        assert client.statuses() == [200]

    def test_head_over_limit(self):
        """One byte more is a 431, logged with the key; nothing is handled."""
        client, root, _, _ = connection()
        with capturedLogs() as events:
            client.send(padded(MAX_HEADER_BYTES + 1))
        assert client.statuses() == [431] and client.closed
        assert root.requests == []
        assert messages(events) == [
            "refused a request from 198.51.100.4: its head is over [limits] max_header_bytes = "
            "512 (431)"]

    def test_head_over_limit_across_reads(self):
        """The head is counted across reads."""
        client, root, _, _ = connection(max_headers=50)
        client.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n")
        for _ in range(9):
            client.send(b"X-A: " + b"a" * 50 + b"\r\n")
        # (llhttp hands over a field once the next one begins.)
        assert client.output == b"" and not client.closed
        client.send(b"\r\n")
        assert client.statuses() == [431]

    def test_endless_header_line(self):
        """
        A header line that never ends is cut off once the bytes read for
        the head pass C{max_header_bytes} (llhttp would keep it whole).
        """
        client, _, _, _ = connection(max_header_field=1 << 20)
        client.send(b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Long: ")
        for _ in range(5):
            client.send(b"v" * 200)
        assert client.statuses() == [431] and client.closed

    @pytest.mark.parametrize("count, statuses", [(MAX_HEADERS, [200]), (MAX_HEADERS + 1, [431])])
    def test_field_count(self, count, statuses):
        """C{max_headers} fields, Host included, are served; one more is a 431."""
        client, _, _, _ = connection()
        client.send(head(b"GET", b"/", *(b"X-%d: v" % n for n in range(count - 1))))
        assert client.statuses() == statuses

    @pytest.mark.parametrize("length, statuses", [(64, [200]), (65, [431])])
    def test_field_size(self, length, statuses):
        """One field of C{max_header_field} bytes (name and value) is served; one more is a 431."""
        client, _, _, _ = connection(max_header_field=64)
        client.send(head(b"GET", b"/", b"X-Long: " + b"v" * (length - 6)))
        assert client.statuses() == statuses

    @pytest.mark.parametrize("method", [b"GET", b"OPTIONS"])
    @pytest.mark.parametrize("length, statuses", [(64, [200]), (65, [414])])
    def test_request_line(self, method, length, statuses):
        """
        A request line (method, target, version and the spaces between) of
        C{max_request_line} bytes is served; one more is a 414.
        """
        client, _, _, _ = connection(max_request_line=64)
        target = b"/" + b"a" * (length - len(method) - len(b"  HTTP/1.1") - 1)
        assert len(method + b" " + target + b" HTTP/1.1") == length
        client.send(head(method, target))
        assert client.statuses() == statuses

    def test_underscore_fields_dropped_but_counted(self):
        """A field with an underscore never reaches the site, but counts towards the limits."""
        client, root, _, _ = connection()
        client.send(head(b"GET", b"/", b"X_Spoof: 1", b"X-Real: 2"))
        [request] = root.requests
        assert request.headers == [(b"host", b"example.com"), (b"x-real", b"2")]
        client, _, _, _ = connection()
        client.send(head(b"GET", b"/", *(b"X_%d: v" % n for n in range(MAX_HEADERS))))
        assert client.statuses() == [431]


# -- deadlines -----------------------------------------------------------------------------


class TestDeadlines:
    def test_slow_head(self):
        """
        A request head not complete C{idle_timeout} seconds after the
        connection was made gets 408 and a close; not a moment before.
        """
        client, root, clock, log = connection()
        with capturedLogs() as events:
            client.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n")
            clock.advance(IDLE - 0.1)
            assert client.output == b"" and not client.closed
            clock.advance(0.1)
        assert client.statuses() == [408] and client.closed
        assert root.requests == []
        assert messages(events) == [
            "refused a request from 198.51.100.4: the request head took longer than [limits] "
            "idle_timeout (408)"]
        assert log.lines == [(b"GET", b"/", 408, len(bodies(client)[0]))]

    @pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: ", b"GET /"],
                             ids=["in-the-fields", "in-the-request-line"])
    def test_slowloris(self, start):
        """A byte a second does not extend the deadline: 408 at C{idle_timeout}."""
        client, root, clock, _ = connection()
        client.send(start)
        for _ in range(int(IDLE) - 1):
            clock.advance(1)
            client.send(b"z")
        assert client.output == b"" and not client.closed
        clock.advance(1)
        assert client.statuses() == [408] and client.closed
        client.send(b"\r\n\r\n")
        assert root.requests == []

    def test_silent_connection(self):
        """A connection that never sends a byte is closed at C{idle_timeout}, without a response."""
        client, _, clock, log = connection()
        clock.advance(IDLE - 0.1)
        assert not client.closed
        clock.advance(0.1)
        assert client.closed and client.output == b""
        assert log.lines == []

    def test_slow_body_served(self):
        """A body arriving a byte a second, each within C{idle_timeout}, is read whole and served."""
        client, root, clock, _ = connection()
        client.send(head(b"POST", b"/upload", b"Content-Length: 30"))
        for _ in range(30):
            clock.advance(1)
            client.send(b"b")
        [request] = root.requests
        assert request.input.read() == b"b" * 30

    def test_stalled_body(self):
        """A body that stops arriving for C{idle_timeout} gets 408; the site never sees it."""
        client, root, clock, _ = connection()
        with capturedLogs() as events:
            client.send(head(b"POST", b"/upload", b"Content-Length: 30") + b"part")
            clock.advance(IDLE - 1)
            client.send(b"more")
            clock.advance(IDLE - 0.1)
            assert not client.closed
            clock.advance(0.1)
        assert client.statuses() == [408] and client.closed
        assert root.requests == []
        assert "took longer than [limits] idle_timeout between two parts" in messages(events)[0]

    def test_idle_keep_alive_closed(self):
        """A kept-alive connection left idle is closed C{idle_timeout} after the response."""
        client, _, clock, _ = connection()
        client.send(head(b"GET", b"/one"))
        clock.advance(IDLE - 0.1)
        assert not client.closed
        clock.advance(0.1)
        assert client.closed and client.statuses() == [200]

    def test_second_request_in_time(self):
        """A second request on a kept-alive connection, sent in time, is served."""
        client, root, clock, _ = connection()
        client.send(head(b"GET", b"/one"))
        clock.advance(IDLE - 1)
        client.send(head(b"GET", b"/two"))
        assert root.targets == [b"/one", b"/two"] and not client.closed

    def test_slowloris_after_keep_alive(self):
        """The next head on a kept-alive connection has its deadline too, from the response."""
        client, _, clock, _ = connection()
        client.send(head(b"GET", b"/one"))
        client.send(b"GET /two HTTP/1.1\r\nX-Slow: ")
        for _ in range(3 * int(IDLE)):
            clock.advance(1)
            client.send(b"z")
        assert client.statuses() == [200, 408] and client.closed

    def test_no_deadline_while_a_request_is_handled(self):
        """
        Pipelined heads that arrived in time wait as long as the request
        before them takes; the next is served right after it.
        """
        client, root, clock, _ = connection()
        client.send(head(b"GET", b"/slow") + head(b"GET", b"/second"))
        clock.advance(3 * IDLE)
        assert client.output == b"" and not client.closed
        root.pending[0].respond(b"first")
        assert root.targets == [b"/slow", b"/second"]
        assert client.statuses() == [200, 200] and not client.closed

    def test_timers_cancelled_on_close(self):
        """A connection lost leaves no timer behind."""
        client, _, clock, _ = connection()
        client.send(b"GET / HTTP/1.1\r\n")
        client.channel.pauseProducing()
        client.lost()
        assert clock.getDelayedCalls() == []
        assert client.site.connections == set()


# -- pipelining and back-pressure ------------------------------------------------------------


class TestPipelining:
    def test_answered_in_order(self):
        """Requests in one read are handed over one at a time and answered in order."""
        client, root, _, log = connection()
        client.send(head(b"GET", b"/slow/1") + head(b"POST", b"/b", b"Content-Length: 2") + b"hi"
                    + head(b"GET", b"/c"))
        assert root.targets == [b"/slow/1"]
        root.pending[0].respond(b"one")
        assert root.targets == [b"/slow/1", b"/b", b"/c"]
        assert bodies(client) == [b"one", b"ok:/b", b"ok:/c"]
        assert [line[1] for line in log.lines] == [b"/slow/1", b"/b", b"/c"]

    def test_refusal_waits_for_the_requests_before_it(self):
        """A bad request after good ones is answered after them, then the connection closes."""
        client, root, _, _ = connection()
        client.send(head(b"GET", b"/slow") + b"GET /bad HTTP/1.1\r\nHost: a b\r\n\r\n")
        assert client.output == b""
        root.pending[0].respond(b"first")
        assert client.statuses() == [200, 400] and client.closed

    def test_reading_paused_past_the_backlog(self):
        """
        More than L{MAX_PIPELINED} requests waiting behind the one being
        answered stop the reading; it resumes as they are answered.
        """
        client, root, _, _ = connection()
        client.send(head(b"GET", b"/slow") + head(b"GET", b"/x") * MAX_PIPELINED)
        assert client.transport.producerState == "producing"
        client.send(head(b"GET", b"/x"))
        assert client.transport.producerState == "paused"
        root.pending[0].respond(b"done")
        assert client.transport.producerState == "producing"
        assert len(root.requests) == MAX_PIPELINED + 2

    def test_nothing_read_after_a_last_request(self):
        """After a request that says close, the rest of the read is not a request."""
        client, root, _, _ = connection()
        client.send(head(b"GET", b"/one", b"Connection: close") + head(b"GET", b"/two"))
        assert root.targets == [b"/one"]
        assert client.statuses() == [200] and client.closed

    def test_upgrade_answered_then_closed(self):
        """A request to switch protocols is answered as HTTP, and the connection closed."""
        client, root, _, _ = connection()
        client.send(head(b"GET", b"/ws", b"Upgrade: websocket", b"Connection: Upgrade")
                    + b"\x81\x05hello")
        assert root.targets == [b"/ws"]
        assert client.statuses() == [200] and client.closed


class TestSlowReaders:
    def test_response_logged_when_taken(self):
        """
        A response finished while the client is not reading is logged (and
        the next request handled) only once the transport has sent it.
        """
        client, root, _, log = connection()
        client.send(head(b"GET", b"/slow") + head(b"GET", b"/next"))
        client.channel.pauseProducing()
        assert client.transport.producerState == "paused"
        root.pending[0].respond(b"big")
        assert log.lines == [] and root.targets == [b"/slow"]
        client.channel.resumeProducing()
        assert [line[1] for line in log.lines] == [b"/slow", b"/next"]
        assert client.transport.producerState == "producing"

    def test_send_timeout(self, monkeypatch):
        """
        A client that takes nothing for C{send_timeout} is disconnected;
        the response is logged as cut short (499) with the bytes it got.
        """
        client, root, clock, log = connection()
        monkeypatch.setattr(channel_module, "unsent_bytes", lambda transport: 900)
        client.send(head(b"GET", b"/slow"))
        client.channel.pauseProducing()
        clock.advance(SEND - 1)
        client.channel.resumeProducing()  # it took some: the wait starts again
        client.channel.pauseProducing()
        root.pending[0].respond(b"x" * 1000)
        with capturedLogs() as events:
            clock.advance(SEND - 0.1)
            assert not client.transport.disconnecting
            clock.advance(0.1)
        assert client.transport.disconnecting  # aborted
        assert messages(events) == [
            "closed the connection from 198.51.100.4: it took nothing of the response to GET "
            f"/slow for {SEND:g} s ([limits] send_timeout)"]
        client.lost()
        assert log.lines == [(b"GET", b"/slow", CLIENT_GONE, 100)]

    def test_producer_paused_and_stopped(self):
        """The response's producer is paused with the channel, and stopped when the client goes."""
        client, root, _, log = connection()
        client.send(head(b"GET", b"/slow"))
        request = root.pending[0]
        calls = []

        class Producer:
            def pauseProducing(self):
                calls.append("pause")

            def resumeProducing(self):
                calls.append("resume")

            def stopProducing(self):
                calls.append("stop")

        request.register_producer(Producer())
        request.write(b"part")
        client.channel.pauseProducing()
        client.channel.resumeProducing()
        client.lost()
        assert calls == ["pause", "resume", "stop"]
        assert log.lines == [(b"GET", b"/slow", CLIENT_GONE, 4)]

    def test_gone_before_the_response_is_logged_once(self):
        """A request whose client goes first is logged once, 499, and the others are forgotten."""
        client, root, _, log = connection()
        client.send(head(b"GET", b"/slow") + head(b"GET", b"/queued"))
        client.lost()
        root.pending[0].respond(b"late")
        assert log.lines == [(b"GET", b"/slow", CLIENT_GONE, 0)]


class TestContinue:
    def test_handed_over_before_the_body(self):
        """
        A request that expects 100 Continue is handed over at once; the 100
        is sent when the body is first read (via the reactor), then the body
        streams in.
        """
        client, root, clock, _ = connection()
        client.send(head(b"POST", b"/slow", b"Content-Length: 5", b"Expect: 100-continue"))
        [request] = root.requests
        assert client.output == b"" and not request.complete
        body = request.input
        body.read(0)
        clock.run_pending()
        assert client.output == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello")
        assert body.read() == b"hello" and request.complete
        request.respond(b"got it")
        assert client.statuses() == [100, 200] and not client.closed

    def test_not_read_not_invited(self):
        """
        A response without reading the body sends no 100, and closes the
        connection (the body is still to come, or never will).
        """
        client, root, _, _ = connection()
        client.send(head(b"POST", b"/slow", b"Content-Length: 5", b"Expect: 100-continue"))
        root.pending[0].respond(b"no thanks")
        assert client.statuses() == [200] and client.closed
        assert b"Connection: close" in client.output

    def test_body_stalls(self):
        """A body the application waits for that stops coming fails its read."""
        client, root, clock, _ = connection()
        client.send(head(b"POST", b"/slow", b"Content-Length: 5", b"Expect: 100-continue") + b"he")
        request = root.pending[0]
        with capturedLogs():
            clock.advance(IDLE)
        assert request.input.read() == b"he"
        with pytest.raises(OSError):
            request.input.read()
        request.respond(b"sorry")
        assert client.closed


class TestHandlerErrors:
    def test_error_before_the_response(self):
        """A site root that raises gets the request answered 500, and logged."""
        client, root, _, log = connection()

        def broken(request):
            raise RuntimeError("bug")

        root.handle = broken
        with capturedLogs() as events:
            client.send(head(b"GET", b"/boom"))
        assert client.statuses() == [500] and not client.closed
        assert "answering GET /boom failed" in messages(events)[0]
        assert log.lines[0][:3] == (b"GET", b"/boom", 500)
