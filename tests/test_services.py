"""
Unit tests for the service tree twistd runs: L{backtracweb.loader},
L{backtracweb.pool}, L{backtracweb.server}, L{backtracweb.tap} and the
twistd plugin drop-in.

No reactor runs.  Listening goes to a L{MemoryReactorClock}; the thread
pool is real, but whatever its stopping thread hands to the reactor with
C{callFromThread} is queued and run by the test, as the reactor thread
would; timeouts run on the same fake clock.
"""

from __future__ import annotations

import errno
import importlib
import io
import os
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import twisted.internet
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage
from twisted.web.wsgi import WSGIResource

from backtracweb import pool as pool_module
from backtracweb import tap
from backtracweb.config import Config, load_config
from backtracweb.errors import AppLoadError, StartupError
from backtracweb.loader import build_service
from backtracweb.pool import STOP_TIMEOUT, ThreadPoolService, make_pool
from backtracweb.resource import SiteRoot
from backtracweb.server import TrackingSite, WebService

REPO = Path(__file__).resolve().parents[1]
APP_MODULE = "btw_svc_app"
WAIT = 10.0
"""Seconds to wait for a real thread before failing the test."""


@pytest.fixture(autouse=True)
def no_global_reactor():
    """Fail any test that imports the global reactor."""
    before = "twisted.internet.reactor" in sys.modules
    yield
    if not before:
        assert "twisted.internet.reactor" not in sys.modules, "the global reactor was imported"


@pytest.fixture
def isolated_imports(tmp_path):
    """
    Restore C{sys.path} and forget the modules imported from C{tmp_path},
    since starting the web service imports the application.
    """
    saved_path = list(sys.path)
    before = set(sys.modules)
    importlib.invalidate_caches()
    yield
    sys.path[:] = saved_path
    root = str(tmp_path)
    for name in set(sys.modules) - before:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(root):
            del sys.modules[name]
    for key in [k for k in sys.path_importer_cache if str(k).startswith(root)]:
        del sys.path_importer_cache[key]


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

    def runFromThreads(self, until: Deferred, timeout: float = WAIT) -> None:
        """Run calls from other threads until C{until} has fired."""
        while not until.called:
            self.runOneFromThread(timeout)


class FakeTransport:
    def __init__(self) -> None:
        self.lost = 0

    def loseConnection(self) -> None:
        self.lost += 1


class FakeProtocol:
    def __init__(self, transport) -> None:
        self.transport = transport


