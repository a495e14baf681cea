"""
Unit tests for WebSockets under ASGI (L{backtracweb.app.websocket}):
the opening handshake as RFC 6455 4.2 describes it (a table of requests
and answers), then the messages each way, fragmentation, pings, the
close handshake and its codes, the largest message, draining (1001) and
the access log.

No Twisted reactor runs: the site's connection is fed bytes, its reactor
is a clock the test advances, and the application's tasks run on an
asyncio loop the test turns.  The client's frames are made and read by
wsproto's client side, so the server's framing is checked by another
implementation than its own.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from helpers import Client, FakeReactor, make_site, requests_done, settle
from twisted.logger import capturedLogs, formatEvent
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from backtracweb.app.asgi import ASGIContainer
from backtracweb.app.resource import SiteRoot
from backtracweb.app.website import IDLE_LINGER
from backtracweb.app.websocket import CLOSE_WAIT, ClientDisconnected

# RFC 6455 1.3: the example key and the accept value it gives.
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
HANDSHAKE = (b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
             b"Sec-WebSocket-Version: 13\r\n")


class Echo:
    """Accepts (with C{subprotocol}), echoes each message, records what it received."""

    def __init__(self, subprotocol=None, headers=()) -> None:
        self.subprotocol, self.headers = subprotocol, headers
        self.scopes: list[dict] = []
        self.received: list[dict] = []
        self.send_error: BaseException | None = None

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        self.received.append(await receive())
        await send({"type": "websocket.accept", "subprotocol": self.subprotocol,
                    "headers": list(self.headers)})
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                try:
                    await send({"type": "websocket.send", "text": "too late"})
                except ClientDisconnected as e:
                    self.send_error = e
                return
            reply = {k: v for k, v in message.items() if k in ("text", "bytes")}
            await send({"type": "websocket.send", **reply})


class Peer:
    """A WebSocket client over the site's connection, its frames by wsproto."""

    def __init__(self, loop, app, handshake: bytes = HANDSHAKE, extra: bytes = b"",
                 reactor=None, **limits) -> None:
        self.loop = loop
        self.reactor = reactor or FakeReactor()
        self.container = ASGIContainer(app, loop)
        self.site = make_site(SiteRoot(self.container), self.reactor, async_bodies=True,
                              **limits)
        self.done = requests_done(self.site)
        self.http = Client(self.site).send(handshake + extra + b"\r\n")
        self.ws: Connection | None = None
        self._read = 0
        settle(loop)

    @property
    def head(self) -> bytes:
        return self.http.output.partition(b"\r\n\r\n")[0]

    def status(self) -> int:
        return int(self.head.split(b" ")[1])

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None

    def connect(self, extensions=()) -> Peer:
        assert self.status() == 101, self.http.output
        self.ws = Connection(ConnectionType.CLIENT, extensions=list(extensions))
        self._read = len(self.head) + 4
        return self

    def send(self, event) -> None:
        self.http.send(self.ws.send(event))
        settle(self.loop)

    def events(self) -> list:
        data = self.http.output[self._read:]
        self._read += len(data)
        self.ws.receive_data(data)
        return list(self.ws.events())


def handshake(*lines: bytes, method=b"GET", version=b"HTTP/1.1", key=KEY,
              wsversion=b"13", connection=b"Upgrade") -> bytes:
    return (method + b" /chat " + version + b"\r\nHost: server.example.com\r\n"
            b"Upgrade: websocket\r\nConnection: " + connection + b"\r\n"
            + (b"Sec-WebSocket-Key: " + key + b"\r\n" if key is not None else b"")
            + b"Sec-WebSocket-Version: " + wsversion + b"\r\n" + b"".join(l + b"\r\n" for l in lines))


# -- the opening handshake (RFC 6455 4.2.1, 4.2.2) -------------------------------------------


def test_the_accept_value_is_the_rfcs():
    """RFC 6455 4.2.2: base64 of the SHA-1 of the key and the GUID; 1.3's example."""
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert base64.b64encode(hashlib.sha1(KEY + guid).digest()) == ACCEPT


