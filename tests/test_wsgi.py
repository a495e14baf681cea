"""
Unit tests for L{backtracweb.wsgi}: the WSGI container that runs the
application in the thread pool and hands its response to the reactor.

No reactor runs.  The container's reactor is L{FakeReactor}: its
C{callFromThread} queues the call, counts it, and the test runs the queued
calls in its own thread, which plays the reactor thread.  Its pool either
runs the work at once in the test's thread (L{SyncPool}: deterministic when
nothing blocks) or in a real thread the test joins (L{ThreadPerCall}: for
back-pressure, a client going away, and which thread does what).  Threads
are synchronised with events and conditions with timeouts, never with
sleeps; the few short timeouts watch for something that must not happen.

Requests are the site's real L{BacktracRequest}s, parsed by a real
L{BacktracChannel} from bytes and answered on a L{StringTransport}.
Twisted sends a file through a pull producer, which its channel drives with
the global cooperator (hence the global reactor): L{ManualCooperator}
stands in for it, one block per step the test takes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import site_settings
from twisted.internet import _producer_helpers
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock, Cooperator
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web.static import NoRangeStaticProducer

from backtracweb import wsgi
from backtracweb.website import BacktracSite
from backtracweb.wsgi import BLOCK_SIZE, FileWrapper, WSGIApplicationResource

REPO = Path(__file__).resolve().parents[1]
WAIT = 10.0
"""Seconds to wait for something that must happen before failing."""
NEVER = 0.1
"""Seconds to watch for something that must not happen."""
PEER = IPv4Address("TCP", "192.0.2.7", 51000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
SERVER_ERROR = b"Internal Server Error\n"


# -- fakes -----------------------------------------------------------------------------


class FakeReactor:
    """
    The part of the reactor the container uses: C{callFromThread} queues
    the call and counts it; the test runs the queue as the reactor thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list = []
        self.calls = 0
        """How many calls have crossed to the reactor so far."""
        self.errors: list[BaseException] = []

    def callFromThread(self, f, *args, **kwargs) -> None:
        with self._cond:
            self._queue.append((f, args, kwargs))
            self.calls += 1
            self._cond.notify_all()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def wait_for_calls(self, count: int, timeout: float = WAIT) -> bool:
        """Whether C{count} calls have crossed within C{timeout} seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: self.calls >= count, timeout)

    def _call(self, f, args, kwargs, raising: bool) -> None:
        try:
            f(*args, **kwargs)
        except Exception as e:
            if raising:
                raise
            self.errors.append(e)  # a real reactor logs it and goes on

    def run_one(self, timeout: float = WAIT, raising: bool = True) -> None:
        """Wait for one call from the worker and run it."""
        with self._cond:
            assert self._cond.wait_for(lambda: self._queue, timeout), "nothing crossed"
            f, args, kwargs = self._queue.pop(0)
        self._call(f, args, kwargs, raising)

    def run_pending(self, raising: bool = True) -> int:
        """Run the calls queued so far (and any they queue); how many ran."""
        ran = 0
        while True:
            with self._cond:
                if not self._queue:
                    return ran
                f, args, kwargs = self._queue.pop(0)
            self._call(f, args, kwargs, raising)
            ran += 1


class SyncPool:
    """A pool whose C{callInThread} runs the work at once, in this thread."""

    def callInThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)


class ThreadPerCall:
    """A pool that runs each piece of work in a new real thread."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def callInThread(self, f, *args, **kwargs) -> None:
        thread = threading.Thread(
            target=f, args=args, kwargs=kwargs, name=f"worker-{len(self.threads)}", daemon=True
        )
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(WAIT)
            assert not thread.is_alive(), f"{thread.name} is still running"


class HoldingPool:
    """A pool that keeps the work until the test runs it (in the test's thread)."""

    def __init__(self) -> None:
        self.held: list = []

    def callInThread(self, f, *args, **kwargs) -> None:
        self.held.append((f, args, kwargs))

    def run_next(self) -> None:
        f, args, kwargs = self.held.pop(0)
        f(*args, **kwargs)


class _Step:
    def __init__(self, steps: list, f) -> None:
        self._steps, self.f = steps, f

    def cancel(self) -> None:
        self._steps.remove(self)


class ManualCooperator:
    """
    A cooperator for Twisted's pull-producer adapter that works one step
    (one block of a file) each time the test calls L{step}.
    """

    def __init__(self) -> None:
        self._steps: list[_Step] = []
        self.cooperator = Cooperator(
            scheduler=self._schedule, terminationPredicateFactory=lambda: lambda: True
        )

    def _schedule(self, f) -> _Step:
        step = _Step(self._steps, f)
        self._steps.append(step)
        return step

    @property
    def scheduled(self) -> bool:
        return bool(self._steps)

    def step(self) -> None:
        self._steps.pop(0).f()


@pytest.fixture
def cooperator(monkeypatch) -> ManualCooperator:
    """Drive Twisted's pull producers by hand (see L{ManualCooperator})."""
    manual = ManualCooperator()
    monkeypatch.setattr(_producer_helpers, "cooperate", manual.cooperator.cooperate)
    return manual


# -- the site and its connections --------------------------------------------------------


def make_site(resource) -> BacktracSite:
    """The site's real classes serving C{resource} alone, with roomy limits and logs off."""
    settings = site_settings(max_body=1024 * 1024, max_header_bytes=16 * 1024, max_headers=100,
                             max_queue=100)
    return BacktracSite(resource, settings, Clock())


@dataclass
class Response:
    status: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunks: list[bytes] | None = None
    """The chunks as framed on the wire, for a chunked response."""

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def code(self) -> int:
        return int(self.status.split()[1])


def dechunk(data: bytes) -> list[bytes]:
    """The chunks of a complete chunked body, the last (empty) one included."""
    chunks = []
    while True:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        chunks.append(data[:n])
        assert data[n : n + 2] == b"\r\n", f"bad chunk framing: {data!r}"
        data = data[n + 2 :]
        if n == 0:
            assert data == b"", f"data after the last chunk: {data!r}"
            return chunks


