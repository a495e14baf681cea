"""
Unit tests for what L{BacktracService} does on signals: reload the
configuration (SIGHUP), reopen the logs (SIGUSR1), and stop (SIGTERM,
SIGINT; a second one cuts the drain short).

No reactor runs and no signal is sent: the service tree is built on a
L{MemoryReactorClock} that also records C{callFromThread} and C{stop}, the
actions are called as the reactor loop would call them, and the signal
handlers the service installs are saved and restored around each test.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from pathlib import Path

import pytest
from helpers import Client
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

from backtracweb.config.settings import load_config
from backtracweb.process.service import BacktracService
from backtracweb.process.tree import build_service
from backtracweb.twisted_internals import twistd_log_file

APP_MODULE = "btw_reload_app"
WAIT = 10.0
# Starting a service replaces the process's signal handlers and imports the application.
pytestmark = pytest.mark.usefixtures("saved_signal_handlers", "isolated_imports")


class FakeReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that queues C{callFromThread} calls for the
    test to run, and counts C{stop} calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fromThreads: queue.Queue = queue.Queue()
        self.stops = 0

    def callFromThread(self, f, *args, **kwargs) -> None:
        self.fromThreads.put((f, args, kwargs))

    def runFromThreads(self, until, timeout: float = WAIT) -> list:
        """
        Run calls from other threads until C{until} has a result (not merely
        been called: it may be waiting on a Deferred its callbacks returned).
        """
        results: list = []
        until.addBoth(lambda result: (results.append(result), result)[1])
        while not results:
            f, args, kwargs = self.fromThreads.get(timeout=timeout)
            f(*args, **kwargs)
        return results

    def stop(self) -> None:
        self.stops += 1
        super().stop()


BASE = {
    "server": {"port": "8123", "interface": "127.0.0.1"},
    "threadpool": {"min": "2", "max": "10"},
    "app": {"loader": "wsgi", "pythonpath": "app", "application": f"{APP_MODULE}:application"},
    "log": {"access_log": "logs/access.log"},
    "static": {"/static": "static"},
}


def write_config(directory: Path, **changes: dict) -> Path:
    """
    Write the site's INI file: L{BASE} with C{changes} merged per section
    (a value of None removes the key).
    """
    sections = {name: dict(values) for name, values in BASE.items()}
    for name, values in changes.items():
        section = sections.setdefault(name, {})
        for key, value in values.items():
            if value is None:
                section.pop(key, None)
            else:
                section[key] = value
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
    path = directory / "site.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def site_dir(tmp_path) -> Path:
    """A site: the application module, static and media directories, a log directory."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / f"{APP_MODULE}.py").write_text(
        "def application(environ, start_response):\n    return []\n\nother = application\n"
    )
    for name in ("static", "media", "logs"):
        (tmp_path / name).mkdir()
    return tmp_path


def build(site_dir: Path, **changes) -> tuple[BacktracService, FakeReactor, Path]:
    """The service tree for the site, listening on the fake reactor (as twistd has it)."""
    path = write_config(site_dir, **changes)
    reactor = FakeReactor()
    service = build_service(load_config(str(path)), reactor)
    service.privilegedStartService()
    return service, reactor, path


def messages(events) -> list[tuple[LogLevel, str]]:
    return [(e["log_level"], formatEvent(e)) for e in events]


def when(service: BacktracService) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(service.config.loaded_at))


def spy_on_pool(service: BacktracService, monkeypatch) -> list:
    """Record C{adjustPoolsize} calls on the service's pool, and let them through."""
    calls = []
    pool = service.pool.pool
    real = pool.adjustPoolsize

    def adjust(minimum=None, maximum=None):
        calls.append((minimum, maximum))
        real(minimum, maximum)

    monkeypatch.setattr(pool, "adjustPoolsize", adjust)
    return calls


# -- reload -----------------------------------------------------------------------------


