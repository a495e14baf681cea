"""
Unit tests for the service tree twistd runs: L{backtracweb.process.tree},
L{backtracweb.app.pool}, L{backtracweb.process.server}, L{backtracweb.tap} and the
twistd plugin drop-in.

No reactor runs.  Listening goes to a L{MemoryReactorClock}; the thread
pool is real, but whatever its stopping thread hands to the reactor with
C{callFromThread} is queued and run by the test, as the reactor thread
would; timeouts run on the same fake clock.  Starting the service tree
installs signal handlers, which every test here gets back as it found them.
"""

from __future__ import annotations

import errno
import gc
import io
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import twisted.internet
from helpers import FakeReactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXServerEndpoint
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

import backtracweb
from backtracweb import tap
from backtracweb.app import pool as pool_module
from backtracweb.app.accesslog import AccessLog
from backtracweb.app.pool import STOP_TIMEOUT, ReactorCalls, ThreadPoolService, make_pool
from backtracweb.app.proxy import Addresses, TrustedProxies
from backtracweb.app.resource import SiteRoot, StaticDirectory
from backtracweb.app.website import IDLE_LINGER, BacktracSite, SiteSettings
from backtracweb.app.wsgi import WSGIContainer
from backtracweb.config.settings import Config, load_config, section_defaults
from backtracweb.errors import AppLoadError, ConfigError, StartupError
from backtracweb.process.server import ListeningService, WebService
from backtracweb.process.service import BacktracService
from backtracweb.process.tree import build_service, make_site_settings

REPO = Path(__file__).resolve().parents[1]
APP_MODULE = "btw_svc_app"
WAIT = 10.0
"""Seconds to wait for a real thread before failing the test."""
# Starting a service replaces the process's signal handlers.
pytestmark = pytest.mark.usefixtures("saved_signal_handlers")


# -- fakes and helpers ------------------------------------------------------------


class ThreadingMemoryReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that also accepts C{callFromThread}: the calls
    are queued, and L{runFromThreads} runs them in the test's thread, which
    plays the reactor thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fromThreads: queue.Queue = queue.Queue()

    def callFromThread(self, f, *args, **kwargs) -> None:
        self.fromThreads.put((f, args, kwargs))

    def runOneFromThread(self, timeout: float = WAIT) -> None:
        """Wait for one call from another thread and run it."""
        f, args, kwargs = self.fromThreads.get(timeout=timeout)
        f(*args, **kwargs)

    def runFromThreads(self, until: Deferred, timeout: float = WAIT) -> list:
        """
        Run calls from other threads until C{until} has a result (a Deferred
        that was called may still wait on one its callbacks returned);
        return the result, in a list.
        """
        results = result_of(until)
        while not results:
            self.runOneFromThread(timeout)
        return results


def result_of(d: Deferred) -> list:
    """The results C{d} has fired with so far, as a list to check."""
    results: list = []

    def keep(result):
        results.append(result)
        return result

    d.addBoth(keep)
    return results


def join_stop_threads() -> None:
    """Wait for the threads L{ThreadPoolService.stopService} started."""
    for thread in threading.enumerate():
        if thread.name == "backtracweb-pool-stop":
            thread.join(WAIT)
            assert not thread.is_alive()


def stop_pool(pool) -> None:
    """Stop a pool a test started, if it is still running."""
    if pool.started:
        pool.stop()


APPLICATION = """\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
"""


def site_config(
    directory: Path,
    *,
    interface: str = "127.0.0.1",
    port: int = 8123,
    listen: str | None = None,
    source: str = APPLICATION,
    min_threads: int = 2,
    max_threads: int = 7,
    extra: str = "",
) -> Config:
    """
    Write a site into C{directory}: an application module, a static
    directory and the INI file naming them; return the loaded L{Config}.
    """
    (directory / "app").mkdir(exist_ok=True)
    (directory / "app" / f"{APP_MODULE}.py").write_text(source)
    (directory / "static").mkdir(exist_ok=True)
    server = f"listen = {listen}" if listen else f"port = {port}\ninterface = {interface}"
    path = directory / "site.ini"
    path.write_text(
        f"[server]\n{server}\n\n"
        + textwrap.dedent(
            f"""\
            [threadpool]
            min = {min_threads}
            max = {max_threads}

            [app]
            loader = wsgi
            pythonpath = app
            application = {APP_MODULE}:application

            [static]
            /static = static
            """
        )
        + extra
    )
    return load_config(str(path))


def parts(top: BacktracService) -> tuple[ThreadPoolService, WebService]:
    return top.getServiceNamed("threadpool"), top.getServiceNamed("web")


def connect(site: BacktracSite, host: str = "192.0.2.7"):
    """A connection to C{site} over a L{StringTransport}: (channel, transport)."""
    peer = IPv4Address("TCP", host, 51000)
    channel = site.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    channel.makeConnection(transport)
    return channel, transport


# -- building the tree ------------------------------------------------------------


