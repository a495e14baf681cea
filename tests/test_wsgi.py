"""
Unit tests for L{backtracweb.app.wsgi}: the WSGI container that runs the
application in the thread pool and hands its response to the reactor.

No reactor runs (see tests/helpers.py).  The site and the container share
a L{FakeReactor}: its C{callFromThread} queues the call, counts it, and
the test runs the queued calls in its own thread, which plays the reactor
thread; its clock is advanced by the test for the channel's deadlines.
The container's pool either runs the work at once in the test's thread
(L{SyncPool}: deterministic when nothing blocks), keeps it for the test to
run (L{HoldingPool}), or runs it in a real thread the test joins
(L{ThreadPerCall}: for back-pressure, a client going away, a body that
arrives while the application reads it, and which thread does what).
Threads are synchronised with events and conditions with timeouts, never
with sleeps; the few short timeouts watch for something that must not
happen.

Requests are the site's real L{Request}s, parsed by a real L{HTTPChannel}
from bytes and answered on a L{StringTransport}, routed by a real
L{SiteRoot}.  A StringTransport never says its buffer is full: a client
that reads slowly is played by pausing the channel, as a real transport
does (L{slow_reader}), and resuming it as the client takes what was sent.
A large file the application wraps is sent through the transport by
L{backtracweb.app.sendfile.FileSender} (sendfile needs a real socket: see
tests/test_sendfile.py).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import HOST, PEER, WAIT, Client, FakeReactor, Filling, make_site
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.logger import LogLevel, capturedLogs, formatEvent

from backtracweb.app import sendfile, wsgi
from backtracweb.app.proxy import TrustedProxies
from backtracweb.app.resource import SiteRoot
from backtracweb.app.sendfile import BLOCK_SIZE, FileSender
from backtracweb.app.wsgi import FileWrapper, WSGIContainer
from backtracweb.http.channel import CLIENT_GONE
from backtracweb.http.request import Request

REPO = Path(__file__).resolve().parents[1]
NEVER = 0.1
"""Seconds to watch for something that must not happen."""
SERVER_ERROR = b"Internal Server Error\n"
SEND_TIMEOUT = 30.0
"""The sites' C{[limits] send_timeout}."""


# -- fakes -----------------------------------------------------------------------------


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


# -- the site and its connections --------------------------------------------------------


def serve(application, pool=None, reactor=None, **settings):
    """
    The container for C{application}, its reactor and its site: the real
    L{SiteRoot} (without a pool, so no overload check) hands every request
    to the container; roomy limits, logs off; C{settings} replace any.
    """
    reactor = reactor or FakeReactor()
    container = WSGIContainer(reactor, pool or SyncPool(), application)
    root = SiteRoot(container)
    limits = dict(max_body=1024 * 1024, max_header_bytes=16 * 1024, max_headers=100,
                  max_queue=100, send_timeout=SEND_TIMEOUT)
    return container, reactor, make_site(root, reactor, **{**limits, **settings})


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


class Connection(Client):
    """
    A client connection to the site (L{Client}) that keeps the last
    request the channel read from it, and parses the response written.
    """

    request: Request | None = None
    """The last request read on this connection (the site's object)."""

    def send(self, data: bytes) -> Connection:
        super().send(data)
        if self.channel.queue:
            self.request = self.channel.queue[-1]
        return self

    def response(self) -> Response:
        """
        The response written so far, after any interim (1xx) response; a
        chunked body must be complete.
        """
        output = self.output
        while output.startswith(b"HTTP/1.1 1"):
            output = output.partition(b"\r\n\r\n")[2]
        head, _, body = output.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = [tuple(p.strip() for p in line.split(b":", 1)) for line in lines]
        response = Response(status, headers, body)
        if b"chunked" in response.header(b"transfer-encoding"):
            response.chunks = dechunk(body)
            response.body = b"".join(response.chunks)
        return response

    def lose(self, stop_producer: bool = True) -> None:
        """
        The client goes away: what Twisted's transport does (stop its
        producer, the channel), then tell the channel the connection is
        lost; with C{stop_producer} false, only the loss is reported.
        """
        if stop_producer and self.transport.producer is not None:
            self.transport.producer.stopProducing()
        self.lost(ConnectionLost)


def slow_reader(client: Client) -> None:
    """
    Make C{client} read slowly: after every write its transport's buffer is
    full (L{Filling}); the test plays the client taking what was sent with
    C{client.channel.resumeProducing()}.
    """
    Filling(client)


