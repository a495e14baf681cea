"""
Unit tests for L{BacktracSite.drain} and L{BacktracSite.cut_short}: how
the site stops (SIGTERM) without cutting requests in flight short, unless
they outlast C{[server] graceful_timeout}.

No reactor runs (see tests/helpers.py).  A L{StringTransport} only
records that it was closed, so the tests tell the channel its connection
is gone, as the reactor would.
"""

from __future__ import annotations

from helpers import Client, FakeReactor, Recorder, make_site
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.logger import LogLevel, capturedLogs, formatEvent

from backtracweb.app.website import IDLE_LINGER, BacktracSite

TIMEOUT = 30.0


def drained_site() -> tuple[BacktracSite, Recorder, FakeReactor]:
    """A site with C{graceful_timeout = TIMEOUT}, its root and its clock."""
    root, clock = Recorder(), FakeReactor()
    return make_site(root, clock, graceful_timeout=TIMEOUT), root, clock


def connect(site: BacktracSite, host: str = "198.51.100.4") -> Client:
    """A client connection to the site from C{host}."""
    return Client(site, peer=IPv4Address("TCP", host, 40000))


def fired(d) -> list:
    results: list = []
    d.addBoth(results.append)
    return results


def cut_short_calls(clock: FakeReactor) -> list:
    return [c for c in clock.getDelayedCalls() if c.func.__name__ == "cut_short"]


