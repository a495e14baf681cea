"""
Building blocks the unit tests share.  (Not a conftest: the end-to-end
tests have a conftest of their own, and both would be imported as
"conftest".)

No reactor runs in a unit test: a site's connections are real
L{HTTPChannel}s over L{StringTransport}s, fed bytes by the test, and the
site's reactor is a L{FakeReactor}: a L{Clock} the test advances, whose
C{callFromThread} queues the call for the test to run, as the reactor
thread would.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from backtracweb.app.accesslog import AccessLog
from backtracweb.app.proxy import Addresses, TrustedProxies
from backtracweb.app.website import BacktracSite, SiteSettings
from backtracweb.config.settings import Values, section_defaults
from backtracweb.http.channel import HTTPChannel
from backtracweb.http.request import Request

PEER = IPv4Address("TCP", "198.51.100.4", 40000)
"""Where test clients connect from."""
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
"""Where test clients connect to."""
WAIT = 10.0
"""Seconds to wait for something that must happen before failing."""


TEST_LIMITS = dict(max_body=1024, max_header_bytes=8192, max_headers=50, max_queue=10)
"""Smaller than the defaults, so that tests go past them cheaply."""


def site_settings(**overrides) -> SiteSettings:
    """
    Site settings for tests: no static routes, access log and status page
    off, no trusted proxy, the declared defaults but for L{TEST_LIMITS};
    C{overrides} replace any of them (see L{changed}).
    """
    settings = SiteSettings(
        routes=(),
        access_log=AccessLog("off").open(),
        proxies=TrustedProxies(()),
        limits=Values(**{**section_defaults("limits"), **TEST_LIMITS}),
        server=Values(**section_defaults("server")),
        status_path=None,
        status_allow=Addresses(()),
        config_file="/etc/backtrac.ini",
        loaded_at=0.0,
    )
    return changed(settings, **overrides)


def changed(settings: SiteSettings, **overrides) -> SiteSettings:
    """C{settings} with C{overrides}, whose keys may be those of C{[limits]} and C{[server]} too."""
    limits, server = vars(settings.limits).copy(), vars(settings.server).copy()
    values = {}
    for key, value in overrides.items():
        (limits if key in limits else server if key in server else values)[key] = value
    return replace(settings, limits=Values(**limits), server=Values(**server), **values)


class FakeReactor(Clock):
    """
    A L{Clock} the test advances, whose C{callFromThread} queues the call
    and counts it; the test runs the queue, playing the reactor thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()
        self._queue: list = []
        self.crossed = 0
        """How many calls have crossed from other threads so far (C{calls} is Clock's timers)."""
        self.errors: list[BaseException] = []

    def callFromThread(self, f, *args, **kwargs) -> None:
        with self._cond:
            self._queue.append((f, args, kwargs))
            self.crossed += 1
            self._cond.notify_all()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def wait_for_calls(self, count: int, timeout: float = WAIT) -> bool:
        """Whether C{count} calls have crossed within C{timeout} seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: self.crossed >= count, timeout)

    def _call(self, f, args, kwargs, raising: bool) -> None:
        try:
            f(*args, **kwargs)
        except Exception as e:
            if raising:
                raise
            self.errors.append(e)  # a real reactor logs it and goes on

    def run_one(self, timeout: float = WAIT, raising: bool = True) -> None:
        """Wait for one call from another thread and run it."""
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


class Recorder:
    """
    A site root that keeps every request it is given and answers it
    C{ok:TARGET}, except those whose path begins with C{/slow}: those wait
    in L{pending} for the test to answer.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.pending: list[Request] = []

    @property
    def targets(self) -> list[bytes]:
        return [request.target for request in self.requests]

    def handle(self, request: Request) -> None:
        self.requests.append(request)
        if request.path.startswith(b"/slow"):
            self.pending.append(request)
            return
        request.response_headers = [(b"Content-Type", b"text/plain")]
        request.respond(b"ok:" + request.target)


def make_site(root=None, reactor=None, async_bodies: bool = False, **settings) -> BacktracSite:
    """A site serving C{root} (a fresh L{Recorder}), its settings L{site_settings}(**settings)."""
    return BacktracSite(root if root is not None else Recorder(), site_settings(**settings),
                        reactor if reactor is not None else FakeReactor(), async_bodies)