class TestReload:
    def test_pool_size(self, site_dir, monkeypatch):
        """
        A valid change of C{[threadpool] max} resizes the pool with
        C{adjustPoolsize} and logs what changed.
        """
        service, _, path = build(site_dir)
        calls = spy_on_pool(service, monkeypatch)
        write_config(site_dir, threadpool={"max": "3"})
        with capturedLogs() as events:
            service.reload("SIGHUP")
        assert calls == [(2, 3)]
        assert (service.pool.pool.min, service.pool.pool.max) == (2, 3)
        assert messages(events) == [
            (LogLevel.info, f"received SIGHUP: reloading {path}"),
            (LogLevel.info, "reload: done; changed: [threadpool] max 10 -> 3"),
        ]
        assert service.config.max_threads == 3

    def test_settings_swapped(self, site_dir):
        """
        Static mappings, limits and the access log change together: the site
        gets a new settings value, the old access log is closed and lines go
        to the new one.
        """
        service, _, path = build(site_dir)
        site = service.web.site
        old = site.settings
        old_log = old.access_log
        assert old_log._fd is not None
        write_config(
            site_dir,
            log={"access_log": "logs/new.log", "access_format": "{status}"},
            limits={"max_body": "10M", "idle_timeout": "5"},
            static={"/media": "media"},
        )
        with capturedLogs() as events:
            service.reload("SIGHUP")
        new = site.settings
        assert new is not old
        assert old_log._fd is None  # closed
        assert new.access_log.destination == str(site_dir / "logs" / "new.log")
        assert new.access_log.template == "{status}"
        assert (new.limits.max_body, new.limits.idle_timeout) == (10 * 1024 * 1024, 5.0)
        assert sorted(segments for segments, _ in new.routes) == [[b"media"], [b"static"]]
        assert {d.path for _, d in new.routes} == {os.fsencode(site_dir / "static"),
                                                   os.fsencode(site_dir / "media")}
        assert messages(events)[-1] == (
            LogLevel.info,
            f"reload: done; changed: [log] access_log {site_dir}/logs/access.log -> "
            f"{site_dir}/logs/new.log, [log] access_format combined -> {{status}}, "
            "[limits] max_body 1073741824 -> 10485760, [limits] idle_timeout 60.0 -> 5.0, "
            f"[static] /media (none) -> {site_dir}/media",
        )
        new.access_log.close()

    def test_requests_get_new_limits(self, site_dir):
        """Requests read after a reload are held to the new limits."""
        service, _, _ = build(site_dir)
        write_config(site_dir, limits={"max_headers": "7", "max_header_bytes": "2K"})
        with capturedLogs():
            service.reload("SIGHUP")
        client = Client(service.web.site)
        with capturedLogs() as events:
            client.get(b"/", *(b"X-%d: v" % n for n in range(7)))
        assert client.statuses() == [431]
        assert "more header fields than [limits] max_headers = 7" in formatEvent(events[0])
        service.web.site.settings.access_log.close()

    def test_nothing_changed(self, site_dir):
        """Reloading an unchanged file says so, and still reopens the access log."""
        service, _, _ = build(site_dir)
        old = service.web.site.settings
        with capturedLogs() as events:
            service.reload("SIGHUP")
        assert messages(events)[-1] == (LogLevel.info, "reload: done; changed: nothing")
        assert service.web.site.settings is not old
        assert old.access_log._fd is None
        service.web.site.settings.access_log.close()

    def test_invalid_file(self, site_dir, monkeypatch):
        """
        A file with problems logs every one of them and changes nothing:
        same settings object, same pool size, same configuration.
        """
        service, _, path = build(site_dir)
        calls = spy_on_pool(service, monkeypatch)
        settings, config = service.web.site.settings, service.config
        write_config(
            site_dir,
            server={"port": "eighty"},
            threadpool={"max": "0"},
            limits={"max_bodyy": "1M"},
        )
        with capturedLogs() as events:
            service.reload("SIGHUP")
        assert messages(events) == [
            (LogLevel.info, f"received SIGHUP: reloading {path}"),
            (LogLevel.error, f"reload: {path}: [server] port = 'eighty': expected an integer "
                             "between 1 and 65535"),
            (LogLevel.error, f"reload: {path}: [threadpool] max = '0': expected an integer of "
                             "at least 1"),
            (LogLevel.error, f"reload: {path}: [limits] max_bodyy is not a known key (did you "
                             "mean max_body?); known keys: max_body, max_request_line, "
                             "max_header_field, max_header_bytes, max_headers, idle_timeout, "
                             "send_timeout, max_queue, max_message, websocket_ping"),
            (LogLevel.error, f"reload: 3 problem(s) in the configuration; nothing changed, "
                             f"still serving with {path} as loaded at {when(service)}"),
        ]
        assert service.web.site.settings is settings
        assert settings.access_log._fd is not None  # still open
        assert service.config is config
        assert (service.pool.pool.min, service.pool.pool.max) == (2, 10)
        assert calls == []

    def test_missing_file(self, site_dir):
        """A file that has gone is one problem; nothing changes."""
        service, _, path = build(site_dir)
        settings = service.web.site.settings
        path.unlink()
        with capturedLogs() as events:
            service.reload("SIGHUP")
        assert messages(events)[1:] == [
            (LogLevel.error, f"reload: {path}: cannot read the configuration file: "
                             "No such file or directory"),
            (LogLevel.error, f"reload: 1 problem(s) in the configuration; nothing changed, "
                             f"still serving with {path} as loaded at {when(service)}"),
        ]
        assert service.web.site.settings is settings

    def test_access_log_cannot_open(self, site_dir):
        """
        A valid file whose new access log cannot be opened changes nothing;
        the reason is logged.
        """
        service, _, path = build(site_dir)
        settings = service.web.site.settings
        os.symlink(site_dir / "nowhere" / "x.log", site_dir / "logs" / "dangling.log")
        write_config(site_dir, threadpool={"max": "3"}, log={"access_log": "logs/dangling.log"})
        with capturedLogs() as events:
            service.reload("SIGHUP")
        assert messages(events)[1:] == [
            (LogLevel.error, f"reload: {path}: [log] access_log = "
                             f"'{site_dir}/logs/dangling.log': cannot open it for appending: "
                             "No such file or directory"),
            (LogLevel.error, f"reload: 1 problem(s) in the configuration; nothing changed, "
                             f"still serving with {path} as loaded at {when(service)}"),
        ]
        assert service.web.site.settings is settings
        assert service.pool.pool.max == 10

    def test_restart_keys_not_applied(self, site_dir):
        """
        A changed port or C{[app]} key is logged as needing a restart and
        is not applied: the listening endpoints and the application stay.
        """
        service, _, path = build(site_dir)
        listening = [s.description for s in service.web]
        write_config(site_dir, server={"port": "9000"}, app={"application": f"{APP_MODULE}:other"})
        with capturedLogs() as events:
            service.reload("SIGHUP")
        assert messages(events) == [
            (LogLevel.info, f"received SIGHUP: reloading {path}"),
            (LogLevel.warn, "reload: [server] port changed from 8123 to 9000; this takes a "
                            "restart, so the running server keeps 8123"),
            (LogLevel.warn, f"reload: [app] application changed from {APP_MODULE}:application "
                            f"to {APP_MODULE}:other; this takes a restart, so the running "
                            f"server keeps {APP_MODULE}:application"),
            (LogLevel.info, "reload: done; changed: nothing"),
        ]
        assert [s.description for s in service.web] == listening
        assert service.web.application.container is None  # (the service never started)
        service.web.site.settings.access_log.close()

    def test_environment_changes_need_a_restart_and_stay_masked(self, site_dir):
        """
        A changed, added or removed C{[env]} variable needs a restart; the
        log never shows the value of one whose name looks secret.
        """
        service, _, _ = build(site_dir, env={"SECRET_KEY": "old-secret", "MYSITE_MODE": "a",
                                             "GONE": "x"})
        write_config(site_dir, env={"SECRET_KEY": "new-secret", "MYSITE_MODE": "b",
                                    "GONE": None, "ADDED": "y"})
        with capturedLogs() as events:
            service.reload("SIGHUP")
        warnings = [text for level, text in messages(events) if level is LogLevel.warn]
        keeps = "this takes a restart, so the running server keeps"
        assert warnings == [
            f"reload: [env] SECRET_KEY changed from ******** to ********; {keeps} ********",
            f"reload: [env] MYSITE_MODE changed from a to b; {keeps} a",
            f"reload: [env] ADDED changed from (none) to y; {keeps} (none)",
            f"reload: [env] GONE changed from x to (none); {keeps} x",
        ]
        assert "secret" not in "".join(text for _, text in messages(events))
        service.web.site.settings.access_log.close()

    def test_restart_warning_repeats_until_restart(self, site_dir):
        """
        The restart warning compares with what the server started with: it
        repeats on the next reload, and stops once the file matches again.
        """
        service, _, _ = build(site_dir)
        write_config(site_dir, server={"port": "9000"})
        with capturedLogs() as events:
            service.reload("SIGHUP")
            service.reload("SIGHUP")
            write_config(site_dir)
            service.reload("SIGHUP")
        warnings = [text for level, text in messages(events) if level is LogLevel.warn]
        assert warnings == [
            "reload: [server] port changed from 8123 to 9000; this takes a restart, so the "
            "running server keeps 8123"
        ] * 2
        service.web.site.settings.access_log.close()

    def test_listen_change_needs_restart(self, site_dir):
        """Changing C{listen} also needs a restart."""
        service, _, _ = build(site_dir)
        write_config(site_dir, server={"port": None, "interface": None, "listen": "tcp:9000"})
        with capturedLogs() as events:
            service.reload("SIGHUP")
        assert (
            LogLevel.warn,
            "reload: [server] listen changed from (empty) to tcp:9000; this takes a restart, "
            "so the running server keeps (empty)",
        ) in messages(events)
        service.web.site.settings.access_log.close()

    def test_reload_while_stopping(self, site_dir):
        """Once stopping, a reload does nothing but say so."""
        service, reactor, _ = build(site_dir)
        with capturedLogs():
            stopping = service.stopService()
            reactor.runFromThreads(stopping)
        settings = service.web.site.settings
        write_config(site_dir, threadpool={"max": "3"})
        with capturedLogs() as events:
            service.reload("SIGHUP")
        assert messages(events) == [(LogLevel.info, "received SIGHUP while stopping: not reloading")]
        assert service.web.site.settings is settings
        assert service.pool.pool.max == 10
        _join_stop_threads()


