"""
WebSockets (RFC 6455) for ASGI applications.

The opening handshake is an HTTP request the engine has parsed and
checked; it is checked here against RFC 6455 4.2.1, and the application
is asked (C{websocket.connect}) whether it accepts.  Accepted, the
connection switches protocols (L{Request.switch_protocols}) and frames
are read and written by wsproto, a sans-I/O WebSocket library: no frame
parsing here.  What is here is the session around it: messages put
together from their frames within C{[limits] max_message}, pings every
C{[limits] websocket_ping} seconds, the close handshake, back-pressure
both ways, and going away (1001) when the server drains.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import deque
from typing import Any

from twisted.logger import Logger
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import generate_accept_token

from backtracweb.app.pace import ClientPace
from backtracweb.http.head import sendable_field
from backtracweb.http.request import Request

_log = Logger(namespace="backtracweb.app.websocket")

VERSION = b"13"
"""The WebSocket version this server speaks (RFC 6455 4.4)."""
INBOX_HIGH = 16
"""Messages the application may leave unreceived before the client is asked to wait."""
INFLATE_SLICE = 1024
"""Bytes of a compressed WebSocket fed to the inflater at once (at most ~1 MB inflated)."""
CLOSE_WAIT = 1.0
"""Seconds to wait for the client's answer to our close frame before closing the connection."""

NORMAL, GOING_AWAY, PROTOCOL_ERROR, ABNORMAL, TOO_BIG, INTERNAL_ERROR = (
    1000, 1001, 1002, 1006, 1009, 1011)

_OURS = frozenset({b"upgrade", b"connection", b"sec-websocket-accept",
                   b"sec-websocket-protocol", b"sec-websocket-extensions"})


class ClientDisconnected(OSError):
    """
    An ASGI application's C{send} was called after its client went away
    (ASGI 2.4), over HTTP or a WebSocket: it should stop sending.
    """


def _tokens(request: Request, name: bytes) -> list[bytes]:
    """The comma-separated tokens of a header's values, lower case."""
    value = request.header(name) or b""
    return [token.strip().lower() for token in value.split(b",") if token.strip()]


def wants_websocket(request: Request) -> bool:
    """Whether C{request} asks to switch to the WebSocket protocol (C{Upgrade: websocket})."""
    return b"websocket" in _tokens(request, b"upgrade")


def handshake_problem(request: Request) -> tuple[int, str] | None:
    """
    Why C{request} is not a valid WebSocket opening handshake (RFC 6455
    4.2.1) as (status, reason), or None if it is one.
    """
    if request.method != b"GET":
        return 400, "a WebSocket handshake is a GET request"
    if request.version != b"HTTP/1.1":
        return 400, "a WebSocket handshake is an HTTP/1.1 request"
    if b"upgrade" not in _tokens(request, b"connection"):
        return 400, "a WebSocket handshake says Connection: Upgrade"
    key = request.header(b"sec-websocket-key") or b""
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        return 400, "Sec-WebSocket-Key is not 16 bytes in base64"
    if request.header(b"sec-websocket-version") != VERSION:
        return 426, "this server speaks WebSocket version 13 (Sec-WebSocket-Version)"
    return None


def refuse_handshake(request: Request, status: int, reason: str) -> None:
    """Answer a handshake that cannot be accepted, the connection closing after."""
    request.persistent = False
    request.code = status
    request.response_headers = [(b"Content-Type", b"text/plain; charset=utf-8")]
    if status == 426:
        request.response_headers.append((b"Sec-WebSocket-Version", VERSION))
    request.respond(reason.encode("utf-8") + b"\n")


