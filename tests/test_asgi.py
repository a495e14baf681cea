"""
Unit tests for the ASGI container (L{backtracweb.app.asgi}): the scope,
the messages each way, back-pressure, disconnects, failures in each
phase, and the lifespan protocol.

No Twisted reactor runs: requests are parsed by a real channel from bytes
(see tests/helpers.py), and the application's tasks run on an asyncio
event loop the test turns (L{Loop.settle}), as the asyncio reactor would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import Client, FakeReactor, make_site, settle
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.logger import LogLevel, capturedLogs, formatEvent

from backtracweb.app.asgi import ASGI, ASGIContainer, ClientDisconnected, Lifespan
from backtracweb.app.proxy import TrustedProxies
from backtracweb.app.resource import SiteRoot
from backtracweb.errors import StartupError

PEER = IPv4Address("TCP", "198.51.100.4", 40000)


def serve(loop, application, **settings):
    """A site serving C{application}; its container."""
    container = ASGIContainer(application, loop)
    site = make_site(SiteRoot(container), async_bodies=True, **settings)
    return site, container


class Recording:
    """An application that records its scope and what it received, and answers C{answer}."""

    def __init__(self, *answer: dict, read_body: bool = True, after: int = 0) -> None:
        self.answer = answer or ({"type": "http.response.start", "status": 200,
                                  "headers": [(b"content-type", b"text/plain")]},
                                 {"type": "http.response.body", "body": b"hello"})
        self.read_body = read_body
        self.after = after  # messages to receive after answering
        self.scopes: list[dict] = []
        self.received: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        self.scopes.append(scope)
        while self.read_body:
            message = await receive()
            self.received.append(message)
            if not message.get("more_body"):
                break
        for message in self.answer:
            await send(message)
        for _ in range(self.after):
            self.received.append(await receive())


# -- the scope ------------------------------------------------------------------------------


def test_the_scope_of_a_request(loop):
    app = Recording()
    site, _ = serve(loop, app)
    client = Client(site, peer=PEER).send(
        b"GET /caf%C3%A9/a%2Fb?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\n"
        b"X-Thing: a\r\nX-Thing: b\r\n\r\n")
    settle(loop)
    [scope] = app.scopes
    assert scope == {
        "type": "http", "asgi": ASGI, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/café/a/b", "raw_path": b"/caf%C3%A9/a%2Fb", "query_string": b"x=1&y=%20",
        "root_path": "",
        "headers": [(b"host", b"example.com:8080"), (b"x-thing", b"a"), (b"x-thing", b"b")],
        "client": ("198.51.100.4", 40000), "server": ("example.com", 8080),
        "extensions": {"http.response.pathsend": {}},
    }
    assert client.responses()[0].body == b"hello"


def test_an_absolute_target_names_the_host(loop):
    app = Recording()
    site, _ = serve(loop, app)
    Client(site).send(b"GET http://other.example/x HTTP/1.1\r\nHost: example.com\r\n\r\n")
    settle(loop)
    assert (b"host", b"other.example") in app.scopes[0]["headers"]
    assert b"example.com" not in dict(app.scopes[0]["headers"]).values()


def test_a_trusted_proxy_tells_the_client_and_scheme(loop):
    app = Recording()
    site, _ = serve(loop, app, proxies=TrustedProxies(["198.51.100.4"]))
    Client(site, peer=PEER).get(b"/", b"X-Forwarded-For: 203.0.113.9",
                                b"X-Forwarded-Proto: https")
    settle(loop)
    [scope] = app.scopes
    assert (scope["client"], scope["scheme"]) == (("203.0.113.9", 0), "https")


def test_a_unix_socket_client_has_no_address(loop):
    app = Recording()
    site, _ = serve(loop, app)
    Client(site, peer=UNIXAddress(None), host=UNIXAddress(b"/run/b.sock")).get(b"/")
    settle(loop)
    assert app.scopes[0]["client"] is None


def test_each_request_gets_its_own_copy_of_the_lifespan_state(loop):
    app = Recording()
    container = ASGIContainer(app, loop, state={"pool": "db"})
    site = make_site(SiteRoot(container))
    client = Client(site).get(b"/a")
    settle(loop)
    app.scopes[0]["state"]["pool"] = "changed"
    client.get(b"/b")
    settle(loop)
    assert app.scopes[1]["state"] == {"pool": "db"}


# -- the request body -----------------------------------------------------------------------


def test_a_body_comes_in_parts_then_the_disconnect_after_the_response(loop, monkeypatch):
    from backtracweb.app import asgi

    monkeypatch.setattr(asgi, "BODY_PART", 4)
    app = Recording(after=2)
    site, _ = serve(loop, app, max_body=100)
    Client(site).get(b"/", b"Content-Length: 10", method=b"POST", body=b"0123456789")
    settle(loop)
    assert app.received == [
        {"type": "http.request", "body": b"0123", "more_body": True},
        {"type": "http.request", "body": b"4567", "more_body": True},
        {"type": "http.request", "body": b"89", "more_body": False},
        {"type": "http.disconnect"},
        {"type": "http.disconnect"},
    ]


def test_no_body_is_one_empty_message(loop):
    app = Recording()
    site, _ = serve(loop, app)
    Client(site).get(b"/")
    settle(loop)
    assert app.received == [{"type": "http.request", "body": b"", "more_body": False}]


def test_a_chunked_body_is_received_whole(loop):
    app = Recording()
    site, _ = serve(loop, app, max_body=100)
    Client(site).get(b"/", b"Transfer-Encoding: chunked", method=b"POST",
                     body=b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    settle(loop)
    assert app.received == [{"type": "http.request", "body": b"abcde", "more_body": False}]


def test_100_continue_is_sent_when_the_application_reads(loop):
    app = Recording()
    site, _ = serve(loop, app, max_body=100)
    client = Client(site).get(b"/", b"Content-Length: 5", b"Expect: 100-continue",
                              method=b"POST")
    settle(loop)
    assert client.statuses() == [100] and len(app.scopes) == 1  # it asked for the body
    client.send(b"hello")
    settle(loop)
    assert client.statuses() == [100, 200]
    assert app.received == [{"type": "http.request", "body": b"hello", "more_body": False}]


def test_a_body_is_received_as_it_arrives(loop):
    app = Recording()
    site, _ = serve(loop, app, max_body=100)
    client = Client(site).get(b"/", b"Content-Length: 10", method=b"POST", body=b"0123")
    settle(loop)
    assert app.received == [{"type": "http.request", "body": b"0123", "more_body": True}]
    client.send(b"456789")
    settle(loop)
    assert app.received[1:] == [{"type": "http.request", "body": b"456789", "more_body": False}]
    assert client.statuses() == [200]


def test_a_client_sending_faster_than_the_application_reads_is_held_back(loop):
    from backtracweb.http.body import HIGH_WATER

    reading = asyncio.Event()
    sizes = []

    async def slow_reader(scope, receive, send):
        await reading.wait()
        while True:
            message = await receive()
            sizes.append(len(message["body"]))
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    total = 2 * HIGH_WATER
    site, _ = serve(loop, slow_reader, max_body=total)
    client = Client(site).get(b"/", b"Content-Length: %d" % total, method=b"POST",
                              body=b"x" * HIGH_WATER)
    settle(loop)
    assert client.transport.producerState == "paused"  # no more is read from the client
    reading.set()
    settle(loop)
    assert client.transport.producerState == "producing"
    client.send(b"x" * HIGH_WATER)
    settle(loop)
    assert sum(sizes) == total and client.statuses() == [204]


def test_a_body_that_stops_arriving_is_a_disconnect_and_400(loop):
    """
    The application is told the client is gone (as Django then does, it
    gives up without answering); the client is told why, with 400.
    """
    received = []

    async def reader(scope, receive, send):
        while True:
            received.append(await receive())
            if received[-1]["type"] == "http.disconnect":
                return

    reactor = FakeReactor()
    site, _ = serve(loop, reader, reactor=reactor, max_body=100, idle_timeout=5)
    client = Client(site).get(b"/", b"Content-Length: 10", method=b"POST", body=b"0123")
    settle(loop)
    with capturedLogs() as events:
        reactor.advance(5)
        settle(loop)
    assert received[-1] == {"type": "http.disconnect"}
    [response] = client.responses()
    assert response.status == 400
    assert response.body == (b"The request body could not be read: the request body stopped "
                             b"arriving for longer than [limits] idle_timeout.\n")
    assert [e for e in events if e["log_level"].name in ("error", "critical")] == []


# -- the response ----------------------------------------------------------------------------


def test_a_whole_response_has_its_length(loop):
    site, _ = serve(loop, Recording())
    client = Client(site).get(b"/")
    settle(loop)
    [response] = client.responses()
    assert (response.status, response.header(b"content-length"), response.body) == (
        200, b"5", b"hello")


def test_a_streamed_response_is_chunked_and_waits_for_a_slow_client(loop):
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one", b"two"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            sent.append(part)
        await send({"type": "http.response.body", "body": b""})
        sent.append(b"end")

    site, _ = serve(loop, app)
    client = Client(site).get(b"/")
    client.channel.pauseProducing()  # the transport is full
    settle(loop)
    assert sent == []  # still waiting for the client to take "one"
    client.channel.resumeProducing()
    settle(loop)
    assert sent == [b"one", b"two", b"end"]
    [response] = client.responses()
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.body == b"onetwo"


def test_a_client_gone_mid_stream_is_told_and_sending_fails(loop):
    seen = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        seen.append(await receive())
        try:
            await send({"type": "http.response.body", "body": b"more", "more_body": True})
        except ClientDisconnected as e:
            seen.append(e)
            raise

    site, container = serve(loop, app)
    client = Client(site).get(b"/")
    settle(loop)
    with capturedLogs() as events:
        client.lost()
        settle(loop)
    assert seen[0] == {"type": "http.disconnect"}
    assert isinstance(seen[1], OSError)
    assert [e for e in events if e["log_level"] >= LogLevel.warn] == []
    assert container.in_flight == 0


def test_a_file_sent_by_its_path(loop, tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"x" * 100_000)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    site, _ = serve(loop, app)
    client = Client(site).get(b"/")
    settle(loop)
    client.channel.resumeProducing()  # (a memory transport takes it all at once)
    settle(loop)
    [response] = client.responses()
    assert response.header(b"content-length") == b"100000"


# -- failures ----------------------------------------------------------------------------------


def failing_before(scope, receive, send):
    raise ValueError("broken view")


async def failing_before_start(scope, receive, send):
    raise ValueError("broken view")


async def failing_after_start(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    raise ValueError("broken stream")


async def returning_without_response(scope, receive, send):
    pass


async def returning_mid_response(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})


def test_failing_before_the_response_is_500_and_logged(loop):
    site, container = serve(loop, failing_before_start)
    client = Client(site).get(b"/x")
    with capturedLogs() as events:
        settle(loop)
    assert client.responses()[0].status == 500
    [event] = events
    assert formatEvent(event) == "ASGI application error in GET /x"
    assert event["log_failure"].check(ValueError)
    assert container.in_flight == 0 and not client.closed


def test_failing_mid_response_closes_the_connection(loop):
    site, _ = serve(loop, failing_after_start)
    client = Client(site).get(b"/x")
    with capturedLogs() as events:
        settle(loop)
    assert client.closed
    assert b"part" in client.output and not client.output.endswith(b"0\r\n\r\n")
    assert formatEvent(events[0]) == "ASGI application error in GET /x"


@pytest.mark.parametrize("app, status, closed, message", [
    (returning_without_response, 500, False, "returned without completing its response"),
    (returning_mid_response, 200, True, "returned without completing its response"),
])
def test_returning_without_finishing(loop, app, status, closed, message):
    site, _ = serve(loop, app)
    client = Client(site).get(b"/x")
    with capturedLogs() as events:
        settle(loop)
    assert client.output.startswith(b"HTTP/1.1 %d " % status) and client.closed == closed
    assert [formatEvent(e) for e in events] == [f"the ASGI application {message} for GET /x"]


@pytest.mark.parametrize("messages, error", [
    ([{"type": "http.response.body", "body": b"x"}], "before http.response.start"),
    ([{"type": "http.response.start", "status": "200"}], "integer from 100 to 599"),
    ([{"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\r\nx-b: 2")]}],
     "cannot be sent"),
    ([{"type": "http.response.start", "status": 200, "headers": [("x-a", "1")]}],
     "a pair of bytes"),
    ([{"type": "http.response.start", "status": 200},
      {"type": "http.response.start", "status": 200}], "sent twice"),
    ([{"type": "websocket.accept"}], "cannot send a 'websocket.accept' message"),
])
def test_a_message_that_cannot_be_sent_raises_in_the_application(loop, messages, error):
    raised = []

    async def app(scope, receive, send):
        try:
            for message in messages:
                await send(message)
        except (TypeError, ValueError, RuntimeError) as e:
            raised.append(str(e))
            raise

    site, _ = serve(loop, app)
    client = Client(site).get(b"/")
    with capturedLogs():
        settle(loop)
    assert error in raised[0]
    assert client.statuses() == [500]


def test_winding_down_cancels_the_requests_that_outlive_the_grace(loop):
    """As the server stops, after its connections closed: what still runs is cancelled."""
    cancelled = []

    async def app(scope, receive, send):
        try:
            await asyncio.sleep(3600)  # deaf to the disconnect
        except asyncio.CancelledError:
            cancelled.append(scope["path"])
            raise

    site, container = serve(loop, app)
    client = Client(site).get(b"/deaf")
    settle(loop)
    client.lost()
    assert container.in_flight == 1
    with capturedLogs() as events:
        done = container.wind_down(0.01)
        loop.run_until_complete(asyncio.sleep(0.05))
        settle(loop)
    assert done.called and cancelled == ["/deaf"] and container.in_flight == 0
    assert events == []


# -- lifespan ---------------------------------------------------------------------------------


class LifespanApp:
    """An application taking part in lifespan: C{startup} and C{shutdown} say how."""

    def __init__(self, startup="complete", shutdown="complete") -> None:
        self.startup, self.shutdown = startup, shutdown
        self.phases: list[str] = []

    async def __call__(self, scope, receive, send):
        assert scope["type"] == "lifespan" and scope["asgi"] == ASGI
        while True:
            message = await receive()
            phase = message["type"].rpartition(".")[2]
            self.phases.append(phase)
            how = getattr(self, phase)
            if how == "raise":
                raise RuntimeError(f"{phase} exploded")
            scope["state"]["ready"] = True
            reply = {"type": f"{message['type']}.{how}"}
            if how == "failed":
                reply["message"] = "no database"
            await send(reply)
            if phase == "shutdown":
                return


def test_lifespan_startup_and_shutdown(loop):
    app = LifespanApp()
    lifespan = Lifespan(app, loop)
    assert lifespan.startup(5).called  # the loop was run until it was over
    assert lifespan.state == {"ready": True}
    done = lifespan.shutdown(5)
    settle(loop)
    assert done.called and app.phases == ["startup", "shutdown"]


@pytest.mark.parametrize("how, message", [
    ("failed", "the ASGI application's lifespan startup failed: no database"),
    ("raise", None),
])
def test_a_failing_startup(loop, how, message):
    lifespan = Lifespan(LifespanApp(startup=how), loop)
    if message is None:
        # Raising before any answer: lifespan is not supported; serve without.
        with capturedLogs() as events:
            assert lifespan.startup(5).called
        assert not lifespan.supported and lifespan.state is None
        assert "does not take part in the lifespan protocol (RuntimeError: startup exploded)" \
            in formatEvent(events[0])
        return
    with pytest.raises(StartupError) as caught:
        lifespan.startup(5)
    assert str(caught.value) == message


def test_a_startup_that_hangs_times_out(loop):
    async def hanging(scope, receive, send):
        await receive()
        await asyncio.sleep(3600)

    with pytest.raises(StartupError) as caught:
        Lifespan(hanging, loop).startup(0.05)
    assert str(caught.value) == "the ASGI application's lifespan startup took longer than 0.05 s"
