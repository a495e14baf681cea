"""
Unit tests for the status page (L{backtracweb.app.status}) as L{SiteRoot}
serves it, and for SiteRoot's overload check, which the status page must
get past.

No reactor runs: requests are parsed by a real channel from bytes (see
tests/helpers.py).  Thread pools are fakes, or real ones never started
(work handed to an unstarted L{ThreadPool} waits in its queue).
"""

from __future__ import annotations

import calendar
import json
import os
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
from helpers import Client, FakeReactor, site_settings
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import fail, succeed
from twisted.logger import LogLevel, capturedLogs, formatEvent

from backtracweb.app import resource as resource_module
from backtracweb.app import status as status_module
from backtracweb.app.application import Application
from backtracweb.app.pool import ThreadPool
from backtracweb.app.proxy import Addresses
from backtracweb.app.resource import SiteRoot
from backtracweb.app.status import StatusPage
from backtracweb.app.website import BacktracSite
from backtracweb.app.wsgi import WSGIContainer

LOADED_AT = calendar.timegm((2026, 11, 25, 18, 40, 0))
NOW = LOADED_AT + 100.0
STARTED = NOW - 12.5
LOCAL = IPv4Address("TCP", "127.0.0.1", 40000)
REMOTE = IPv4Address("TCP", "198.51.100.4", 40000)
FORBIDDEN = b"Forbidden: this address may not read the status page ([status] allow).\n"
OVERLOADED = b"The server is busy; please retry shortly.\n"


RSS = 52_428_800


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    """The wall clock the status page reads says L{NOW}; the process's memory is L{RSS}."""
    monkeypatch.setattr(
        status_module, "time", SimpleNamespace(time=lambda: NOW, strftime=time.strftime, gmtime=time.gmtime)
    )
    monkeypatch.setattr(status_module, "rss_bytes", lambda: RSS)


class FakePool:
    """The parts of L{ThreadPool} the status page and the overload check read."""

    def __init__(self, min=2, max=4, threads=3, busy=2, queued=1) -> None:
        self.min, self.max, self.busy, self.queued = min, max, busy, queued
        self.threads = [None] * threads

    def numbers(self) -> dict[str, int]:
        return {"min": self.min, "max": self.max, "threads": len(self.threads),
                "busy": self.busy, "queued": self.queued}


class App:
    """
    The application: C{/missing} is 404, C{/slow} is answered later.

    Like the real L{WSGIContainer} it counts its requests in flight, which
    the overload check reads: those answered later, and C{held} more that
    the test says are busy or waiting in the pool.
    """

    def __init__(self, held: int = 0) -> None:
        self.calls: list[bytes] = []
        self.pending: list = []
        self.held = held

    @property
    def in_flight(self) -> int:
        return self.held + len(self.pending)

    def handle(self, request) -> None:
        self.calls.append(request.target)
        if request.path == b"/slow":
            self.pending.append(request)
            return
        if request.path == b"/missing":
            request.code = 404
            request.respond(b"not found")
            return
        request.respond(b"hello")


