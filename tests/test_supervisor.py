"""
The supervisor of C{[server] workers} and its worker's control channel,
without processes or a running reactor: back-off, the relay of worker log
events, restarts, stopping, reloading.  The real processes are in
tests/functional/test_workers.py.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import textwrap
from pathlib import Path
from unittest.mock import patch

import pytest
from twisted.internet import tcp
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ServerFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent, jsonFileLogObserver
from twisted.python.failure import Failure

from backtracweb.config import load_config
from backtracweb.loader import build_service
from backtracweb.errors import StartupError
from backtracweb.shared import (
    LEAVE_FOR,
    LoadBoard,
    SharedSocketService,
    _SharedTCPPort,
    copy_endpoint_files,
)
from backtracweb.service import BacktracService
from backtracweb.supervisor import (
    Backoff,
    Supervisor,
    WorkerProcess,
    WorkerStart,
    frame,
)
from backtracweb.worker import SupervisorChannel, access_line_relay


def write_site(directory: Path, workers: int = 2, max_threads: str = "4") -> Path:
    (directory / "app.py").write_text("def application(environ, start_response):\n    pass\n")
    path = directory / "site.ini"
    path.write_text(textwrap.dedent(f"""\
        [server]
        port = 8123
        workers = {workers}
        graceful_timeout = 3
        [threadpool]
        max = {max_threads}
        [app]
        loader = wsgi
        pythonpath = .
        application = app:application
        """))
    return path


class FakeProcess:
    """What spawnProcess returns: records signals and what is written to the child."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []
        self.written = b""

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)

    def writeToChild(self, fd: int, data: bytes) -> None:
        assert fd == 0
        self.written += data


class ProcessReactor(MemoryReactorClock):
    """A memory reactor that also spawns (fake) processes."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[WorkerProcess, list[str], dict, dict]] = []

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None, **kwargs):
        process = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(process)
        self.spawned.append((protocol, args, env, childFDs))
        return process


class FakeListener(SharedSocketService):
    def __init__(self, description: str, fd: int, files: dict[str, int] | None = None) -> None:
        self.description = description
        self._fd = fd
        self.files = files or {}

    def fileno(self) -> int:
        return self._fd

    def stopService(self):
        self.stopped = True


@pytest.fixture
def supervisor(tmp_path: Path):
    config = load_config(str(write_site(tmp_path)))
    reactor = ProcessReactor()
    top = Supervisor(config, [FakeListener("tcp:8123", 7), FakeListener("unix:/s", 9)], reactor,
                     executable="/usr/bin/python3")
    top.board = LoadBoard.create(2)  # what startService makes before the workers
    for index in top.indexes:
        top._start_worker(index)
    return top, reactor


# -- back-off -------------------------------------------------------------------


def test_backoff_restarts_at_once_then_doubles_up_to_the_ceiling():
    backoff = Backoff(first=0.5, ceiling=4, stable=10)
    assert [backoff.delay(lived=1) for _ in range(7)] == [0, 0.5, 1, 2, 4, 4, 4]


def test_backoff_forgets_failures_once_a_worker_lived_long_enough():
    backoff = Backoff(first=0.5, ceiling=30, stable=10)
    assert [backoff.delay(1), backoff.delay(1), backoff.delay(1)] == [0, 0.5, 1]
    assert backoff.delay(lived=10) == 0
    assert backoff.delay(lived=1) == 0.5


# -- the service tree ---------------------------------------------------------------


def test_one_worker_serves_in_the_twistd_process(tmp_path: Path):
    top = build_service(load_config(str(write_site(tmp_path, workers=1))), ProcessReactor())
    assert isinstance(top, BacktracService)


def test_several_workers_make_a_supervisor_holding_only_the_sockets(tmp_path: Path):
    """No thread pool and no application in the supervisor: only the shared sockets."""
    top = build_service(load_config(str(write_site(tmp_path))), ProcessReactor())
    assert isinstance(top, Supervisor)
    assert [type(child) for child in top] == [SharedSocketService]
    assert [listener.description for listener in top.listeners] == [
        "tcp:8123:interface=127.0.0.1"]
    assert top.indexes == range(1, 3)


def test_workers_inherit_the_sockets_and_get_the_configuration(supervisor):
    top, reactor = supervisor
    assert len(reactor.spawned) == 2
    protocol, args, env, child_fds = reactor.spawned[1]
    assert args == ["/usr/bin/python3", "-m", "backtracweb.worker"]
    assert child_fds == {0: "w", 1: "r", 2: "r", 3: 7, 4: 9, 5: top.board.fd}
    start = WorkerStart.decode(env["BACKTRACWEB_WORKER"])
    assert (start.index, start.sockets, start.board) == (2, ((3, "tcp:8123"), (4, "unix:/s")), 5)
    assert start.started == start.current == top.config


def test_workers_read_the_tls_files_the_supervisor_read(tmp_path: Path):
    """
    An ssl: endpoint's key and certificate, read by the supervisor while
    privileged, are inherited after the sockets and the load board; the
    worker's endpoint names them as its own descriptors.
    """
    reactor = ProcessReactor()
    ssl = FakeListener("ssl:8443:privateKey=/etc/k.pem:certKey=/etc/c\\:1.pem", 7,
                       {"privateKey": 21, "certKey": 22})
    top = Supervisor(load_config(str(write_site(tmp_path))),
                     [FakeListener("tcp:8123", 6), ssl], reactor)
    top.board = LoadBoard.create(2)
    top._start_worker(1)
    _, _, env, child_fds = reactor.spawned[0]
    assert child_fds == {0: "w", 1: "r", 2: "r", 3: 6, 4: 7, 5: top.board.fd, 6: 21, 7: 22}
    assert WorkerStart.decode(env["BACKTRACWEB_WORKER"]).sockets == (
        (3, "tcp:8123"),
        (4, "ssl:8443:privateKey=/proc/self/fd/6:certKey=/proc/self/fd/7"),
    )


def test_the_files_an_endpoint_reads_are_copied_into_memory(tmp_path: Path):
    """What a shared ssl: socket does while privileged; other endpoints read no file."""
    key, cert = tmp_path / "k.pem", tmp_path / "c:1.pem"
    key.write_bytes(b"KEY")
    cert.write_bytes(b"CERT")
    escaped = str(cert).replace(":", "\\:")  # as Twisted's endpoint syntax wants it
    copies = copy_endpoint_files(f"ssl:0:privateKey={key}:certKey={escaped}")
    try:
        assert {name: os.pread(fd, 10, 0) for name, fd in copies.items()} == {
            "privateKey": b"KEY", "certKey": b"CERT"}
    finally:
        for fd in copies.values():
            os.close(fd)
    assert copy_endpoint_files(f"unix:{tmp_path}/s") == {}
    with pytest.raises(StartupError) as raised:
        copy_endpoint_files(f"ssl:0:privateKey={tmp_path}/gone.pem")
    assert str(raised.value) == (f"ssl:0:privateKey={tmp_path}/gone.pem: cannot read "
                                 f"privateKey {tmp_path}/gone.pem: No such file or directory")


def test_worker_ports_accept_one_connection_per_wakeup():
    """Twisted grows a port's accepts per wake-up; a shared port keeps it at one."""
    port = _SharedTCPPort(0, ServerFactory(), reactor=MemoryReactorClock())
    port.numberAccepts = 120
    assert port.numberAccepts == 1