class WebSocketSession:
    """
    One WebSocket between a client and an ASGI application: the
    application's C{receive} and C{send}, and the tunnel the connection
    switched to once it accepted.
    """

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self._loop = loop
        site = request.channel.site
        self._reactor = site.reactor
        self._max_message = site.limits.max_message
        self._ping_every = site.limits.websocket_ping
        self.state = "connecting"  # then "open", "closing", "closed"
        self._connected = False  # websocket.connect was received
        self._ws: Connection | None = None
        self._compressed = False
        self._parts: list = []
        self._size = 0
        self._inbox: deque[dict] = deque()
        self._waiting: asyncio.Future | None = None  # a receive waiting for a message
        self._pace = ClientPace(loop)
        self._reading_held = False
        self._disconnect_sent = False
        self._timer = None  # the close wait, or the next ping
        self._pong_due = False
        request.on_connection_lost = self._lost

    def scope(self, http_scope: dict) -> dict[str, Any]:
        """The C{websocket} scope, from the request's C{http} one."""
        scope = dict(http_scope)
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if http_scope["scheme"] == "https" else "ws"
        scope["subprotocols"] = [p.decode("latin-1") for p in _protocols(self.request)]
        scope["extensions"] = {}
        return scope

    # -- the application's receive ---------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        while not self._inbox:
            if self.state == "closed":  # (and what it was told is received)
                return {"type": "websocket.disconnect", "code": ABNORMAL, "reason": ""}
            if self._waiting is None:
                self._waiting = self._loop.create_future()
            await asyncio.shield(self._waiting)
        message = self._inbox.popleft()
        if self._reading_held and len(self._inbox) < INBOX_HIGH // 2:
            self._reading_held = False
            self.request.hold_reading(False)
        return message

    def _deliver(self, message: dict) -> None:
        if message["type"] == "websocket.disconnect":
            if self._disconnect_sent:
                return
            self._disconnect_sent = True
        self._inbox.append(message)
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)
        if len(self._inbox) >= INBOX_HIGH and not self._reading_held and self.state == "open":
            self._reading_held = True
            self.request.hold_reading(True)

    # -- the application's send -------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "websocket.accept":
            if self.state != "connecting":
                raise RuntimeError("websocket.accept was sent after the handshake was over")
            self._accept(message.get("subprotocol"), message.get("headers", ()))
        elif kind == "websocket.send":
            if self.state == "connecting":
                raise RuntimeError("websocket.send before websocket.accept")
            if self.state != "open":
                raise ClientDisconnected("the WebSocket is closed")
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise ValueError("websocket.send carries text or bytes, one of them")
            event = TextMessage(data=text) if text is not None else BytesMessage(data=data)
            self._write(self._ws.send(event))
            await self._pace.wait()
            if self.state != "open":
                raise ClientDisconnected("the WebSocket is closed")
        elif kind == "websocket.close":
            code = message.get("code", NORMAL)
            if self.state == "connecting":
                self.state = "closed"
                refuse_handshake(self.request, 403, "the application refused the WebSocket")
            elif self.state == "open":
                self._close(code, message.get("reason") or "")
        else:
            raise ValueError(f"a WebSocket application cannot send a {kind!r} message")

    def _accept(self, subprotocol: str | None, extra: Any) -> None:
        request = self.request
        headers = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                   (b"Sec-WebSocket-Accept",
                    generate_accept_token(request.header(b"sec-websocket-key")))]
        if subprotocol is not None:
            if subprotocol.encode("latin-1") not in _protocols(request):
                raise ValueError(f"the client did not offer the subprotocol {subprotocol!r}")
            headers.append((b"Sec-WebSocket-Protocol", subprotocol.encode("latin-1")))
        extensions = []
        for offer in (request.header(b"sec-websocket-extensions") or b"").split(b","):
            if offer.strip().lower().startswith(b"permessage-deflate"):
                deflate = PerMessageDeflate()
                accepted = deflate.accept(offer.strip().decode("latin-1"))
                if accepted is not None and accepted is not False:  # its parameters, or none
                    value = deflate.name + (f"; {accepted}" if isinstance(accepted, str)
                                            and accepted else "")
                    headers.append((b"Sec-WebSocket-Extensions", value.encode("latin-1")))
                    extensions.append(deflate)
                    break
        for header in extra:
            name, value = bytes(header[0]), bytes(header[1])
            if not sendable_field(name, value) or name.lower() in _OURS:
                raise ValueError(f"header {header!r} cannot be sent with websocket.accept")
            headers.append((name, value))
        self._ws = Connection(ConnectionType.SERVER, extensions=extensions)
        self._compressed = bool(extensions)
        self.state = "open"
        request.register_producer(self)
        request.switch_protocols(headers, self)
        self._schedule_ping()

    def _write(self, data: bytes) -> None:
        if data:
            self.request.tunnel_write(data)

    # -- the tunnel: frames from the client ---------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._ws is None or self.state == "closed":
            return
        self._pong_due = False  # it is alive
        if not self._compressed:
            self._frames(data)
            return
        # Compressed, a few bytes can inflate a thousandfold before a message's
        # size is counted: fed in slices, what is inflated at once stays small.
        for start in range(0, len(data), INFLATE_SLICE):
            if self.state == "closed":
                return
            self._frames(data[start:start + INFLATE_SLICE])

    def _frames(self, data: bytes) -> None:
        self._ws.receive_data(data)
        for event in self._ws.events():
            if self.state == "closed":
                return
            if isinstance(event, (TextMessage, BytesMessage)):
                self._message_part(event)
            elif isinstance(event, Ping):
                self._write(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._closed_by_client(event)
            elif isinstance(event, Pong):
                pass

    def _message_part(self, event) -> None:
        self._size += len(event.data)  # (text: characters, at most a quarter of its bytes)
        if self._size > self._max_message:
            self._close(TOO_BIG, f"a message over {self._max_message} bytes ([limits] max_message)")
            return
        self._parts.append(event.data)
        if event.message_finished:
            parts, self._parts, self._size = self._parts, [], 0
            if isinstance(event, TextMessage):
                self._deliver({"type": "websocket.receive", "text": "".join(parts)})
            else:
                self._deliver({"type": "websocket.receive", "bytes": b"".join(parts)})

    def _closed_by_client(self, event: CloseConnection) -> None:
        if self.state == "open":
            # The client closes (or its frames broke the protocol: wsproto says
            # so with a close of its own): answer, and tell the application.
            self._write(self._ws.send(event.response()))
            self._deliver({"type": "websocket.disconnect", "code": event.code,
                           "reason": event.reason or ""})
        self._end()

    # -- closing ----------------------------------------------------------------------------

    def _close(self, code: int, reason: str) -> None:
        """Send a close frame; the connection closes when the client answers, or soon."""
        if self.state != "open":
            return
        self.state = "closing"
        self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
        self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._cancel_timer()
        self._timer = self._reactor.callLater(CLOSE_WAIT, self._end)

    def going_away(self) -> None:
        """The server is stopping: close with 1001."""
        self._close(GOING_AWAY, "the server is going away")

    def _end(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._cancel_timer()
        self._deliver({"type": "websocket.disconnect", "code": ABNORMAL, "reason": ""})
        self.request.end_tunnel()

    def _lost(self) -> None:
        """The connection is gone."""
        was_open = self.state in ("open", "closing")
        self.state = "closed"
        self._cancel_timer()
        if was_open or self._connected:
            self._deliver({"type": "websocket.disconnect", "code": ABNORMAL, "reason": ""})
        self.resumeProducing()  # a send waiting for the client raises

    def application_done(self, error: BaseException | None) -> None:
        """The application's task ended (with C{error}, if it raised)."""
        if self.state == "connecting":
            self.state = "closed"
            if error is None:
                refuse_handshake(self.request, 403, "the application refused the WebSocket")
            else:
                self.request.persistent = False
                self.request.code = 500
                self.request.response_headers = [(b"Content-Type", b"text/plain")]
                self.request.respond(b"Internal Server Error\n")
        elif self.state == "open":
            self._close(INTERNAL_ERROR if error is not None else NORMAL, "")

    # -- pings --------------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        if self._ping_every and self.state == "open":
            self._timer = self._reactor.callLater(self._ping_every, self._ping)

    def _ping(self) -> None:
        self._timer = None
        if self.state != "open":
            return
        if self._pong_due:
            _log.info("closed the WebSocket from {peer}: no answer to a ping within {seconds:g} s "
                      "([limits] websocket_ping)", peer=self.request.peer,
                      seconds=self._ping_every)
            self._deliver({"type": "websocket.disconnect", "code": ABNORMAL, "reason": ""})
            self.state = "closed"
            self.request.channel.abort()
            return
        self._pong_due = True
        self._write(self._ws.send(Ping()))
        self._schedule_ping()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # -- IPushProducer: the client's pace -------------------------------------------------------

    def pauseProducing(self) -> None:
        self._pace.pause()

    def resumeProducing(self) -> None:
        self._pace.resume()

    def stopProducing(self) -> None:
        self._lost()


def _protocols(request: Request) -> list[bytes]:
    """The subprotocols the client offers, in its order of preference."""
    return [p.strip() for p in (request.header(b"sec-websocket-protocol") or b"").split(b",")
            if p.strip()]