class Client:
    """One client connection to C{site}, over a L{StringTransport}."""

    def __init__(self, site: BacktracSite, peer=PEER, host=HOST) -> None:
        self.site = site
        self.channel: HTTPChannel = site.buildProtocol(peer)
        self.transport = StringTransport(hostAddress=host, peerAddress=peer)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> Client:
        self.channel.dataReceived(data)
        return self

    def get(self, target: bytes = b"/", *headers: bytes, method: bytes = b"GET",
            version: bytes = b"HTTP/1.1", body: bytes = b"") -> Client:
        """Send one request, with C{Host: example.com} and the given header lines."""
        return self.send(method + b" " + target + b" " + version + b"\r\nHost: example.com\r\n"
                         + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body)

    @property
    def output(self) -> bytes:
        return self.transport.value()

    @property
    def closed(self) -> bool:
        """Whether the server closed (or aborted) the connection."""
        return self.transport.disconnecting or self.transport.disconnected

    def responses(self, methods=()) -> list[Response]:
        """The responses written so far, interim ones included (see L{parse_responses})."""
        return parse_responses(self.output, methods, interim=True)

    def statuses(self) -> list[int]:
        """The status codes of the responses written so far, interim ones included."""
        return [response.status for response in self.responses()]

    def lost(self, reason=ConnectionDone) -> None:
        """The connection is gone, as the reactor reports it after a close or a reset."""
        self.channel.connectionLost(Failure(reason()))


# -- reading what a site wrote --------------------------------------------------------


class Response:
    """One response as a client reads it: the status, the header fields in order, the body."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers!r} {self.body[:80]!r}>"

    def values(self, name: bytes) -> list[bytes]:
        """Every value of header C{name} (any case), in order."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: bytes) -> bytes | None:
        """The one value of header C{name}, or None; a repeated header fails the test."""
        values = self.values(name)
        assert len(values) <= 1, f"{name!r} repeated: {values!r}"
        return values[0] if values else None


def parse_responses(data: bytes, methods=(), interim: bool = False) -> list[Response]:
    """
    The complete responses in C{data}, in order, framed as a client frames
    them: no body for 1xx, 204, 304 or an answer to HEAD (C{methods[i]} is
    the method of the i-th request; GET when not given), else by
    Content-Length, the chunked coding, or the end of C{data}.  An
    incomplete response fails the test.  Interim (1xx) responses are left
    out unless C{interim}.
    """
    responses: list[Response] = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"an incomplete head: {head[:200]!r}"
        status_line, *lines = head.split(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 "), f"not a status line: {status_line!r}"
        status = int(status_line.split()[1])
        headers = []
        for line in lines:
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        response = Response(status, headers, b"")
        final = sum(1 for r in responses if r.status >= 200)
        method = methods[final] if final < len(methods) else b"GET"
        length = response.header(b"content-length")
        if status < 200 or status in (204, 304) or method == b"HEAD":
            pass
        elif length is not None:
            assert len(data) >= int(length), f"{len(data)} of {int(length)} body bytes"
            response.body, data = data[: int(length)], data[int(length):]
        elif response.header(b"transfer-encoding") == b"chunked":
            body = []
            while True:
                size_line, sep, data = data.partition(b"\r\n")
                assert sep, "an incomplete chunked body"
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    trailers, sep, data = data.partition(b"\r\n")
                    break
                body.append(data[:size])
                assert data[size: size + 2] == b"\r\n", "a chunk without its CRLF"
                data = data[size + 2:]
            response.body = b"".join(body)
        else:
            response.body, data = data, b""
        if status >= 200 or interim:
            responses.append(response)
    return responses


def requests_done(site: BacktracSite) -> list[Request]:
    """
    The requests C{site} counts and logs as done (answered, refused or
    cut short), in order, from now on: what its access log would show.
    """
    done: list[Request] = []
    real = site.request_done

    def recording(request: Request) -> None:
        done.append(request)
        real(request)

    site.request_done = recording
    return done


def fetch(site: BacktracSite, target: bytes = b"/", *headers: bytes,
          method: bytes = b"GET") -> Response:
    """
    One request on a new connection to C{site} (see L{Client.get}), what
    the site handed to the reactor thread run meanwhile; its one response.
    """
    client = Client(site).get(target, *headers, method=method)
    run_pending = getattr(site.reactor, "run_pending", None)
    if run_pending is not None:
        run_pending()
    [response] = parse_responses(client.output, [method])
    return response


class Filling:
    """
    Makes a client's transport full after each write, as a real one is
    when the client does not keep up: the channel (its producer) is
    paused, as Twisted's transport pauses its producer.
    """

    def __init__(self, client: Client) -> None:
        self.writes: list[int] = []
        transport = client.transport
        write = transport.write

        def full(data: bytes) -> None:
            self.writes.append(len(data))
            write(data)
            client.channel.pauseProducing()

        transport.write = full
        transport.writeSequence = lambda pieces: full(b"".join(pieces))


def settle(loop) -> None:
    """Run an asyncio loop until every task that can go on has (a reactor turn between reads)."""
    for _ in range(20):
        loop.run_until_complete(asyncio.sleep(0))