class TestBuildService:
    def test_tree(self, tmp_path, isolated_imports):
        """
        The tree is a L{BacktracService} named C{backtracweb} holding the
        thread pool service then the web service, sharing one pool sized
        from C{[threadpool]}; the web service listens on the configured
        endpoint with a L{BacktracSite} routing through a L{SiteRoot}.
        """
        reactor = ThreadingMemoryReactor()
        config = site_config(tmp_path)
        top = build_service(config, reactor)
        assert isinstance(top, BacktracService)
        assert top.name == "backtracweb"
        assert top.config is config
        children = list(top)
        assert [child.name for child in children] == ["threadpool", "web"]
        pool_service, web = children
        assert (top.pool, top.web) == (pool_service, web)
        assert isinstance(pool_service, ThreadPoolService)
        assert isinstance(web, WebService)
        assert (pool_service.pool.min, pool_service.pool.max) == (2, 7)
        assert isinstance(web.site, BacktracSite)
        assert web.site.reactor is reactor
        root = web.site.resource
        assert isinstance(root, SiteRoot)
        assert (root.app, root.pool, root.status.pool) == (web.application, pool_service.pool,
                                                           pool_service.pool)
        assert web.application.container is None  # imported when the service starts
        [listening] = list(web)
        assert isinstance(listening, ListeningService)
        assert listening.description == "tcp:8123:interface=127.0.0.1"
        assert listening.factory is web.site

    def test_one_listener_per_endpoint(self, tmp_path, isolated_imports):
        """C{listen} gives one listening service per endpoint, all serving the same site."""
        sock = tmp_path / "web.sock"
        config = site_config(tmp_path, listen=f"tcp:8123:interface=127.0.0.1, tcp6:8124, unix:{sock}")
        _, web = parts(build_service(config, ThreadingMemoryReactor()))
        listeners = list(web)
        assert [s.description for s in listeners] == [
            "tcp:8123:interface=127.0.0.1", "tcp6:8124", f"unix:{sock}",
        ]
        assert [type(s.endpoint) for s in listeners] == [
            TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXServerEndpoint,
        ]
        assert all(s.factory is web.site for s in listeners)

    def test_starts_nothing(self, tmp_path, isolated_imports):
        """
        Building the tree starts no thread, binds nothing and does not
        import the application.
        """
        config = site_config(tmp_path)
        reactor = ThreadingMemoryReactor()
        threads = threading.active_count()
        top = build_service(config, reactor)
        pool_service, _ = parts(top)
        assert threading.active_count() == threads
        assert pool_service.pool.started is False
        assert pool_service.pool.threads == []
        assert reactor.tcpServers == []
        assert APP_MODULE not in sys.modules
        assert not top.running


class TestSiteSettings:
    def test_from_config(self, tmp_path, isolated_imports):
        """
        L{make_site_settings} turns the reloadable sections into one
        L{SiteSettings}: static routes, an open access log, trusted proxies,
        limits, the status page and the graceful timeout.
        """
        (tmp_path / "logs").mkdir()
        config = site_config(tmp_path, extra=textwrap.dedent(
            """\
            [log]
            access_log = logs/access.log
            access_format = {client} {status}
            [proxy]
            trusted = 10.0.0.0/8, unix
            [limits]
            max_body = 2M
            max_header_bytes = 16K
            max_headers = 40
            idle_timeout = 12.5
            max_queue = 3
            [status]
            path = /-/status
            allow = 192.0.2.0/24
            """
        ).replace("[static]\n/static = static\n", ""))
        settings = make_site_settings(config)
        try:
            assert isinstance(settings, SiteSettings)
            [(segments, directory)] = settings.routes
            assert segments == [b"static"]
            assert isinstance(directory, StaticDirectory)
            assert directory.path == os.fsencode(tmp_path / "static")
            assert isinstance(settings.access_log, AccessLog)
            assert settings.access_log.destination == str(tmp_path / "logs" / "access.log")
            assert settings.access_log.template == "{client} {status}"
            assert settings.access_log._fd is not None
            assert isinstance(settings.proxies, TrustedProxies)
            assert settings.proxies.trusts("10.1.1.1") and settings.proxies.trusts("unix")
            assert vars(settings.limits) == {**section_defaults("limits"), **{
                "max_body": 2 * 1024 * 1024, "max_header_bytes": 16 * 1024, "max_headers": 40,
                "idle_timeout": 12.5, "max_queue": 3}}
            assert settings.status_path == b"/-/status"
            assert isinstance(settings.status_allow, Addresses)
            assert "192.0.2.9" in settings.status_allow and "127.0.0.1" not in settings.status_allow
            # [server]'s keys that a reload may change; not those that take a restart.
            assert vars(settings.server) == {key: config["server"][key] for key in (
                "graceful_timeout", "start_timeout", "worker_timeout", "max_requests",
                "max_requests_jitter", "max_memory", "request_warn")}
            assert (settings.config_file, settings.loaded_at) == (config.path, config.loaded_at)
        finally:
            settings.access_log.close()

    def test_defaults(self, tmp_path, isolated_imports):
        """
        By default the access log goes to twistd's log, nobody is a trusted
        proxy and the status page is off.
        """
        settings = make_site_settings(site_config(tmp_path))
        assert settings.access_log.destination == "-"
        assert not settings.proxies
        assert settings.status_path is None
        assert vars(settings.limits) == section_defaults("limits")
        assert (settings.limits.max_body, settings.limits.idle_timeout) == (1024**3, 60)

    def test_access_log_cannot_open(self, tmp_path, isolated_imports):
        """An access log that cannot be opened is a L{ConfigError} naming the file and key."""
        os.symlink(tmp_path / "nowhere" / "x.log", tmp_path / "dangling.log")
        config = site_config(tmp_path, extra="[log]\naccess_log = dangling.log\n")
        with pytest.raises(ConfigError) as caught:
            make_site_settings(config)
        assert caught.value.problems == [
            f"{config.path}: [log] access_log = '{tmp_path}/dangling.log': cannot open it for "
            "appending: No such file or directory"
        ]
        with pytest.raises(ConfigError):
            build_service(config, ThreadingMemoryReactor())