def test_the_load_board_is_shared_through_its_descriptor():
    board = LoadBoard.create(3)
    seen = LoadBoard(os.dup(board.fd), 3)  # as a worker maps the inherited descriptor
    board.set(1, 4)
    board.set(2, 2)
    seen.seat(3).set(2)
    assert [seen.seat(n).may_accept() for n in (1, 2)] + [board.seat(3).may_accept()] == [
        False, True, True]
    board.retire(2)
    assert board.seat(3).may_accept() and not board.seat(2).may_accept()


def test_a_seat_tells_once_of_the_next_change_of_its_count():
    board = LoadBoard.create(2)
    seat, told = board.seat(2), []
    seat.on_next_change(lambda: told.append(board.counts[1]))
    seat.set(3)
    seat.set(4)
    assert told == [3]


class TurnSeat:
    """A seat on the load board whose turn the test decides."""

    def __init__(self) -> None:
        self.turn = False
        self.watchers: list = []

    def may_accept(self) -> bool:
        return self.turn

    def on_next_change(self, watcher) -> None:
        self.watchers.append(watcher)

    def changed(self) -> None:
        watchers, self.watchers = self.watchers, []
        for watcher in watchers:
            watcher()


class CountingPort(_SharedTCPPort):
    """A shared port whose accepts are counted instead of made."""

    accepts = 0

    def __init__(self, reactor, seat) -> None:
        super().__init__(0, ServerFactory(), reactor=reactor)
        self.seat = seat
        self.connected, self.disconnecting = True, False

    def startReading(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False


def test_a_busier_worker_leaves_a_new_connection_to_another_for_a_moment():
    """
    Woken for a connection while another worker has fewer, a worker stops
    watching the socket; LEAVE_FOR seconds later it takes the connection
    after all (if it is still waiting: nobody else took it).
    """
    reactor = MemoryReactorClock()
    seat = TurnSeat()
    port = CountingPort(reactor, seat)
    taken = []
    with patch.object(tcp.Port, "doRead", lambda self: taken.append(reactor.seconds())):
        port.doRead()
        assert taken == [] and port.reading is False
        seat.changed()  # one of its connections closed: still not its turn
        assert port.reading is False and len(reactor.getDelayedCalls()) == 1
        reactor.advance(LEAVE_FOR)
        assert taken == [LEAVE_FOR] and port.reading is True
        seat.turn = True
        port.doRead()
        assert taken == [LEAVE_FOR, LEAVE_FOR]


def test_a_worker_whose_connections_close_watches_the_socket_again_at_once():
    """
    Leaving connections to another, a worker whose own connections close
    (short ones, from a proxy without keep-alive) is the least loaded again
    before LEAVE_FOR has passed: it watches the socket again at once.
    """
    reactor = MemoryReactorClock()
    seat = TurnSeat()
    port = CountingPort(reactor, seat)
    with patch.object(tcp.Port, "doRead", lambda self: None):
        port.doRead()
        assert port.reading is False
        seat.turn = True
        seat.changed()
        assert port.reading is True
        assert reactor.getDelayedCalls() == []  # the wait was called off


# -- relaying the workers' logs ---------------------------------------------------------


def worker_output(*events: tuple[LogLevel, str, dict]) -> bytes:
    """What a worker writes on its event descriptor for these log calls."""
    stream = io.StringIO()
    log = Logger(namespace="backtracweb.server", observer=jsonFileLogObserver(stream))
    for level, text, fields in events:
        log.emit(level, text, **fields)
    return stream.getvalue().encode()


def test_worker_events_are_relayed_with_the_worker_named(supervisor):
    top, _ = supervisor
    worker = top.workers[2]
    data = worker_output((LogLevel.info, "serving on {address}", {"address": "x:1"}),
                         (LogLevel.info, "worker 2 ready", {"backtracweb_ready": True}))
    with capturedLogs() as events:
        for start in range(0, len(data), 7):  # split anywhere, even inside a record
            worker.outReceived(data[start:start + 7])
    assert [(e["log_system"], formatEvent(e)) for e in events] == [
        ("worker 2: backtracweb.server#info", "serving on x:1"),
        ("worker 2: backtracweb.server#info", "worker 2 ready"),
    ]
    assert worker.ready


ACCESS = '127.0.0.1 - - [26/Nov/2026:02:00:00 +0000] "GET /{x} HTTP/1.1" 200 14 "-" "-"'


def test_access_lines_travel_as_text_and_are_logged_with_the_worker_named(supervisor):
    """
    A worker's access lines skip JSON both ways, in order with its other
    events; a line that would break the framing goes as a JSON event.
    """
    top, _ = supervisor
    worker = top.workers[2]
    stream = io.StringIO()
    Logger(namespace="backtracweb.server", observer=jsonFileLogObserver(stream)).info("before")
    relay = access_line_relay(stream)
    relay(ACCESS)
    assert stream.getvalue().endswith(f"\x1e\x1f{ACCESS}\n")
    with capturedLogs() as as_json:
        relay("split\nin two")  # a template of the admin's may do that
    assert [e["line"] for e in as_json] == ["split\nin two"]
    data = stream.getvalue().encode()
    with capturedLogs() as events:
        for start in range(0, len(data), 5):  # split anywhere, even inside a record
            worker.outReceived(data[start:start + 5])
    assert [(e["log_system"], formatEvent(e)) for e in events] == [
        ("worker 2: backtracweb.server#info", "before"),
        ("worker 2: backtracweb.access#info", ACCESS),
    ]


def test_a_critical_event_is_kept_as_the_reason_a_worker_could_not_start(supervisor):
    top, _ = supervisor
    worker = top.workers[1]
    with capturedLogs():
        worker.outReceived(worker_output(
            (LogLevel.critical, "backtracweb cannot start: {error}",
             {"error": ValueError("no such module")})))
    assert worker.failure == "no such module"
    assert not worker.ready


def test_other_output_is_logged_line_by_line_as_a_warning(supervisor):
    top, _ = supervisor
    worker = top.workers[1]
    with capturedLogs() as events:
        worker.errReceived(b"Traceback (most recent call last):\n  File ")
        worker.errReceived(b'"x.py"\n')
        worker.outReceived(b"\x1enot json\n")
    assert [(e["log_level"], formatEvent(e)) for e in events] == [
        (LogLevel.warn, "worker 1: Traceback (most recent call last):"),
        (LogLevel.warn, 'worker 1:   File "x.py"'),
        (LogLevel.warn, "worker 1: not json"),
    ]


# -- workers that end ---------------------------------------------------------------


def killed(signum: int) -> Failure:
    return Failure(ProcessTerminated(signal=signum))


def test_a_worker_that_dies_is_started_again_with_backoff(supervisor):
    top, reactor = supervisor
    top.startService = lambda: None  # the processes exist already
    reactor.advance(30)  # the first worker lived long enough: no back-off
    with capturedLogs() as events:
        top.workers[1].processEnded(killed(signal.SIGKILL))
    assert formatEvent(events[-1]) == (
        "worker 1 (pid 1000) was killed by SIGKILL after 30.0 s; starting another in 0 s")
    reactor.advance(0)
    assert len(reactor.spawned) == 3 and top.workers[1].pid == 1002

    with capturedLogs() as events:  # dies again at once: waits
        top.workers[1].processEnded(Failure(ProcessTerminated(exitCode=3)))
    assert "could not start after 0.0 s; starting another in 0.5 s" in formatEvent(events[-1])
    reactor.advance(0.4)
    assert 1 not in top.workers
    reactor.advance(0.1)
    assert top.workers[1].pid == 1003


def test_stopping_closes_the_sockets_and_drains_every_worker(supervisor):
    top, reactor = supervisor
    top.running = True
    workers = dict(top.workers)
    stopped = top.stopService()
    assert all(listener.stopped for listener in top.listeners)
    assert [w.transport.signals for w in workers.values()] == [[signal.SIGTERM]] * 2
    workers[1].processEnded(Failure(ProcessDone(0)))
    assert not stopped.called
    top.stop("SIGTERM")  # a second SIGTERM is passed on: the workers cut their drain short
    assert workers[2].transport.signals == [signal.SIGTERM, signal.SIGTERM]
    workers[2].processEnded(Failure(ProcessDone(0)))
    assert stopped.called
    assert not reactor.getDelayedCalls()  # no restart, no pending kill


def test_workers_still_running_after_the_graceful_timeout_are_killed(supervisor):
    top, reactor = supervisor
    top.running = True
    workers = dict(top.workers)
    stopped = top.stopService()
    reactor.advance(3 + 5)  # graceful_timeout + KILL_GRACE
    assert [w.transport.signals for w in workers.values()] == [
        [signal.SIGTERM, signal.SIGKILL]] * 2
    for worker in workers.values():
        worker.processEnded(killed(signal.SIGKILL))
    assert stopped.called


# -- signals passed on ---------------------------------------------------------------


def test_sighup_sends_the_reloaded_file_to_every_worker(supervisor, tmp_path: Path):
    top, _ = supervisor
    write_site(tmp_path, max_threads="6")
    top.reload("SIGHUP")
    for worker in top.workers.values():
        config = pickle.loads(worker.transport.written[4:])
        assert config.max_threads == 6
        assert worker.transport.written == frame(config)
    assert top.config.max_threads == 6


def test_an_invalid_file_on_sighup_is_reported_once_and_sent_nowhere(supervisor, tmp_path: Path):
    top, _ = supervisor
    before = top.config
    write_site(tmp_path, max_threads="lots")
    with capturedLogs() as events:
        top.reload("SIGHUP")
    assert any("[threadpool] max = 'lots'" in formatEvent(e) for e in events)
    assert all(worker.transport.written == b"" for worker in top.workers.values())
    assert top.config is before


def test_sigusr1_is_passed_on(supervisor):
    top, _ = supervisor
    top.reopen_logs("SIGUSR1")
    assert [w.transport.signals for w in top.workers.values()] == [[signal.SIGUSR1]] * 2


# -- the worker's end of the channel ---------------------------------------------------


class RecordingService:
    _stopping = False

    def __init__(self) -> None:
        self.applied: list = []
        self.stopped: list[str] = []

    def apply(self, config) -> None:
        self.applied.append(config)

    def stop(self, why: str) -> None:
        self.stopped.append(why)


def test_the_worker_applies_each_configuration_the_supervisor_sends(tmp_path: Path):
    first = load_config(str(write_site(tmp_path, max_threads="5")))
    second = load_config(str(write_site(tmp_path, max_threads="6")))
    service = RecordingService()
    channel = SupervisorChannel(service)
    data = frame(first) + frame(second)
    for start in range(0, len(data), 100):
        channel.dataReceived(data[start:start + 100])
    assert [config.max_threads for config in service.applied] == [5, 6]


def test_the_worker_stops_when_the_supervisor_is_gone():
    service = RecordingService()
    SupervisorChannel(service).connectionLost(Failure(Exception("EOF")))
    assert service.stopped == ["the end of the supervisor"]
