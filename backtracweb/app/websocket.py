"""
WebSockets (RFC 6455) for ASGI applications.

The opening handshake is an HTTP request the engine has parsed and
checked; it is checked here against RFC 6455 4.2.1, and the application
is asked (C{websocket.connect}) whether it accepts.  Accepted, the
connection switches protocols (L{Request.switch_protocols}) and frames
are read and written by the sans-I/O protocol of the C{websockets}
library (with its C speedups; about three times cheaper per frame than
wsproto, as BENCHMARKS.md measured): no frame parsing here, and it enforces C{[limits]
max_message}, also while inflating.  What is here is the session around
it: messages put together from their frames, pings every C{[limits]
websocket_ping} seconds, the close handshake, back-pressure both ways,
and going away (1001) when the server drains.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections import deque
from typing import Any

from twisted.logger import Logger
from websockets.exceptions import InvalidState, NegotiationError
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.headers import build_extension, parse_extension
from websockets.protocol import Protocol, Side, State

from backtracweb.app.pace import ClientPace
from backtracweb.http.head import sendable_field
from backtracweb.http.request import Request

_log = Logger(namespace="backtracweb.app.websocket")

VERSION = b"13"
"""The WebSocket version this server speaks (RFC 6455 4.4)."""
INBOX_HIGH = 16
"""Messages the application may leave unreceived before the client is asked to wait."""
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 1.3: what the accept value hashes the client's key with."""
CLOSE_WAIT = 1.0
"""Seconds to wait for the client's answer to our close frame before closing the connection."""

NORMAL, GOING_AWAY, ABNORMAL, INVALID_DATA, TOO_BIG, INTERNAL_ERROR = (
    1000, 1001, 1006, 1007, 1009, 1011)

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
        self._ws: Protocol | None = None
        self._parts: list[bytes] = []
        self._text = False  # the message being put together is text
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
            try:
                if text is not None:
                    self._ws.send_text(text.encode("utf-8"))
                else:
                    self._ws.send_binary(data)
            except InvalidState:
                raise ClientDisconnected("the WebSocket is closed") from None
            self._flush()
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
        key = request.header(b"sec-websocket-key")
        headers = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                   (b"Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key + GUID).digest()))]
        if subprotocol is not None:
            if subprotocol.encode("latin-1") not in _protocols(request):
                raise ValueError(f"the client did not offer the subprotocol {subprotocol!r}")
            headers.append((b"Sec-WebSocket-Protocol", subprotocol.encode("latin-1")))
        extensions = []
        offers = (request.header(b"sec-websocket-extensions") or b"").decode("latin-1")
        deflate = ServerPerMessageDeflateFactory()
        for name, params in parse_extension(offers) if offers else ():
            if name != deflate.name:
                continue
            try:
                response, extension = deflate.process_request_params(params, extensions)
            except NegotiationError:
                continue  # an offer it cannot take: perhaps the next one
            headers.append((b"Sec-WebSocket-Extensions",
                            build_extension([(name, response)]).encode("latin-1")))
            extensions.append(extension)
            break
        for header in extra:
            name, value = bytes(header[0]), bytes(header[1])
            if not sendable_field(name, value) or name.lower() in _OURS:
                raise ValueError(f"header {header!r} cannot be sent with websocket.accept")
            headers.append((name, value))
        self._ws = Protocol(Side.SERVER, state=State.OPEN, max_size=self._max_message)
        self._ws.extensions = extensions
        self.state = "open"
        request.register_producer(self)
        request.switch_protocols(headers, self)
        self._schedule_ping()

    def _flush(self) -> None:
        """Write what the protocol has to send; at its end of stream, close the connection."""
        for data in self._ws.data_to_send():
            if data:
                self.request.tunnel_write(data)
            else:  # the close handshake is over (or failed): a server closes first
                self._end()

    # -- the tunnel: frames from the client ---------------------------------------------------

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        if ws is None or self.state == "closed":
            return
        self._pong_due = False  # it is alive
        ws.receive_data(data)
        for frame in ws.events_received():
            if frame.opcode in _DATA:
                self._message_part(frame)
        if ws.close_rcvd is not None or ws.parser_exc is not None:
            # The client closed, or broke the protocol (or a limit): the
            # protocol answered with a close frame of its own.
            close = ws.close_rcvd if ws.close_rcvd is not None else ws.close_sent
            if self.state == "open":
                self.state = "closing"
                self._deliver({"type": "websocket.disconnect", "code": close.code,
                               "reason": close.reason})
            if ws.parser_exc is not None and ws.close_sent is not None and \
                    ws.close_sent.code == TOO_BIG:
                _log.info("closed the WebSocket from {peer}: a message over {limit} bytes "
                          "([limits] max_message)", peer=self.request.peer,
                          limit=self._max_message)
        self._flush()

    def _message_part(self, frame: Frame) -> None:
        if frame.opcode is not Opcode.CONT:
            self._text = frame.opcode is Opcode.TEXT
        self._parts.append(frame.data)
        if not frame.fin:
            return
        parts, self._parts = self._parts, []
        data = b"".join(parts)
        if not self._text:
            self._deliver({"type": "websocket.receive", "bytes": data})
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._close(INVALID_DATA, "a text message that is not UTF-8")
            return
        self._deliver({"type": "websocket.receive", "text": text})

    # -- closing ----------------------------------------------------------------------------

    def _close(self, code: int, reason: str) -> None:
        """Send a close frame; the connection closes when the client answers, or soon."""
        if self.state != "open":
            return
        self.state = "closing"
        self._ws.send_close(code, reason)
        self._flush()
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
        self._ws.send_ping(b"")
        self._flush()
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


_DATA = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})


def _protocols(request: Request) -> list[bytes]:
    """The subprotocols the client offers, in its order of preference."""
    return [p.strip() for p in (request.header(b"sec-websocket-protocol") or b"").split(b",")
            if p.strip()]