class TestDrain:
    def test_empty_site(self):
        """A site without connections drains at once, leaving no timer."""
        site, _, clock = drained_site()
        results = fired(site.drain(TIMEOUT))
        assert results == [None]
        assert site.draining
        assert clock.getDelayedCalls() == []

    def test_idle_connections_closed_after_a_moment(self):
        """
        Idle connections, fresh or kept alive after a response, are closed
        L{IDLE_LINGER} seconds into the drain; the drain is done when the
        last of them is gone.
        """
        site, _, clock = drained_site()
        fresh = connect(site)
        kept = connect(site).get(b"/done")
        assert not kept.closed
        results = fired(site.drain(TIMEOUT))
        clock.advance(IDLE_LINGER - 0.01)
        assert not fresh.closed and not kept.closed
        clock.advance(0.01)
        assert fresh.closed and kept.closed
        assert results == []
        fresh.lost()
        assert results == []
        kept.lost()
        assert results == [None]
        assert site.connections == set()
        assert cut_short_calls(clock) == []

    def test_request_arriving_on_an_idle_connection_as_the_drain_starts_is_answered(self):
        """
        A proxy may write a request on a kept-alive connection just as the
        drain starts: it is answered, with Connection: close, rather than
        meeting a closed connection (which a proxy would not retry for a
        POST); the connection then closes.
        """
        site, root, clock = drained_site()
        conn = connect(site).get(b"/first")
        results = fired(site.drain(TIMEOUT))
        conn.transport.clear()
        conn.send(b"POST /late HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n")
        response = conn.transport.value()
        assert response.startswith(b"HTTP/1.1 200 ")
        assert b"\r\nConnection: close\r\n" in response
        assert conn.closed
        assert root.targets == [b"/first", b"/late"]
        conn.lost()
        assert results == [None]
        assert clock.getDelayedCalls() == []

    def test_busy_connection_closes_after_response(self):
        """
        A connection with a request in flight is left to finish it: the
        response says C{Connection: close}, the connection closes once it
        is sent, and then the drain is done.
        """
        site, root, clock = drained_site()
        busy = connect(site).get(b"/slow")
        results = fired(site.drain(TIMEOUT))
        assert not busy.closed
        assert busy.channel.draining
        clock.advance(TIMEOUT - 1)
        assert results == [] and not busy.closed
        [request] = root.pending
        request.write(b"finished")
        request.finish()
        response = busy.transport.value()
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nConnection: close\r\n" in response
        assert response.endswith(b"\r\n\r\n8\r\nfinished\r\n0\r\n\r\n")
        assert busy.closed
        assert results == []
        busy.lost()
        assert results == [None]
        assert cut_short_calls(clock) == []

    def test_response_already_started(self):
        """
        A response whose headers were already sent is not changed, and its
        connection still closes once it is complete.
        """
        site, root, _ = drained_site()
        busy = connect(site).get(b"/slow")
        [request] = root.pending
        request.write(b"part one, ")
        results = fired(site.drain(TIMEOUT))
        request.write(b"part two")
        request.finish()
        assert b"Connection: close" not in busy.transport.value()
        assert busy.closed
        busy.lost()
        assert results == [None]

    def test_mixed(self):
        """Idle connections close after a moment while busy ones finish; the drain waits for all."""
        site, root, clock = drained_site()
        idle, busy = connect(site), connect(site).get(b"/slow")
        results = fired(site.drain(TIMEOUT))
        clock.advance(IDLE_LINGER)
        assert idle.closed and not busy.closed
        idle.lost()
        assert results == []
        root.pending[0].finish()
        assert busy.closed
        busy.lost()
        assert results == [None]

    def test_pipelined_request_not_started(self):
        """
        A request pipelined behind one in flight is not served once
        draining: the connection closes after the first response, which
        told the client so.
        """
        site, root, _ = drained_site()
        busy = connect(site).send(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        site.drain(TIMEOUT)
        root.pending[0].finish()
        assert root.targets == [b"/slow"]
        assert busy.closed
        assert busy.transport.value().count(b"HTTP/1.1 ") == 1

    def test_no_head_deadline_while_draining(self):
        """
        Once draining, a finished request starts no new head deadline: the
        connection is closing.
        """
        site, root, clock = drained_site()
        busy = connect(site).get(b"/slow")
        site.drain(TIMEOUT)
        root.pending[0].finish()
        assert busy.channel._idle_since is None

    def test_head_arriving_when_drain_starts(self):
        """
        A connection whose request head is still arriving when the drain
        starts is served, then closed after that response.
        """
        site, root, _ = drained_site()
        arriving = connect(site).send(b"GET /now HTTP/1.1\r\nHost: x\r\n")
        site.drain(TIMEOUT)
        arriving.send(b"\r\n")
        assert root.targets == [b"/now"]
        assert b"Connection: close" in arriving.transport.value()
        assert arriving.closed


class TestCutShort:
    def test_timeout(self):
        """
        At the graceful timeout, every request still in flight is logged as
        cut short, naming method, path, client and the timeout, and every
        remaining connection is aborted; the drain is done once they are gone.
        """
        site, root, clock = drained_site()
        first = connect(site, "198.51.100.4").get(b"/slow/report?year=2026")
        second = connect(site, "203.0.113.9").send(
            b"POST /slow/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        idle = connect(site)
        results = fired(site.drain(TIMEOUT))
        idle.lost()
        with capturedLogs() as events:
            clock.advance(TIMEOUT - 0.1)
            assert events == [] and not first.closed
            clock.advance(0.1)
        assert sorted((e["log_level"], formatEvent(e)) for e in events) == [
            (
                LogLevel.warn,
                "stopping: cut short GET /slow/report?year=2026 from 198.51.100.4 after 30 s "
                "([server] graceful_timeout)",
            ),
            (
                LogLevel.warn,
                "stopping: cut short POST /slow/upload from 203.0.113.9 after 30 s "
                "([server] graceful_timeout)",
            ),
        ]
        assert first.transport.disconnected and second.transport.disconnected
        assert results == []
        first.lost(ConnectionAborted)
        second.lost(ConnectionAborted)
        assert results == [None]

    def test_called_directly(self):
        """
        Called without a timeout (a second SIGTERM), C{cut_short} names the
        requests without mentioning the timeout, and aborts at once.
        """
        site, _, clock = drained_site()
        busy = connect(site).get(b"/slow")
        results = fired(site.drain(TIMEOUT))
        with capturedLogs() as events:
            site.cut_short()
        assert [formatEvent(e) for e in events] == ["stopping: cut short GET /slow from 198.51.100.4"]
        assert busy.transport.disconnected
        busy.lost(ConnectionAborted)
        assert results == [None]
        assert cut_short_calls(clock) == []  # the timeout was cancelled

    def test_partial_request_not_named(self):
        """
        A connection whose request has not fully arrived is aborted too,
        but there is no request to name yet.
        """
        site, _, clock = drained_site()
        partial = connect(site).send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12")
        assert site.in_flight() == []
        fired(site.drain(TIMEOUT))
        with capturedLogs() as events:
            clock.advance(TIMEOUT)
        assert events == []
        assert partial.transport.disconnected

    def test_abandoned_request_logged(self):
        """A request cut short is written to the access log as abandoned (499)."""
        site, _, clock = drained_site()
        busy = connect(site).get(b"/slow")
        site.drain(TIMEOUT)
        clock.advance(TIMEOUT)
        with capturedLogs():
            busy.lost(ConnectionAborted)
        assert (site.stats.requests, site.stats.by_class["4xx"]) == (1, 1)


class TestInFlight:
    def test_in_flight(self):
        """C{in_flight} lists the requests received and not yet answered."""
        site, root, _ = drained_site()
        connect(site).get(b"/done")
        connect(site).get(b"/slow")
        connect(site).send(b"GET /partial HTTP/1.1\r\n")
        assert [r.target for r in site.in_flight()] == [b"/slow"]

    def test_answered_requests_leave(self):
        """A request answered in full is no longer in flight."""
        site, root, _ = drained_site()
        connect(site).get(b"/slow")
        assert [r.target for r in site.in_flight()] == [b"/slow"]
        root.pending[0].finish()
        assert site.in_flight() == []

    def test_connections_tracked(self):
        """The site knows each open connection until it is lost."""
        site, _, _ = drained_site()
        a, b = connect(site), connect(site)
        assert site.connections == {a.channel, b.channel}
        a.lost()
        assert site.connections == {b.channel}