def hello(environ, start_response):
    """A WSGI application."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


class QueueingReactor:
    """The part of the reactor L{WSGIContainer} uses; calls wait for L{run_all}."""

    def __init__(self) -> None:
        self.calls: list = []

    def callFromThread(self, f, *args) -> None:
        self.calls.append((f, args))

    def run_all(self) -> None:
        while self.calls:
            f, args = self.calls.pop(0)
            f(*args)


class HoldingPool(FakePool):
    """
    A fake pool that keeps the work it is given until the test runs it
    (in the test's thread, as the worker would); its numbers are the work held.
    """

    def __init__(self, max: int) -> None:
        super().__init__(min=0, max=max, threads=0, busy=0, queued=0)
        self.held: list = []

    def callInThread(self, f) -> None:
        self.held.append(f)
        self.queued = len(self.held)

    def run_next(self) -> None:
        f = self.held.pop(0)
        self.queued = len(self.held)
        f()


def make_site(pool=None, app=None, whole_server=None, **overrides
              ) -> tuple[BacktracSite, SiteRoot]:
    """
    A site whose status page is at C{/-/status}, for local clients; its
    application is C{app}, by default an L{App} (busy with the work a fake
    pool reports), or C{"unloaded"}: an L{Application} not yet started.
    """
    settings = site_settings(**{
        "max_queue": 1,
        "status_path": b"/-/status",
        "status_allow": Addresses(["127.0.0.1", "::1"]),
        "loaded_at": LOADED_AT,
        **overrides,
    })
    if app is None:
        app = App(pool.busy + pool.queued if isinstance(pool, FakePool) else 0)
    elif app == "unloaded":
        app = Application(lambda: hello, pool, FakeReactor())
    root = SiteRoot(app, pool, StatusPage(pool, whole_server))
    site = BacktracSite(root, settings, FakeReactor())
    site.stats.started = STARTED
    return site, root


class PageClient(Client):
    """A connection to the site, sending HTTP/1.1 requests one at a time."""

    def __init__(self, site: BacktracSite, peer=LOCAL) -> None:
        super().__init__(site, peer=peer)

    def fetch(self, path: bytes, *headers: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send a GET and parse the response it got (only what it wrote since)."""
        self.transport.clear()
        self.send(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n"
                  + b"".join(h + b"\r\n" for h in headers) + b"\r\n")
        head, _, body = self.output.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        parsed = {}
        for line in lines:
            name, _, value = line.partition(b":")
            parsed[name.strip().lower()] = value.strip()
        return int(status.split()[1]), parsed, body


def status_json(site, peer=LOCAL, path=b"/-/status") -> dict:
    code, headers, body = PageClient(site, peer).fetch(path)
    assert code == 200, body
    assert headers[b"content-type"] == b"application/json"
    return json.loads(body)


PROMETHEUS = """\
# HELP backtracweb_up 1 while serving, 0 while draining.
# TYPE backtracweb_up gauge
backtracweb_up {up}
# HELP backtracweb_uptime_seconds Seconds since the server started.
# TYPE backtracweb_uptime_seconds gauge
backtracweb_uptime_seconds 12.5
# HELP backtracweb_pool_min Configured minimum threads.
# TYPE backtracweb_pool_min gauge
backtracweb_pool_min 2
# HELP backtracweb_pool_max Configured maximum threads.
# TYPE backtracweb_pool_max gauge
backtracweb_pool_max 4
# HELP backtracweb_pool_threads Threads running.
# TYPE backtracweb_pool_threads gauge
backtracweb_pool_threads 3
# HELP backtracweb_pool_busy Threads running a request.
# TYPE backtracweb_pool_busy gauge
backtracweb_pool_busy 2
# HELP backtracweb_pool_queued Requests waiting for a thread.
# TYPE backtracweb_pool_queued gauge
backtracweb_pool_queued 1
# HELP backtracweb_connections_open Open client connections.
# TYPE backtracweb_connections_open gauge
backtracweb_connections_open 1
# HELP backtracweb_requests_in_flight Requests being answered (WSGI or ASGI).
# TYPE backtracweb_requests_in_flight gauge
backtracweb_requests_in_flight 1
# HELP backtracweb_websockets_open Open WebSockets.
# TYPE backtracweb_websockets_open gauge
backtracweb_websockets_open 0
# HELP backtracweb_requests_total Requests answered.
# TYPE backtracweb_requests_total counter
backtracweb_requests_total 0
# HELP backtracweb_responses_total Responses by status class.
# TYPE backtracweb_responses_total counter
backtracweb_responses_total{{class="1xx"}} 0
backtracweb_responses_total{{class="2xx"}} 0
backtracweb_responses_total{{class="3xx"}} 0
backtracweb_responses_total{{class="4xx"}} 0
backtracweb_responses_total{{class="5xx"}} 0
# HELP backtracweb_refused_overload_total Requests refused with 503 for lack of threads.
# TYPE backtracweb_refused_overload_total counter
backtracweb_refused_overload_total 0
# HELP backtracweb_sent_bytes_total Response body bytes sent.
# TYPE backtracweb_sent_bytes_total counter
backtracweb_sent_bytes_total 0
# HELP backtracweb_resident_memory_bytes Resident memory of the serving process.
# TYPE backtracweb_resident_memory_bytes gauge
backtracweb_resident_memory_bytes 52428800
backtracweb_config_info{{file="/etc/backtrac.ini",loaded_at="2026-11-25T18:40:00Z"}} 1
"""


# -- the JSON page --------------------------------------------------------------------


class TestJSON:
    def test_fields_and_values(self):
        """
        The page is JSON with the serving state, uptime, configuration file
        and when it was loaded, the pool's numbers, connections, and counters.
        """
        site, _ = make_site(pool=FakePool())
        assert status_json(site) == {
            "status": "serving",
            "pid": os.getpid(),
            "uptime_seconds": 12.5,
            "config_file": "/etc/backtrac.ini",
            "config_loaded_at": "2026-11-25T18:40:00Z",
            "pool": {"min": 2, "max": 4, "threads": 3, "busy": 2, "queued": 1},
            "connections": {"open": 1, "busy": 1},
            "requests_in_flight": 1,  # (itself)
            "websockets": 0,
            "requests": 0,
            "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
            "refused_overload": 0,
            "bytes_sent": 0,
            "rss_bytes": RSS,
        }

    def test_headers(self):
        """The page is never cached, and is indented JSON ending with a newline."""
        site, _ = make_site(pool=FakePool())
        code, headers, body = PageClient(site).fetch(b"/-/status")
        assert headers[b"cache-control"] == b"no-store"
        assert body.endswith(b"}\n") and body.startswith(b'{\n  "status": "serving"')

    def test_real_unstarted_pool(self):
        """The pool's numbers come from a real L{ThreadPool}: size, and work waiting."""
        pool = ThreadPool(3, 8)
        for _ in range(2):
            pool.callInThread(lambda: None)
        site, _ = make_site(pool=pool, max_queue=100)
        assert status_json(site)["pool"] == {"min": 3, "max": 8, "threads": 0, "busy": 0, "queued": 2}
        assert pool.started is False and pool.threads == []

    def test_no_pool_yet(self):
        """Before the application is loaded there is no pool: its numbers are zero."""
        site, _ = make_site(pool=None, app="unloaded")
        assert status_json(site)["pool"] == {"min": 0, "max": 0, "threads": 0, "busy": 0, "queued": 0}

    def test_counts_after_requests(self):
        """
        Requests answered, by status class, and the body bytes sent are
        counted; open and busy connections are counted (this one included).
        """
        site, _ = make_site(pool=FakePool())
        idle = PageClient(site)
        assert idle.fetch(b"/")[0] == 200
        assert idle.fetch(b"/missing")[0] == 404
        busy = PageClient(site)
        busy.channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        data = status_json(site)
        assert data["requests"] == 2
        assert data["responses"] == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0}
        assert data["bytes_sent"] == len(b"hello") + len(b"not found")
        assert data["connections"] == {"open": 3, "busy": 2}

    def test_query_string_ignored(self):
        """The page answers its path whatever the query string (other than format)."""
        site, _ = make_site(pool=FakePool())
        assert status_json(site, path=b"/-/status?x=1&format=json")["status"] == "serving"

    def test_other_paths_go_to_the_application(self):
        """Only the exact status path is the page: C{/-/status/} and C{/-/statusx} are the app's."""
        site, root = make_site(pool=FakePool(queued=0))
        client = PageClient(site)
        assert client.fetch(b"/-/status/")[2] == b"hello"
        assert client.fetch(b"/-/statusx")[2] == b"hello"
        assert root.app.calls == [b"/-/status/", b"/-/statusx"]

    def test_off(self):
        """With C{[status] path = off} the path belongs to the application."""
        site, root = make_site(pool=FakePool(queued=0), status_path=None)
        assert PageClient(site).fetch(b"/-/status")[2] == b"hello"
        assert root.app.calls == [b"/-/status"]

    def test_before_application_loaded(self):
        """The page answers before the application is loaded (app paths get 503)."""
        site, _ = make_site(pool=None, app="unloaded")
        client = PageClient(site)
        assert status_json(site)["status"] == "serving"
        assert client.fetch(b"/")[0] == 503

    def test_settings_read_per_request(self):
        """A reload that moves the page applies to the next request."""
        site, root = make_site(pool=FakePool(queued=0))
        site.settings = replace(site.settings, status_path=b"/healthz")
        client = PageClient(site)
        assert client.fetch(b"/-/status")[2] == b"hello"
        code, headers, _ = client.fetch(b"/healthz")
        assert (code, headers[b"content-type"]) == (200, b"application/json")