def _join_stop_threads() -> None:
    for thread in threading.enumerate():
        if thread.name == "backtracweb-pool-stop":
            thread.join(WAIT)


# -- reopening logs -----------------------------------------------------------------------


def twistd_rotate_handler(log_file: LogFile):
    """A SIGUSR1 handler built as twistd builds its C{rotateLog}: a closure over the file."""

    def rotateLog(signal, frame):
        from twisted.internet import reactor  # never run by these tests

        reactor.callFromThread(log_file.rotate)

    return rotateLog


class FakeLogFile:
    """Stands in for twistd's L{LogFile}: its path, and a record of its reopening."""

    def __init__(self, path: Path, reopened: list) -> None:
        self.path = str(path)
        self._reopened = reopened

    def reopen(self) -> None:
        self._reopened.append(True)


class TestReopenLogs:
    def test_reopens_both(self, site_dir):
        """
        After logrotate renamed them, the access log and twistd's log file
        are reopened at their paths; the old files keep their lines.
        """
        service, _, _ = build(site_dir)
        access = site_dir / "logs" / "access.log"
        log_file = LogFile.fromFullPath(str(site_dir / "logs" / "twistd.log"))
        service._twistd_log = twistd_log_file(twistd_rotate_handler(log_file))
        try:
            log_file.write("before\n")
            log_file.flush()
            os.rename(access, site_dir / "logs" / "access.log.1")
            os.rename(site_dir / "logs" / "twistd.log", site_dir / "logs" / "twistd.log.1")
            with capturedLogs() as events:
                service.reopen_logs("SIGUSR1")
            assert messages(events) == [(LogLevel.info, "received SIGUSR1: log files reopened")]
            log_file.write("after\n")
            log_file.flush()
            assert (site_dir / "logs" / "twistd.log").read_text() == "after\n"
            assert (site_dir / "logs" / "twistd.log.1").read_text() == "before\n"
            assert access.exists()
            assert os.stat(access).st_ino == os.fstat(service.web.site.settings.access_log._fd).st_ino
        finally:
            log_file.close()
            service.web.site.settings.access_log.close()

    def test_without_twistd_log(self, site_dir):
        """Without twistd's log file (C{-n}), only the access log is reopened."""
        service, _, _ = build(site_dir)
        old_fd = service.web.site.settings.access_log._fd
        with capturedLogs() as events:
            service.reopen_logs("SIGUSR1")
        assert messages(events) == [(LogLevel.info, "received SIGUSR1: log files reopened")]
        assert service.web.site.settings.access_log._fd != old_fd
        service.web.site.settings.access_log.close()

    def test_access_log_reopen_fails(self, site_dir):
        """
        When the access log cannot be reopened the error is logged and the
        old file stays in use; twistd's log is still reopened.
        """
        service, _, _ = build(site_dir)
        access_log = service.web.site.settings.access_log
        old_fd = access_log._fd
        reopened = []
        service._twistd_log = FakeLogFile(site_dir / "twistd.log", reopened)
        os.rename(site_dir / "logs", site_dir / "logs.old")
        with capturedLogs() as events:
            service.reopen_logs("SIGUSR1")
        assert messages(events) == [
            (LogLevel.error, "received SIGUSR1: cannot reopen the access log, still writing to "
                             "the old file: [Errno 2] No such file or directory: "
                             f"'{site_dir}/logs/access.log'"),
        ]
        assert access_log._fd == old_fd
        assert reopened == [True]
        access_log.close()

    def test_twistd_log_cannot_be_reopened(self, site_dir):
        """
        When twistd's log file cannot be opened at its path (after C{--uid},
        the daemon may not create it there), it is not closed: the error is
        logged, naming the path, and the old file stays in use; the access
        log is still reopened.
        """
        service, _, _ = build(site_dir)
        access_log = service.web.site.settings.access_log
        old_fd = access_log._fd
        reopened = []
        missing = site_dir / "gone" / "twistd.log"
        service._twistd_log = FakeLogFile(missing, reopened)
        try:
            with capturedLogs() as events:
                service.reopen_logs("SIGUSR1")
            errors = [m for level, m in messages(events) if level is LogLevel.error]
            assert errors == [
                f"received SIGUSR1: cannot reopen twistd's log file {missing} (running as uid "
                f"{os.getuid()}): No such file or directory; still writing to the old file"
            ]
            assert reopened == []
            assert access_log._fd != old_fd
        finally:
            access_log.close()

    def test_signal_handler_finds_twistd_log(self, site_dir, saved_signal_handlers):
        """
        Installing the SIGUSR1 handler takes twistd's log file from the
        handler it replaces; each installed handler defers its action to
        the reactor loop; C{restore_signal_handlers} puts the previous
        handlers back.
        """
        service, reactor, _ = build(site_dir)
        log_file = LogFile.fromFullPath(str(site_dir / "logs" / "twistd.log"))
        rotate = twistd_rotate_handler(log_file)
        try:
            signal.signal(signal.SIGUSR1, rotate)
            service.install_signal_handlers(signal.SIGHUP, signal.SIGUSR1)
            assert service._twistd_log is log_file
            signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
            signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
            queued = [reactor.fromThreads.get_nowait() for _ in range(2)]
            assert [(f.__name__, args) for f, args, _ in queued] == [
                ("reload", ("SIGHUP",)),
                ("reopen_logs", ("SIGUSR1",)),
            ]
            assert signal.getsignal(signal.SIGTERM) is saved_signal_handlers[signal.SIGTERM]
            service.restore_signal_handlers()
            assert signal.getsignal(signal.SIGUSR1) is rotate
            assert signal.getsignal(signal.SIGHUP) is saved_signal_handlers[signal.SIGHUP]
        finally:
            log_file.close()
            service.web.site.settings.access_log.close()