def test_an_accepted_handshake(loop):
    app = Echo()
    peer = Peer(loop, app)
    assert peer.status() == 101
    assert peer.head.split(b"\r\n")[0] == b"HTTP/1.1 101 Switching Protocols"
    assert peer.header(b"upgrade") == b"websocket" and peer.header(b"connection") == b"Upgrade"
    assert peer.header(b"sec-websocket-accept") == ACCEPT
    assert app.received == [{"type": "websocket.connect"}]
    scope = app.scopes[0]
    assert (scope["type"], scope["scheme"], scope["path"], scope["query_string"],
            scope["subprotocols"]) == ("websocket", "ws", "/chat", b"room=1", [])


CASES = [
    # (what the client sends, status, what the answer says) — RFC 6455 4.2.1's requirements.
    (handshake(method=b"POST"), 400, b"a WebSocket handshake is a GET request"),
    (handshake(version=b"HTTP/1.0"), 400, b"a WebSocket handshake is an HTTP/1.1 request"),
    (handshake(connection=b"keep-alive"), 400, b"a WebSocket handshake says Connection: Upgrade"),
    (handshake(key=None), 400, b"Sec-WebSocket-Key is not 16 bytes in base64"),
    (handshake(key=b"dG9vIHNob3J0"), 400, b"Sec-WebSocket-Key is not 16 bytes in base64"),
    (handshake(key=b"not base64!!"), 400, b"Sec-WebSocket-Key is not 16 bytes in base64"),
    (handshake(wsversion=b"8"), 426,
     b"this server speaks WebSocket version 13 (Sec-WebSocket-Version)"),
]


@pytest.mark.parametrize("request_bytes, status, reason", CASES,
                         ids=["post", "http10", "no-connection-upgrade", "no-key", "short-key",
                              "bad-key", "version-8"])
def test_a_handshake_that_cannot_be_accepted(loop, request_bytes, status, reason):
    app = Echo()
    peer = Peer(loop, app, handshake=request_bytes)
    [response] = peer.http.responses()
    assert (response.status, response.body) == (status, reason + b"\n")
    assert app.scopes == [] and peer.http.closed
    if status == 426:  # RFC 6455 4.4: the versions the server speaks
        assert response.header(b"sec-websocket-version") == b"13"


def test_a_connection_header_with_several_tokens(loop):
    peer = Peer(loop, Echo(), handshake=handshake(connection=b"keep-alive, Upgrade"))
    assert peer.status() == 101


async def refusing(scope, receive, send):
    await receive()
    await send({"type": "websocket.close"})


async def leaving(scope, receive, send):
    await receive()


async def raising(scope, receive, send):
    raise ValueError("no sockets today")


@pytest.mark.parametrize("app, status", [(refusing, 403), (leaving, 403), (raising, 500)])
def test_an_application_that_does_not_accept(loop, app, status):
    with capturedLogs() as events:
        peer = Peer(loop, app)
    assert peer.http.statuses() == [status] and peer.http.closed
    assert bool(events) == (status == 500)


def test_a_subprotocol_offered_and_chosen(loop):
    app = Echo(subprotocol="superchat", headers=[(b"x-room", b"1")])
    peer = Peer(loop, app, extra=b"Sec-WebSocket-Protocol: chat, superchat\r\n")
    assert app.scopes[0]["subprotocols"] == ["chat", "superchat"]
    assert peer.header(b"sec-websocket-protocol") == b"superchat"
    assert peer.header(b"x-room") == b"1"


def test_a_subprotocol_not_offered_cannot_be_chosen(loop):
    with capturedLogs() as events:
        peer = Peer(loop, Echo(subprotocol="other"), extra=b"Sec-WebSocket-Protocol: chat\r\n")
    assert peer.http.statuses() == [500]
    assert "the client did not offer the subprotocol 'other'" in str(events[0]["log_failure"])