# -- Prometheus text -------------------------------------------------------------------


class TestPrometheus:
    def test_format_parameter(self):
        """C{?format=prometheus} answers Prometheus' text format, version 0.0.4."""
        site, _ = make_site(pool=FakePool())
        code, headers, body = PageClient(site).fetch(b"/-/status?format=prometheus")
        assert code == 200
        assert headers[b"content-type"] == b"text/plain; version=0.0.4; charset=utf-8"
        assert body.decode() == PROMETHEUS.format(up=1)

    def test_accept_text_plain(self):
        """C{Accept: text/plain} (without application/json) answers the same text."""
        site, _ = make_site(pool=FakePool())
        code, headers, body = PageClient(site).fetch(b"/-/status", b"Accept: text/plain;version=0.0.4;q=1")
        assert headers[b"content-type"] == b"text/plain; version=0.0.4; charset=utf-8"
        assert body.decode() == PROMETHEUS.format(up=1)

    @pytest.mark.parametrize(
        "accept",
        [b"application/json", b"application/json, text/plain", b"text/html", b"*/*"],
    )
    def test_json_otherwise(self, accept):
        """An Accept header that allows JSON, or does not ask for text/plain, gets JSON."""
        site, _ = make_site(pool=FakePool())
        _, headers, _ = PageClient(site).fetch(b"/-/status", b"Accept: " + accept)
        assert headers[b"content-type"] == b"application/json"

    def test_draining(self):
        """While draining, C{backtracweb_up} is 0 and the answer is 503."""
        site, _ = make_site(pool=FakePool())
        client = PageClient(site)
        site.draining = True
        code, _, body = client.fetch(b"/-/status?format=prometheus")
        assert code == 503
        assert body.decode() == PROMETHEUS.format(up=0)

    def test_label_escaped(self):
        """Label values are escaped as the text format requires (C{\\\\}, C{\\"}, C{\\n})."""
        site, _ = make_site(pool=FakePool(), config_file='/etc/back"trac\\.ini')
        _, _, body = PageClient(site).fetch(b"/-/status?format=prometheus")
        assert b'backtracweb_config_info{file="/etc/back\\"trac\\\\.ini",' in body


