"""
Unit tests for L{backtracweb.sendfile}: when a file response may go out
with C{os.sendfile}, and how the producer shares the socket with Twisted's
transport.

The pure checks (L{declared_length}, L{usable}) run on requests answered
into a L{StringTransport}.  The producer runs on a real loopback TCP
connection and Twisted's real L{tcp.Server} transport and L{HTTPChannel}:
only the reactor is a fake, L{FDReactor}, which keeps the sets of readers
and writers and is pumped by the test (one C{select} and the C{doRead} and
C{doWrite} calls it allows), with a L{Clock} for timed calls.  So the
transport's own C{doWrite} decides when the producer may send, exactly as
under twistd, and the test decides when the client reads.  The global
reactor is never imported.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from pathlib import Path

import pytest
from helpers import site_settings
from twisted.internet import _producer_helpers, tcp, unix
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock, Cooperator
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from backtracweb import sendfile
from backtracweb.config import StaticMapping
from backtracweb.resource import SiteRoot, static_routes
from backtracweb.sendfile import SendfileProducer, declared_length, usable
from backtracweb.website import BacktracSite
from backtracweb.wsgi import WSGIApplicationResource

WAIT = 10.0
"""Seconds to wait for something that must happen before failing."""
BIG = b"".join(i.to_bytes(4, "big") for i in range(1024 * 1024))  # 4 MiB, every word different
PEER = IPv4Address("TCP", "192.0.2.7", 51000)


# -- the fake reactor and real connections ----------------------------------------------


class FDReactor:
    """
    The part of a reactor that Twisted's socket transports use: the sets
    of readers and writers, and C{callLater} (a L{Clock}, which also runs
    Twisted's pull producers: see L{clock}).  L{pump} plays one reactor
    iteration.
    """

    def __init__(self, clock: Clock) -> None:
        self.readers: set = set()
        self.writers: set = set()
        self.clock = clock
        self.callLater = clock.callLater

    def addReader(self, reader) -> None:
        self.readers.add(reader)

    def addWriter(self, writer) -> None:
        self.writers.add(writer)

    def removeReader(self, reader) -> None:
        self.readers.discard(reader)

    def removeWriter(self, writer) -> None:
        self.writers.discard(writer)

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)  # the WSGI container's hop: everything runs in this thread

    def pump(self, timeout: float = 0.0) -> None:
        """One iteration: read and write what select allows, then the timed calls due now."""
        readers = [r for r in self.readers if r.fileno() != -1]
        writers = [w for w in self.writers if w.fileno() != -1]
        if readers or writers:
            readable, writable, _ = select.select(readers, writers, [], timeout)
            for selectable, method in [(r, "doRead") for r in readable] + [
                    (w, "doWrite") for w in writable]:
                if method == "doWrite" and selectable not in self.writers:
                    continue  # it stopped writing while this iteration ran
                why = getattr(selectable, method)()
                if why:
                    self.removeReader(selectable)
                    self.removeWriter(selectable)
                    selectable.connectionLost(Failure(why))
        self.clock.advance(0)


def loopback_pair(sndbuf: int | None = None, rcvbuf: int | None = None):
    """A connected (server side, client side) pair of TCP sockets on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        if rcvbuf:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    if sndbuf:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    server.setblocking(False)
    client.setblocking(False)
    return server, client


class Client:
    """The client end of a connection to the site, read and written without blocking."""

    def __init__(self, reactor: FDReactor, sock: socket.socket) -> None:
        self.reactor, self.sock = reactor, sock
        self.received = bytearray()
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_some(self) -> int:
        """Read what has arrived; how many bytes."""
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return 0
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
        self.received += data
        return len(data)

    def pump_until(self, predicate, what: str, read: bool = True) -> None:
        deadline = time.monotonic() + WAIT
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.reactor.pump(0.01)
            if read:
                self.read_some()

    def response(self, length: int) -> tuple[bytes, bytes]:
        """Pump until a head and C{length} body bytes have arrived; take them."""

        def complete() -> bool:
            head, sep, rest = bytes(self.received).partition(b"\r\n\r\n")
            return bool(sep) and len(rest) >= length

        self.pump_until(complete, f"a response with {length} body bytes")
        head, _, rest = bytes(self.received).partition(b"\r\n\r\n")
        self.received = bytearray(rest[length:])
        return head, rest[:length]

    def close(self) -> None:
        self.sock.close()


def header(head: bytes, name: bytes) -> list[bytes]:
    lines = head.split(b"\r\n")[1:]
    return [v.strip() for n, _, v in (line.partition(b":") for line in lines)
            if n.lower() == name.lower()]


class Served:
    """A site on a real connection: its fake reactor, transport, channel and client."""

    def __init__(self, root, clock: Clock, routes=(), *, transport_class=tcp.Server,
                 sndbuf=None, rcvbuf=None) -> None:
        self.reactor = FDReactor(clock)
        settings = site_settings(routes=routes, max_body=1 << 20, max_queue=100)
        self.site = BacktracSite(root, settings, self.reactor.clock)
        server, client = (loopback_pair(sndbuf, rcvbuf) if transport_class is tcp.Server
                          else unix_pair())
        self.channel = self.site.buildProtocol(PEER)
        if transport_class is tcp.Server:
            self.transport = tcp.Server(server, self.channel, ("192.0.2.7", 51000), None, 1,
                                        self.reactor)
        else:
            self.transport = unix.Server(server, self.channel, "", None, 1, self.reactor)
        self.channel.makeConnection(self.transport)
        self.client = Client(self.reactor, client)

    def get(self, path: bytes, headers: bytes = b"", method: bytes = b"GET") -> None:
        self.client.send(method + b" " + path + b" HTTP/1.1\r\nHost: example.com\r\n"
                         + headers + b"\r\n")

    def close(self) -> None:
        self.client.close()
        deadline = time.monotonic() + WAIT
        while self.transport.connected and time.monotonic() < deadline:
            self.reactor.pump(0.01)
        self.reactor.clock.advance(1000)  # the channel's timers, if any are left


def unix_pair():
    server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server.setblocking(False)
    client.setblocking(False)
    return server, client


def static_site(directory: Path, clock: Clock, **kwargs) -> Served:
    """The site's root with C{/static} mapped to C{directory}, on a real connection."""
    return Served(SiteRoot(), clock, static_routes([StaticMapping("/static", str(directory))]),
                  **kwargs)


def file_fds(path: Path) -> list[str]:
    """This process's descriptors open on C{path}."""
    target = str(path.resolve())
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                found.append(fd)
        except OSError:
            pass  # closed meanwhile (listdir's own descriptor)
    return found


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """
    The reactor's clock; Twisted's pull producers (its file producers)
    take their steps on it too, instead of on the global cooperator, which
    would import the global reactor.
    """
    clock = Clock()
    cooperator = Cooperator(scheduler=lambda step: clock.callLater(0, step),
                            terminationPredicateFactory=lambda: lambda: True)
    monkeypatch.setattr(_producer_helpers, "cooperate", cooperator.cooperate)
    return clock


@pytest.fixture
def files(tmp_path) -> Path:
    directory = tmp_path / "static"
    directory.mkdir()
    (directory / "big.bin").write_bytes(BIG)
    (directory / "small.txt").write_bytes(b"small file\n")
    return directory


@pytest.fixture
def calls(monkeypatch) -> list[tuple[int, int, object]]:
    """
    Every os.sendfile call the producer makes, as (offset, count asked,
    bytes sent or the exception raised).
    """
    recorded = []
    real = os.sendfile

    def recording(out_fd, in_fd, offset, count):
        try:
            sent = real(out_fd, in_fd, offset, count)
        except OSError as e:
            recorded.append((offset, count, type(e)))
            raise
        recorded.append((offset, count, sent))
        return sent

    monkeypatch.setattr(sendfile, "_SENDFILE", recording)
    return recorded


@pytest.fixture
def served(files, clock):
    made = []

    def make(**kwargs) -> Served:
        s = static_site(files, clock, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


# -- declared_length and usable, on a StringTransport ---------------------------------


def string_request(method: bytes = b"GET", version: bytes = b"HTTP/1.1"):
    """A request received by the site's channel on a L{StringTransport}, not yet answered."""
    seen = []

    class Holding(Resource):
        isLeaf = True

        def render(self, request):
            seen.append(request)
            return NOT_DONE_YET

    site = BacktracSite(Holding(), site_settings(), Clock())
    channel = site.buildProtocol(PEER)
    channel.makeConnection(StringTransport())
    channel.dataReceived(method + b" / " + version + b"\r\nHost: example.com\r\n\r\n")
    [request] = seen
    return request


@pytest.mark.parametrize("headers, expected", [
    ([(b"Content-Length", b"1000")], 1000),
    ([(b"Content-Length", b" 1000 ")], 1000),
    ([(b"Content-Length", b"0")], 0),
    ([], None),
    ([(b"Content-Length", b"1000"), (b"Content-Length", b"1000")], None),
    ([(b"Content-Length", b"-1")], None),
    ([(b"Content-Length", b"1e3")], None),
    ([(b"Content-Length", b"1000"), (b"Transfer-Encoding", b"chunked")], None),
    ([(b"Content-Length", b"1000"), (b"Transfer-Encoding", b"gzip")], None),
])
def test_declared_length(headers, expected):
    """The body length is the one well-formed Content-Length, unless a transfer coding frames it."""
    request = string_request()
    for name, value in headers:
        request.responseHeaders.addRawHeader(name, value)
    assert declared_length(request) == expected


class FakeSocketTransport(tcp.Server):
    """A L{tcp.Server} that is not connected to anything, for L{usable}."""

    def __init__(self, channel) -> None:  # no socket
        self.connected = 1
        self.producer, self.streamingProducer = channel, True

    def writeSequence(self, data) -> None:
        pass


def usable_request(method=b"GET", code=200, length=b"100000", tls=False, **attributes):
    request = string_request(method)
    request.channel.transport = transport = FakeSocketTransport(request.channel)
    transport.TLS = tls
    for name, value in attributes.items():
        setattr(transport, name, value)
    request.setResponseCode(code)
    if length is not None:
        request.responseHeaders.setRawHeaders(b"content-length", [length])
    return request


def test_usable_on_a_plain_socket():
    """A GET answered 200 with a Content-Length, on a plain socket transport, may use sendfile."""
    assert usable(usable_request(), 100000)


@pytest.mark.parametrize("why, request_args, count", [
    ("HEAD has no body", dict(method=b"HEAD"), 100000),
    ("304 has no body", dict(code=304), 100000),
    ("204 has no body", dict(code=204), 100000),
    ("no Content-Length: chunked", dict(length=None), 100000),
    ("Content-Length is not the count", dict(length=b"99999"), 100000),
    ("nothing to send", dict(length=b"0"), 0),
    ("TLS started on the socket", dict(tls=True), 100000),
    ("the transport is closing", dict(disconnecting=1), 100000),
    ("the transport is closed", dict(connected=0), 100000),
    ("the channel is not the transport's producer", dict(producer=None), 100000),
])
def test_not_usable(why, request_args, count):
    """Everything that rules sendfile out (and leaves the response to Twisted's producer)."""
    assert not usable(usable_request(**request_args), count), why


def test_not_usable_on_other_transports():
    """A transport that is not a plain socket (here a StringTransport, as TLS's would be) is refused."""
    request = string_request()
    request.responseHeaders.setRawHeaders(b"content-length", [b"100000"])
    assert not usable(request, 100000)


def test_not_usable_once_the_head_is_written():
    """The producer writes the head itself: a response already started is refused."""
    request = usable_request()
    request.write(b"")
    assert not usable(request, 100000)


def test_not_usable_without_os_sendfile(monkeypatch):
    monkeypatch.setattr(sendfile, "_SENDFILE", None)
    assert not usable(usable_request(), 100000)


# -- the producer on a real connection ---------------------------------------------------


def test_large_static_file_sent_with_sendfile(served, calls):
    """
    A static file over SMALL_FILE goes out with sendfile, byte-exact, with
    Twisted's headers; every body byte goes through sendfile (none through
    the transport's buffer), and the request is finished with the bytes
    counted.
    """
    s = served()
    logged = []
    s.site.log = logged.append
    s.get(b"/static/big.bin")
    s.reactor.pump()
    assert isinstance(s.channel.requests[0].producer, SendfileProducer)
    head, body = s.client.response(len(BIG))
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert header(head, b"content-length") == [b"%d" % len(BIG)]
    assert header(head, b"transfer-encoding") == []
    assert body == BIG
    assert sum(sent for _, _, sent in calls if isinstance(sent, int)) == len(BIG)
    s.client.pump_until(lambda: logged, "the request to finish")
    [request] = logged
    assert request.finished and request.sentLength == len(BIG)


def test_small_static_file_not_sent_with_sendfile(served, calls):
    """A file of at most SMALL_FILE bytes still goes in the one write (no wait for the socket)."""
    s = served()
    s.get(b"/static/small.txt")
    head, body = s.client.response(11)
    assert body == b"small file\n"
    assert calls == []


def test_head_sends_no_body(served, calls):
    """HEAD of a large file: Twisted's headers, no body, no sendfile."""
    s = served()
    s.get(b"/static/big.bin", method=b"HEAD")
    head, body = s.client.response(0)
    assert header(head, b"content-length") == [b"%d" % len(BIG)]
    s.get(b"/static/small.txt")  # the connection is still in step
    head, body = s.client.response(11)
    assert body == b"small file\n"
    assert calls == []


@pytest.mark.parametrize("ranges, start, end", [
    (b"bytes=100000-", 100000, len(BIG)),
    (b"bytes=1000-2000000", 1000, 2000001),
    (b"bytes=-100000", len(BIG) - 100000, len(BIG)),
])
def test_single_range_sent_with_sendfile(served, calls, ranges, start, end):
    """A single large range is a 206 of exactly those bytes, sent from its offset."""
    s = served()
    s.get(b"/static/big.bin", b"Range: " + ranges + b"\r\n")
    head, body = s.client.response(end - start)
    assert head.startswith(b"HTTP/1.1 206 ")
    assert header(head, b"content-range") == [b"bytes %d-%d/%d" % (start, end - 1, len(BIG))]
    assert body == BIG[start:end]
    assert calls[0][0] == start


def test_small_range_left_to_twisted(served, calls):
    """A range of a few bytes goes through Twisted's producer: not worth a wait for the socket."""
    s = served()
    s.get(b"/static/big.bin", b"Range: bytes=10-19\r\n")
    head, body = s.client.response(10)
    assert head.startswith(b"HTTP/1.1 206 ") and body == BIG[10:20]
    assert calls == []


def test_several_ranges_left_to_twisted(served, calls):
    """Several ranges make a multipart body with headers of its own: Twisted's producer sends it."""
    s = served()
    s.get(b"/static/big.bin", b"Range: bytes=0-99999,200000-299999\r\n")
    s.client.pump_until(lambda: b"\r\n\r\n" in s.client.received, "the head")
    head, _, _ = bytes(s.client.received).partition(b"\r\n\r\n")
    [length] = header(head, b"content-length")
    _, body = s.client.response(int(length))
    assert head.startswith(b"HTTP/1.1 206 ") and BIG[200000:300000] in body
    assert calls == []


def test_not_modified_sends_no_body(served, calls):
    """A conditional GET answered 304 sends no body and uses no sendfile."""
    s = served()
    s.get(b"/static/big.bin", b"If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n")
    head, _ = s.client.response(0)
    assert head.startswith(b"HTTP/1.1 304 ")
    assert calls == []


def test_keep_alive_after_sendfile(served, calls):
    """
    After a sendfile response the transport is Twisted's again: the next
    request on the connection is answered, and the producer state is as
    Twisted left it.
    """
    s = served()
    for _ in range(3):
        s.get(b"/static/big.bin")
        _, body = s.client.response(len(BIG))
        assert body == BIG
        s.get(b"/static/small.txt")
        _, body = s.client.response(11)
        assert body == b"small file\n"
    assert s.transport.connected and not s.transport.disconnecting
    assert s.transport.producer is s.channel and not s.transport.producerPaused
    assert s.channel._requestProducer is None


def test_pipelined_requests_answered_in_order(served, calls):
    """Requests pipelined behind a sendfile response wait for it, then are answered in order."""
    s = served()
    s.client.send(b"GET /static/big.bin HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /static/small.txt HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /static/big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=5-\r\n\r\n")
    assert s.client.response(len(BIG))[1] == BIG
    assert s.client.response(11)[1] == b"small file\n"
    head, body = s.client.response(len(BIG) - 5)
    assert head.startswith(b"HTTP/1.1 206 ") and body == BIG[5:]


def test_back_pressure(served, calls):
    """
    A client that does not read: sendfile fills the socket and stops at
    EAGAIN without blocking, the transport waits for writability; as the
    client reads, the rest follows.
    """
    s = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    s.get(b"/static/big.bin")
    s.client.pump_until(lambda: calls, "the transfer to start", read=False)
    for _ in range(50):
        s.reactor.pump(0.001)  # the socket fills up
    stalled = len(calls)
    for _ in range(50):
        s.reactor.pump()  # and then nothing happens, with no busy loop
    assert len(calls) == stalled
    assert sum(sent for *_, sent in calls if isinstance(sent, int)) < len(BIG)
    assert s.transport in s.reactor.writers  # waiting for writability, through Twisted
    assert s.channel.requests[0].producer.file is not None
    head, body = s.client.response(len(BIG))
    assert body == BIG
    assert len(calls) > stalled


def test_client_gone_mid_transfer(served, calls, files):
    """
    A client that closes mid-file: the connection is lost, the file is
    closed, nothing is logged as an error, and the request is logged as cut
    short.
    """
    s = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    logged = []
    s.site.log = logged.append
    with capturedLogs() as events:
        s.get(b"/static/big.bin")
        s.client.pump_until(lambda: len(s.client.received) > 100000, "part of the file")
        s.client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.client.close()  # with a reset
        s.client.pump_until(lambda: not s.transport.connected, "the connection to be lost",
                            read=False)
    assert [formatEvent(e) for e in events if "log_failure" in e] == []
    [request] = logged
    assert request.code == 499 and request.sentLength < len(BIG)
    assert file_fds(files / "big.bin") == []


@pytest.mark.parametrize("error, logged", [
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), None),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), None),
    (OSError(errno.EIO, "Input/output error"), "sending the file failed"),
])
def test_send_error(served, files, monkeypatch, error, logged):
    """
    sendfile failing: the connection is closed and the file too; a client
    gone is not worth a log line, anything else is logged.
    """
    real = os.sendfile
    sent = []

    def failing_second_time(out_fd, in_fd, offset, count):
        if sent:
            raise error
        sent.append(real(out_fd, in_fd, offset, min(count, 100000)))
        return sent[-1]

    monkeypatch.setattr(sendfile, "_SENDFILE", failing_second_time)
    s = served()
    with capturedLogs() as events:
        s.get(b"/static/big.bin")
        s.client.pump_until(lambda: s.client.closed, "the connection to close")
    assert len(s.client.received) < len(BIG)
    assert not s.transport.connected
    assert file_fds(files / "big.bin") == []
    warnings = [formatEvent(e) for e in events if e["log_level"].name in ("warn", "error", "critical")]
    if logged is None:
        assert warnings == []
    else:
        [warning] = warnings
        assert logged in warning and "/static/big.bin" in warning