def test_compression_when_the_client_offers_it(loop):
    peer = Peer(loop, Echo(), extra=b"Sec-WebSocket-Extensions: permessage-deflate; "
                                    b"client_max_window_bits\r\n")
    assert peer.header(b"sec-websocket-extensions").startswith(b"permessage-deflate")
    deflate = PerMessageDeflate()
    deflate.finalize(peer.header(b"sec-websocket-extensions").decode())
    peer.connect([deflate])
    peer.send(TextMessage(data="squeeze " * 100))
    assert [e.data for e in peer.events()] == ["squeeze " * 100]


# -- messages ----------------------------------------------------------------------------------


def test_text_and_binary_messages_echo(loop):
    app = Echo()
    peer = Peer(loop, app).connect()
    peer.send(TextMessage(data="héllo"))
    peer.send(BytesMessage(data=b"\x00\xff"))
    replies = peer.events()
    assert [(type(e), e.data) for e in replies] == [(TextMessage, "héllo"),
                                                    (BytesMessage, b"\x00\xff")]
    assert app.received[1:] == [{"type": "websocket.receive", "text": "héllo"},
                                {"type": "websocket.receive", "bytes": b"\x00\xff"}]


def test_a_fragmented_message_is_received_whole(loop):
    app = Echo()
    peer = Peer(loop, app).connect()
    peer.send(TextMessage(data="one ", message_finished=False))
    peer.send(TextMessage(data="two ", message_finished=False))
    assert app.received[1:] == []
    peer.send(TextMessage(data="three", message_finished=True))
    assert app.received[1:] == [{"type": "websocket.receive", "text": "one two three"}]


def test_frames_sent_with_the_handshake_are_kept_for_the_websocket(loop):
    early = Connection(ConnectionType.CLIENT).send(TextMessage(data="eager"))
    app = Echo()
    Peer(loop, app, extra=b"\r\n" + early)  # (the blank line, then the frame)
    assert app.received[1:] == [{"type": "websocket.receive", "text": "eager"}]


def test_a_client_that_sends_much_before_the_switch_is_cut_off(loop):
    """What it sent early is more than is kept (max_header_bytes): the WebSocket cannot start."""
    peer = Peer(loop, Echo(), extra=b"\r\n" + b"x" * 9000, max_header_bytes=8192)
    assert peer.http.closed and peer.http.transport.disconnected


def test_a_ping_is_answered(loop):
    peer = Peer(loop, Echo()).connect()
    peer.send(Ping(payload=b"are you there"))
    assert peer.events() == [Pong(payload=b"are you there")]


def test_a_message_over_the_limit_closes_with_1009(loop):
    app = Echo()
    peer = Peer(loop, app, max_message=10).connect()
    peer.send(BytesMessage(data=b"x" * 6, message_finished=False))
    with capturedLogs() as events:
        peer.send(BytesMessage(data=b"x" * 6, message_finished=True))
    [close] = peer.events()
    assert isinstance(close, CloseConnection) and close.code == 1009
    assert app.received[-1]["code"] == 1009  # (the reason is the frame library's words)
    assert "a message over 10 bytes ([limits] max_message)" in formatEvent(events[0])
    assert peer.http.closed


def test_a_protocol_error_closes_with_1002(loop):
    app = Echo()
    peer = Peer(loop, app).connect()
    peer.http.send(b"\x81\x05hello")  # a client's frame must be masked (RFC 6455 5.1)
    settle(loop)
    [close] = peer.events()
    assert isinstance(close, CloseConnection) and close.code == 1002
    assert app.received[-1]["code"] == 1002
    assert peer.http.closed


# -- closing ----------------------------------------------------------------------------------


def test_the_client_closes(loop):
    app = Echo()
    peer = Peer(loop, app).connect()
    peer.send(TextMessage(data="hi"))
    peer.send(CloseConnection(code=1000, reason="bye"))
    events = peer.events()
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1000
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1000, "reason": "bye"}
    assert isinstance(app.send_error, OSError)
    assert peer.http.closed
    [logged] = peer.done
    assert (logged.code, logged.sent) == (101, len(peer.http.output) - len(peer.head) - 4)


