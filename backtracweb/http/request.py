"""
One request on a connection, and its response.

A L{Request} is what the site's handlers see: the parsed head, the body's
input, who the client is, and the calls that answer it.  It is made by the
channel once the head is complete and valid, and used on the reactor
thread only (the WSGI container hands its response over from its workers).
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Callable, Protocol

from backtracweb.http.body import EMPTY
from backtracweb.http.head import HTTP_10, HTTP_11

if TYPE_CHECKING:
    from backtracweb.http.channel import HTTPChannel

SERVER = b"backtracweb"
"""
The Server header: the product without a version, which would only tell a
scanner which exploits to try (nginx's server_tokens off, waitress).
"""

NO_CONTENT_CODES = frozenset({204, 304})
"""Responses that never have content (RFC 9110 6.4.1), besides 1xx and HEAD."""

REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
REASONS.update({413: b"Content Too Large", 414: b"URI Too Long", 422: b"Unprocessable Content"})

# How a response's content is framed on the wire.
_NO_CONTENT, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)
# Response headers the framing decides, and the server's own: the ones given are replaced.
_REPLACED = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
                       b"proxy-connection", b"upgrade", b"server", b"date"})
_JOIN_BELOW = 64 * 1024  # pieces smaller in all than this are joined before writing

_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header's line for now, formatted at most once a second."""
    global _date_cache
    now = int(time.time())
    second, line = _date_cache
    if second != now:
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode("ascii")
        _date_cache = now, line = now, b"Server: " + SERVER + b"\r\nDate: " + date + b"\r\n"
    return line


class PushProducer(Protocol):
    """What sends a response's content at the transport's pace (Twisted's IPushProducer)."""

    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


class Tunnel(Protocol):
    """What takes a connection over after C{101 Switching Protocols} (a WebSocket)."""

    def data_received(self, data: bytes) -> None: ...

    def going_away(self) -> None:
        """The server is stopping: close (again: nothing more)."""


class Request:
    """
    One request, as the channel parsed and checked it, and its response.

    The head: C{method}, C{target} (as sent, for logs), C{path} (still
    percent-encoded), C{query}, C{version} (C{HTTP/1.0} or C{HTTP/1.1}, as
    it is answered), C{headers} (lower-case names, values without
    surrounding whitespace, in order, names with an underscore dropped),
    C{host} (the authority asked for: Host, an absolute-form target's, or
    a trusted proxy's), C{input} (the body, readable from the start),
    C{content_length} (the body's length once known, else None).

    The client: C{peer} (the connection's address, or C{unix}),
    C{client} and C{client_port} (the real client, behind a trusted
    proxy), C{secure} (TLS, or a trusted proxy's https), C{server_port}.

    The response: set C{code} (and C{reason}) and C{response_headers},
    then either L{respond} with the whole content, or L{write} parts and
    L{finish}.  The first write sends the head, which decides the framing
    (Content-Length, chunked, or until close) and whether the connection
    stays open.
    """

    # What most requests keep as it starts: read from the class until set.
    expects_continue = False
    streamed = False
    """Whether it is handed over before its body is whole (which arrives as it is read)."""
    input = EMPTY
    content_length: int | None = None
    """The body's length: as declared, or once a chunked body is whole; None without a body."""
    complete = True
    """Whether the whole body has arrived."""
    code = 200
    reason: bytes | None = None
    started_writing = False
    finished = False
    sent = 0
    """Content bytes written to the transport."""
    declared_length: int | None = None
    """The Content-Length the response head promised, if any."""
    producer: PushProducer | None = None
    on_connection_lost: Callable[[], None] | None = None
    """Called if the connection is lost before the response is finished."""
    lost = False
    refusal = None
    """The L{Refused} the server answers this request with instead, if any."""
    body = None
    """While the body arrives: what collects it (the channel's business)."""
    tunnel: Tunnel | None = None
    """What the connection switched to, if it did (see L{switch_protocols})."""
    _framing = _NO_CONTENT
    _remaining = 0

    def __init__(self, channel: HTTPChannel, method: bytes, target: bytes, path: bytes,
                 query: bytes, version: bytes, headers: list[tuple[bytes, bytes]], host: bytes,
                 persistent: bool, started_at: float, started: float) -> None:
        self.channel = channel
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.host = host
        self.persistent = persistent
        self.started_at = started_at
        """time.time() when the request began to arrive."""
        self.started = started
        """time.monotonic() then, for its duration."""
        connection = channel.connection
        self.peer = connection.peer
        self.client = connection.client
        self.client_port = connection.client_port
        self.secure = connection.secure
        self.server_port = connection.server_port
        self.response_headers: list[tuple[bytes, bytes]] = []

    def __repr__(self) -> str:
        return f"<Request {self.method.decode('latin-1')} {self.target.decode('latin-1')!r}>"

    # -- the head ------------------------------------------------------------------

    def header(self, name: bytes) -> bytes | None:
        """A request header's value (C{name} in lower case), repeated ones joined by commas."""
        values = [value for key, value in self.headers if key == name]
        if not values:
            return None
        return values[0] if len(values) == 1 else b",".join(values)

    @property
    def server_name(self) -> str:
        """The host part of L{host}; without one, the address the client connected to."""
        host = self.host
        if host:
            if host[:1] == b"[":
                return host[: host.index(b"]") + 1].decode("latin-1")
            return host.partition(b":")[0].decode("latin-1")
        return self.channel.connection.server_name

    # -- the response -----------------------------------------------------------------

    def respond(self, content: bytes) -> None:
        """Answer with C{content} whole: the head and the content in one write."""
        self._send(content, True)

    def write(self, data: bytes) -> None:
        """Send part of the content (the head first, the first time)."""
        self._send(data, False)

    def finish(self) -> None:
        """The response is complete."""
        self._send(b"", True)

    def register_producer(self, producer: PushProducer) -> None:
        """
        Have C{producer} told when the client is slow to take what is sent
        (paused) and ready again (resumed), and when the connection is lost
        (stopped).
        """
        self.producer = producer
        if self.channel.paused:
            producer.pauseProducing()

    def unregister_producer(self) -> None:
        self.producer = None

    def sent_directly(self, count: int) -> None:
        """C{count} bytes of the content went to the socket by another way (sendfile)."""
        self.sent += count
        self._remaining -= count

    # -- switching protocols ----------------------------------------------------------

    def switch_protocols(self, headers: list[tuple[bytes, bytes]], tunnel: Tunnel) -> None:
        """
        Answer C{101 Switching Protocols} with C{headers} (the new
        protocol's: C{Upgrade}, C{Connection} and its own), and hand the
        connection to C{tunnel}: what the client sends from now on goes to
        its C{data_received}; its producer methods (register it with
        L{register_producer}) say when the client is slow to take what is
        written with L{tunnel_write}; L{on_connection_lost} says the
        connection is gone.  L{end_tunnel} ends it.
        """
        self.code = 101
        self.started_writing = True
        self.tunnel = tunnel
        lines = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        lines.append(b"\r\n")
        self.channel.write(b"".join(lines))
        self.channel.switch_to(self)

    def tunnel_write(self, data: bytes) -> None:
        """Send bytes of the switched-to protocol."""
        if not self.finished and not self.lost:
            self.sent += len(data)
            self.channel.write(data)

    def hold_reading(self, hold: bool) -> None:
        """Stop (or start again) reading what the client sends through the tunnel."""
        self.channel.hold_reading_for_tunnel(hold)

    def end_tunnel(self) -> None:
        """The switched-to protocol is done: close the connection once what was written is sent."""
        if self.finished or self.lost:
            return
        self.finished = True
        self.persistent = False
        self.channel.response_finished(self)

    def close_connection(self) -> None:
        """
        Close the connection once what was written is sent: for a response
        that cannot be completed as its head promised.
        """
        self.persistent = False
        self.channel.close()

    def _send(self, data: bytes, end: bool) -> None:
        if self.finished or self.lost:
            return
        pieces = []
        if not self.started_writing:
            self.started_writing = True
            pieces.append(self._head(len(data) if end else None))
        framing = self._framing
        if data:
            if framing == _LENGTH:
                if len(data) > self._remaining:  # never more than promised (PEP 3333)
                    data = data[: self._remaining]
                self._remaining -= len(data)
                pieces.append(data)
            elif framing == _CHUNKED:
                pieces += (b"%x\r\n" % len(data), data, b"\r\n")
            elif framing == _UNTIL_CLOSE:
                pieces.append(data)
            else:
                data = b""
            self.sent += len(data)
        if end:
            self.finished = True
            if framing == _CHUNKED:
                pieces.append(b"0\r\n\r\n")
            elif framing == _LENGTH and self._remaining:
                self.persistent = False  # short: the client would wait for the rest
        if pieces:
            write = self.channel.write
            if len(pieces) == 1:
                write(pieces[0])
            elif sum(map(len, pieces)) < _JOIN_BELOW:
                write(b"".join(pieces))
            else:  # not copied again to be joined
                for piece in pieces:
                    write(piece)
        if end:
            self.channel.response_finished(self)

    def _head(self, complete_length: int | None) -> bytes:
        """
        The response head, deciding the framing: the Content-Length set, or
        the length of a complete response, else chunked (HTTP/1.1) or
        until the connection closes (HTTP/1.0); and the connection's fate.
        """
        code = self.code
        # HTTP/1.1 whatever the request's version: a server answers with the
        # highest version it speaks (RFC 9110 2.5).
        lines = [b"HTTP/1.1 %d %s\r\n" % (code, self.reason or REASONS.get(code, b"Unknown")),
                 http_date()]
        declared = None
        # A body still arriving when the response begins is not read: the
        # client may be waiting for 100 Continue, or the rest would be taken
        # for the next request.  Only a new connection is safe.
        persistent = self.persistent and self.complete and not self.channel.draining
        for name, value in self.response_headers:
            lower = name.lower()
            if lower in _REPLACED:
                if lower == b"content-length":
                    value = value.strip(b" \t")
                    if declared is None and value.isdigit():
                        declared = int(value)
                elif lower == b"connection" and b"close" in value.lower():
                    persistent = False  # the application's way to close
                continue
            lines.append(b"%s: %s\r\n" % (name, value))
        no_content = code in NO_CONTENT_CODES or self.method == b"HEAD"
        if code < 200 or code == 204:  # never a Content-Length (RFC 9110 8.6)
            self._framing = _NO_CONTENT
        elif declared is not None:
            lines.append(b"Content-Length: %d\r\n" % declared)
            self.declared_length = declared
            self._framing = _NO_CONTENT if no_content else _LENGTH
            self._remaining = declared
            if complete_length is not None and complete_length < declared and not no_content:
                persistent = False  # short: the client would wait for the rest
        elif no_content:
            self._framing = _NO_CONTENT
        elif complete_length is not None:
            lines.append(b"Content-Length: %d\r\n" % complete_length)
            self.declared_length = self._remaining = complete_length
            self._framing = _LENGTH
        elif self.version == HTTP_11:
            lines.append(b"Transfer-Encoding: chunked\r\n")
            self._framing = _CHUNKED
        else:
            self._framing = _UNTIL_CLOSE
            persistent = False
        if not persistent:
            lines.append(b"Connection: close\r\n\r\n")
        elif self.version == HTTP_10:
            lines.append(b"Connection: keep-alive\r\n\r\n")
        else:
            lines.append(b"\r\n")
        self.persistent = persistent
        return b"".join(lines)