def test_file_closed_after_each_response(served, calls, files):
    """No descriptor of the file stays open after its responses (sent or cut short)."""
    big = files / "big.bin"
    s = served()
    for _ in range(3):
        s.get(b"/static/big.bin")
        s.client.response(len(BIG))
    assert file_fds(big) == []
    s2 = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    s2.get(b"/static/big.bin")
    before = len(calls)
    s2.client.pump_until(lambda: len(calls) > before, "the transfer to start", read=False)
    assert len(file_fds(big)) == 1
    s2.close()
    assert file_fds(big) == []


def test_unix_socket(files, calls, clock):
    """A unix-socket connection is a plain socket too: sendfile is used there."""
    s = static_site(files, clock, transport_class=unix.Server)
    try:
        s.get(b"/static/big.bin")
        _, body = s.client.response(len(BIG))
        assert body == BIG
        assert calls
    finally:
        s.close()


def test_drain_waits_for_the_transfer(served, calls):
    """
    Draining lets an in-flight sendfile response finish, then closes its
    connection; the drain completes when it is closed.
    """
    s = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    s.get(b"/static/big.bin")
    s.client.pump_until(lambda: calls, "the transfer to start", read=False)
    drained = []
    s.site.drain(30).addCallback(drained.append)
    for _ in range(5):
        s.reactor.pump()
    assert drained == [] and s.transport.connected
    _, body = s.client.response(len(BIG))
    assert body == BIG
    s.client.pump_until(lambda: s.client.closed, "the connection to close")
    assert drained == [None]