# -- a server of several workers ------------------------------------------------------------


def worker_entry(index: int, requests: int) -> dict:
    return {"index": index, "state": "serving", "pid": 100 + index, "restarts": index - 1,
            "status": "serving", "uptime_seconds": 5.0, "config_file": "/etc/backtrac.ini",
            "config_loaded_at": "2026-11-25T18:40:00Z",
            "pool": {"min": 2, "max": 4, "threads": 2, "busy": 1, "queued": 0},
            "connections": {"open": 1, "busy": 1}, "requests_in_flight": 1, "websockets": 0,
            "requests": requests,
            "responses": {"1xx": 0, "2xx": requests, "3xx": 0, "4xx": 0, "5xx": 0},
            "refused_overload": 0, "bytes_sent": 3 * requests, "rss_bytes": 1000 * index}


def whole_server(*entries: dict) -> dict:
    supervisor = {"status": "serving", "pid": 100, "uptime_seconds": 9.0,
                  "config_file": "/etc/backtrac.ini", "config_loaded_at": "2026-11-25T18:40:00Z"}
    return status_module.server_snapshot(supervisor, list(entries))


class TestWholeServer:
    def test_sums_and_one_entry_per_worker(self):
        """The totals add up the workers that answered; each is listed."""
        data = whole_server(worker_entry(1, 5), worker_entry(2, 7),
                            {"index": 3, "state": "starting", "pid": 103, "restarts": 0})
        assert (data["pid"], data["requests"], data["bytes_sent"], data["rss_bytes"]) == (
            100, 12, 36, 3000)
        assert data["pool"] == {"min": 4, "max": 8, "threads": 4, "busy": 2, "queued": 0}
        assert data["connections"] == {"open": 2, "busy": 2}
        assert data["responses"]["2xx"] == 12
        assert [w["pid"] for w in data["workers"]] == [101, 102, 103]

    def test_a_worker_asks_the_supervisor(self):
        """In a worker, the page shows the whole server, as the supervisor answers."""
        data = whole_server(worker_entry(1, 5), worker_entry(2, 7))
        site, root = make_site(pool=FakePool(), whole_server=lambda: succeed(data))
        assert status_json(site) == json.loads(json.dumps(data))

    def test_prometheus_series_are_labelled_by_worker(self):
        site, root = make_site(pool=FakePool(), whole_server=lambda: succeed(
            whole_server(worker_entry(1, 5), worker_entry(2, 7))))
        _, _, body = PageClient(site).fetch(b"/-/status?format=prometheus")
        lines = body.decode().splitlines()
        assert "backtracweb_workers 2" in lines
        assert 'backtracweb_requests_total{worker="1"} 5' in lines
        assert 'backtracweb_requests_total{worker="2"} 7' in lines
        assert 'backtracweb_responses_total{worker="2",class="2xx"} 7' in lines
        assert 'backtracweb_worker_restarts_total{worker="2"} 1' in lines
        assert 'backtracweb_resident_memory_bytes{worker="1"} 1000' in lines

    def test_without_the_supervisor_the_worker_shows_itself(self):
        site, root = make_site(pool=FakePool(),
                               whole_server=lambda: fail(ConnectionError("the channel is closed")))
        with capturedLogs() as events:
            data = status_json(site)
        assert data["pid"] == os.getpid() and "workers" not in data
        assert "the supervisor did not answer (the channel is closed)" in formatEvent(events[0])