def result_of(d: Deferred) -> list:
    """The results C{d} has fired with so far, as a list to check."""
    results: list = []
    d.addBoth(results.append)
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
    source: str = APPLICATION,
    min_threads: int = 2,
    max_threads: int = 7,
) -> Config:
    """
    Write a site into C{directory}: an application module, a static
    directory and the INI file naming them; return the loaded L{Config}.
    """
    (directory / "app").mkdir(exist_ok=True)
    (directory / "app" / f"{APP_MODULE}.py").write_text(source)
    (directory / "static").mkdir(exist_ok=True)
    path = directory / "site.ini"
    path.write_text(
        textwrap.dedent(
            f"""\
            [server]
            port = {port}
            interface = {interface}

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
    )
    return load_config(str(path))


def parts(top: MultiService) -> tuple[ThreadPoolService, WebService]:
    return top.getServiceNamed("threadpool"), top.getServiceNamed("web")


# -- building the tree ------------------------------------------------------------


class TestBuildService:
    def test_tree(self, tmp_path, isolated_imports):
        """
        The tree is a L{MultiService} named C{backtracweb} holding the
        thread pool service then the web service, sharing one pool sized
        from C{[threadpool]}, with the site routing through a L{SiteRoot}.
        """
        reactor = ThreadingMemoryReactor()
        top = build_service(site_config(tmp_path), reactor)
        assert isinstance(top, MultiService)
        assert top.name == "backtracweb"
        children = list(top)
        assert [child.name for child in children] == ["threadpool", "web"]
        pool_service, web = children
        assert isinstance(pool_service, ThreadPoolService)
        assert isinstance(web, WebService)
        assert (pool_service.pool.min, pool_service.pool.max) == (2, 7)
        assert web._pool is pool_service.pool
        assert isinstance(web.factory, TrackingSite)
        assert web.factory.reactor is reactor
        assert isinstance(web.root, SiteRoot)
        assert web.root.app is None
        assert web.address == "127.0.0.1:8123"

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


# -- privilegedStartService and startService ------------------------------------


class TestStart:
    @pytest.mark.parametrize(
        "interface, address, endpoint_type",
        [
            ("127.0.0.1", "127.0.0.1:8123", TCP4ServerEndpoint),
            ("0.0.0.0", "0.0.0.0:8123", TCP4ServerEndpoint),
            ("::1", "[::1]:8123", TCP6ServerEndpoint),
            ("::", "[::]:8123", TCP6ServerEndpoint),
        ],
    )
    def test_privileged_start_binds(
        self, tmp_path, isolated_imports, interface, address, endpoint_type
    ):
        """
        C{privilegedStartService} listens on the configured interface and
        port, IPv4 or IPv6, and still starts no thread and imports nothing.
        """
        reactor = ThreadingMemoryReactor()
        top = build_service(site_config(tmp_path, interface=interface), reactor)
        pool_service, web = parts(top)
        threads = threading.active_count()
        top.privilegedStartService()
        assert reactor.tcpServers == [(8123, web.factory, 50, interface)]
        assert isinstance(web.endpoint, endpoint_type)
        assert web.address == address
        assert threading.active_count() == threads
        assert pool_service.pool.started is False
        assert pool_service.pool.threads == []
        assert APP_MODULE not in sys.modules
        assert web.root.app is None

    def test_start_service(self, tmp_path, isolated_imports):
        """
        C{startService} starts C{min} daemon worker threads, imports the
        application and installs it on the site root as a L{WSGIResource}
        running in the pool; stopping the tree joins the workers.
        """
        reactor = ThreadingMemoryReactor()
        top = build_service(site_config(tmp_path, min_threads=3), reactor)
        pool_service, web = parts(top)
        top.privilegedStartService()
        try:
            top.startService()
            pool = pool_service.pool
            assert pool.started is True
            assert len(pool.threads) == 3
            assert all(t.daemon and t.is_alive() for t in pool.threads)
            assert APP_MODULE in sys.modules
            assert isinstance(web.root.app, WSGIResource)
            assert web.root.app._application is sys.modules[APP_MODULE].application
            assert web.root.app._threadpool is pool
            assert web.root.app._reactor is reactor
            assert top.running and pool_service.running and web.running
            assert len(reactor.tcpServers) == 1

            stopping = top.stopService()
            reactor.runFromThreads(stopping)
            assert result_of(stopping) == [[(True, None), (True, None)]]
            assert not any(t.is_alive() for t in pool.threads)
            assert not (top.running or pool_service.running or web.running)
        finally:
            stop_pool(pool_service.pool)
            join_stop_threads()

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
        top.startService()
        try:
            [(_, factory, _, _)] = reactor.tcpServers
            channel = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 51000))
            transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 51000))
            channel.makeConnection(transport)
            channel.dataReceived(b"GET /a/b?x=1 HTTP/1.0\r\nHost: example.com\r\n\r\n")
            while not transport.disconnecting:
                reactor.runOneFromThread()
            head, _, body = transport.value().partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200 OK\r\n")
            assert body.startswith(b"/a/b?x=1 in PoolThread-backtracweb-")
        finally:
            stopping = top.stopService()
            reactor.runFromThreads(stopping)
            stop_pool(pool_service.pool)
            join_stop_threads()

    def test_listen_failure(self, tmp_path, isolated_imports):
        """
        A port that cannot be bound is a L{StartupError} naming the address
        and the system's reason, not a L{CannotListenError} traceback.
        """
        failure = CannotListenError(
            "127.0.0.1", 8123, OSError(errno.EADDRINUSE, "Address already in use")
        )
        top = build_service(site_config(tmp_path), RaisingMemoryReactor(listenException=failure))
        with pytest.raises(StartupError) as caught:
            top.privilegedStartService()
        assert type(caught.value) is StartupError
        assert str(caught.value) == "cannot listen on 127.0.0.1:8123: Address already in use"
        assert caught.value.__suppress_context__

    def test_listen_failure_ipv6(self, tmp_path, isolated_imports):
        """The IPv6 address in the message is bracketed, as in a URL."""
        failure = CannotListenError(
            "::1", 8123, OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        )
        top = build_service(
            site_config(tmp_path, interface="::1"), RaisingMemoryReactor(listenException=failure)
        )
        with pytest.raises(StartupError) as caught:
            top.privilegedStartService()
        assert str(caught.value) == "cannot listen on [::1]:8123: Cannot assign requested address"

    def test_application_import_fails(self, tmp_path, isolated_imports):
        """
        An application that fails to import is an L{AppLoadError} from
        C{startService} naming the C{[app]} settings, the exception and its
        place; the root keeps answering 503 and the web service is not
        marked running.
        """
        reactor = ThreadingMemoryReactor()
        config = site_config(tmp_path, source="raise RuntimeError('no database')\n")
        top = build_service(config, reactor)
        pool_service, web = parts(top)
        top.privilegedStartService()
        try:
            with pytest.raises(AppLoadError) as caught:
                top.startService()
        finally:
            stop_pool(pool_service.pool)
        module = tmp_path / "app" / f"{APP_MODULE}.py"
        assert str(caught.value) == (
            f"RuntimeError: no database ({module}, line 1); while loading the application "
            f"([app] loader = wsgi, application = '{APP_MODULE}:application')"
        )
        assert web.root.app is None
        assert not web.running


# -- ThreadPoolService --------------------------------------------------------------


class TestThreadPoolService:
    def test_make_pool(self):
        """
        L{make_pool} sizes and names the pool, starts nothing, and makes
        daemon threads.
        """
        threads = threading.active_count()
        pool = make_pool(1, 4)
        assert (pool.min, pool.max, pool.name) == (1, 4, "backtracweb")
        assert pool.started is False
        assert pool.threads == []
        assert pool.threadFactory(target=lambda: None).daemon is True
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
        try:
            with capturedLogs() as events:
                results = result_of(service.stopService())
                reactor.advance(STOP_TIMEOUT - 0.5)
                assert results == []
                reactor.advance(0.5)
            assert results == [None]
            warnings = [e for e in events if e["log_level"] is LogLevel.warn]
            assert [formatEvent(e) for e in warnings] == [
                f"1 worker thread(s) still busy after {STOP_TIMEOUT} seconds; "
                "stopping without them"
            ]
            assert STOP_TIMEOUT == 10.0
            assert all(t.daemon for t in pool.threads)
        finally:
            release.set()
        reactor.runOneFromThread()  # the late "joined" call is harmless
        assert results == [None]
        join_stop_threads()
        for thread in pool.threads:
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
        assert service._stop_timeout == pool_module.STOP_TIMEOUT


# -- the web service ----------------------------------------------------------------


class TestWebService:
    def test_stop_closes_connections(self, tmp_path, isolated_imports):
        """
        Stopping the web service stops listening and closes every open
        connection of the site; protocols without a transport are skipped.
        """
        reactor = ThreadingMemoryReactor()
        top = build_service(site_config(tmp_path), reactor)
        _, web = parts(top)
        web.privilegedStartService()
        web.startService()
        transports = [FakeTransport(), FakeTransport()]
        protocols = [FakeProtocol(t) for t in transports] + [FakeProtocol(None)]
        for protocol in protocols:
            web.factory.connections.add(protocol)
        results = result_of(web.stopService())
        assert results == [None]
        assert [t.lost for t in transports] == [1, 1]
        assert not web.running

    def test_site_tracks_connections(self):
        """
        L{TrackingSite.buildProtocol} remembers each protocol it builds,
        weakly: a closed and forgotten connection is not kept alive.
        """
        import gc

        site = TrackingSite(SiteRoot(()), reactor=ThreadingMemoryReactor())
        protocol = site.buildProtocol(IPv4Address("TCP", "192.0.2.1", 50000))
        assert list(site.connections) == [protocol]
        del protocol
        gc.collect()
        assert list(site.connections) == []

    def test_is_endpoint_service(self, tmp_path, isolated_imports):
        """The web service reports bind errors synchronously (for twistd to exit)."""
        _, web = parts(build_service(site_config(tmp_path), ThreadingMemoryReactor()))
        assert isinstance(web, StreamServerEndpointService)
        assert web._raiseSynchronously is True
        assert web.factory.displayTracebacks is False


# -- the twistd plugin's options and service maker --------------------------------------


class TestTap:
    def test_config_required(self):
        """Without C{--config} the options are a usage error saying so."""
        with pytest.raises(usage.UsageError) as caught:
            tap.Options().parseOptions([])
        assert str(caught.value) == "--config FILE is required: the INI file describing the site"

    def test_bad_file(self, tmp_path):
        """
        A file with problems is a usage error carrying every problem line,
        each naming the file.
        """
        path = tmp_path / "bad.ini"
        path.write_text(
            "[server]\nport = 0\ninterface = localhost\n"
            "[threadpool]\nmin = 5\nmax = 2\n"
            "[app]\nloader = wsgi\napplication = btw_nowhere:app\n"
        )
        with pytest.raises(usage.UsageError) as caught:
            tap.Options().parseOptions(["--config", str(path)])
        assert str(caught.value).splitlines() == [
            "4 problems in the configuration:",
            f"  {path}: [server] interface = 'localhost': expected an IPv4 or IPv6 address "
            "such as 127.0.0.1, 0.0.0.0 or ::1",
            f"  {path}: [server] port = '0': expected an integer between 1 and 65535",
            f"  {path}: [threadpool] min = 5 is greater than max = 2; min must not exceed max",
            f"  {path}: [app] application = 'btw_nowhere:app': module btw_nowhere not found "
            "in pythonpath or sys.path; pythonpath is empty",
        ]

    def test_missing_file(self, tmp_path):
        """A file that does not exist is a usage error naming it."""
        path = tmp_path / "nowhere.ini"
        with pytest.raises(usage.UsageError) as caught:
            tap.Options().parseOptions(["-c", str(path)])
        assert str(caught.value) == (
            f"{path}: cannot read the configuration file: No such file or directory"
        )

    def test_good_file(self, tmp_path, isolated_imports):
        """A good file is loaded into C{options.loaded}, importing nothing."""
        site_config(tmp_path)
        options = tap.Options()
        options.parseOptions(["-c", str(tmp_path / "site.ini")])
        assert isinstance(options.loaded, Config)
        assert options.loaded.path == str(tmp_path / "site.ini")
        assert (options.loaded.port, options.loaded.interface) == (8123, "127.0.0.1")
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
        assert web.factory.reactor is global_reactor
        assert global_reactor.tcpServers == []
        assert threading.active_count() == threads
        assert APP_MODULE not in sys.modules

    def test_excepthook_startup_error(self, global_reactor, options, monkeypatch, capsys):
        """
        The exception hook makeService installs prints a L{StartupError}
        (or L{AppLoadError}) as one line on the process's original stderr
        (twistd may have redirected C{sys.stderr} to the log), without a
        traceback, logs it as critical, and does not call the previous hook.
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
        assert [(e["log_level"], formatEvent(e)) for e in events] == [
            (
                LogLevel.critical,
                "backtracweb cannot start: cannot listen on 127.0.0.1:8123: "
                "Address already in use",
            ),
            (LogLevel.critical, "backtracweb cannot start: [app] loader = wsgi: bad"),
        ]

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