def test_drain_timeout_cuts_the_transfer_short(served, calls, files):
    """When graceful_timeout runs out, an in-flight transfer is aborted and its file closed."""
    s = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    s.get(b"/static/big.bin")
    s.client.pump_until(lambda: calls, "the transfer to start", read=False)
    producer = s.channel.requests[0].producer
    drained = []
    with capturedLogs() as events:
        s.site.drain(5).addCallback(drained.append)
        s.reactor.clock.advance(5)
        s.client.pump_until(lambda: drained, "the drain to end", read=False)
    assert producer.file is None
    assert any("cut short GET /static/big.bin" in formatEvent(e) for e in events)


def test_file_shorter_than_promised(tmp_path, clock):
    """
    A file that ends before the count (truncated while being sent): the
    connection is closed, so the client cannot take a short body for a
    whole one, and the reason is logged.
    """
    path = tmp_path / "f.bin"
    path.write_bytes(BIG[:200000])

    class Promising(Resource):
        isLeaf = True

        def render(self, request):
            request.setHeader(b"content-length", b"300000")
            assert usable(request, 300000)
            SendfileProducer(request, open(path, "rb"), 0, 300000).start()
            return NOT_DONE_YET

    s = Served(Promising(), clock)
    try:
        with capturedLogs() as events:
            s.get(b"/")
            s.client.pump_until(lambda: s.client.closed, "the connection to close")
        head, _, body = bytes(s.client.received).partition(b"\r\n\r\n")
        assert body == BIG[:200000]
        assert any("ended 100000 bytes short" in formatEvent(e) for e in events)
        assert file_fds(path) == []
    finally:
        s.close()


