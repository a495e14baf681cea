"""
Unit tests for L{backtracweb.app.sendfile}: when a file response may go out
with C{os.sendfile}, and how the producer shares the socket with Twisted's
transport.

The pure checks (L{declared_length}, L{usable}) run on requests received
over a L{StringTransport}.  The producer runs on a real connected socket
pair (loopback TCP, or unix) with Twisted's real L{tcp.Server} transport
and the site's real channel: only the reactor is a fake, L{FDReactor} (the
tests' L{FakeReactor} with the sets of readers and writers), pumped by the
test: one C{select}, the C{doRead} and C{doWrite} calls it allows, the
timed calls due and the calls from other threads.  So the transport's own
C{doWrite} decides when the producer may send, exactly as under twistd,
the test decides when the client reads, and time moves only when the test
advances the clock.  The global reactor is never imported.
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
from helpers import WAIT, Client, FakeReactor, Recorder, make_site, parse_responses, requests_done
from twisted.internet import tcp, unix
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from backtracweb.app import sendfile
from backtracweb.app.resource import SiteRoot, static_routes
from backtracweb.app.sendfile import SMALL_FILE, SendfileProducer, declared_length, usable
from backtracweb.app.wsgi import WSGIContainer
from backtracweb.config.settings import StaticMapping
from backtracweb.http.channel import CLIENT_GONE

BIG = b"".join(i.to_bytes(4, "big") for i in range(1024 * 1024))  # 4 MiB, every word different
SMALL = b"small file\n"
SEND_TIMEOUT = 20.0


# -- the fake reactor and real connections ----------------------------------------------


class FDReactor(FakeReactor):
    """
    The part of a reactor Twisted's socket transports use: the sets of
    readers and writers, besides L{FakeReactor}'s clock and queue of
    calls from other threads.  L{pump} plays one reactor iteration.
    """

    def __init__(self) -> None:
        super().__init__()
        self.readers: set = set()
        self.writers: set = set()

    def addReader(self, reader) -> None:
        self.readers.add(reader)

    def addWriter(self, writer) -> None:
        self.writers.add(writer)

    def removeReader(self, reader) -> None:
        self.readers.discard(reader)

    def removeWriter(self, writer) -> None:
        self.writers.discard(writer)

    def pump(self, timeout: float = 0.0) -> None:
        """One iteration: what select allows read and written, the calls due now, the crossings."""
        readers = [r for r in self.readers if r.fileno() != -1]
        writers = [w for w in self.writers if w.fileno() != -1]
        if readers or writers:
            readable, writable, _ = select.select(readers, writers, [], timeout)
            for selectable, method in [(r, "doRead") for r in readable] + [
                    (w, "doWrite") for w in writable]:
                if method == "doWrite" and selectable not in self.writers:
                    continue  # it stopped writing while this iteration ran
                if method == "doRead" and selectable not in self.readers:
                    continue
                why = getattr(selectable, method)()
                if why:
                    self.removeReader(selectable)
                    self.removeWriter(selectable)
                    selectable.connectionLost(Failure(why))
        self.advance(0)
        self.run_pending()


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


def unix_pair():
    server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server.setblocking(False)
    client.setblocking(False)
    return server, client


def parse_head(head: bytes):
    """A response head (without its blank line) as a L{helpers.Response} without a body."""
    [response] = parse_responses(head + b"\r\n\r\n", [b"HEAD"])
    return response


class SocketClient:
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
        """Run the reactor (and read, unless told not to) until C{predicate()}."""
        deadline = time.monotonic() + WAIT
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.reactor.pump(0.01)
            if read and not self.closed:
                self.read_some()

    def response(self, length: int):
        """Pump until a head and C{length} body bytes have arrived; take them: (head, body)."""

        def complete() -> bool:
            head, sep, rest = bytes(self.received).partition(b"\r\n\r\n")
            return bool(sep) and len(rest) >= length

        self.pump_until(complete, f"a response with {length} body bytes")
        head, _, rest = bytes(self.received).partition(b"\r\n\r\n")
        self.received = bytearray(rest[length:])
        return parse_head(head), rest[:length]

    def close(self) -> None:
        self.sock.close()


class Served:
    """A site on a real connection: its fake reactor, transport, channel and client."""

    def __init__(self, root, routes=(), *, kind: str = "tcp", sndbuf=None, rcvbuf=None,
                 reactor: FDReactor | None = None) -> None:
        self.reactor = reactor or FDReactor()
        self.site = make_site(root, self.reactor, routes=routes, max_body=1 << 20,
                              max_queue=100, send_timeout=SEND_TIMEOUT)
        self.done = requests_done(self.site)
        server, client = loopback_pair(sndbuf, rcvbuf) if kind == "tcp" else unix_pair()
        self.channel = self.site.buildProtocol(None)
        if kind == "tcp":
            self.transport = tcp.Server(server, self.channel, ("192.0.2.7", 51000), None, 1,
                                        self.reactor)
        else:
            self.transport = unix.Server(server, self.channel, "", None, 1, self.reactor)
        self.channel.makeConnection(self.transport)
        self.client = SocketClient(self.reactor, client)

    def get(self, path: bytes, *headers: bytes, method: bytes = b"GET") -> None:
        self.client.send(method + b" " + path + b" HTTP/1.1\r\nHost: example.com\r\n"
                         + b"".join(h + b"\r\n" for h in headers) + b"\r\n")

    def fill_up(self, calls: list) -> None:
        """Pump without reading until the producer waits for the socket: the buffers are full."""
        self.client.pump_until(lambda: calls, "the transfer to start", read=False)
        stalled = -1
        while stalled != len(calls):
            stalled = len(calls)
            for _ in range(20):
                self.reactor.pump(0.001)
        assert sent_by(calls) < len(BIG)

    def close(self) -> None:
        self.client.close()
        deadline = time.monotonic() + WAIT
        while self.transport.connected and time.monotonic() < deadline:
            self.reactor.pump(0.01)
        self.reactor.advance(1000)  # the channel's timers, if any are left


def static_site(directory: Path, **kwargs) -> Served:
    """The site's root with C{/static} mapped to C{directory}, on a real connection."""
    return Served(SiteRoot(None), static_routes([StaticMapping("/static", str(directory))]),
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


def sent_by(calls) -> int:
    """The bytes the recorded sendfile calls sent."""
    return sum(sent for *_, sent in calls if isinstance(sent, int))


def messages(events) -> list[str]:
    return [formatEvent(e) for e in events]


@pytest.fixture
def files(tmp_path) -> Path:
    directory = tmp_path / "static"
    directory.mkdir()
    (directory / "big.bin").write_bytes(BIG)
    (directory / "small.txt").write_bytes(SMALL)
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
def served(files):
    made = []

    def make(**kwargs) -> Served:
        s = static_site(files, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


# -- declared_length and usable, on a StringTransport ---------------------------------


def held_request(method: bytes = b"GET", version: bytes = b"HTTP/1.1"):
    """A request received by a site's channel on a L{StringTransport}, not yet answered."""
    root = Recorder()
    client = Client(make_site(root))
    client.get(b"/slow", method=method, version=version)
    [request] = root.pending
    return request


@pytest.mark.parametrize("headers, expected", [
    ([(b"Content-Length", b"1000")], 1000),
    ([(b"content-length", b"1000")], 1000),
    ([(b"Content-Length", b"0")], 0),
    ([(b"Content-Type", b"text/plain")], None),
    ([], None),
    ([(b"Content-Length", b"1000"), (b"Content-Length", b"1000")], None),
    ([(b"Content-Length", b"1000"), (b"Content-Length", b"2000")], None),
    ([(b"Content-Length", b"-1")], None),
    ([(b"Content-Length", b"+1")], None),
    ([(b"Content-Length", b"1e3")], None),
    ([(b"Content-Length", b"")], None),
    # The engine drops an application's Transfer-Encoding: the length frames the response.
    ([(b"Content-Length", b"1000"), (b"Transfer-Encoding", b"chunked")], 1000),
])
def test_declared_length(headers, expected):
    """The content length the response promises: its one well-formed Content-Length."""
    request = held_request()
    request.response_headers = list(headers)
    assert declared_length(request) == expected


@pytest.mark.parametrize("value", [b"1000", b" 1000", b"1000 ", b"\t1000"])
def test_declared_length_is_what_the_head_says(value):
    """
    Whatever L{declared_length} reads in the headers is the Content-Length
    the response's head is then framed by: sendfile sends exactly that
    many bytes, unframed.
    """
    request = held_request()
    request.response_headers = [(b"Content-Length", value)]
    length = declared_length(request)
    request.write(b"")
    assert length == request.declared_length == 1000
    head = request.channel.transport.value()
    assert b"Content-Length: 1000\r\n" in head and b"Transfer-Encoding" not in head


def fake_socket(kind=tcp.Server, ssl: bool = False, **attributes):
    """
    A transport of class C{kind} (a plain socket's) connected to nothing,
    for L{usable}; C{ssl} makes it provide L{ISSLTransport}.
    """
    transport = kind.__new__(kind)  # no socket
    transport.connected, transport.disconnecting = 1, 0
    for name, value in attributes.items():
        setattr(transport, name, value)
    if ssl:
        directlyProvides(transport, ISSLTransport)
    return transport


def usable_request(method=b"GET", code=200, length=b"100000", transport=None,
                   version=b"HTTP/1.1", **attributes):
    """A request answered C{code} with C{length}, its channel's transport C{transport}."""
    request = held_request(method, version)
    request.code = code
    if length is not None:
        request.response_headers = [(b"Content-Type", b"application/octet-stream"),
                                    (b"Content-Length", length)]
    for name, value in attributes.items():
        setattr(request, name, value)
    request.channel.transport = transport if transport is not None else fake_socket()
    return request


@pytest.mark.parametrize("request_args, count, expected", [
    (dict(), 100000, True),
    (dict(code=206), 100000, True),
    (dict(version=b"HTTP/1.0"), 100000, True),
    (dict(transport=fake_socket(unix.Server)), 100000, True),
    (dict(method=b"HEAD"), 100000, False),                # no content
    (dict(code=304), 100000, False),
    (dict(code=204), 100000, False),
    (dict(length=None), 100000, False),                    # chunked
    (dict(length=b"99999"), 100000, False),                # the promise is not the count
    (dict(length=b"0"), 0, False),                         # nothing to send
    (dict(lost=True), 100000, False),                      # the client is gone
    (dict(started_writing=True), 100000, False),           # the head is written
    (dict(finished=True), 100000, False),
    (dict(transport=fake_socket(TLS=True)), 100000, False),  # TLS started on the socket
    (dict(transport=fake_socket(ssl=True)), 100000, False),
    (dict(transport=StringTransport()), 100000, False),    # not a socket (as TLS's is not)
    (dict(transport=fake_socket(disconnecting=1)), 100000, False),
    (dict(transport=fake_socket(connected=0)), 100000, False),
], ids=["plain", "206", "HTTP/1.0", "unix", "HEAD", "304", "204", "no length", "other length",
        "empty", "lost", "head written", "finished", "TLS", "ISSLTransport", "StringTransport",
        "closing", "closed"])
def test_usable(request_args, count, expected):
    """What rules sendfile out, leaving the response to L{FileSender}; and what does not."""
    assert usable(usable_request(**request_args), count) is expected


def test_not_usable_once_the_head_is_written():
    """The producer writes the head itself: a response already started is refused."""
    request = held_request()
    request.response_headers = [(b"Content-Length", b"100000")]
    request.write(b"")
    request.channel.transport = fake_socket()
    assert not usable(request, 100000)


def test_not_usable_without_os_sendfile(monkeypatch):
    assert usable(usable_request(), 100000)
    monkeypatch.setattr(sendfile, "_SENDFILE", None)
    assert not usable(usable_request(), 100000)


# -- the producer on a real connection ---------------------------------------------------


def test_large_static_file_sent_with_sendfile(served, calls):
    """
    A static file over SMALL_FILE goes out with sendfile, byte-exact, with
    its headers; every body byte goes through sendfile (none through the
    transport's buffer), and the request is done with the bytes counted.
    """
    s = served()
    s.get(b"/static/big.bin")
    # (Whether the first sendfile takes it all depends on the socket's buffer.)
    head, body = s.client.response(len(BIG))
    assert head.status == 200
    assert head.header(b"content-length") == b"%d" % len(BIG)
    assert head.header(b"transfer-encoding") is None
    assert body == BIG
    assert sent_by(calls) == len(BIG)
    assert [offset for offset, _, _ in calls] == sorted({offset for offset, _, _ in calls})
    s.client.pump_until(lambda: s.done, "the request to be done")
    assert [(r.code, r.sent) for r in s.done] == [(200, len(BIG))]


def test_small_static_file_not_sent_with_sendfile(served, calls, files):
    """A file of at most SMALL_FILE bytes still goes in the one write (no wait for the socket)."""
    (files / "limit.bin").write_bytes(BIG[:SMALL_FILE])
    s = served()
    s.get(b"/static/small.txt")
    s.get(b"/static/limit.bin")
    assert s.client.response(len(SMALL))[1] == SMALL
    assert s.client.response(SMALL_FILE)[1] == BIG[:SMALL_FILE]
    assert calls == []


def test_head_sends_no_body(served, calls):
    """HEAD of a large file: its headers, no body, no sendfile."""
    s = served()
    s.get(b"/static/big.bin", method=b"HEAD")
    head, _ = s.client.response(0)
    assert head.header(b"content-length") == b"%d" % len(BIG)
    s.get(b"/static/small.txt")  # the connection is still in step
    _, body = s.client.response(len(SMALL))
    assert body == SMALL
    assert calls == []


@pytest.mark.parametrize("ranges, start, end", [
    (b"bytes=100000-", 100000, len(BIG)),
    (b"bytes=1000-2000000", 1000, 2000001),
    (b"bytes=-100000", len(BIG) - 100000, len(BIG)),
])
def test_single_range_sent_with_sendfile(served, calls, ranges, start, end):
    """A single large range is a 206 of exactly those bytes, sent from its offset."""
    s = served()
    s.get(b"/static/big.bin", b"Range: " + ranges)
    head, body = s.client.response(end - start)
    assert head.status == 206
    assert head.header(b"content-range") == b"bytes %d-%d/%d" % (start, end - 1, len(BIG))
    assert body == BIG[start:end]
    assert calls[0][0] == start and sent_by(calls) == end - start


def test_small_range_not_with_sendfile(served, calls):
    """A range of a few bytes goes in one write: not worth a wait for the socket."""
    s = served()
    s.get(b"/static/big.bin", b"Range: bytes=10-19")
    head, body = s.client.response(10)
    assert head.status == 206 and body == BIG[10:20]
    assert calls == []


def test_several_ranges_not_with_sendfile(served, calls):
    """Several ranges make a multipart body with heads of its own: one write."""
    s = served()
    s.get(b"/static/big.bin", b"Range: bytes=0-99999,200000-299999")
    s.client.pump_until(lambda: b"\r\n\r\n" in s.client.received, "the head")
    head = parse_head(bytes(s.client.received).partition(b"\r\n\r\n")[0])
    _, body = s.client.response(int(head.header(b"content-length")))
    assert head.status == 206 and BIG[200000:300000] in body and BIG[:100000] in body
    assert calls == []


def test_not_modified_sends_no_body(served, calls):
    """A conditional GET answered 304 sends no body and uses no sendfile."""
    s = served()
    s.get(b"/static/big.bin", b"If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT")
    head, _ = s.client.response(0)
    assert head.status == 304
    s.get(b"/static/small.txt")
    assert s.client.response(len(SMALL))[1] == SMALL  # nothing came between
    assert calls == []


def test_keep_alive_after_sendfile(served, calls):
    """
    After a sendfile response the transport is the channel's again: the
    next request on the connection is answered, and the transport's
    producer state is as before.
    """
    s = served()
    for _ in range(3):
        s.get(b"/static/big.bin")
        _, body = s.client.response(len(BIG))
        assert body == BIG
        s.get(b"/static/small.txt")
        _, body = s.client.response(len(SMALL))
        assert body == SMALL
    s.client.pump_until(lambda: len(s.done) == 6, "the requests to be done")
    assert s.transport.connected and not s.transport.disconnecting
    assert s.transport.producer is s.channel and not s.transport.producerPaused
    assert s.channel.active is None and not s.channel.paused
    assert sent_by(calls) == 3 * len(BIG)
    s.reactor.advance(SEND_TIMEOUT + 1)  # no send deadline is left to cut the idle connection
    s.reactor.pump()
    assert s.transport.connected and not s.transport.disconnecting


def test_pipelined_requests_answered_in_order(served, calls):
    """Requests pipelined behind a sendfile response wait for it, then are answered in order."""
    s = served()
    s.client.send(b"GET /static/big.bin HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /static/small.txt HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /static/big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=5-\r\n\r\n")
    assert s.client.response(len(BIG))[1] == BIG
    assert s.client.response(len(SMALL))[1] == SMALL
    head, body = s.client.response(len(BIG) - 5)
    assert head.status == 206 and body == BIG[5:]
    assert s.client.received == b""


def test_back_pressure(served, calls):
    """
    A client that does not read: sendfile fills the socket and stops at
    EAGAIN without blocking, the transport waits for writability (and the
    channel's send timer runs); as the client reads, the rest follows.
    """
    s = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    s.get(b"/static/big.bin")
    s.fill_up(calls)
    stalled = len(calls)
    for _ in range(50):
        s.reactor.pump()  # and then nothing happens, with no busy loop
    assert len(calls) == stalled
    assert s.transport in s.reactor.writers  # waiting for writability, through Twisted
    assert s.transport.producerPaused
    assert s.channel.active.producer.file is not None
    head, body = s.client.response(len(BIG))
    assert body == BIG
    assert len(calls) > stalled


def test_eagain_waits_for_writability(served, monkeypatch):
    """
    sendfile finding the socket full (EAGAIN) sends nothing and waits for
    writability through the transport, then goes on from where it was.
    """
    real = os.sendfile
    results = []

    def full_every_other_time(out_fd, in_fd, offset, count):
        if len(results) % 2 == 0:
            results.append(BlockingIOError)
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        results.append(real(out_fd, in_fd, offset, min(count, 500000)))
        return results[-1]

    monkeypatch.setattr(sendfile, "_SENDFILE", full_every_other_time)
    s = served()
    s.get(b"/static/big.bin")
    _, body = s.client.response(len(BIG))
    assert body == BIG
    assert results.count(BlockingIOError) == len(results) // 2 >= len(BIG) // 500000
    assert sum(r for r in results if isinstance(r, int)) == len(BIG)


def test_send_timeout(served, calls, files):
    """
    A client that takes nothing of a sendfile transfer for send_timeout is
    cut off: the connection aborted, the file closed, the request logged
    as cut short (499) with what was sent.  One that takes a little now and
    then is not.
    """
    s = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    s.get(b"/static/big.bin")
    s.fill_up(calls)
    for _ in range(3):  # a slow reader: some bytes each time, before the deadline
        s.reactor.advance(SEND_TIMEOUT - 1)
        before = sent_by(calls)
        s.client.pump_until(lambda: sent_by(calls) > before, "more to be sent")
        s.fill_up(calls)
    assert s.transport.connected
    with capturedLogs() as events:
        s.reactor.advance(SEND_TIMEOUT - 0.1)
        assert not s.transport.disconnecting
        s.reactor.advance(0.1)
        s.client.pump_until(lambda: not s.transport.connected, "the connection to be lost",
                            read=False)
    assert messages(events) == [
        "closed the connection from 192.0.2.7: it took nothing of the response to GET "
        f"/static/big.bin for {SEND_TIMEOUT:g} s ([limits] send_timeout)"]
    assert file_fds(files / "big.bin") == []
    [request] = s.done
    assert request.code == CLIENT_GONE
    assert request.sent == sent_by(calls) < len(BIG)


def test_client_gone_mid_transfer(served, calls, files):
    """
    A client that closes mid-file: the connection is lost, the file is
    closed, nothing is logged as an error, and the request is logged as cut
    short (499) with the bytes sendfile sent.
    """
    s = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    with capturedLogs() as events:
        s.get(b"/static/big.bin")
        s.client.pump_until(lambda: len(s.client.received) > 100000, "part of the file")
        s.client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.client.close()  # with a reset
        s.client.pump_until(lambda: not s.transport.connected, "the connection to be lost",
                            read=False)
    assert [e for e in events if "log_failure" in e or e["log_level"].name != "info"] == []
    [request] = s.done
    assert request.code == CLIENT_GONE
    assert len(s.client.received) <= request.sent == sent_by(calls) < len(BIG)
    assert file_fds(files / "big.bin") == []


@pytest.mark.parametrize("error, logged", [
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), None),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), None),
    (OSError(errno.EIO, "Input/output error"), "sending the file failed"),
])
def test_send_error(served, files, monkeypatch, error, logged):
    """
    sendfile failing: the connection is closed and the file too; a client
    gone is not worth a log line, anything else is logged; the request is
    logged as cut short.
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
        s.client.pump_until(lambda: not s.transport.connected, "the connection to be lost")
    assert s.client.received.partition(b"\r\n\r\n")[2] == BIG[:sent[0]]
    assert file_fds(files / "big.bin") == []
    warnings = [formatEvent(e) for e in events if e["log_level"].name != "info"]
    if logged is None:
        assert warnings == []
    else:
        [warning] = warnings
        assert logged in warning and "/static/big.bin" in warning
    assert [(r.code, r.sent) for r in s.done] == [(CLIENT_GONE, sent[0])]


def test_file_closed_after_each_response(served, calls, files):
    """No descriptor of the file stays open after its responses (sent or cut short)."""
    big = files / "big.bin"
    s = served()
    for _ in range(3):
        s.get(b"/static/big.bin")
        s.client.response(len(BIG))
    assert file_fds(big) == []
    s2 = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    before = len(calls)
    s2.get(b"/static/big.bin")
    s2.client.pump_until(lambda: len(calls) > before, "the transfer to start", read=False)
    assert len(file_fds(big)) == 1
    s2.close()
    assert file_fds(big) == []


def test_unix_socket(files, calls):
    """A unix-socket connection is a plain socket too: sendfile is used there."""
    s = static_site(files, kind="unix")
    try:
        s.get(b"/static/big.bin")
        _, body = s.client.response(len(BIG))
        assert body == BIG
        assert sent_by(calls) == len(BIG)
    finally:
        s.close()


def test_drain_waits_for_the_transfer(served, calls):
    """
    Draining lets an in-flight sendfile response finish, then closes its
    connection; the drain completes when it is closed.
    """
    s = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    s.get(b"/static/big.bin")
    s.fill_up(calls)
    drained = []
    s.site.drain(30).addCallback(drained.append)
    s.reactor.advance(1)  # past the idle connections' linger
    for _ in range(5):
        s.reactor.pump()
    assert drained == [] and s.transport.connected
    _, body = s.client.response(len(BIG))
    assert body == BIG
    s.client.pump_until(lambda: s.client.closed, "the connection to close")
    s.client.pump_until(lambda: drained, "the drain to end")
    assert drained == [None]
    assert [(r.code, r.sent) for r in s.done] == [(200, len(BIG))]


def test_drain_timeout_cuts_the_transfer_short(served, calls, files):
    """When graceful_timeout runs out, an in-flight transfer is aborted and its file closed."""
    s = served(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    s.get(b"/static/big.bin")
    s.fill_up(calls)
    producer = s.channel.active.producer
    drained = []
    with capturedLogs() as events:
        s.site.drain(5).addCallback(drained.append)
        s.reactor.advance(5)
        s.client.pump_until(lambda: drained, "the drain to end", read=False)
    assert producer.file is None
    assert file_fds(files / "big.bin") == []
    assert any("cut short GET /static/big.bin" in message for message in messages(events))
    assert [r.code for r in s.done] == [CLIENT_GONE]


class Promising:
    """A root that answers every request with C{count} bytes of a file that has fewer."""

    def __init__(self, path: Path, count: int) -> None:
        self.path, self.count = path, count

    def handle(self, request) -> None:
        request.response_headers = [(b"Content-Length", b"%d" % self.count)]
        assert usable(request, self.count)
        SendfileProducer(request, open(self.path, "rb"), 0, self.count).start()


def test_file_shorter_than_promised(tmp_path, calls):
    """
    A file that ends before the count (truncated while being sent): the
    connection is closed after what it had, so the client cannot take a
    short body for a whole one, and the reason is logged.
    """
    path = tmp_path / "f.bin"
    path.write_bytes(BIG[:200000])
    s = Served(Promising(path, 300000))
    try:
        with capturedLogs() as events:
            s.get(b"/")
            s.client.pump_until(lambda: s.client.closed, "the connection to close")
        head, _, body = bytes(s.client.received).partition(b"\r\n\r\n")
        assert parse_head(head).header(b"content-length") == b"300000"
        assert body == BIG[:200000]
        assert messages(events) == [
            "/: the file ended 100000 bytes short of its Content-Length; closing the connection"]
        assert file_fds(path) == []
        s.client.pump_until(lambda: s.done, "the request to be logged")
        assert [(r.code, r.sent) for r in s.done] == [(CLIENT_GONE, 200000)]
    finally:
        s.close()


# -- files sent by a WSGI application -----------------------------------------------------


class InlinePool:
    """Runs the application at once, in this thread; what it hands the reactor, at the next pump."""

    def callInThread(self, function) -> None:
        function()


def wsgi_served(application) -> Served:
    reactor = FDReactor()
    return Served(SiteRoot(WSGIContainer(reactor, InlinePool(), application)), reactor=reactor)


def file_app(path: Path, offset: int = 0, length: str | None = None, opened=None):
    """An application answering with C{path} from C{offset} through wsgi.file_wrapper."""
    def application(environ, start_response):
        f = open(path, "rb")
        if opened is not None:
            opened.append(f)
        f.seek(offset)
        headers = [("Content-Type", "application/octet-stream")]
        if length is not None:
            headers.append(("Content-Length", length))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f)

    return application


def test_wsgi_file_wrapper_sent_with_sendfile(files, calls):
    """A large wrapped file with its Content-Length goes out with sendfile, from its position."""
    opened = []
    s = wsgi_served(file_app(files / "big.bin", 1000, str(len(BIG) - 1000), opened))
    try:
        for _ in range(2):  # and the connection stays usable
            s.get(b"/file")
            head, body = s.client.response(len(BIG) - 1000)
            assert head.status == 200
            assert body == BIG[1000:]
        assert calls[0][0] == 1000 and sent_by(calls) == 2 * (len(BIG) - 1000)
        assert all(f.closed for f in opened) and len(opened) == 2
        s.client.pump_until(lambda: len(s.done) == 2, "the requests to be done")
        assert file_fds(files / "big.bin") == []
    finally:
        s.close()


def test_wsgi_file_wrapper_without_length(files, calls):
    """Without a Content-Length the rest of the file goes, with sendfile, framed by its length."""
    s = wsgi_served(file_app(files / "big.bin", 10))
    try:
        s.get(b"/file")
        head, body = s.client.response(len(BIG) - 10)
        assert head.header(b"content-length") == b"%d" % (len(BIG) - 10)
        assert body == BIG[10:]
        assert sent_by(calls) == len(BIG) - 10
    finally:
        s.close()


def test_wsgi_content_length_shorter_than_the_file(files, calls):
    """An application that declares fewer bytes than the file holds gets exactly those sent."""
    s = wsgi_served(file_app(files / "big.bin", 0, "100000"))
    try:
        s.get(b"/file")
        s.get(b"/file")
        for _ in range(2):
            head, body = s.client.response(100000)
            assert body == BIG[:100000]
        for _ in range(10):
            s.reactor.pump()
            s.client.read_some()
        assert s.client.received == b""
        assert sent_by(calls) == 200000
    finally:
        s.close()


def test_wsgi_file_shorter_than_its_content_length(files, calls):
    """
    An application that declares more bytes than its file holds: the file
    is sent, then the connection closed (the client must not wait for the
    rest), and the mismatch is logged.
    """
    s = wsgi_served(file_app(files / "big.bin", 0, str(len(BIG) + 10)))
    try:
        with capturedLogs() as events:
            s.get(b"/file")
            s.client.pump_until(lambda: s.client.closed, "the connection to close")
        head, _, body = bytes(s.client.received).partition(b"\r\n\r\n")
        assert parse_head(head).header(b"content-length") == b"%d" % (len(BIG) + 10)
        assert body == BIG
        assert any("ended 10 bytes short" in message for message in messages(events))
        assert file_fds(files / "big.bin") == []
    finally:
        s.close()


def test_wsgi_head_reads_nothing(files, calls):
    """HEAD of a wrapped file: the application's headers, no body, and the file is not read."""
    s = wsgi_served(file_app(files / "big.bin", 0, str(len(BIG))))
    try:
        s.get(b"/file", method=b"HEAD")
        head, _ = s.client.response(0)
        assert head.header(b"content-length") == b"%d" % len(BIG)
        assert calls == []
        s.get(b"/file")
        assert s.client.response(len(BIG))[1] == BIG
        assert sent_by(calls) == len(BIG)
    finally:
        s.close()


def test_wsgi_content_length_with_spaces(files, calls):
    """
    A Content-Length with whitespace around it (which start_response lets
    through) frames the response as it says, also when the file goes out
    with sendfile: never raw file bytes after a chunked head.
    """
    s = wsgi_served(file_app(files / "big.bin", 0, " %d " % len(BIG)))
    try:
        s.get(b"/file")
        head, body = s.client.response(len(BIG))
        assert head.header(b"transfer-encoding") is None
        assert head.header(b"content-length") == b"%d" % len(BIG)
        assert body == BIG
    finally:
        s.close()