async def closing(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 4000, "reason": "done here"})


def test_the_application_closes_and_the_client_answers(loop):
    peer = Peer(loop, closing).connect()
    [close] = peer.events()
    assert (close.code, close.reason) == (4000, "done here")
    assert not peer.http.closed  # waiting for the client's close
    peer.send(close.response())
    assert peer.http.closed


def test_a_client_that_does_not_answer_a_close_is_cut_off(loop):
    peer = Peer(loop, closing).connect()
    peer.events()
    peer.reactor.advance(CLOSE_WAIT)
    assert peer.http.closed


async def returning(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})


async def failing(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    raise ValueError("broken consumer")


@pytest.mark.parametrize("app, code", [(returning, 1000), (failing, 1011)])
def test_the_application_ends(loop, app, code):
    with capturedLogs() as events:
        peer = Peer(loop, app).connect()
    [close] = peer.events()
    assert close.code == code
    assert [formatEvent(e) for e in events] == (
        ["ASGI application error in WebSocket /chat?room=1"] if code == 1011 else [])


def test_a_client_gone_without_closing(loop):
    app = Echo()
    peer = Peer(loop, app).connect()
    peer.http.lost()
    settle(loop)
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    [logged] = peer.done
    assert logged.code == 101


def test_pings_and_a_client_that_stops_answering(loop):
    app = Echo()
    peer = Peer(loop, app, websocket_ping=20).connect()
    peer.reactor.advance(20)
    assert isinstance(peer.events()[0], Ping)
    peer.send(Pong())
    peer.reactor.advance(20)
    assert isinstance(peer.events()[0], Ping)
    with capturedLogs() as events:
        peer.reactor.advance(20)  # no answer to the last
        settle(loop)
    assert peer.http.closed
    assert "no answer to a ping within 20 s" in formatEvent(events[0])
    assert app.received[-1]["code"] == 1006


def test_draining_closes_with_1001(loop):
    app = Echo()
    peer = Peer(loop, app).connect()
    assert peer.site.numbers()["websockets"] == 1
    peer.site.drain(30)
    peer.reactor.advance(IDLE_LINGER)
    settle(loop)
    [close] = peer.events()
    assert close.code == 1001
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1001,
                                "reason": "the server is going away"}
    peer.send(close.response())
    assert peer.http.closed and peer.site.numbers()["websockets"] == 0


def test_a_compressed_bomb_is_stopped_near_the_limit(loop):
    """
    A compressed message that inflates far beyond max_message is cut off
    with 1009 before it is inflated whole (fed to the inflater in slices).
    """
    offer = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
    app = Echo()
    peer = Peer(loop, app, extra=offer, max_message=64 * 1024)
    deflate = PerMessageDeflate()
    deflate.finalize(peer.header(b"sec-websocket-extensions").decode())
    peer.connect([deflate])
    bomb = peer.ws.send(BytesMessage(data=b"\0" * (50 * 1024 * 1024)))
    assert len(bomb) < 100 * 1024  # 50 MB of zeros, compressed
    peer.http.send(bomb)
    settle(loop)
    [close] = peer.events()
    assert close.code == 1009
    assert app.received[-1]["code"] == 1009


def test_a_text_message_that_is_not_utf8_closes_with_1007(loop):
    """RFC 6455 8.1: text frames carry UTF-8; other bytes fail the connection."""
    app = Echo()
    peer = Peer(loop, app).connect()
    payload = b"\xff\xfe"
    peer.http.send(b"\x81" + bytes([0x80 | len(payload)]) + b"\0\0\0\0" + payload)  # masked by 0s
    settle(loop)
    [close] = peer.events()
    assert close.code == 1007
    assert app.received[-1]["code"] == 1007