# -- files sent by a WSGI application -----------------------------------------------------


class SyncPool:
    def callInThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)


def wsgi_served(application, clock: Clock) -> Served:
    root = SiteRoot()
    s = Served(root, clock)
    root.app = WSGIApplicationResource(s.reactor, SyncPool(), application)
    return s


def file_app(path: Path, offset: int = 0, length: int | None = None, status="200 OK"):
    def application(environ, start_response):
        f = open(path, "rb")
        f.seek(offset)
        headers = [("Content-Type", "application/octet-stream")]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        start_response(status, headers)
        return environ["wsgi.file_wrapper"](f)

    return application


def test_wsgi_file_wrapper_sent_with_sendfile(files, calls, clock):
    """A large wrapped file with its Content-Length goes out with sendfile, from its position."""
    s = wsgi_served(file_app(files / "big.bin", 1000, len(BIG) - 1000), clock)
    try:
        for _ in range(2):  # and the connection stays usable
            s.get(b"/file")
            head, body = s.client.response(len(BIG) - 1000)
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert body == BIG[1000:]
        assert calls and calls[0][0] == 1000
        assert file_fds(files / "big.bin") == []
    finally:
        s.close()


def test_wsgi_content_length_shorter_than_the_file(files, calls, clock):
    """An application that declares fewer bytes than the file holds gets exactly those sent."""
    s = wsgi_served(file_app(files / "big.bin", 0, 100000), clock)
    try:
        s.get(b"/file")
        s.get(b"/file")
        for _ in range(2):
            head, body = s.client.response(100000)
            assert body == BIG[:100000]
        assert s.client.received == b""
    finally:
        s.close()