def blocks_sent(size: int) -> list[int]:
    """How much of a C{size}-byte file a slow client has after each block of L{BLOCK_SIZE}."""
    return list(range(BLOCK_SIZE, size, BLOCK_SIZE)) + [size]


def take_file(client: Connection, request: Request) -> list[int]:
    """
    Play a slow client taking a file response block by block until its
    sender is done: the body's length after each block (the first
    included), then take the rest.
    """
    sizes = [len(client.response().body)]
    while request.producer is not None:
        client.channel.resumeProducing()
        sizes.append(len(client.response().body))
    client.channel.resumeProducing()
    return sizes


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


class Gated(Closing):
    """A L{Closing} response whose iteration waits for L{gate} after the first chunk."""

    def __init__(self, chunks) -> None:
        super().__init__(chunks)
        self.gate = threading.Event()

    def __iter__(self):
        chunks = super().__iter__()
        yield next(chunks)
        self.gate.wait(WAIT)
        yield from chunks


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


def environ_of(request: bytes, **settings) -> dict:
    """The environ the application gets for C{request}, C{wsgi.input} read as C{_body}."""
    seen = []

    def application(environ, start_response):
        environ = dict(environ)
        environ["_body"] = environ["wsgi.input"].read()
        seen.append(environ)
        start_response("204 No Content", [])
        return []

    _, reactor, site = serve(application, **settings)
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
            "SERVER_PORT": str(HOST.port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": PEER.host,
            "REMOTE_PORT": str(PEER.port),
        }
        assert environ["_body"] == b"name=value"

    def test_path_info_bytes_as_latin1(self):
        """
        A non-ASCII path reaches C{PATH_INFO} decoded from percent-encoding
        and as bytes-in-latin-1 (PEP 3333), so its UTF-8 can be recovered.
        """
        environ = environ_of(b"GET /caf%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert environ["PATH_INFO"] == "/caf\xc3\xa9"
        assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café"

    def test_no_query_no_body(self):
        """
        Without a query and a body, QUERY_STRING, CONTENT_TYPE and
        CONTENT_LENGTH are empty; an HTTP/1.0 request without Host has no
        HTTP_HOST, and its SERVER_NAME is the address it came to.
        """
        environ = environ_of(b"GET / HTTP/1.0\r\n\r\n")
        assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/", "")
        assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("", "")
        assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"
        assert "HTTP_HOST" not in environ
        assert environ["SERVER_NAME"] == HOST.host
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

    def test_underscore_headers_dropped(self):
        """
        A header whose name has an underscore never reaches the
        application: in the environ C{X_Forwarded_For} would be the same
        variable as C{X-Forwarded-For}, which a proxy may vouch for, so a
        client could slip one past the proxy as the other.
        """
        environ = environ_of(
            b"GET / HTTP/1.1\r\nHost: example.com\r\nX_Forwarded_For: 203.0.113.66\r\n"
            b"X-Forwarded-For: 192.0.2.1\r\nX_Only_Underscores: u\r\nX-Custom: dash\r\n"
            b"X_Custom: underscore\r\n\r\n"
        )
        http = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        assert http == {
            "HTTP_HOST": "example.com",
            "HTTP_X_FORWARDED_FOR": "192.0.2.1",
            "HTTP_X_CUSTOM": "dash",
        }

    def test_host_of_an_absolute_target(self):
        """
        A request whose target is an absolute URI is for that URI's
        authority, whatever its Host header says (RFC 9112 3.2.2):
        C{HTTP_HOST} and C{SERVER_NAME} are the URI's, and the path and
        query are taken from it.
        """
        environ = environ_of(
            b"GET http://other.example:81/a%20b?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        assert environ["HTTP_HOST"] == "other.example:81"
        assert environ["SERVER_NAME"] == "other.example"
        assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/a b", "q=1")

    def test_behind_a_trusted_proxy(self):
        """
        Behind a trusted proxy, the environ is about the original request:
        the client's address (its port unknown), the scheme and the host the
        proxy forwarded, and the port that scheme implies; the forwarding
        headers themselves stay visible.
        """
        environ = environ_of(
            b"GET / HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-For: 203.0.113.9\r\n"
            b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: www.example.com\r\n\r\n",
            proxies=TrustedProxies([PEER.host]),
        )
        assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("203.0.113.9", "0")
        assert environ["wsgi.url_scheme"] == "https"
        assert environ["HTTP_HOST"] == "www.example.com"
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("www.example.com", "443")
        assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"

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
            "wsgi.multiprocess": False,  # one process: see the next test
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
        }

    def test_multiprocess_with_several_workers(self):
        """PEP 3333: C{wsgi.multiprocess} is true where other processes serve the same site."""
        seen = []

        def application(environ, start_response):
            seen.append(environ["wsgi.multiprocess"])
            start_response("204 No Content", [])
            return []

        for multiprocess in (True, False):
            reactor = FakeReactor()
            root = SiteRoot(WSGIContainer(reactor, SyncPool(), application, multiprocess))
            Connection(make_site(root, reactor)).send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reactor.run_pending()
        assert seen == [True, False]

    def test_the_requests_running_are_known_by_thread(self):
        """What C{[server] request_warn} looks at: each running request, and when it began."""
        during = []

        def application(environ, start_response):
            during.append(dict(container.running))
            start_response("204 No Content", [])
            return []

        container, reactor, site = serve(application)
        Connection(site).send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        reactor.run_pending()
        [running] = during
        [(thread, (began, request))] = running.items()
        assert thread == threading.get_ident() and request.path == b"/slow"
        assert began <= time.monotonic()
        assert container.running == {}

    def test_chunked_body(self):
        """
        A chunked request body is read whole from C{wsgi.input}, which is
        terminated; C{CONTENT_LENGTH} is its decoded length, since it was
        kept whole before the application ran (frameworks read no body
        without one).
        """
        environ = environ_of(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        assert environ["_body"] == b"hello world"
        assert environ["wsgi.input_terminated"] is True
        assert environ["CONTENT_LENGTH"] == "11"

    @pytest.mark.parametrize("framing, parts", [
        (b"Content-Length: 11", [b"hello", b" world"]),
        (b"Transfer-Encoding: chunked",
         [b"5\r\nhello\r\n", b"6\r\n world\r\n", b"0\r\n", b"\r\n"]),
    ], ids=["content-length", "chunked"])
    def test_body_whole_before_the_application_runs(self, framing, parts):
        """
        A request is handed to the application only once its body has
        arrived whole, so that a client uploading slowly holds no thread:
        nothing reaches the pool while any part is missing.
        """
        pool = HoldingPool()
        container, reactor, site = serve(answering([b"ok"]), pool)
        client = Connection(site)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
        for part in parts:
            assert (pool.held, container.in_flight) == ([], 0)
            client.send(part)
        assert container.in_flight == 1
        pool.run_next()
        reactor.run_pending()
        assert client.response().body == b"ok"

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


# -- 100 Continue ----------------------------------------------------------------------


class TestContinue:
    def test_continue_when_the_application_reads(self):
        """
        A request that expects C{100 Continue} is handed to the application
        before its body is sent; C{HTTP/1.1 100 Continue} is written (from
        the reactor thread) only when the application first reads
        C{wsgi.input}, and the body, arriving while the application waits
        for it, is read whole; the connection is kept alive.
        """
        started, seen = threading.Event(), []

        def application(environ, start_response):
            started.set()
            seen.append(environ["CONTENT_LENGTH"])
            body = environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"got " + body]

        pool = ThreadPerCall()
        _, reactor, site = serve(application, pool)
        client = Connection(site)
        client.send(b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        assert started.wait(WAIT)
        assert reactor.wait_for_calls(1)  # the application asked for the body
        assert client.output == b""  # written by the reactor thread, not the worker
        reactor.run_one()
        assert client.output == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello")
        client.send(b" world")
        pool.join()
        reactor.run_pending()
        assert client.output.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
        response = client.response()
        assert (response.code, response.body) == (200, b"got hello world")
        assert response.header(b"connection") == []
        assert seen == ["11"]
        assert client.output.count(b"100 Continue") == 1
        assert not client.closed

    def test_no_continue_when_the_application_does_not_read(self):
        """
        An application that answers without reading the body of a request
        that expects C{100 Continue} never has C{100 Continue} sent: the
        client is spared sending a body nobody wants.  The body may still
        be on its way, so the connection cannot carry another request:
        the response says C{Connection: close}, and the connection closes.
        """
        _, reactor, site = serve(answering([b"too big"], status="413 Content Too Large"))
        client = Connection(site)
        client.send(b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100000\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        assert reactor.crossed == 1  # the response alone
        reactor.run_pending()
        assert b"100 Continue" not in client.output
        response = client.response()
        assert (response.code, response.body) == (413, b"too big")
        assert response.header(b"connection") == [b"close"]
        assert client.closed


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
        request = client.get().request
        assert reactor.crossed == 1
        assert client.output == b""
        assert reactor.run_pending() == 1
        response = client.response()
        assert response.status == b"HTTP/1.1 200 OK"
        assert response.header(b"content-type") == [b"text/plain"]
        assert response.header(b"content-length") == [b"11"]
        assert response.header(b"x-thing") == [b"one", b"two"]
        assert response.body == b"hello world"
        assert request.finished
        assert reactor.crossed == 1

    def test_reason_phrase_kept(self):
        """The application's status line, reason phrase included, is sent as given."""
        _, reactor, site = serve(answering([b"gone"], status="410 Gone For Good"))
        client = Connection(site)
        client.get()
        reactor.run_pending()
        assert client.response().status == b"HTTP/1.1 410 Gone For Good"

    def test_server_and_date_are_the_servers(self):
        """
        The application's Server and Date headers give way to the server's
        own, which come first: the product without a version, and now.
        """
        app = answering([b"x"], headers=[("Server", "evil/1.0"), ("Date", "yesterday"),
                                         ("Content-Length", "1")])
        _, reactor, site = serve(app)
        client = Connection(site)
        client.get()
        reactor.run_pending()
        response = client.response()
        assert [name for name, _ in response.headers[:2]] == [b"Server", b"Date"]
        assert response.header(b"server") == [b"backtracweb"]
        assert len(response.header(b"date")) == 1 and response.header(b"date") != [b"yesterday"]

    @pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"])
    def test_status_line_says_http11(self, version):
        """
        The status line says C{HTTP/1.1} whatever the request's version (a
        server answers with the highest version it speaks, RFC 9110 2.5);
        the application still sees the request's in C{SERVER_PROTOCOL}.
        """
        protocols = []

        def application(environ, start_response):
            protocols.append(environ["SERVER_PROTOCOL"])
            start_response("200 OK", [])
            return [b"x"]

        _, reactor, site = serve(application)
        client = Connection(site)
        client.get(version=version)
        reactor.run_pending()
        assert client.response().status == b"HTTP/1.1 200 OK"
        assert protocols == [version.decode()]

    def test_django_like_complete_response(self):
        """
        An object that says C{streaming = False} (as Django's HttpResponse
        does) is complete already: it crosses in one call, whatever its
        number of chunks, and is closed once.
        """
        body = Closing([b"<html>", b"</html>"], streaming=False)
        _, reactor, site = serve(answering(body))
        client = Connection(site)
        request = client.get().request
        assert reactor.crossed == 1
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
        request = client.get(method=b"HEAD").request
        reactor.run_pending()
        response = client.response()
        assert (response.code, response.header(b"content-length")) == (200, [b"5"])
        assert client.output.endswith(b"\r\n\r\n")
        assert request.finished

    def test_head_streaming(self):
        """A HEAD request for a streamed response gets no body either."""
        _, reactor, site = serve(answering(lambda: iter([b"one", b"two"])))
        client = Connection(site)
        request = client.get(method=b"HEAD", version=b"HTTP/1.0").request
        reactor.run_pending()
        assert client.response().code == 200
        assert client.output.endswith(b"\r\n\r\n")
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
        request = client.get(version=b"HTTP/1.0").request
        assert reactor.crossed == 3
        reactor.run_pending()
        assert client.response().body == b"hello big world"
        assert request.finished and client.transport.disconnecting

    def test_empty_body(self):
        """An empty list finishes the request with its headers in one call."""
        _, reactor, site = serve(answering([], status="204 No Content", headers=[]))
        client = Connection(site)
        request = client.get().request
        assert reactor.crossed == 1
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
            request = client.get().request
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
        request = client.get().request
        assert reactor.crossed == 4
        reactor.run_one()
        head = client.output
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
        request = client.get().request
        assert reactor.crossed == 1
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
        Once the transport pauses the channel (its buffer is full), the
        worker blocks before handing over its next chunk, and goes on when
        the transport resumes it.
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
        request = client.get().request
        reactor.run_one()  # headers and the first chunk; the response is the producer
        client.channel.pauseProducing()  # the transport's buffer is full
        gate.set()
        assert produced.wait(WAIT)
        assert not reactor.wait_for_calls(2, NEVER), "a chunk crossed while paused"
        client.channel.resumeProducing()
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
        request = client.get().request
        assert fifth.wait(WAIT)
        assert reactor.wait_for_calls(4)
        assert not reactor.wait_for_calls(5, NEVER), "a fifth chunk crossed"
        assert reactor.queued == 4
        reactor.run_one()
        assert reactor.wait_for_calls(5)
        while not request.finished:
            reactor.run_one()
            assert reactor.queued <= 4
        pool.join()
        assert client.response().chunks == [b"%d" % i for i in range(8)] + [b""]

    def test_client_gone_before_a_thread_ran_it(self):
        """
        A request whose client went away while it waited for a thread is
        dropped when a thread takes it: the application is not called
        (its work would be for nobody), nothing crosses to the reactor, the
        request no longer counts as in flight, and it is logged as cut
        short.
        """
        called = []

        def application(environ, start_response):
            called.append(environ["PATH_INFO"])
            start_response("200 OK", [])
            return [b"for nobody"]

        pool = HoldingPool()
        container, reactor, site = serve(application, pool)
        client = Connection(site)
        request = client.get(b"/expensive").request
        assert container.in_flight == 1
        client.lose()
        pool.run_next()
        assert called == []
        assert (reactor.crossed, reactor.queued) == (0, 0)
        assert client.output == b""
        assert container.in_flight == 0
        assert request.code == CLIENT_GONE
        assert (site.stats.requests, site.stats.by_class["4xx"]) == (1, 1)

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
        container, reactor, site = serve(answering(body), pool)
        client = Connection(site)
        request = client.get().request
        reactor.run_one()
        client.lose()
        gate.set()
        pool.join()
        assert b"third" not in taken
        assert body.closes == ["worker-0"]
        assert reactor.crossed == 1
        assert container.in_flight == 0
        assert not request.finished

    def paused_then_gone(self, stop_producer: bool = True):
        """
        A streamed response whose worker is blocked by back-pressure with
        its second chunk when the client goes away: (body, container,
        reactor, client) once the worker is done.
        """
        body = Gated([b"first", b"second", b"third", b"fourth"])
        pool = ThreadPerCall()
        container, reactor, site = serve(answering(body), pool)
        client = Connection(site)
        client.get()
        reactor.run_one()
        client.channel.pauseProducing()
        body.gate.set()
        assert not reactor.wait_for_calls(2, NEVER), "a chunk crossed while paused"
        client.lose(stop_producer)
        pool.join()
        return body, container, reactor, client

    @pytest.mark.parametrize("stop_producer", [True, False], ids=["producer-stopped",
                                                                  "loss-only"])
    def test_paused_worker_wakes_when_client_goes(self, stop_producer):
        """
        A worker blocked by back-pressure wakes up when the client goes
        away, whether the transport stops its producer (the channel) before
        reporting the loss, as Twisted's does, or only reports it: it stops
        iterating and closes the response once, in its own thread; nothing
        more is written.
        """
        body, container, reactor, client = self.paused_then_gone(stop_producer)
        written = client.output
        reactor.run_pending()
        assert client.output == written
        assert body.closes == ["worker-0"]
        assert body.taken < 4
        assert container.in_flight == 0

    def test_woken_worker_takes_no_more_chunks(self):
        """
        A worker woken because its client went away neither hands the chunk
        it held to the reactor nor asks the application for another one.
        """
        body, _, reactor, _ = self.paused_then_gone()
        assert (body.taken, reactor.crossed) == (2, 1)

    def test_client_not_reading_cut_off(self):
        """
        A client that takes nothing of a streamed response for
        C{[limits] send_timeout} has its connection aborted (its unsent
        bytes dropped); when the reactor reports the connection gone, the
        worker blocked by back-pressure wakes, stops iterating and closes
        the response in its own thread, freeing the thread; the request is
        logged as cut short.
        """
        body = Gated([b"first", b"second", b"third", b"fourth"])
        pool = ThreadPerCall()
        container, reactor, site = serve(answering(body), pool)
        client = Connection(site)
        request = client.get().request
        reactor.run_one()
        client.channel.pauseProducing()  # the client stops reading
        body.gate.set()
        assert not reactor.wait_for_calls(2, NEVER), "a chunk crossed while paused"
        with capturedLogs() as events:
            reactor.advance(SEND_TIMEOUT - 0.1)
            assert not client.closed
            reactor.advance(0.1)
        assert client.transport.disconnected  # aborted, not closed once sent
        assert [formatEvent(e) for e in events] == [
            f"closed the connection from {PEER.host}: it took nothing of the response to GET / "
            f"for {SEND_TIMEOUT:g} s ([limits] send_timeout)"]
        client.lost(ConnectionAborted)
        pool.join()
        assert body.closes == ["worker-0"]
        assert (body.taken, reactor.crossed) == (2, 1)
        assert container.in_flight == 0
        assert request.code == CLIENT_GONE and not request.finished

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
        client.lose()
        before = client.output
        reactor.run_pending()
        assert client.output == before == b""
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
        container, reactor, site = serve(application)
        client = Connection(site)
        with capturedLogs() as events:
            request = client.get().request
            reactor.run_pending()
        response = client.response()
        assert response.code == 500
        assert response.header(b"content-type") == [b"text/plain"]
        assert response.body == SERVER_ERROR
        assert response.header(b"content-length") == [b"%d" % len(SERVER_ERROR)]
        assert request.finished
        assert failures(events) == [(LogLevel.critical, "WSGI application error", error)]
        assert container.in_flight == 0

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
        has its connection closed once what was sent is delivered (the
        response cannot be completed, and the client must not take it for
        complete), the error logged, and its response closed once; when the
        connection goes, the request is logged as cut short (499) with the
        bytes its client got.
        """
        body = Closing([b"first", b"second"], raise_at=1)
        container, reactor, site = serve(answering(body))
        client = Connection(site)
        with capturedLogs() as events:
            request = client.get().request
            reactor.run_pending()
        assert client.output.startswith(b"HTTP/1.1 200 OK\r\n")
        assert client.output.endswith(b"5\r\nfirst\r\n")
        assert client.transport.disconnecting and not client.transport.disconnected
        assert not request.finished and not request.persistent
        assert failures(events) == [(LogLevel.critical, "WSGI application error", ValueError)]
        assert body.closes == ["MainThread"]
        assert container.in_flight == 0
        assert site.stats.requests == 0  # not over until the connection is
        client.lost()
        assert (request.code, request.sent) == (CLIENT_GONE, len(b"first"))
        assert (site.stats.requests, site.stats.by_class["4xx"]) == (1, 1)
        assert site.stats.bytes_sent == len(b"first")

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
        """
        An application failing after its client went away (while it ran)
        is logged; nothing is sent.
        """
        started, gate = threading.Event(), threading.Event()

        def application(environ, start_response):
            started.set()
            gate.wait(WAIT)
            raise ValueError("broken application")

        pool = ThreadPerCall()
        container, reactor, site = serve(application, pool)
        client = Connection(site)
        client.get()
        assert started.wait(WAIT)
        with capturedLogs() as events:
            client.lose()
            gate.set()
            pool.join()
            reactor.run_pending()
        assert client.output == b""
        assert failures(events) == [(LogLevel.critical, "WSGI application error", ValueError)]
        assert container.in_flight == 0

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
            request = client.get().request
            reactor.run_pending(raising=False)
        assert reactor.errors == []
        assert client.response().code == 500
        assert request.finished


# -- wsgi.file_wrapper -------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path) -> tuple[Path, bytes]:
    """A file of a little over three blocks of L{sendfile.BLOCK_SIZE}, and its contents."""
    data = bytes(range(256)) * (3 * BLOCK_SIZE // 256 + 6)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


class TestFileWrapper:
    def test_small_file_sent_in_one_trip(self, tmp_path):
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
        request = client.get().request
        pool.join()
        assert closes == ["worker-0"]
        assert reactor.crossed == 1
        reactor.run_one()
        assert request.finished and request.producer is None
        assert client.response().body == data
        assert open_fds() == fds

    def test_sent_by_the_reactor(self, data_file):
        """
        A regular file the application wraps is sent from its current
        position by the reactor, a block each time the client has taken the
        last: the worker is done (and has closed the application's file, in
        its own thread) after one call to the reactor, before the reactor
        has sent the first block; the server's descriptor is closed at the
        end, and the connection kept alive.
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
        container, reactor, site = serve(application, pool)
        client = Connection(site)
        request = client.get().request
        pool.join()
        assert closes == ["worker-0"] and opened[0].closed
        assert container.in_flight == 0
        assert reactor.crossed == 1
        assert client.output == b""
        slow_reader(client)
        reactor.run_one()
        assert isinstance(request.producer, FileSender)
        assert not request.finished
        assert take_file(client, request) == blocks_sent(len(data) - 1000)
        response = client.response()
        assert response.body == data[1000:]
        assert response.header(b"content-length") == [b"%d" % (len(data) - 1000)]
        assert request.finished and reactor.crossed == 1
        assert site.stats.requests == 1 and not client.closed
        assert open_fds() == fds

    @pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
    def test_sendfile_where_the_connection_allows(self, data_file, monkeypatch, declared):
        """
        On a connection that allows it (a plain socket), a wrapped file goes
        out with sendfile (L{sendfile.SendfileProducer}, tested on real
        sockets in tests/test_sendfile.py), from its position: with the
        Content-Length the application declared, or, when it declared none,
        the length of the rest of the file, which sendfile needs.
        """
        path, data = data_file
        started = []

        class Recording:
            """Stands in for the sendfile producer, which a StringTransport cannot drive."""

            def __init__(self, request, file, offset, count) -> None:
                self.request, self.file, self.offset, self.count = request, file, offset, count

            def start(self) -> None:
                started.append((self.offset, self.count))
                with self.file:
                    self.request.respond(os.pread(self.file.fileno(), self.count, self.offset))

        monkeypatch.setattr(sendfile, "is_plain_socket", lambda transport: True)
        monkeypatch.setattr(sendfile, "SendfileProducer", Recording)
        headers = [("Content-Length", str(len(data) - 1000))] if declared else []

        def application(environ, start_response):
            f = open(path, "rb")
            f.seek(1000)
            start_response("200 OK", headers)
            return environ["wsgi.file_wrapper"](f)

        fds = open_fds()
        _, reactor, site = serve(application)
        client = Connection(site)
        client.get()
        reactor.run_pending()
        assert started == [(1000, len(data) - 1000)]
        response = client.response()
        assert response.header(b"content-length") == [b"%d" % (len(data) - 1000)]
        assert response.body == data[1000:]
        assert open_fds() == fds

    def test_length_of_the_rest_of_the_file(self, data_file):
        """
        A wrapped file the application declared no Content-Length for is
        sent with the length of the rest of the file, not chunked: the
        client knows how much is coming, and the connection stays open.
        """
        path, data = data_file

        def application(environ, start_response):
            f = open(path, "rb")
            f.seek(1000)
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return environ["wsgi.file_wrapper"](f)

        _, reactor, site = serve(application)
        client = Connection(site)
        request = client.get().request
        reactor.run_pending()
        response = client.response()
        assert response.header(b"content-length") == [b"%d" % (len(data) - 1000)]
        assert response.header(b"transfer-encoding") == []
        assert response.body == data[1000:]
        assert request.finished and not client.closed

    def test_content_length_shorter_than_the_file(self, data_file):
        """
        An application that declares fewer bytes than its file holds gets
        exactly those sent (PEP 3333: never more than Content-Length), and
        the connection kept alive.
        """
        path, data = data_file
        fds = open_fds()
        app = answering(lambda: FileWrapper(open(path, "rb")),
                        headers=[("Content-Length", "100000")])
        _, reactor, site = serve(app)
        client = Connection(site)
        request = client.get().request
        reactor.run_pending()
        assert client.response().body == data[:100000]
        assert request.finished and not client.closed
        assert open_fds() == fds

    def test_file_shorter_than_its_content_length(self, data_file):
        """
        An application that declares more bytes than its file holds: the
        file is sent, then the connection closed (the client must not wait
        for the rest), and the mismatch logged; the request, cut short, is
        logged as such once the connection is gone.
        """
        path, data = data_file
        fds = open_fds()
        app = answering(lambda: FileWrapper(open(path, "rb")),
                        headers=[("Content-Length", str(len(data) + 10))])
        _, reactor, site = serve(app)
        client = Connection(site)
        request = client.get().request
        with capturedLogs() as events:
            reactor.run_pending()
        response = client.response()
        assert response.header(b"content-length") == [b"%d" % (len(data) + 10)]
        assert response.body == data
        assert client.closed and not request.finished
        assert [formatEvent(e) for e in events] == [
            "/: the file ended 10 bytes short; closing the connection"]
        assert open_fds() == fds
        client.lost()
        assert (request.code, request.sent) == (CLIENT_GONE, len(data))

    @pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
    def test_head(self, data_file, declared):
        """
        A HEAD request for a wrapped file gets the headers only, with the
        length a GET would get (the rest of the file if the application
        said none), and the file is closed.
        """
        path, data = data_file
        fds = open_fds()
        app = answering(lambda: FileWrapper(open(path, "rb")),
                        headers=[("Content-Length", str(len(data)))] if declared else [])
        _, reactor, site = serve(app)
        client = Connection(site)
        request = client.get(method=b"HEAD").request
        reactor.run_pending()
        assert client.response().header(b"content-length") == [b"%d" % len(data)]
        assert client.output.endswith(b"\r\n\r\n")
        assert request.finished and request.producer is None
        assert open_fds() == fds

    def test_client_gone_while_sending(self, data_file):
        """A client going away mid-file stops the sending and the server's descriptor is closed."""
        path, data = data_file
        fds = open_fds()
        _, reactor, site = serve(answering(lambda: FileWrapper(open(path, "rb"))))
        client = Connection(site)
        request = client.get().request
        slow_reader(client)
        reactor.run_pending()
        client.channel.resumeProducing()
        sent = len(client.response().body)
        assert sent == 2 * BLOCK_SIZE
        client.lose()
        assert request.producer is None
        assert not request.finished
        assert len(client.response().body) == sent
        assert open_fds() == fds

    def test_client_gone_before_sending(self, data_file):
        """A file that reaches the reactor after its client went away is closed unsent."""
        path, _ = data_file
        fds = open_fds()
        _, reactor, site = serve(answering(lambda: FileWrapper(open(path, "rb"))))
        client = Connection(site)
        request = client.get().request
        client.lose()
        reactor.run_pending()
        assert request.producer is None
        assert client.output == b""
        assert open_fds() == fds

    def test_not_a_file_iterated(self):
        """A wrapper around a file-like object without a descriptor is iterated, and closed."""
        content = io.BytesIO(b"0123456789")
        content.seek(2)
        _, reactor, site = serve(answering(lambda: FileWrapper(content, 3)))
        client = Connection(site)
        client.get()
        assert reactor.crossed == 4  # "234", "567", "89", then the end
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

    def test_write_then_file(self, data_file):
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
        request = client.get(version=b"HTTP/1.0").request
        while not request.finished:
            reactor.run_one(raising=False)  # the worker's chunks, as they come
        pool.join()
        assert reactor.errors == []
        assert client.response().body == b"prefix:" + data
        assert request.finished and request.producer is None
        assert open_fds() == fds

    def test_read_write_file_partly_read(self, data_file):
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
        container, reactor, site = serve(answering([b"ok"]), pool)
        assert container.in_flight == 0
        clients = [Connection(site) for _ in range(3)]
        for client in clients:
            client.get()
        assert container.in_flight == 3
        pool.run_next()
        assert container.in_flight == 2
        assert reactor.queued == 1  # the response has not been sent yet
        pool.run_next()
        pool.run_next()
        assert container.in_flight == 0
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
        container, reactor, site = serve(application, pool)
        Connection(site).get()
        assert started.wait(WAIT)
        assert container.in_flight == 1
        gate.set()
        pool.join()
        assert container.in_flight == 0

    @pytest.mark.parametrize("application", [raise_before_start, str_body, raise_in_generator])
    def test_down_on_errors(self, application):
        """A request whose application fails is no longer in flight once the worker is done."""
        pool = HoldingPool()
        container, reactor, site = serve(application, pool)
        Connection(site).get()
        assert container.in_flight == 1
        with capturedLogs():
            pool.run_next()
        assert container.in_flight == 0
        with capturedLogs():
            reactor.run_pending()

    def test_down_when_client_gone(self):
        """A request whose client went away is no longer in flight once the worker is done."""
        pool = HoldingPool()
        container, reactor, site = serve(answering(lambda: iter([b"a", b"b"])), pool)
        client = Connection(site)
        client.get()
        client.lose()
        assert container.in_flight == 1  # until a thread has taken it
        pool.run_next()
        assert container.in_flight == 0


# -- Django ------------------------------------------------------------------------------


DJANGO_SCRIPT = """\
import json, os, sys, threading
sys.path.insert(0, sys.argv[1])
import test_wsgi as t

path = sys.argv[2]

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
container, reactor, site = t.serve(WSGIHandler(), pool)
client = t.Connection(site)
request = client.get(b"/download").request
pool.join()
worker_done = container.in_flight == 0 and opened[0].closed
crossed = reactor.crossed
t.slow_reader(client)
reactor.run_pending()
sender = type(request.producer).__name__
sizes = t.take_file(client, request)
response = client.response()
print(json.dumps({
    "status": response.code,
    "length": response.header(b"content-length")[0].decode(),
    "disposition": response.header(b"content-disposition")[0].decode(),
    "same": response.body == open(path, "rb").read(),
    "crossed": crossed,
    "sender": sender,
    "sizes": sizes,
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
    C{wsgi.file_wrapper}: the reactor sends the file block by block, as
    the client takes them, after one call from the worker, which has
    already closed Django's response (its file, and the
    C{request_finished} signal) in its own thread.
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
        "crossed": 1,
        "sender": "FileSender",
        "sizes": blocks_sent(len(data)),
        "worker_done_first": True,
        "finished_in": ["worker-0"],
        "request_finished": True,
        "fds_back": True,
    }