# -- stopping ------------------------------------------------------------------------------


class Slow:
    """An application that answers only when the test says."""

    in_flight = 0

    def __init__(self) -> None:
        self.pending: list = []

    def handle(self, request):
        self.pending.append(request)


class TestStop:
    def test_stop_then_cut_short(self, site_dir):
        """
        The first stop request stops the reactor (which then stops the
        service, draining); one while draining cuts the requests in flight
        short instead of stopping the reactor again.
        """
        service, reactor, _ = build(site_dir)
        site = service.web.site
        site.resource.app = Slow()
        peer = IPv4Address("TCP", "198.51.100.4", 40000)
        channel = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /report HTTP/1.1\r\nHost: x\r\n\r\n")

        with capturedLogs() as events:
            service.stop("SIGTERM")
        assert reactor.stops == 1
        assert messages(events) == [(LogLevel.info, "received SIGTERM: stopping")]

        with capturedLogs() as events:
            stopping = service.stopService()  # what the reactor does once stopped
        assert site.draining and not transport.disconnected
        assert messages(events) == [
            (LogLevel.info, "stopping: no new connections; waiting up to 30 s for 1 request(s) "
                            "in flight"),
        ]
        with capturedLogs() as events:
            service.stop("SIGINT")
        assert reactor.stops == 1
        assert messages(events) == [
            (LogLevel.warn, "received SIGINT while stopping: cutting requests in flight short"),
            (LogLevel.warn, "stopping: cut short GET /report from 198.51.100.4"),
        ]
        assert transport.disconnected
        with capturedLogs():
            channel.connectionLost(Failure(ConnectionAborted()))
            reactor.runFromThreads(stopping)
        assert site.settings.access_log._fd is None  # closed once stopped
        _join_stop_threads()

    def test_two_stops_before_shutdown(self, site_dir):
        """Two stop requests in a row stop the reactor once."""
        service, reactor, _ = build(site_dir)
        with capturedLogs():
            service.stop("SIGTERM")
            service.stop("SIGINT")
        assert reactor.stops == 1
        service.web.site.settings.access_log.close()

    def test_stop_service_order(self, site_dir, saved_signal_handlers):
        """
        Stopping drains the site, then stops the pool, then closes the
        access log.  The service's signal handlers stay installed while it
        stops: a SIGHUP then is refused rather than killing the daemon.
        """
        service, reactor, _ = build(site_dir)
        order = []
        site = service.web.site
        real_drain = site.drain
        site.drain = lambda timeout: (order.append(("drain", timeout)), real_drain(timeout))[1]
        real_pool_stop = service.pool.stopService
        service.pool.stopService = lambda: (order.append("pool"), real_pool_stop())[1]
        service.install_signal_handlers(signal.SIGHUP, signal.SIGUSR1)
        with capturedLogs():
            stopping = service.stopService()
            results = reactor.runFromThreads(stopping)
        assert results == [None]
        assert order == [("drain", 30.0), "pool"]
        assert site.settings.access_log._fd is None
        assert not service.running
        handler = signal.getsignal(signal.SIGHUP)
        assert handler is not saved_signal_handlers[signal.SIGHUP]
        handler(signal.SIGHUP, None)
        f, args, kwargs = reactor.fromThreads.get_nowait()
        with capturedLogs() as events:
            f(*args, **kwargs)
        assert messages(events) == [(LogLevel.info, "received SIGHUP while stopping: not reloading")]
        service.restore_signal_handlers()
        _join_stop_threads()

    @pytest.mark.parametrize("finish_at, pool_timeout", [(None, 30.0), (20.0, 10.0), (30.0, 0.5)])
    def test_pool_waits_only_until_graceful_deadline(self, site_dir, finish_at, pool_timeout):
        """
        The pool's workers are waited for only until C{graceful_timeout}
        after the stop began (at least half a second): C{graceful_timeout}
        bounds how long stopping takes.
        """
        service, reactor, _ = build(site_dir)
        site = service.web.site
        site.resource.app = Slow()
        if finish_at is not None:
            peer = IPv4Address("TCP", "198.51.100.4", 40000)
            channel = site.buildProtocol(peer)
            channel.makeConnection(StringTransport(peerAddress=peer))
            channel.dataReceived(b"GET /report HTTP/1.1\r\nHost: x\r\n\r\n")
        with capturedLogs():
            stopping = service.stopService()
            if finish_at is not None:
                reactor.advance(finish_at)
                if finish_at < 30.0:
                    site.resource.app.pending[0].finish()
                channel.connectionLost(Failure(ConnectionAborted()))
            assert service.pool.stop_timeout == pool_timeout
            assert reactor.runFromThreads(stopping) == [None]
        _join_stop_threads()