# -- who may read it -----------------------------------------------------------------------


class TestAccess:
    def test_client_not_allowed(self):
        """A client not in C{[status] allow} gets 403 with a reason, and no numbers."""
        site, _ = make_site(pool=FakePool())
        code, headers, body = PageClient(site, REMOTE).fetch(b"/-/status")
        assert (code, body) == (403, FORBIDDEN)
        assert headers[b"content-type"] == b"text/plain"
        assert headers[b"cache-control"] == b"no-store"

    def test_prometheus_not_allowed(self):
        """The Prometheus text is refused the same way."""
        site, _ = make_site(pool=FakePool())
        code, _, body = PageClient(site, REMOTE).fetch(b"/-/status?format=prometheus")
        assert (code, body) == (403, FORBIDDEN)

    def test_network_allowed(self):
        """A CIDR block in C{allow} admits its addresses."""
        site, _ = make_site(pool=FakePool(), status_allow=Addresses(["198.51.100.0/24"]))
        assert status_json(site, REMOTE)["status"] == "serving"
        assert PageClient(site, LOCAL).fetch(b"/-/status")[0] == 403

    def test_unix_socket_client(self):
        """C{unix} in C{allow} admits clients on a unix socket; without it they are refused."""
        site, _ = make_site(pool=FakePool(), status_allow=Addresses(["unix"]))
        assert status_json(site, UNIXAddress(None))["status"] == "serving"
        site.settings = replace(site.settings, status_allow=Addresses(["127.0.0.1"]))
        assert PageClient(site, UNIXAddress(None)).fetch(b"/-/status")[0] == 403

    def test_draining(self):
        """While the server drains, the page answers 503 with C{status: draining}."""
        site, _ = make_site(pool=FakePool())
        client = PageClient(site)
        site.draining = True
        code, headers, body = client.fetch(b"/-/status")
        assert code == 503
        assert headers[b"content-type"] == b"application/json"
        assert json.loads(body)["status"] == "draining"


# -- overload ----------------------------------------------------------------------------