@dataclass
class Connection:
    """A client connection to the site, over a L{StringTransport}."""

    site: BacktracSite
    channel: object = field(init=False)
    transport: StringTransport = field(init=False)

    def __post_init__(self) -> None:
        self.channel = self.site.buildProtocol(PEER)
        self.transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes):
        """Send a request; return it (Twisted's request object)."""
        self.channel.dataReceived(data)
        return self.channel.requests[-1] if self.channel.requests else None

    def get(self, path: bytes = b"/", method: bytes = b"GET", version: bytes = b"HTTP/1.1",
            headers: bytes = b"Host: example.com\r\n", body: bytes = b""):
        return self.send(method + b" " + path + b" " + version + b"\r\n" + headers + b"\r\n" + body)

    def response(self, chunked: bool | None = None) -> Response:
        """The response written so far (a chunked body must be complete)."""
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = [tuple(p.strip() for p in line.split(b":", 1)) for line in lines]
        response = Response(status, headers, body)
        if b"chunked" in response.header(b"transfer-encoding"):
            response.chunks = dechunk(body)
            response.body = b"".join(response.chunks)
        return response

    def lose(self, stop_producer: bool = True) -> None:
        """
        The client goes away: what a real transport does (stop its producer,
        the channel) then tells the channel; with C{stop_producer} false,
        only the channel is told, so the response learns it from its request.
        """
        if stop_producer and self.transport.producer is not None:
            self.transport.producer.stopProducing()
        self.channel.connectionLost(Failure(ConnectionLost("the client went away")))


def serve(application, pool=None, reactor=None):
    """The container for C{application}, its reactor and its site."""
    reactor = reactor or FakeReactor()
    resource = WSGIApplicationResource(reactor, pool or SyncPool(), application)
    return resource, reactor, make_site(resource)


def recording_close(wrapper, closes: list):
    """C{wrapper}, noting in C{closes} the name of the thread that closes it."""
    real_close = wrapper.close
    wrapper.close = lambda: (closes.append(threading.current_thread().name), real_close())
    return wrapper


def open_fds() -> set[str]:
    """This process's open file descriptors."""
    return set(os.listdir("/proc/self/fd"))


def failures(events) -> list[tuple[LogLevel, str, type | None]]:
    return [
        (e["log_level"], formatEvent(e), e["log_failure"].type if "log_failure" in e else None)
        for e in events
    ]


class Closing:
    """
    An iterable response that records how it is iterated and closed, and
    in which thread; it may raise at a given chunk.
    """

    def __init__(self, chunks, raise_at: int | None = None, streaming=None) -> None:
        self.chunks = list(chunks)
        self.raise_at = raise_at
        self.closes: list[str] = []
        self.taken = 0
        if streaming is not None:
            self.streaming = streaming

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.raise_at:
                raise ValueError("broken response")
            self.taken += 1
            yield chunk
        if self.raise_at == len(self.chunks):
            raise ValueError("broken response")

    def close(self) -> None:
        self.closes.append(threading.current_thread().name)


def answering(response, status="200 OK", headers=(("Content-Type", "text/plain"),)):
    """An application answering C{response} (called with nothing) with C{status}."""

    def application(environ, start_response):
        start_response(status, list(headers))
        return response() if callable(response) else response

    return application


# -- the environ -----------------------------------------------------------------------


CGI_KEYS = {
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
    "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR",
    "REMOTE_PORT",
}


def environ_of(request: bytes) -> dict:
    """The environ the application gets for C{request}, C{wsgi.input} read as C{_body}."""
    seen = []

    def application(environ, start_response):
        environ = dict(environ)
        environ["_body"] = environ["wsgi.input"].read()
        seen.append(environ)
        start_response("204 No Content", [])
        return []

    _, reactor, site = serve(application)
    Connection(site).send(request)
    reactor.run_pending()
    [environ] = seen
    return environ