# -- privilegedStartService and startService ------------------------------------


class TestStart:
    @pytest.mark.parametrize(
        "interface, address",
        [
            ("127.0.0.1", "127.0.0.1:8123"),
            ("0.0.0.0", "0.0.0.0:8123"),
            ("::1", "[::1]:8123"),
            ("::", "[::]:8123"),
        ],
    )
    def test_privileged_start_binds(self, tmp_path, isolated_imports, interface, address):
        """
        C{privilegedStartService} listens on the configured interface and
        port, IPv4 or IPv6, and still starts no thread and imports nothing;
        starting then logs the address it serves on.
        """
        reactor = ThreadingMemoryReactor()
        top = build_service(site_config(tmp_path, interface=interface), reactor)
        pool_service, web = parts(top)
        threads = threading.active_count()
        top.privilegedStartService()
        assert reactor.tcpServers == [(8123, web.site, 50, interface)]
        assert threading.active_count() == threads
        assert pool_service.pool.started is False
        assert pool_service.pool.threads == []
        assert APP_MODULE not in sys.modules
        assert web.application.container is None
        with capturedLogs() as events:
            web.startService()
        assert f"serving on {address}" in [formatEvent(e) for e in events]

    def test_privileged_start_every_endpoint(self, tmp_path, isolated_imports):
        """Every endpoint of C{listen} is bound, TCP and unix alike, to the one site."""
        sock = tmp_path / "web.sock"
        reactor = ThreadingMemoryReactor()
        config = site_config(tmp_path, listen=f"tcp6:8124:interface=\\:\\:1, unix:{sock}:mode=660")
        top = build_service(config, reactor)
        _, web = parts(top)
        top.privilegedStartService()
        assert reactor.tcpServers == [(8124, web.site, 50, "::1")]
        assert reactor.unixServers == [(str(sock), web.site, 50, 0o660, True)]
        with capturedLogs() as events:
            web.startService()
        assert [formatEvent(e) for e in events] == [
            "serving on [::1]:8124",
            f"serving on unix:{sock}:mode=660",
        ]

    def test_tcp6_default_interface_named(self, tmp_path, isolated_imports):
        """A C{tcp6} endpoint without an interface is announced as C{[::]:PORT}."""
        reactor = ThreadingMemoryReactor()
        top = build_service(site_config(tmp_path, listen="tcp6:8124"), reactor)
        _, web = parts(top)
        top.privilegedStartService()
        assert reactor.tcpServers == [(8124, web.site, 50, "::")]
        with capturedLogs() as events:
            web.startService()
        assert [formatEvent(e) for e in events] == ["serving on [::]:8124"]

    def test_start_service(self, tmp_path, isolated_imports, saved_signal_handlers):
        """
        C{startService} starts C{min} daemon worker threads under the batch
        scheduling policy, imports the application, freezes what exists for
        the garbage collector, installs the application on the site root as
        a L{WSGIContainer} running in the pool, gives the root the
        pool to watch, takes over
        SIGHUP and SIGUSR1 at once and SIGTERM and SIGINT once the reactor
        runs; stopping the tree joins the workers.
        """
        reactor = ThreadingMemoryReactor()
        top = build_service(site_config(tmp_path, min_threads=3), reactor)
        pool_service, web = parts(top)
        top.privilegedStartService()
        try:
            with capturedLogs():
                top.startService()
            pool = pool_service.pool
            assert pool.started is True
            assert len(pool.threads) == 3
            assert all(t.daemon and t.is_alive() for t in pool.threads)
            # [server] cpu_scheduling = batch, set before the threads started.
            assert os.sched_getscheduler(0) == os.SCHED_BATCH
            assert {os.sched_getscheduler(t.native_id) for t in pool.threads} == {os.SCHED_BATCH}
            # What was loaded is frozen: the collector's full passes skip it.
            assert gc.get_freeze_count() > 1000
            assert APP_MODULE in sys.modules
            container = web.application.container
            assert isinstance(container, WSGIContainer)
            assert container.application is sys.modules[APP_MODULE].application
            assert container._pool is pool
            assert container.in_flight == 0
            # Its responses cross to this reactor, a wake-up for what is queued.
            assert isinstance(container._reactor, ReactorCalls)
            assert container._reactor._reactor is reactor
            assert top.running and pool_service.running and web.running
            assert len(reactor.tcpServers) == 1
            for signum in (signal.SIGHUP, signal.SIGUSR1):
                assert signal.getsignal(signum) is not saved_signal_handlers[signum]
            for signum in (signal.SIGTERM, signal.SIGINT):
                assert signal.getsignal(signum) is saved_signal_handlers[signum]
            assert [(f.__name__, args) for f, args, _ in reactor.whenRunningHooks] == [
                ("install_signal_handlers", (signal.SIGTERM, signal.SIGINT))
            ]

            with capturedLogs():
                stopping = top.stopService()
                assert reactor.runFromThreads(stopping) == [None]
            assert not any(t.is_alive() for t in pool.threads)
            assert not (top.running or pool_service.running or web.running)
        finally:
            stop_pool(pool_service.pool)
            join_stop_threads()
            top.restore_signal_handlers()

    def test_serves_from_pool_after_start(self, tmp_path, isolated_imports):
        """
        Once started, the listening factory hands a request to the
        application, which runs in a pool worker thread and sees the whole
        path; its response reaches the connection through C{callFromThread}.
        """
        source = textwrap.dedent(
            """\
            import threading

            def application(environ, start_response):
                start_response("200 OK", [("Content-Type", "text/plain")])
                where = threading.current_thread().name
                return [f"{environ['PATH_INFO']}?{environ['QUERY_STRING']} in {where}".encode()]
            """
        )
        reactor = ThreadingMemoryReactor()
        top = build_service(site_config(tmp_path, source=source), reactor)
        pool_service, web = parts(top)
        top.privilegedStartService()
        with capturedLogs():
            top.startService()
        try:
            [(_, factory, _, _)] = reactor.tcpServers
            channel, transport = connect(factory)
            with capturedLogs():
                channel.dataReceived(b"GET /a/b?x=1 HTTP/1.0\r\nHost: example.com\r\n\r\n")
                while not transport.disconnecting:
                    reactor.runOneFromThread()
            head, _, body = transport.value().partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert body.startswith(b"/a/b?x=1 in backtracweb-")
            channel.connectionLost(Failure(ConnectionDone()))
        finally:
            with capturedLogs():
                stopping = top.stopService()
                reactor.runFromThreads(stopping)
            stop_pool(pool_service.pool)
            join_stop_threads()
            top.restore_signal_handlers()

    def test_listen_failure(self, tmp_path, isolated_imports):
        """
        A port that cannot be bound is a L{StartupError} naming the address
        and the system's reason, not a L{CannotListenError} traceback; it is
        logged as critical before it is raised (twistd's parent exits as
        soon as the daemon reports it).
        """
        failure = CannotListenError(
            "127.0.0.1", 8123, OSError(errno.EADDRINUSE, "Address already in use")
        )
        top = build_service(site_config(tmp_path), RaisingMemoryReactor(listenException=failure))
        with capturedLogs() as events, pytest.raises(StartupError) as caught:
            top.privilegedStartService()
        assert type(caught.value) is StartupError
        assert str(caught.value) == "cannot listen on 127.0.0.1:8123: Address already in use"
        assert caught.value.__suppress_context__
        assert [(e["log_level"], formatEvent(e)) for e in events] == [
            (
                LogLevel.critical,
                "backtracweb cannot start: cannot listen on 127.0.0.1:8123: "
                "Address already in use",
            )
        ]

    @pytest.mark.parametrize(
        "listen, address",
        [
            ("tcp:8123:interface=\\:\\:1", "[::1]:8123"),
            ("tcp:8123:interface=::1", "[::1]:8123"),
            ("tcp:8123", "0.0.0.0:8123"),
            ("tcp6:8123:interface=2001\\:db8\\:\\:1", "[2001:db8::1]:8123"),
            ("unix:/run/btw-test/web.sock", "unix:/run/btw-test/web.sock"),
        ],
    )
    def test_listen_failure_address(self, tmp_path, isolated_imports, listen, address):
        """
        The address in the message is the one an admin reads: host:port,
        IPv6 bracketed as in a URL, other endpoints as written.
        """
        failure = CannotListenError(
            "", 8123, OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        )
        top = build_service(
            site_config(tmp_path, listen=listen), RaisingMemoryReactor(listenException=failure)
        )
        with pytest.raises(StartupError) as caught:
            top.privilegedStartService()
        assert str(caught.value) == f"cannot listen on {address}: Cannot assign requested address"

    def test_application_import_fails(self, tmp_path, isolated_imports):
        """
        An application that fails to import is an L{AppLoadError} from
        C{startService} naming the C{[app]} settings, the exception and its
        place, logged as critical before it is raised; the root keeps
        answering 503 and the web service is not marked running.
        """
        reactor = ThreadingMemoryReactor()
        config = site_config(tmp_path, source="raise RuntimeError('no database')\n")
        top = build_service(config, reactor)
        pool_service, web = parts(top)
        top.privilegedStartService()
        try:
            with capturedLogs() as events, pytest.raises(AppLoadError) as caught:
                top.startService()
        finally:
            stop_pool(pool_service.pool)
        module = tmp_path / "app" / f"{APP_MODULE}.py"
        assert str(caught.value) == (
            f"RuntimeError: no database ({module}, line 1); while loading the application "
            f"([app] loader = wsgi, application = '{APP_MODULE}:application')"
        )
        critical = [formatEvent(e) for e in events if e["log_level"] is LogLevel.critical]
        assert critical == [f"backtracweb cannot start: {caught.value}"]
        assert web.application.container is None
        assert not web.running
        channel, transport = connect(web.site)
        with capturedLogs():
            channel.dataReceived(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        assert transport.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert transport.value().endswith(b"\r\n\r\nThe application is not loaded yet.\n")


# -- ThreadPoolService --------------------------------------------------------------


class TestThreadPoolService:
    def test_make_pool(self):
        """
        L{make_pool} sizes and names the pool, and starts nothing.
        """
        threads = threading.active_count()
        pool = make_pool(1, 4)
        assert (pool.min, pool.max, pool.name) == (1, 4, "backtracweb")
        assert pool.started is False
        assert pool.threads == []
        assert threading.active_count() == threads

    def test_start(self):
        """
        Starting the service starts the pool with C{min} daemon workers and
        logs its size.
        """
        pool = make_pool(2, 4)
        service = ThreadPoolService(pool, ThreadingMemoryReactor())
        try:
            with capturedLogs() as events:
                service.startService()
            assert service.running
            assert pool.started is True
            assert len(pool.threads) == 2
            assert all(t.daemon and t.is_alive() for t in pool.threads)
            assert [formatEvent(e) for e in events] == ["thread pool started: min 2, max 4"]
            assert events[0]["log_level"] is LogLevel.info
        finally:
            stop_pool(pool)

    def test_not_started_for_an_asgi_application(self):
        """Unused (the application runs on the event loop), the pool starts no thread, and says so."""
        threads = threading.active_count()
        pool = make_pool(2, 4)
        service = ThreadPoolService(pool, ThreadingMemoryReactor(), used=False)
        with capturedLogs() as events:
            service.startService()
        assert service.running and pool.started is False and pool.threads == []
        assert threading.active_count() == threads
        assert [formatEvent(e) for e in events] == [
            "thread pool not started: the ASGI application runs on the event loop "
            "([threadpool] applies to WSGI)"]
        assert result_of(service.stopService()) == [None]

    def test_stop_fires_after_join(self):
        """
        C{stopService} returns a L{Deferred} that fires, on the reactor
        thread, only once every worker has finished and been joined; the
        stop timeout is then cancelled.
        """
        reactor = ThreadingMemoryReactor()
        pool = make_pool(2, 4)
        service = ThreadPoolService(pool, reactor)
        service.startService()
        busy, release = threading.Event(), threading.Event()

        def work():
            busy.set()
            release.wait(WAIT)

        pool.callInThread(work)
        assert busy.wait(WAIT)
        try:
            stopped = service.stopService()
            results = result_of(stopped)
            assert not service.running
            with pytest.raises(queue.Empty):
                reactor.fromThreads.get(timeout=0.05)  # still joining the busy worker
            assert results == []
            release.set()
            f, args, kwargs = reactor.fromThreads.get(timeout=WAIT)
            assert not any(t.is_alive() for t in pool.threads)
            assert results == []  # only the reactor thread fires it
            f(*args, **kwargs)
            assert results == [None]
            assert reactor.getDelayedCalls() == []
        finally:
            release.set()
            stop_pool(pool)
            join_stop_threads()

    def test_stop_gives_up_on_stuck_worker(self):
        """
        A worker stuck in application code does not hold up stopping: the
        L{Deferred} fires with None after the stop timeout and a warning
        says how many workers were left behind.  A late join changes
        nothing.
        """
        reactor = ThreadingMemoryReactor()
        pool = make_pool(1, 2)
        service = ThreadPoolService(pool, reactor)
        threads = threading.active_count()
        service.startService()
        stuck, release = threading.Event(), threading.Event()

        def work():
            stuck.set()
            release.wait(WAIT)

        pool.callInThread(work)
        assert stuck.wait(WAIT)
        workers = list(pool.threads)
        try:
            with capturedLogs() as events:
                results = result_of(service.stopService())
                reactor.advance(STOP_TIMEOUT - 0.5)
                assert results == []
                reactor.advance(0.5)
            assert results == [None]
            warnings = [e for e in events if e["log_level"] is LogLevel.warn]
            assert [formatEvent(e) for e in warnings] == [
                f"1 thread(s) still busy after {STOP_TIMEOUT} seconds; "
                "stopping without them"
            ]
            assert STOP_TIMEOUT == 10.0
            assert all(t.daemon for t in pool.threads)
        finally:
            release.set()
        reactor.runOneFromThread()  # the late "joined" call is harmless
        assert results == [None]
        join_stop_threads()
        for thread in workers:
            thread.join(WAIT)
        assert threading.active_count() == threads

    def test_custom_stop_timeout(self):
        """The stop timeout is a constructor argument."""
        reactor = ThreadingMemoryReactor()
        pool = make_pool(1, 1)
        service = ThreadPoolService(pool, reactor, stop_timeout=2.0)
        service.startService()
        stuck, release = threading.Event(), threading.Event()
        pool.callInThread(lambda: (stuck.set(), release.wait(WAIT)))
        assert stuck.wait(WAIT)
        try:
            with capturedLogs():
                results = result_of(service.stopService())
                reactor.advance(2.0)
            assert results == [None]
        finally:
            release.set()
        reactor.runOneFromThread()
        join_stop_threads()

    def test_default_timeout_constant(self):
        """The default stop timeout is L{STOP_TIMEOUT}."""
        service = ThreadPoolService(make_pool(0, 1), ThreadingMemoryReactor())
        assert service.stop_timeout == pool_module.STOP_TIMEOUT


# -- the web service ----------------------------------------------------------------


class TestWebService:
    def test_stop_drains(self, tmp_path, isolated_imports):
        """
        Stopping the web service stops listening, then drains the site:
        idle connections are closed after a moment, and the Deferred fires
        when the last connection is gone.
        """
        reactor = ThreadingMemoryReactor()
        top = build_service(site_config(tmp_path), reactor)
        _, web = parts(top)
        web.privilegedStartService()
        with capturedLogs():
            web.startService()
        stopped_listening = []

        for listening in web:
            port = listening.port
            port.stopListening = lambda port=port: stopped_listening.append(port)
        channels = [connect(web.site) for _ in range(2)]
        with capturedLogs() as events:
            results = result_of(web.stopService())
        assert [formatEvent(e) for e in events] == [
            "stopping: no new connections; waiting up to 30 s for 0 request(s) in flight"
        ]
        assert len(stopped_listening) == 1
        assert web.site.draining
        reactor.advance(IDLE_LINGER)
        assert all(transport.disconnecting for _, transport in channels)
        assert results == []
        for channel, _ in channels:
            channel.connectionLost(Failure(ConnectionDone()))
        assert results == [None]
        assert not web.running

    def test_stop_without_connections(self, tmp_path, isolated_imports):
        """With no connection open, stopping is done at once."""
        top = build_service(site_config(tmp_path), ThreadingMemoryReactor())
        _, web = parts(top)
        web.privilegedStartService()
        with capturedLogs():
            web.startService()
            assert result_of(web.stopService()) == [None]

    def test_site_tracks_connections(self, tmp_path, isolated_imports):
        """
        The site remembers each connection from when it is made until it is
        lost, so a closed connection is not kept alive.
        """
        _, web = parts(build_service(site_config(tmp_path), ThreadingMemoryReactor()))
        channel, _ = connect(web.site)
        assert web.site.connections == {channel}
        channel.connectionLost(Failure(ConnectionDone()))
        assert web.site.connections == set()


# -- the twistd plugin's options and service maker --------------------------------------


class TestTap:
    def test_config_required(self, capsys):
        """Without C{--config}: one line naming it, on stderr, and exit status 2 (usage)."""
        with pytest.raises(SystemExit) as caught:
            tap.Options().parseOptions([])
        assert caught.value.code == 2
        assert capsys.readouterr() == ("", "twistd backtracweb: --config FILE is required: the INI "
                                       "file describing the site (twistd backtracweb --help lists "
                                       "the options)\n")

    def test_unknown_option(self, capsys):
        """An option it does not know: the same, naming the option, without twistd's usage text."""
        with pytest.raises(SystemExit) as caught:
            tap.Options().parseOptions(["-c", "x.ini", "--nonsense"])
        assert caught.value.code == 2
        assert capsys.readouterr().err == (
            "twistd backtracweb: option --nonsense not recognized (twistd backtracweb --help lists "
            "the options)\n")

    def test_version(self, capsys):
        """C{--version} prints backtracweb's version and those it runs on, and exits 0."""
        with pytest.raises(SystemExit) as caught:
            tap.Options().parseOptions(["--version"])
        assert caught.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"backtracweb {backtracweb.__version__} (Twisted ")
        assert ", Django " in out and ", Python " in out

    def test_bad_file(self, tmp_path, capsys):
        """
        A file with problems: every problem line, each naming the file, after
        the command's name, on stderr; exit status 1.
        """
        path = tmp_path / "bad.ini"
        path.write_text(
            "[server]\nport = 0\ninterface = localhost\n"
            "[threadpool]\nmin = 5\nmax = 2\n"
            "[app]\nloader = wsgi\napplication = btw_nowhere:app\n"
        )
        with pytest.raises(SystemExit) as caught:
            tap.Options().parseOptions(["--config", str(path)])
        assert caught.value.code == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err.splitlines() == [
            "twistd backtracweb: 4 problems in the configuration:",
            f"  {path}: [server] interface = 'localhost': expected an IPv4 or IPv6 address "
            "such as 127.0.0.1, 0.0.0.0 or ::1",
            f"  {path}: [server] port = '0': expected an integer between 1 and 65535",
            f"  {path}: [threadpool] min = 5 is greater than max = 2; min must not exceed max",
            f"  {path}: [app] application = 'btw_nowhere:app': module btw_nowhere not found "
            "in pythonpath or sys.path; pythonpath is empty",
        ]

    def test_missing_file(self, tmp_path, capsys):
        """A file that does not exist: one line naming it; exit status 1."""
        path = tmp_path / "nowhere.ini"
        with pytest.raises(SystemExit) as caught:
            tap.Options().parseOptions(["-c", str(path)])
        assert caught.value.code == 1
        assert capsys.readouterr().err == (
            f"twistd backtracweb: {path}: cannot read the configuration file: No such file or "
            "directory\n")

    def test_good_file(self, tmp_path, isolated_imports):
        """A good file is loaded into C{options.loaded}, importing nothing."""
        site_config(tmp_path)
        options = tap.Options()
        options.parseOptions(["-c", str(tmp_path / "site.ini")])
        assert isinstance(options.loaded, Config)
        assert options.loaded.path == str(tmp_path / "site.ini")
        assert options.loaded.listen == ("tcp:8123:interface=127.0.0.1",)
        assert APP_MODULE not in sys.modules

    @pytest.fixture
    def global_reactor(self, monkeypatch) -> ThreadingMemoryReactor:
        """
        Stand a fake in for the global reactor, which L{tap.makeService}
        imports, and save C{sys.excepthook}, which it replaces.
        """
        fake = ThreadingMemoryReactor()
        monkeypatch.setitem(sys.modules, "twisted.internet.reactor", fake)
        monkeypatch.setattr(twisted.internet, "reactor", fake, raising=False)
        monkeypatch.setattr(sys, "excepthook", sys.excepthook)
        return fake

    @pytest.fixture
    def options(self, tmp_path, isolated_imports) -> tap.Options:
        site_config(tmp_path)
        options = tap.Options()
        options.parseOptions(["-c", str(tmp_path / "site.ini")])
        return options

    def test_make_service(self, global_reactor, options):
        """
        L{tap.makeService} builds the service tree on the global reactor,
        starting nothing.
        """
        threads = threading.active_count()
        top = tap.makeService(options)
        assert top.name == "backtracweb"
        assert [child.name for child in top] == ["threadpool", "web"]
        _, web = parts(top)
        assert web.site.reactor is global_reactor
        assert global_reactor.tcpServers == []
        assert threading.active_count() == threads
        assert APP_MODULE not in sys.modules

    def test_excepthook_startup_error(self, global_reactor, options, monkeypatch, capsys):
        """
        The exception hook makeService installs prints a L{StartupError}
        (or L{AppLoadError}) as one line on the process's original stderr
        (twistd may have redirected C{sys.stderr} to the log), without a
        traceback, and does not call the previous hook.  It does not log it:
        the service logged it when raising it (L{backtracweb.process.server.fatal}),
        and the log must not say it twice.
        """
        previous = []
        terminal = io.StringIO()
        monkeypatch.setattr(sys, "__stderr__", terminal)
        monkeypatch.setattr(sys, "excepthook", lambda *args: previous.append(args))
        tap.makeService(options)
        hook = sys.excepthook
        error = StartupError("cannot listen on 127.0.0.1:8123: Address already in use")
        with capturedLogs() as events:
            hook(StartupError, error, error.__traceback__)
            hook(AppLoadError, AppLoadError("[app] loader = wsgi: bad"), None)
        assert terminal.getvalue() == (
            "backtracweb cannot start: cannot listen on 127.0.0.1:8123: Address already in use\n"
            "backtracweb cannot start: [app] loader = wsgi: bad\n"
        )
        assert capsys.readouterr().err == ""
        assert previous == []
        assert events == []

    def test_excepthook_delegates(self, global_reactor, options, monkeypatch, capsys):
        """Other exceptions go to the hook that was installed before."""
        previous = []
        terminal = io.StringIO()
        monkeypatch.setattr(sys, "__stderr__", terminal)
        monkeypatch.setattr(sys, "excepthook", lambda *args: previous.append(args))
        tap.makeService(options)
        error = ValueError("a bug")
        sys.excepthook(ValueError, error, None)
        assert previous == [(ValueError, error, None)]
        assert terminal.getvalue() == ""
        assert capsys.readouterr().err == ""