def test_wsgi_file_shorter_than_its_content_length(files, calls, clock):
    """
    An application that declares more bytes than its file holds: the file
    is sent, then the connection closed (the client must not wait for the
    rest), and the mismatch is logged.
    """
    s = wsgi_served(file_app(files / "big.bin", 0, len(BIG) + 10), clock)
    try:
        with capturedLogs() as events:
            s.get(b"/file")
            s.client.pump_until(lambda: s.client.closed, "the connection to close")
        head, _, body = bytes(s.client.received).partition(b"\r\n\r\n")
        assert header(head, b"content-length") == [b"%d" % (len(BIG) + 10)]
        assert body == BIG
        assert any("ended 10 bytes short" in formatEvent(e) for e in events)
        assert file_fds(files / "big.bin") == []
    finally:
        s.close()


def test_wsgi_head_reads_nothing(files, calls, clock):
    """HEAD of a wrapped file: the application's headers, no body, and the file is not read."""
    s = wsgi_served(file_app(files / "big.bin", 0, len(BIG)), clock)
    try:
        s.get(b"/file", method=b"HEAD")
        head, _ = s.client.response(0)
        assert header(head, b"content-length") == [b"%d" % len(BIG)]
        s.get(b"/file")
        assert s.client.response(len(BIG))[1] == BIG
        assert len([c for c in calls if c[0] == 0]) == 1
    finally:
        s.close()