class TestEnviron:
    def test_cgi_variables(self):
        """
        Every CGI variable is there, a native string: the method, an empty
        C{SCRIPT_NAME} and the whole percent-decoded path in C{PATH_INFO},
        the query string raw, the body's type and length, the server's name
        (from Host) and port (the listening socket's), the protocol, and the
        client's address and port.
        """
        environ = environ_of(
            b"POST /a%20b/c%2Fd/?x=%2F&y=%C3%A9&z HTTP/1.1\r\n"
            b"Host: example.com:9000\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 10\r\n\r\nname=value"
        )
        assert {k: environ[k] for k in CGI_KEYS} == {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/a b/c/d/",
            "QUERY_STRING": "x=%2F&y=%C3%A9&z",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": "10",
            "SERVER_NAME": "example.com",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "192.0.2.7",
            "REMOTE_PORT": "51000",
        }

    def test_path_info_bytes_as_latin1(self):
        """
        A non-ASCII path reaches C{PATH_INFO} decoded from percent-encoding
        and as bytes-in-latin-1 (PEP 3333), so its UTF-8 can be recovered.
        """
        environ = environ_of(b"GET /caf%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert environ["PATH_INFO"] == "/caf\xc3\xa9"
        assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café"

    def test_no_query_no_body(self):
        """Without a query and a body, QUERY_STRING, CONTENT_TYPE and CONTENT_LENGTH are empty."""
        environ = environ_of(b"GET / HTTP/1.0\r\n\r\n")
        assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/", "")
        assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("", "")
        assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"
        assert environ["_body"] == b""

    def test_http_headers(self):
        """
        Request headers are C{HTTP_*} variables, upper-cased with dashes as
        underscores, repeated ones joined with commas; Content-Type and
        Content-Length appear only as their CGI variables.
        """
        environ = environ_of(
            b"POST / HTTP/1.1\r\nHost: example.com\r\nAccept: text/html\r\n"
            b"X-Multi: a\r\nX-Multi: b\r\nx-multi: c\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 2\r\nX-Long-Name-Here: v\r\n\r\nhi"
        )
        http = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        assert http == {
            "HTTP_HOST": "example.com",
            "HTTP_ACCEPT": "text/html",
            "HTTP_X_MULTI": "a,b,c",
            "HTTP_X_LONG_NAME_HERE": "v",
        }
        assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("text/plain", "2")

    def test_wsgi_variables(self):
        """
        The C{wsgi.*} variables: version 1.0, the scheme, an input that reads
        the body and is terminated, multithreaded, not multiprocess or
        run-once, the error stream and the file wrapper.
        """
        environ = environ_of(
            b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
        )
        assert environ["_body"] == b"hello world"
        assert {k: v for k, v in environ.items() if k.startswith("wsgi.")} == {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": environ["wsgi.input"],
            "wsgi.input_terminated": True,
            "wsgi.errors": wsgi._ERRORS,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
        }

    def test_chunked_body(self):
        """A chunked request body is read whole from C{wsgi.input}, which is terminated."""
        environ = environ_of(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        assert environ["_body"] == b"hello world"
        assert environ["wsgi.input_terminated"] is True
        assert environ["CONTENT_LENGTH"] == ""

    def test_errors_go_to_the_log(self):
        """
        What the application writes to C{wsgi.errors} (C{write},
        C{writelines}, then C{flush}) is logged as errors, one event per
        non-blank write, without the trailing newline.
        """

        def application(environ, start_response):
            errors = environ["wsgi.errors"]
            errors.write("first problem\n")
            errors.write("\n")
            errors.writelines(["second\n", "third"])
            errors.flush()
            start_response("200 OK", [])
            return [b"ok"]

        _, reactor, site = serve(application, ThreadPerCall())
        with capturedLogs() as events:
            Connection(site).get()
            reactor.run_one()
        assert [(e["log_level"], formatEvent(e)) for e in events] == [
            (LogLevel.error, "first problem"),
            (LogLevel.error, "second"),
            (LogLevel.error, "third"),
        ]

    def test_file_wrapper_iterates_blocks(self):
        """
        L{FileWrapper} reads its file in blocks of the size asked when
        iterated, and its C{close} is the file's.
        """
        data = io.BytesIO(b"abcdefghij")
        wrapper = FileWrapper(data, 4)
        assert list(wrapper) == [b"abcd", b"efgh", b"ij"]
        wrapper.close()
        assert data.closed


# -- complete responses ----------------------------------------------------------------


class TestCompleteResponses:
    @pytest.mark.parametrize("body", [[b"hello ", b"world"], (b"hello ", b"", b"world")])
    def test_list_one_hop(self, body):
        """
        A list or tuple crosses to the reactor in exactly one call, which
        sends the status, the headers, the body and finishes the request;
        nothing is written before it runs.
        """
        app = answering(body, headers=[("Content-Type", "text/plain"), ("Content-Length", "11"),
                                       ("X-Thing", "one"), ("X-Thing", "two")])
        _, reactor, site = serve(app)
        client = Connection(site)
        request = client.get()
        assert reactor.calls == 1
        assert client.transport.value() == b""
        assert reactor.run_pending() == 1
        response = client.response()
        assert response.status == b"HTTP/1.1 200 OK"
        assert response.header(b"content-type") == [b"text/plain"]
        assert response.header(b"content-length") == [b"11"]
        assert response.header(b"x-thing") == [b"one", b"two"]
        assert response.body == b"hello world"
        assert request.finished
        assert reactor.calls == 1

    def test_reason_phrase_kept(self):
        """The application's status line, reason phrase included, is sent as given."""
        _, reactor, site = serve(answering([b"gone"], status="410 Gone For Good"))
        client = Connection(site)
        client.get()
        reactor.run_pending()
        assert client.response().status == b"HTTP/1.1 410 Gone For Good"

    def test_server_and_date_are_twisteds(self):
        """The application's Server and Date headers give way to the server's own."""
        app = answering([b"x"], headers=[("Server", "evil/1.0"), ("Date", "yesterday"),
                                         ("Content-Length", "1")])
        _, reactor, site = serve(app)
        client = Connection(site)
        client.get()
        reactor.run_pending()
        response = client.response()
        assert response.header(b"server") == [b"backtracweb"]
        assert len(response.header(b"date")) == 1 and response.header(b"date") != [b"yesterday"]

    def test_django_like_complete_response(self):
        """
        An object that says C{streaming = False} (as Django's HttpResponse
        does) is complete already: it crosses in one call, whatever its
        number of chunks, and is closed once.
        """
        body = Closing([b"<html>", b"</html>"], streaming=False)
        _, reactor, site = serve(answering(body))
        client = Connection(site)
        request = client.get()
        assert reactor.calls == 1
        reactor.run_pending()
        assert client.response().body == b"<html></html>"
        assert request.finished
        assert body.closes == ["MainThread"]

    @pytest.mark.parametrize("method, status, version, length", [
        (b"GET", "200 OK", b"HTTP/1.1", [b"13"]),
        (b"POST", "404 Not Found", b"HTTP/1.0", [b"13"]),
        (b"HEAD", "200 OK", b"HTTP/1.1", []),  # the application may have left the body out
        (b"GET", "204 No Content", b"HTTP/1.1", []),
        (b"GET", "304 Not Modified", b"HTTP/1.1", []),
    ])
    def test_complete_body_gets_its_length(self, method, status, version, length):
        """
        A complete response without Content-Length gets the length of its
        body, so it is not chunked; not for HEAD, 204 and 304, which send
        no body.
        """
        _, reactor, site = serve(answering([b"hello, ", b"world!"], status=status))
        client = Connection(site)
        client.get(method=method, version=version)
        reactor.run_pending()
        response = client.response()
        assert response.header(b"content-length") == length
        assert response.header(b"transfer-encoding") == []
        if length:
            assert response.body == b"hello, world!"

    def test_head(self):
        """A HEAD request gets the status and headers, without the body."""
        app = answering([b"hello"], headers=[("Content-Length", "5")])
        _, reactor, site = serve(app)
        client = Connection(site)
        request = client.get(method=b"HEAD")
        reactor.run_pending()
        response = client.response()
        assert (response.code, response.header(b"content-length")) == (200, [b"5"])
        assert client.transport.value().endswith(b"\r\n\r\n")
        assert request.finished

    def test_head_streaming(self):
        """A HEAD request for a streamed response gets no body either."""
        _, reactor, site = serve(answering(lambda: iter([b"one", b"two"])))
        client = Connection(site)
        request = client.get(method=b"HEAD", version=b"HTTP/1.0")
        reactor.run_pending()
        assert client.response().code == 200
        assert client.transport.value().endswith(b"\r\n\r\n")
        assert request.finished

    def test_legacy_write(self):
        """
        The C{write} callable C{start_response} returns sends the headers and
        its data before the returned body, which follows; the request is
        finished once.
        """

        def application(environ, start_response):
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"hello ")
            write(b"big ")
            return [b"world"]

        _, reactor, site = serve(application)
        client = Connection(site)
        request = client.get(version=b"HTTP/1.0")
        assert reactor.calls == 3
        reactor.run_pending()
        assert client.response().body == b"hello big world"
        assert request.finished and client.transport.disconnecting

    def test_empty_body(self):
        """An empty list finishes the request with its headers in one call."""
        _, reactor, site = serve(answering([], status="204 No Content", headers=[]))
        client = Connection(site)
        request = client.get()
        assert reactor.calls == 1
        reactor.run_pending()
        assert client.response().code == 204
        assert request.finished

    def test_closed_once(self):
        """A complete response with C{close} is closed exactly once, in the worker."""
        body = Closing([b"a"], streaming=False)
        pool = ThreadPerCall()
        _, reactor, site = serve(answering(body), pool)
        Connection(site).get()
        pool.join()
        reactor.run_pending()
        assert body.closes == ["worker-0"]

    def test_close_error_logged(self):
        """
        A C{close} that raises is logged; the response, complete already,
        is still sent.
        """

        class Broken(list):
            def close(self):
                raise OSError("cannot close")

        _, reactor, site = serve(answering(Broken([b"fine"])))
        client = Connection(site)
        with capturedLogs() as events:
            request = client.get()
            reactor.run_pending()
        assert (client.response().body, request.finished) == (b"fine", True)
        assert failures(events) == [
            (LogLevel.critical, "WSGI application error while closing the response", OSError)
        ]


# -- streaming responses ---------------------------------------------------------------


class TestStreaming:
    def test_chunk_per_hop(self):
        """
        A generator crosses once per non-empty chunk and once to finish; the
        headers go with the first chunk; HTTP/1.1 without Content-Length is
        sent chunked, one wire chunk per application chunk.
        """
        _, reactor, site = serve(answering(lambda: iter([b"one", b"", b"two", b"three"])))
        client = Connection(site)
        request = client.get()
        assert reactor.calls == 4
        reactor.run_one()
        head = client.transport.value()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Transfer-Encoding: chunked\r\n" in head
        assert head.endswith(b"\r\n\r\n3\r\none\r\n")
        assert not request.finished
        assert request.producer is not None  # back-pressure from the transport
        reactor.run_pending()
        response = client.response()
        assert response.chunks == [b"one", b"two", b"three", b""]
        assert response.header(b"content-length") == []
        assert request.finished and request.producer is None
        assert not client.transport.disconnecting  # keep-alive

    def test_http10_stream(self):
        """Streamed to an HTTP/1.0 client, the body is sent as is and the connection closes."""
        _, reactor, site = serve(answering(lambda: iter([b"one", b"two"])))
        client = Connection(site)
        client.get(version=b"HTTP/1.0")
        reactor.run_pending()
        assert client.response().body == b"onetwo"
        assert client.transport.disconnecting

    def test_empty_generator(self):
        """A generator that yields nothing crosses once, with the headers, to finish."""
        _, reactor, site = serve(answering(lambda: iter(())))
        client = Connection(site)
        request = client.get()
        assert reactor.calls == 1
        reactor.run_pending()
        assert client.response().code == 200 and request.finished

    def test_start_response_in_generator(self):
        """An application may call C{start_response} from its generator, before the first chunk."""

        def application(environ, start_response):
            start_response("201 Created", [])
            yield b"made"

        _, reactor, site = serve(application)
        client = Connection(site)
        client.get()
        reactor.run_pending()
        assert (client.response().code, client.response().body) == (201, b"made")

    def test_back_pressure(self):
        """
        Once the transport pauses the response, the worker blocks before
        handing over its next chunk, and goes on when the transport resumes.
        """
        gate = threading.Event()
        produced = threading.Event()

        def chunks():
            yield b"first"
            gate.wait(WAIT)
            produced.set()
            yield b"second"
            yield b"third"

        pool = ThreadPerCall()
        _, reactor, site = serve(answering(chunks), pool)
        client = Connection(site)
        request = client.get()
        reactor.run_one()  # headers and the first chunk; the response is the producer
        client.transport.producer.pauseProducing()  # the transport's buffer is full
        gate.set()
        assert produced.wait(WAIT)
        assert not reactor.wait_for_calls(2, NEVER), "a chunk crossed while paused"
        client.transport.producer.resumeProducing()
        assert reactor.wait_for_calls(2)
        pool.join()
        reactor.run_pending()
        assert client.response().chunks == [b"first", b"second", b"third", b""]
        assert request.finished

    def test_bounded_chunks_in_flight(self):
        """
        At most four chunks wait for the reactor: the worker blocks on the
        fifth until the reactor has taken one.
        """
        fifth = threading.Event()

        def chunks():
            for i in range(8):
                if i == 4:
                    fifth.set()
                yield b"%d" % i

        pool = ThreadPerCall()
        _, reactor, site = serve(answering(chunks), pool)
        client = Connection(site)
        client.get()
        assert fifth.wait(WAIT)
        assert reactor.wait_for_calls(4)
        assert not reactor.wait_for_calls(5, NEVER), "a fifth chunk crossed"
        assert reactor.queued == 4
        reactor.run_one()
        assert reactor.wait_for_calls(5)
        while pool.threads[0].is_alive() or reactor.queued:
            reactor.run_one()
            assert reactor.queued <= 4
        pool.join()
        assert client.response().chunks == [b"%d" % i for i in range(8)] + [b""]

    def test_client_gone_stops_iteration(self):
        """
        When the client goes away, the worker stops taking chunks from the
        application and closes the response, once, in its own thread; no
        more chunks cross.
        """
        gate = threading.Event()
        taken = []

        class Body:
            def __init__(self) -> None:
                self.closes: list[str] = []

            def __iter__(self):
                taken.append(b"first")
                yield b"first"
                gate.wait(WAIT)
                taken.append(b"second")
                yield b"second"
                taken.append(b"third")
                yield b"third"

            def close(self):
                self.closes.append(threading.current_thread().name)

        body = Body()
        pool = ThreadPerCall()
        resource, reactor, site = serve(answering(body), pool)
        client = Connection(site)
        request = client.get()
        reactor.run_one()
        with capturedLogs():
            client.lose()
        gate.set()
        pool.join()
        assert b"third" not in taken
        assert body.closes == ["worker-0"]
        assert reactor.calls == 1
        assert resource.in_flight == 0
        assert not request.finished

    def paused_then_gone(self, stop_producer: bool = True):
        """
        A streamed response whose worker is blocked by back-pressure with
        its second chunk when the client goes away: (body, resource,
        reactor, client) once the worker is done.
        """
        gate = threading.Event()
        body = Closing([b"first", b"second", b"third", b"fourth"])

        def gated():
            chunks = iter(body)
            yield next(chunks)
            gate.wait(WAIT)
            yield from chunks

        class Response:
            def __iter__(self):
                return gated()

            def close(self):
                body.close()

        pool = ThreadPerCall()
        resource, reactor, site = serve(answering(Response()), pool)
        client = Connection(site)
        client.get()
        reactor.run_one()
        client.transport.producer.pauseProducing()
        gate.set()
        assert not reactor.wait_for_calls(2, NEVER), "a chunk crossed while paused"
        with capturedLogs():
            client.lose(stop_producer)
        pool.join()
        return body, resource, reactor, client

    @pytest.mark.parametrize("stop_producer", [True, False], ids=["producer-stopped",
                                                                  "request-notified"])
    def test_paused_worker_wakes_when_client_goes(self, stop_producer):
        """
        A worker blocked by back-pressure wakes up when the client goes
        away, whether the transport stops the producer or only the request
        learns of it: it stops iterating and closes the response once, in
        its own thread; nothing more is written.
        """
        body, resource, reactor, client = self.paused_then_gone(stop_producer)
        written = client.transport.value()
        reactor.run_pending()
        assert client.transport.value() == written
        assert body.closes == ["worker-0"]
        assert body.taken < 4
        assert resource.in_flight == 0

    def test_woken_worker_takes_no_more_chunks(self):
        """
        A worker woken because its client went away neither hands the chunk
        it held to the reactor nor asks the application for another one.
        """
        body, _, reactor, _ = self.paused_then_gone()
        assert (body.taken, reactor.calls) == (2, 1)

    def test_client_gone_before_first_chunk_sent(self):
        """
        A chunk that crosses after the client went away is dropped, and the
        worker's slot is given back: the rest is not sent either.
        """
        pool = ThreadPerCall()
        body = Closing([b"a", b"b"])
        _, reactor, site = serve(answering(body), pool)
        client = Connection(site)
        client.get()
        pool.join()
        with capturedLogs():
            client.lose()
        before = client.transport.value()
        reactor.run_pending()
        assert client.transport.value() == before == b""
        assert body.closes == ["worker-0"]


# -- errors ----------------------------------------------------------------------------


def raise_before_start(environ, start_response):
    raise ValueError("broken application")


def raise_after_start(environ, start_response):
    start_response("200 OK", [])
    raise ValueError("broken application")


def no_start_response(environ, start_response):
    return [b"body without headers"]


def start_twice(environ, start_response):
    start_response("200 OK", [])
    start_response("404 Not Found", [])
    return [b"x"]


def str_body(environ, start_response):
    start_response("200 OK", [])
    return ["text, not bytes"]


def str_chunk(environ, start_response):
    start_response("200 OK", [])
    yield "text, not bytes"


def raise_in_generator(environ, start_response):
    start_response("200 OK", [])
    raise ValueError("broken application")
    yield b"never"  # pragma: no cover


def with_status(status):
    def application(environ, start_response):
        start_response(status, [])
        return [b"x"]

    return application


def with_headers(headers):
    def application(environ, start_response):
        start_response("200 OK", headers)
        return [b"x"]

    return application


class TestErrors:
    @pytest.mark.parametrize(
        "application, error",
        [
            (raise_before_start, ValueError),
            (raise_after_start, ValueError),
            (no_start_response, RuntimeError),
            (start_twice, RuntimeError),
            (str_body, TypeError),
            (str_chunk, TypeError),
            (raise_in_generator, ValueError),
            (with_status(200), TypeError),
            (with_status(b"200 OK"), TypeError),
            (with_status("OK"), TypeError),
            (with_headers([("X-A", 1)]), TypeError),
            (with_headers([(b"X-A", "1")]), TypeError),
            (with_headers([["X-A", "1"]]), TypeError),
            (with_headers([("X-A", "1", "2")]), TypeError),
        ],
        ids=[
            "raise-before-start", "raise-after-start", "no-start-response", "start-twice",
            "str-body", "str-chunk", "raise-in-generator", "status-int", "status-bytes",
            "status-no-code", "header-value-int", "header-name-bytes", "header-list",
            "header-triple",
        ],
    )
    def test_server_error(self, application, error):
        """
        An application that fails before any header went out gets a 500
        with a short text body, and the error is logged with its traceback;
        the worker is done.
        """
        resource, reactor, site = serve(application)
        client = Connection(site)
        with capturedLogs() as events:
            request = client.get()
            reactor.run_pending()
        response = client.response()
        assert response.code == 500
        assert response.header(b"content-type") == [b"text/plain"]
        assert response.body == SERVER_ERROR
        assert response.header(b"content-length") == [b"%d" % len(SERVER_ERROR)]
        assert request.finished
        assert failures(events) == [(LogLevel.critical, "WSGI application error", error)]
        assert resource.in_flight == 0

    def test_error_closes_once(self):
        """A response whose iteration fails is still closed, once, and answered 500."""
        body = Closing([b"a", b"b"], raise_at=0)
        _, reactor, site = serve(answering(body))
        client = Connection(site)
        with capturedLogs():
            client.get()
            reactor.run_pending()
        assert client.response().code == 500
        assert body.closes == ["MainThread"]

    def test_error_after_headers(self):
        """
        An application that fails once its headers and a chunk went out
        has its connection closed (the response cannot be completed), the
        error logged, and its response closed once.
        """
        body = Closing([b"first", b"second"], raise_at=1)
        resource, reactor, site = serve(answering(body))
        client = Connection(site)
        with capturedLogs() as events:
            request = client.get()
            reactor.run_pending()
        assert client.transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
        assert client.transport.value().endswith(b"5\r\nfirst\r\n")
        assert client.transport.disconnecting
        assert not request.finished
        assert failures(events) == [(LogLevel.critical, "WSGI application error", ValueError)]
        assert body.closes == ["MainThread"]
        assert resource.in_flight == 0

    def test_exc_info_before_headers(self):
        """
        C{start_response} with C{exc_info} before any header went out
        replaces the status and headers: the application's own error page
        is sent.
        """

        def application(environ, start_response):
            start_response("200 OK", [("X-Planned", "yes")])
            try:
                raise ValueError("oops")
            except ValueError:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                               sys.exc_info())
            return [b"sorry"]

        _, reactor, site = serve(application)
        client = Connection(site)
        client.get()
        reactor.run_pending()
        response = client.response()
        assert (response.code, response.body) == (503, b"sorry")
        assert response.header(b"x-planned") == []

    def test_exc_info_after_headers_reraises(self):
        """
        C{start_response} with C{exc_info} once the headers went out raises
        that exception again; the connection is then closed and the error
        logged.
        """
        raised = []

        def application(environ, start_response):
            start_response("200 OK", [])
            yield b"first"
            try:
                raise KeyError("late")
            except KeyError as e:
                try:
                    start_response("500 Oops", [], sys.exc_info())
                except BaseException as again:
                    raised.append(again is e)
                    raise

        _, reactor, site = serve(application)
        client = Connection(site)
        with capturedLogs() as events:
            client.get()
            reactor.run_pending()
        assert raised == [True]
        assert client.transport.disconnecting
        assert failures(events) == [(LogLevel.critical, "WSGI application error", KeyError)]

    def test_write_str_fails(self):
        """The C{write} callable refuses a str; unhandled, that is a 500."""

        def application(environ, start_response):
            start_response("200 OK", [])("text")
            return []

        _, reactor, site = serve(application)
        client = Connection(site)
        with capturedLogs() as events:
            client.get()
            reactor.run_pending()
        assert client.response().code == 500
        assert failures(events) == [(LogLevel.critical, "WSGI application error", TypeError)]

    def test_error_after_client_gone(self):
        """An application failing after its client went away is logged; nothing is sent."""
        pool = HoldingPool()
        _, reactor, site = serve(raise_before_start, pool)
        client = Connection(site)
        client.get()
        with capturedLogs() as events:
            client.lose()
            pool.run_next()
            reactor.run_pending()
        assert client.transport.value() == b""
        assert ("WSGI application error", ValueError) in [(m, t) for _, m, t in failures(events)]

    @pytest.mark.parametrize(
        "application",
        [with_headers([("Content-Disposition", "attachment; filename=\u20ac.pdf")]),
         with_status("\u00b2\u00b2\u00b2 Superscript")],
        ids=["header-not-latin1", "status-superscript-digits"],
    )
    def test_unsendable_header_or_status(self, application):
        """
        A header value that is not latin-1 (PEP 3333 wants latin-1 native
        strings), or a status whose code is not ASCII digits, is the
        application's error: 500, logged, and the request finished.
        """
        _, reactor, site = serve(application)
        client = Connection(site)
        with capturedLogs():
            request = client.get()
            reactor.run_pending(raising=False)
        assert reactor.errors == []
        assert client.response().code == 500
        assert request.finished