@pytest.fixture
def monotonic(monkeypatch) -> SimpleNamespace:
    """The monotonic clock SiteRoot's overload warning reads, set by the test."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(resource_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    return clock


def warning(busy: int, queued: int, maximum: int, max_queue: int) -> str:
    return (
        f"overloaded: {busy} threads busy and {queued} requests waiting; answering 503. "
        f"Raise [threadpool] max (now {maximum}) if the application can take more at once, "
        f"or [limits] max_queue (now {max_queue}) to let more wait."
    )


class TestOverload:
    def test_busy_and_full_queue(self, monotonic):
        """
        With every thread busy and C{max_queue} requests waiting, an app
        path gets 503 with Retry-After at once, the application is not
        called, the refusal is counted, and a warning names the settings.
        """
        site, root = make_site(pool=FakePool(max=4, busy=4, queued=1), max_queue=1)
        with capturedLogs() as events:
            code, headers, body = PageClient(site).fetch(b"/app")
        assert (code, body) == (503, OVERLOADED)
        assert headers[b"retry-after"] == b"5"
        assert headers[b"content-type"] == b"text/plain"
        assert root.app.calls == []
        assert site.stats.refused_overload == 1
        assert [(e["log_level"], formatEvent(e)) for e in events] == [
            (LogLevel.warn, warning(4, 1, 4, 1))
        ]

    def test_below_limit(self, monotonic):
        """One place left (busy + queued = max + max_queue - 1): the application is called."""
        site, root = make_site(pool=FakePool(max=4, busy=4, queued=0), max_queue=1)
        with capturedLogs() as events:
            assert PageClient(site).fetch(b"/app")[0] == 200
        assert root.app.calls == [b"/app"]
        assert events == []

    def test_real_pool_queue(self, monotonic):
        """
        Requests the application's real resource handed to a real
        (unstarted) pool wait in its queue and count: C{max + max_queue} of
        them fill it, and the next is refused; the warning reads the pool.
        """
        pool = ThreadPool(0, 2)
        site, root = make_site(pool=pool, app=WSGIContainer(QueueingReactor(), pool, hello),
                               max_queue=1)
        waiting = [PageClient(site) for _ in range(3)]
        for client in waiting:
            client.channel.dataReceived(b"GET /app HTTP/1.1\r\nHost: x\r\n\r\n")
        assert root.app.in_flight == 3
        assert all(client.transport.value() == b"" for client in waiting)
        with capturedLogs() as events:
            assert PageClient(site).fetch(b"/app")[0] == 503
        assert [formatEvent(e) for e in events] == [warning(0, 3, 2, 1)]
        assert root.app.in_flight == 3

    def test_place_freed_when_worker_done(self, monotonic):
        """
        A place frees as soon as a worker is done with a request (before the
        reactor has sent its response): the next request is accepted.
        """
        pool = HoldingPool(max=1)
        reactor = QueueingReactor()
        site, root = make_site(pool=pool, app=WSGIContainer(reactor, pool, hello), max_queue=1)
        first, second = PageClient(site), PageClient(site)
        for client in (first, second):
            client.channel.dataReceived(b"GET /app HTTP/1.1\r\nHost: x\r\n\r\n")
        assert root.app.in_flight == 2
        with capturedLogs():
            assert PageClient(site).fetch(b"/app")[0] == 503
        pool.run_next()
        assert root.app.in_flight == 1
        third = PageClient(site)
        third.channel.dataReceived(b"GET /app HTTP/1.1\r\nHost: x\r\n\r\n")
        assert root.app.in_flight == 2
        assert site.stats.refused_overload == 1
        reactor.run_all()
        assert first.transport.value().endswith(b"Content-Length: 5\r\n\r\nhello")

    def test_warning_at_most_every_ten_seconds(self, monotonic):
        """The warning is logged at most once per 10 seconds, however many are refused."""
        site, _ = make_site(pool=FakePool(max=1, busy=1, queued=0), max_queue=0)
        client = PageClient(site)
        with capturedLogs() as events:
            client.fetch(b"/a")
            monotonic.now += 5
            client.fetch(b"/b")
            monotonic.now += 4.9
            client.fetch(b"/c")
            monotonic.now += 0.1
            client.fetch(b"/d")
        assert [formatEvent(e) for e in events] == [warning(1, 0, 1, 0)] * 2
        assert site.stats.refused_overload == 4

    def test_first_warning_always_logged(self, monotonic):
        """The first overload is always warned about, whatever the monotonic clock reads."""
        monotonic.now = 5.0
        site, _ = make_site(pool=FakePool(max=1, busy=1, queued=0), max_queue=0)
        with capturedLogs() as events:
            PageClient(site).fetch(b"/a")
        assert [formatEvent(e) for e in events] == [warning(1, 0, 1, 0)]

    def test_status_answered_when_saturated(self, monotonic):
        """
        The status page is answered while the pool is saturated (it never
        needs a thread), and shows the refusals.
        """
        site, _ = make_site(pool=FakePool(max=4, busy=4, queued=9), max_queue=1)
        client = PageClient(site)
        with capturedLogs():
            assert client.fetch(b"/app")[0] == 503
        data = status_json(site)
        assert data["pool"]["busy"] == 4 and data["pool"]["queued"] == 9
        assert data["refused_overload"] == 1
        assert data["responses"]["5xx"] == 1