# -- the plugin drop-in -----------------------------------------------------------------


def run_python(code: str, cwd: Path, **env: str) -> str:
    """Run C{code} in a fresh interpreter; return its standard output."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class TestPlugin:
    def test_dropin_layout(self):
        """
        The repository has the plugin module in C{twisted/plugins/} and no
        C{__init__.py} there or in C{twisted/}: those belong to Twisted.
        """
        assert (REPO / "twisted" / "plugins" / "backtracweb_plugin.py").is_file()
        assert not (REPO / "twisted" / "__init__.py").exists()
        assert not (REPO / "twisted" / "plugins" / "__init__.py").exists()

    def test_plugin_found(self, tmp_path):
        """
        In a fresh interpreter, twistd's plugin discovery finds exactly one
        L{IServiceMaker} named C{backtracweb}, made by L{backtracweb.tap}.
        """
        output = run_python(
            textwrap.dedent(
                """\
                from twisted.application.service import IServiceMaker
                from twisted.plugin import getPlugins
                makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "backtracweb"]
                print([(m.tapname, m.module, m.options.__module__) for m in makers])
                """
            ),
            cwd=tmp_path,
        )
        assert output == "[('backtracweb', 'backtracweb.tap', 'backtracweb.tap')]\n"

    def test_plugin_import_is_light(self, tmp_path):
        """
        In a fresh interpreter, importing the plugin module (as twistd does
        for every plugin on every run), installed or straight from the
        repository's file, imports neither L{backtracweb.tap} nor Django
        nor anything else of backtracweb, nor the reactor.
        """
        output = run_python(
            textwrap.dedent(
                f"""\
                import runpy, sys
                heavy = ("backtracweb", "backtracweb.tap", "django", "configobj",
                         "twisted.internet.reactor")
                import twisted.plugins.backtracweb_plugin as installed
                maker = installed.backtracweb
                print(maker.tapname, maker.module, [m for m in heavy if m in sys.modules])
                maker = runpy.run_path({str(REPO / "twisted" / "plugins" / "backtracweb_plugin.py")!r})["backtracweb"]
                print(maker.tapname, maker.module, [m for m in heavy if m in sys.modules])
                """
            ),
            cwd=tmp_path,
        )
        assert output == (
            "backtracweb backtracweb.tap []\n"
            "backtracweb backtracweb.tap []\n"
        )


# -- the worker pool itself -----------------------------------------------------------


class TestThreadPool:
    def test_grows_on_demand_up_to_max(self):
        """
        C{min} threads at start; a task that finds none idle gets a new
        thread, up to C{max}; beyond that tasks wait in the queue.
        """
        pool = make_pool(1, 3)
        pool.start()
        release = threading.Event()
        running = threading.Semaphore(0)

        def work():
            running.release()
            release.wait(WAIT)

        try:
            assert len(pool.threads) == 1
            for _ in range(5):
                pool.callInThread(work)
            for _ in range(3):
                assert running.acquire(timeout=WAIT)
            assert (len(pool.threads), pool.busy, pool.queued) == (3, 3, 2)
            release.set()
            for _ in range(2):
                assert running.acquire(timeout=WAIT)
        finally:
            release.set()
            pool.stop()
        assert pool.threads == [] and pool.busy == 0

    def test_tasks_queued_before_start_run_after(self):
        """Nothing runs before start (the fork); what was queued runs then."""
        pool = make_pool(0, 2)
        done = threading.Event()
        pool.callInThread(done.set)
        assert pool.threads == [] and pool.queued == 1
        pool.start()
        try:
            assert done.wait(WAIT)
        finally:
            pool.stop()

    def test_a_failing_task_is_logged_and_the_thread_goes_on(self):
        pool = make_pool(1, 1)
        done = threading.Event()
        with capturedLogs() as events:
            pool.start()
            try:
                pool.callInThread(lambda: 1 / 0)
                pool.callInThread(done.set)
                assert done.wait(WAIT)
            finally:
                pool.stop()
        [failure] = [e for e in events if e.get("log_failure")]
        assert failure["log_failure"].check(ZeroDivisionError)
        assert formatEvent(failure) == "a task in the application's thread pool failed"

    def test_adjusting_the_size_starts_and_stops_threads(self):
        """Reloading [threadpool]: a larger min starts threads, a smaller max retires some."""
        pool = make_pool(1, 4)
        pool.start()
        try:
            pool.adjustPoolsize(3, 4)
            assert len(pool.threads) == 3
            retired = list(pool.threads)
            pool.adjustPoolsize(1, 1)
            wait_for(lambda: len(pool.threads) == 1)
            assert (pool.min, pool.max) == (1, 1)
            ended = [t for t in retired if t not in pool.threads]
            for thread in ended:
                thread.join(WAIT)
            assert len(ended) == 2 and not any(t.is_alive() for t in ended)
        finally:
            pool.stop()


def wait_for(predicate) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


# -- calls from the pool's threads to the reactor ---------------------------------------


class TestReactorCalls:
    """Each C{callFromThread} that reaches the L{FakeReactor} is a wake-up of the reactor."""

    def test_one_wakeup_for_the_calls_made_meanwhile(self):
        """Calls made while the reactor has not yet run them wake it once; they run in order."""
        reactor, ran = FakeReactor(), []
        calls = ReactorCalls(reactor)
        for n in range(3):
            calls.callFromThread(ran.append, n)
        assert reactor.crossed == 1 and ran == []
        reactor.run_pending()
        assert ran == [0, 1, 2]
        calls.callFromThread(ran.append, 3)
        assert reactor.crossed == 2
        reactor.run_pending()
        assert ran == [0, 1, 2, 3]

    def test_a_call_made_while_running_wakes_it_again(self):
        """A call made by a call (or by a thread meanwhile) is not lost: it wakes the reactor again."""
        reactor, ran = FakeReactor(), []
        calls = ReactorCalls(reactor)
        calls.callFromThread(lambda: (ran.append("first"), calls.callFromThread(ran.append, "then")))
        reactor.run_one()
        assert ran == ["first", "then"] and reactor.crossed == 2
        reactor.run_one()  # the second wake-up finds nothing left
        assert ran == ["first", "then"]

    def test_a_failing_call_is_logged_and_the_others_run(self):
        """A call that raises is logged; the calls after it still run."""
        reactor, ran = FakeReactor(), []
        calls = ReactorCalls(reactor)
        calls.callFromThread(lambda: 1 / 0)
        calls.callFromThread(ran.append, "after")
        with capturedLogs() as events:
            reactor.run_pending()
        assert ran == ["after"]
        assert [formatEvent(e) for e in events] == [
            "a call from the application's thread pool failed"]
        assert events[0]["log_failure"].type is ZeroDivisionError

    def test_from_many_threads(self):
        """Calls from several threads at once all run, once each, in each thread's order."""
        reactor = FakeReactor()
        calls = ReactorCalls(reactor)
        ran: list = []

        def make(name: str) -> None:
            for n in range(500):
                calls.callFromThread(ran.append, (name, n))

        threads = [threading.Thread(target=make, args=(str(i),)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        reactor.run_pending()
        assert sorted(ran) == sorted((str(i), n) for i in range(4) for n in range(500))
        for i in range(4):
            assert [n for name, n in ran if name == str(i)] == list(range(500))