# -- wsgi.file_wrapper -------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path) -> tuple[Path, bytes]:
    """A file of a little over three of Twisted's 64 KiB blocks, and its contents."""
    data = bytes(range(256)) * 800  # 204800 bytes
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


class TestFileWrapper:
    def test_small_file_sent_in_one_trip(self, tmp_path, cooperator):
        """
        A wrapped file of at most SMALL_FILE bytes is read by the worker and
        crosses to the reactor with the headers in a single call, without a
        producer; the application's close() runs in the worker.
        """
        data = bytes(range(256)) * 40  # 10 KiB
        path = tmp_path / "small.bin"
        path.write_bytes(data)
        closes = []

        def application(environ, start_response):
            start_response("200 OK", [("Content-Length", str(len(data)))])
            wrapper = environ["wsgi.file_wrapper"](open(path, "rb"))
            return recording_close(wrapper, closes)

        fds = open_fds()
        pool = ThreadPerCall()
        _, reactor, site = serve(application, pool)
        client = Connection(site)
        request = client.get()
        pool.join()
        assert closes == ["worker-0"]
        assert reactor.calls == 1
        reactor.run_one()
        assert request.finished and request.producer is None
        assert not cooperator.scheduled
        assert client.response().body == data
        assert open_fds() == fds

    def test_sent_by_the_reactor(self, data_file, cooperator):
        """
        A regular file the application wraps is sent from its current
        position by Twisted's file producer, block by block as the transport
        asks: the worker is done (and has closed the application's file,
        in its own thread) after one call to the reactor, before the reactor
        has sent the first block; the server's descriptor is closed at the end.
        """
        path, data = data_file
        opened = []
        closes = []

        def application(environ, start_response):
            f = open(path, "rb")
            f.seek(1000)
            opened.append(f)
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(len(data) - 1000))])
            wrapper = environ["wsgi.file_wrapper"](f, 4096)
            return recording_close(wrapper, closes)

        fds = open_fds()
        pool = ThreadPerCall()
        resource, reactor, site = serve(application, pool)
        client = Connection(site)
        request = client.get()
        pool.join()
        assert closes == ["worker-0"] and opened[0].closed
        assert resource.in_flight == 0
        assert reactor.calls == 1
        reactor.run_one()
        assert isinstance(request.producer, NoRangeStaticProducer)
        assert client.response().body == b""
        blocks = 0
        while cooperator.scheduled:
            cooperator.step()
            blocks += 1
            if blocks == 1:
                assert len(client.response().body) == min(BLOCK_SIZE, len(data) - 1000)
                assert not request.finished
        response = client.response()
        assert response.body == data[1000:]
        assert response.header(b"content-length") == [b"%d" % (len(data) - 1000)]
        assert blocks == -(-(len(data) - 1000) // BLOCK_SIZE) + 1  # the blocks and the end
        assert request.finished and reactor.calls == 1
        assert open_fds() == fds

    def test_head(self, data_file, cooperator):
        """A HEAD request for a wrapped file gets the headers only, and the file is closed."""
        path, data = data_file
        fds = open_fds()
        app = answering(lambda: FileWrapper(open(path, "rb")),
                        headers=[("Content-Length", str(len(data)))])
        _, reactor, site = serve(app)
        client = Connection(site)
        request = client.get(method=b"HEAD")
        reactor.run_pending()
        while cooperator.scheduled:
            cooperator.step()
        assert client.response().header(b"content-length") == [b"%d" % len(data)]
        assert client.transport.value().endswith(b"\r\n\r\n")
        assert request.finished
        assert open_fds() == fds

    def test_client_gone_while_sending(self, data_file, cooperator):
        """A client going away mid-file stops the sending and the server's descriptor is closed."""
        path, _ = data_file
        fds = open_fds()
        _, reactor, site = serve(answering(lambda: FileWrapper(open(path, "rb"))))
        client = Connection(site)
        request = client.get()
        reactor.run_pending()
        cooperator.step()
        with capturedLogs():
            client.lose()
        assert not cooperator.scheduled
        assert not request.finished
        assert open_fds() == fds

    def test_client_gone_before_sending(self, data_file, cooperator):
        """A file that reaches the reactor after its client went away is closed unsent."""
        path, _ = data_file
        fds = open_fds()
        _, reactor, site = serve(answering(lambda: FileWrapper(open(path, "rb"))))
        client = Connection(site)
        client.get()
        with capturedLogs():
            client.lose()
        reactor.run_pending()
        assert not cooperator.scheduled
        assert client.transport.value() == b""
        assert open_fds() == fds

    def test_not_a_file_iterated(self):
        """A wrapper around a file-like object without a descriptor is iterated, and closed."""
        content = io.BytesIO(b"0123456789")
        content.seek(2)
        _, reactor, site = serve(answering(lambda: FileWrapper(content, 3)))
        client = Connection(site)
        client.get()
        assert reactor.calls == 4  # "234", "567", "89", then the end
        reactor.run_pending()
        assert client.response().chunks == [b"234", b"567", b"89", b""]
        assert content.closed

    def test_pipe_iterated(self):
        """A wrapper around a pipe (not a regular file) is iterated like any response."""
        read_end, write_end = os.pipe()
        os.write(write_end, b"through a pipe")
        os.close(write_end)
        pipe = os.fdopen(read_end, "rb")
        _, reactor, site = serve(answering(lambda: FileWrapper(pipe, 8)))
        client = Connection(site)
        client.get()
        reactor.run_pending()
        assert client.response().body == b"through a pipe"
        assert pipe.closed

    def test_wrapper_without_start_response(self, data_file):
        """A wrapped file returned before C{start_response} is a 500, and the file is closed."""
        path, _ = data_file
        f = open(path, "rb")
        _, reactor, site = serve(lambda environ, start_response: FileWrapper(f))
        client = Connection(site)
        with capturedLogs() as events:
            client.get()
            reactor.run_pending()
        assert client.response().code == 500
        assert f.closed
        assert failures(events) == [(LogLevel.critical, "WSGI application error", RuntimeError)]

    def test_write_then_file(self, data_file, cooperator):
        """
        Data sent through the C{write} callable, then a wrapped file: the
        client gets both, in order (PEP 3333 allows mixing them); the file
        is then streamed by the worker like any iterable.
        """
        path, data = data_file

        def application(environ, start_response):
            start_response("200 OK", [])(b"prefix:")
            return environ["wsgi.file_wrapper"](open(path, "rb"))

        fds = open_fds()
        pool = ThreadPerCall()
        _, reactor, site = serve(application, pool)
        client = Connection(site)
        request = client.get(version=b"HTTP/1.0")
        worker = pool.threads[0]
        deadline = time.monotonic() + WAIT
        while worker.is_alive() and time.monotonic() < deadline:
            reactor.run_pending(raising=False)  # the worker's chunks, as they come
            worker.join(0.01)
        pool.join()
        reactor.run_pending(raising=False)
        while cooperator.scheduled:
            cooperator.step()
        assert reactor.errors == []
        assert client.response().body == b"prefix:" + data
        assert request.finished
        assert open_fds() == fds

    def test_read_write_file_partly_read(self, data_file, cooperator):
        """
        A file opened for reading and writing, partly read (so its buffer
        holds read-ahead), is sent from its logical position.
        """
        path, data = data_file

        def application(environ, start_response):
            f = open(path, "r+b")
            f.seek(9000)
            f.read(10)
            start_response("200 OK", [("Content-Length", str(len(data) - 9010))])
            return environ["wsgi.file_wrapper"](f)

        _, reactor, site = serve(application)
        client = Connection(site)
        client.get()
        reactor.run_pending()
        while cooperator.scheduled:
            cooperator.step()
        assert client.response().body[:64] == data[9010:9074]
        assert client.response().body == data[9010:]


# -- in flight ---------------------------------------------------------------------------


class TestInFlight:
    def test_counts_waiting_and_running(self):
        """
        C{in_flight} counts the requests handed to the pool, waiting or
        running, and drops as each worker is done, before the reactor has
        sent its response.
        """
        pool = HoldingPool()
        resource, reactor, site = serve(answering([b"ok"]), pool)
        assert resource.in_flight == 0
        clients = [Connection(site) for _ in range(3)]
        for client in clients:
            client.get()
        assert resource.in_flight == 3
        pool.run_next()
        assert resource.in_flight == 2
        assert reactor.queued == 1  # the response has not been sent yet
        pool.run_next()
        pool.run_next()
        assert resource.in_flight == 0
        reactor.run_pending()
        assert [c.response().body for c in clients] == [b"ok"] * 3

    def test_while_running(self):
        """A request whose application is running in a worker is in flight."""
        started, gate = threading.Event(), threading.Event()

        def application(environ, start_response):
            started.set()
            gate.wait(WAIT)
            start_response("200 OK", [])
            return [b"done"]

        pool = ThreadPerCall()
        resource, reactor, site = serve(application, pool)
        Connection(site).get()
        assert started.wait(WAIT)
        assert resource.in_flight == 1
        gate.set()
        pool.join()
        assert resource.in_flight == 0

    @pytest.mark.parametrize("application", [raise_before_start, str_body, raise_in_generator])
    def test_down_on_errors(self, application):
        """A request whose application fails is no longer in flight once the worker is done."""
        pool = HoldingPool()
        resource, reactor, site = serve(application, pool)
        Connection(site).get()
        assert resource.in_flight == 1
        with capturedLogs():
            pool.run_next()
        assert resource.in_flight == 0
        with capturedLogs():
            reactor.run_pending()

    def test_down_when_client_gone(self):
        """A request whose client went away is no longer in flight once the worker is done."""
        pool = HoldingPool()
        resource, reactor, site = serve(answering(lambda: iter([b"a", b"b"])), pool)
        client = Connection(site)
        client.get()
        with capturedLogs():
            client.lose()
        pool.run_next()
        assert resource.in_flight == 0


# -- Django ------------------------------------------------------------------------------


DJANGO_SCRIPT = """\
import json, os, sys, threading
sys.path.insert(0, sys.argv[1])
import test_wsgi as t
from twisted.internet import _producer_helpers

path = sys.argv[2]
cooperator = t.ManualCooperator()
_producer_helpers.cooperate = cooperator.cooperator.cooperate

import django
from django.conf import settings
settings.configure(
    DEBUG=False, SECRET_KEY="unit-test", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
    INSTALLED_APPS=[], MIDDLEWARE=[], DATABASES={},
)
django.setup()
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished
from django.http import FileResponse
from django.urls import path as route

opened, finished = [], []
request_finished.connect(
    lambda **kw: finished.append(threading.current_thread().name), weak=False
)

def download(request):
    f = open(path, "rb")
    opened.append(f)
    return FileResponse(f, as_attachment=True, filename="data.bin")

urlpatterns = [route("download", download)]

fds = t.open_fds()
pool = t.ThreadPerCall()
resource, reactor, site = t.serve(WSGIHandler(), pool)
client = t.Connection(site)
request = client.get(b"/download")
pool.join()
worker_done = resource.in_flight == 0 and opened[0].closed
calls = reactor.calls
reactor.run_pending()
blocks = 0
while cooperator.scheduled:
    cooperator.step()
    blocks += 1
response = client.response()
print(json.dumps({
    "status": response.code,
    "length": response.header(b"content-length")[0].decode(),
    "disposition": response.header(b"content-disposition")[0].decode(),
    "same": response.body == open(path, "rb").read(),
    "calls": calls,
    "blocks": blocks,
    "worker_done_first": worker_done,
    "finished_in": finished,
    "request_finished": request.finished,
    "fds_back": t.open_fds() == fds,
}))
"""


def test_django_file_response(data_file, tmp_path):
    """
    Django's FileResponse through its real WSGIHandler (in a fresh
    interpreter: Django is configured once per process) uses
    C{wsgi.file_wrapper}: the reactor sends the file block by block after
    one call from the worker, which has already closed Django's response
    (its file, and the C{request_finished} signal) in its own thread.
    """
    path, data = data_file
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", DJANGO_SCRIPT, str(REPO / "tests"), str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "status": 200,
        "length": str(len(data)),
        "disposition": 'attachment; filename="data.bin"',
        "same": True,
        "calls": 1,
        "blocks": -(-len(data) // BLOCK_SIZE) + 1,  # the blocks and the end
        "worker_done_first": True,
        "finished_in": ["worker-0"],
        "request_finished": True,
        "fds_back": True,
    }
