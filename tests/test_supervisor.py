"""
The supervisor of C{[server] workers} and both ends of its control
channel, without processes or a running reactor: the two ends talk AMP
over in-memory transports, and the test moves the bytes and the clock.
Start-up, its timeout, heartbeats, restarts, reloading, logs and the
whole server's status.  The real processes are in
tests/functional/test_workers.py.
"""

from __future__ import annotations

import json
import signal
import textwrap
import threading
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from backtracweb.config.settings import load_config
from backtracweb.errors import StartupError
from backtracweb.process.control import (
    JSON, STACKS_SIGNAL, AccessLines, CannotStart, Channel, Heartbeat, Reload, ReopenLogs,
    ServerStats, Start, Stats,
)
from backtracweb.process.service import BacktracService
from backtracweb.process.shared import SharedSocketService
from backtracweb.process.supervisor import (
    KILL_GRACE, STACKS_WAIT, STATS_WAIT, Backoff, Supervisor, WorkerProcess,
)
from backtracweb.process.tree import build_service
from backtracweb.process.worker import Outbox, SupervisorChannel


def write_site(directory: Path, workers: int = 2, max_threads: str = "4",
               server: str = "") -> Path:
    (directory / "app.py").write_text("def application(environ, start_response):\n    pass\n")
    path = directory / "site.ini"
    path.write_text(textwrap.dedent(f"""\
        [server]
        port = 8123
        workers = {workers}
        graceful_timeout = 3
        start_timeout = 20
        worker_timeout = 8
        {server}
        [threadpool]
        max = {max_threads}
        [app]
        loader = wsgi
        pythonpath = .
        application = app:application
        """))
    return path


class Wire:
    """Two protocols connected by in-memory transports; L{pump} moves the bytes."""

    def __init__(self, left, right) -> None:
        self.left, self.right = left, right
        self.left_transport, self.right_transport = StringTransport(), StringTransport()
        left.makeConnection(self.left_transport)
        right.makeConnection(self.right_transport)

    def pump(self) -> None:
        while self.left_transport.value() or self.right_transport.value():
            for transport, to in ((self.left_transport, self.right),
                                  (self.right_transport, self.left)):
                data = transport.value()
                transport.clear()
                if data:
                    to.dataReceived(data)

    def cut(self) -> None:
        """The other end went away (the process died)."""
        reason = Failure(ConnectionError("gone"))
        self.left.connectionLost(reason)
        self.right.connectionLost(reason)


class FakeWorker(Channel):
    """
    A worker's end of the channel, as the test would have it behave:
    answers Start when told (L{serve}), heartbeats while L{alive}, and
    records what it is sent.
    """

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid
        self.started: Deferred[dict] | None = None
        self.start_arguments: dict = {}
        self.alive = True
        self.heartbeats = 0
        self.reloads: list = []
        self.reopened = 0
        self.stats = {}
        self.requests = 0
        self.rss = 50 * 2**20

    def serve(self) -> None:
        self.started.callback({"pid": self.pid})

    @Start.responder
    def start(self, **arguments) -> Deferred[dict]:
        self.start_arguments = arguments
        self.started = Deferred()
        return self.started

    @Heartbeat.responder
    def heartbeat(self) -> dict | Deferred:
        if not self.alive:
            return Deferred()  # never answered: the event loop is stuck
        self.heartbeats += 1
        return {"requests": self.requests, "rss": self.rss}

    @Reload.responder
    def reload(self, config) -> dict:
        self.reloads.append(config)
        return {}

    @ReopenLogs.responder
    def reopen_logs(self) -> dict:
        self.reopened += 1
        return {}

    @Stats.responder
    def answer_stats(self) -> dict | Deferred:
        return {"stats": self.stats} if self.alive else Deferred()


class FakeProcess:
    """What spawnProcess returns: records the signals sent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


class ProcessReactor(MemoryReactorClock):
    """
    A memory reactor that spawns fake worker processes, each with a
    L{FakeWorker} at the other end of its control channel.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[WorkerProcess, list[str], dict]] = []
        self.wires: list[Wire] = []

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None, **kwargs):
        process = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(process)
        self.spawned.append((protocol, args, childFDs))
        return process

    def adoptStreamConnection(self, fd, family, factory):
        worker = FakeWorker(1000 + len(self.wires))
        self.wires.append(Wire(factory.buildProtocol(None), worker))

    def iterate(self, delay: float = 0) -> None:
        self.pump()
        self.advance(delay)

    def pump(self) -> None:
        while any(w.left_transport.value() or w.right_transport.value() for w in self.wires):
            for wire in self.wires:
                wire.pump()

    def callFromThread(self, f, *args) -> None:
        self.callLater(0, f, *args)

    def worker(self, n: int) -> FakeWorker:
        """The other end of the channel of the n-th process spawned (from 0)."""
        return self.wires[n].right


class FakeListener(SharedSocketService):
    def __init__(self, description: str, fd: int, files: dict[str, int] | None = None) -> None:
        self.description = description
        self._fd = fd
        self.files = files or {}

    def fileno(self) -> int:
        return self._fd

    def startService(self) -> None:
        self.running = True

    def stopService(self):
        self.stopped = True


def make_supervisor(tmp_path: Path, listeners=None, server: str = "",
                    ) -> tuple[Supervisor, ProcessReactor]:
    reactor = ProcessReactor()
    listeners = listeners or [FakeListener("tcp:8123", 7), FakeListener("unix:/s", 9)]
    top = Supervisor(load_config(str(write_site(tmp_path, server=server))), listeners, reactor,
                     executable="/usr/bin/python3")
    return top, reactor


def serve_all(top: Supervisor, reactor: ProcessReactor) -> None:
    """Start the supervisor with every worker answering at once."""
    original = reactor.iterate

    def iterate(delay: float = 0) -> None:
        original(0)
        for wire in reactor.wires:
            if wire.right.started is not None and not wire.right.started.called:
                wire.right.serve()
        original(0)  # the clock stays at 0: the workers started then

    reactor.iterate = iterate
    top.startService()
    reactor.iterate = original


@pytest.fixture
def supervisor(tmp_path: Path):
    top, reactor = make_supervisor(tmp_path)
    serve_all(top, reactor)
    yield top, reactor
    top.restore_signal_handlers()


def ended(worker: WorkerProcess, reactor: ProcessReactor, reason: Failure) -> None:
    """The process ends: its channel closes, then the process protocol is told."""
    reactor.wires[worker.pid - 1000].cut()
    worker.processEnded(reason)


def killed(signum: int) -> Failure:
    return Failure(ProcessTerminated(signal=signum))


# -- back-off and the service tree ----------------------------------------------------


def test_backoff_restarts_at_once_then_doubles_up_to_the_ceiling():
    backoff = Backoff(first=0.5, ceiling=4.0, stable=10.0)
    assert [backoff.delay(1.0) for _ in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_forgets_failures_once_a_worker_lived_long_enough():
    backoff = Backoff(first=0.5, ceiling=30.0, stable=10.0)
    for _ in range(4):
        backoff.delay(0.1)
    assert backoff.delay(10.0) == 0.0
    assert backoff.delay(0.1) == 0.5


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


# -- starting ------------------------------------------------------------------------


def test_workers_inherit_the_channel_board_and_sockets_and_are_told_to_start(supervisor):
    top, reactor = supervisor
    assert len(reactor.spawned) == 2
    process, args, child_fds = reactor.spawned[1]
    assert args == ["/usr/bin/python3", "-m", "backtracweb.process.worker"]
    assert child_fds[0] == top._devnull and (child_fds[1], child_fds[2]) == ("r", "r")
    assert isinstance(child_fds[3], int)  # its end of the control channel
    assert {fd: child_fds[fd] for fd in (4, 5, 6)} == {4: top.board.fd, 5: 7, 6: 9}
    start = reactor.worker(1).start_arguments
    assert (start["index"], start["seat"], start["board"], start["board_size"]) == (2, 2, 4, 128)
    assert start["sockets"] == [[5, "tcp:8123"], [6, "unix:/s"]]
    assert start["started"].values == top.config.values and start["current"] is None
    assert [w.state for w in top.workers.values()] == ["serving", "serving"]


def test_workers_read_the_tls_files_the_supervisor_read(tmp_path: Path):
    """
    An ssl: endpoint's key and certificate, read by the supervisor while
    privileged, are inherited after the socket; the worker's endpoint
    names them as its own descriptors.
    """
    ssl = FakeListener("ssl:8443:privateKey=/etc/k.pem:certKey=/etc/c\\:1.pem", 7,
                       {"privateKey": 21, "certKey": 22})
    top, reactor = make_supervisor(tmp_path, [FakeListener("tcp:8123", 6), ssl])
    serve_all(top, reactor)
    top.restore_signal_handlers()
    _, _, child_fds = reactor.spawned[0]
    assert {fd: child_fds[fd] for fd in (5, 6, 7, 8)} == {5: 6, 6: 7, 7: 21, 8: 22}
    assert reactor.worker(0).start_arguments["sockets"] == [
        [5, "tcp:8123"], [6, "ssl:8443:privateKey=/proc/self/fd/7:certKey=/proc/self/fd/8"]]


def test_a_worker_that_cannot_start_fails_the_first_start_with_its_reason(tmp_path: Path):
    top, reactor = make_supervisor(tmp_path)
    original = reactor.iterate

    def iterate(delay: float = 0) -> None:
        original(0)
        worker = reactor.worker(1)
        if not worker.started.called:
            worker.started.errback(CannotStart("No module named 'mysite'"))
        original(delay)

    reactor.iterate = iterate
    with capturedLogs(), pytest.raises(StartupError) as raised:
        top.startService()
    top.restore_signal_handlers()
    assert str(raised.value) == "No module named 'mysite'; in worker 2"
    assert [process.transport.signals for process, _, _ in reactor.spawned] == [
        [signal.SIGKILL]] * 2


def test_a_worker_not_serving_within_start_timeout_fails_the_first_start(tmp_path: Path):
    """Its stacks are asked for, the cause is logged, and the start fails."""
    top, reactor = make_supervisor(tmp_path)
    with capturedLogs() as events, pytest.raises(StartupError) as raised:
        top.startService()  # no worker ever answers
    top.restore_signal_handlers()
    assert str(raised.value) == (
        "it was not serving after 20 s ([server] start_timeout; its threads' stacks are in "
        "the log); in worker 1")
    assert reactor.seconds() >= 20
    assert any("worker 1 (pid 1000) is not serving after 20 s ([server] start_timeout)"
               in formatEvent(e) for e in events)
    first = reactor.spawned[0][0].transport.signals
    assert first[0] == STACKS_SIGNAL and first[-1] == signal.SIGKILL


def test_a_replacement_that_does_not_start_in_time_is_killed_and_tried_again(supervisor):
    top, reactor = supervisor
    with capturedLogs():
        ended(top.workers[1], reactor, killed(signal.SIGSEGV))
        reactor.advance(0)  # started again at once: the first failure
        replacement = top.workers[1]
        assert replacement.state == "starting"
        reactor.advance(20)
        assert replacement.transport.signals == [STACKS_SIGNAL]
        reactor.advance(STACKS_WAIT)
        assert replacement.transport.signals == [STACKS_SIGNAL, signal.SIGKILL]
        ended(replacement, reactor, killed(signal.SIGKILL))
    assert top.restarts[1] == 2
    reactor.advance(0.5)  # back-off: it failed quickly
    assert top.workers[1] is not replacement and top.workers[1].state == "starting"


def test_a_reload_while_a_worker_starts_reaches_it_once_it_serves(supervisor, tmp_path: Path):
    top, reactor = supervisor
    with capturedLogs():
        ended(top.workers[1], reactor, killed(signal.SIGKILL))
        reactor.advance(0)
        reactor.pump()
        write_site(tmp_path, max_threads="6")
        top.reload("SIGHUP")
    worker = reactor.worker(len(reactor.wires) - 1)
    assert worker.start_arguments["current"] is None  # it started before the reload
    worker.serve()
    reactor.pump()
    assert [config.max_threads for config in worker.reloads] == [6]


# -- liveness --------------------------------------------------------------------------


def test_workers_that_answer_heartbeats_are_left_alone(supervisor):
    top, reactor = supervisor
    for _ in range(40):
        reactor.advance(1)
        reactor.pump()
    assert reactor.worker(0).heartbeats >= 30 and len(reactor.spawned) == 2


def test_a_worker_that_stops_answering_is_replaced_after_its_stacks_are_logged(supervisor):
    """
    Missing heartbeats for worker_timeout, a worker is asked for its
    threads' stacks, a replacement starts at once on the other seat of its
    place, and the stuck one is killed STACKS_WAIT later.
    """
    top, reactor = supervisor
    stuck = top.workers[2]
    reactor.worker(1).alive = False
    with capturedLogs() as events:
        for _ in range(9):
            reactor.advance(1)
            reactor.pump()
    assert any(
        "worker 2 (pid 1001) has not answered for 8 s ([server] worker_timeout)" in formatEvent(e)
        for e in events)
    assert stuck.transport.signals == [STACKS_SIGNAL] and stuck.state == "leaving"
    replacement = top.workers[2]
    assert replacement is not stuck and replacement.seat == 2 + 64
    assert top.board.counts[stuck.seat - 1] == top.board.EMPTY
    assert top.restarts[2] == 1
    reactor.advance(STACKS_WAIT)
    assert stuck.transport.signals == [STACKS_SIGNAL, signal.SIGKILL]
    with capturedLogs() as events:
        ended(stuck, reactor, killed(signal.SIGKILL))
    assert [formatEvent(e) for e in events] == ["worker 2 (pid 1001) was killed by SIGKILL"]
    assert top.workers[2] is replacement and len(reactor.spawned) == 3


# -- recycling -------------------------------------------------------------------------


def beat(reactor: ProcessReactor, seconds: int = 1) -> None:
    for _ in range(seconds):
        reactor.advance(1)
        reactor.pump()


@pytest.fixture
def recycling(tmp_path: Path):
    top, reactor = make_supervisor(tmp_path, server="max_requests = 100\nmax_memory = 200M")
    serve_all(top, reactor)
    yield top, reactor
    top.restore_signal_handlers()


def test_a_worker_past_max_requests_drains_once_its_replacement_serves(recycling):
    """No moment without a worker in its place: the old one leaves only after."""
    top, reactor = recycling
    old = top.workers[1]
    reactor.worker(0).requests = 100
    with capturedLogs() as events:
        beat(reactor)
    assert "worker 1 (pid 1000) has served 100 requests ([server] max_requests): starting " \
        "its replacement, then it drains" in [formatEvent(e) for e in events]
    replacement = top.replacements[1]
    assert top.workers[1] is old and old.transport.signals == []
    assert replacement.seat == 1 + 64
    beat(reactor, 3)  # it is asked once only
    assert len(reactor.spawned) == 3
    with capturedLogs():
        reactor.worker(2).serve()
        reactor.pump()
    assert top.workers[1] is replacement and top.replacements == {}
    assert old.state == "leaving" and old.transport.signals == [signal.SIGTERM]
    assert top.board.counts[old.seat - 1] == top.board.EMPTY
    with capturedLogs() as events:
        ended(old, reactor, Failure(ProcessDone(0)))
    assert [formatEvent(e) for e in events] == ["worker 1 (pid 1000) exited"]
    assert top.workers[1] is replacement and len(reactor.spawned) == 3


def test_a_worker_past_max_memory_is_recycled(recycling):
    top, reactor = recycling
    reactor.worker(1).rss = 300 * 2**20
    with capturedLogs() as events:
        beat(reactor)
    assert any("worker 2 (pid 1001) uses 300 MB of memory ([server] max_memory = 200 MB)"
               in formatEvent(e) for e in events)
    assert 2 in top.replacements


def test_jitter_spreads_the_limits(tmp_path: Path):
    top, reactor = make_supervisor(tmp_path, server="max_requests = 100\n"
                                                    "max_requests_jitter = 50")
    serve_all(top, reactor)
    top.restore_signal_handlers()
    assert all(100 <= w.max_requests <= 150 for w in top.workers.values())


def test_when_a_replacement_cannot_start_the_old_worker_keeps_serving(recycling):
    top, reactor = recycling
    old = top.workers[1]
    reactor.worker(0).requests = 500
    with capturedLogs():
        beat(reactor)
        replacement = top.replacements[1]
        reactor.worker(2).started.errback(CannotStart("out of memory"))
        reactor.pump()
    with capturedLogs() as events:
        ended(replacement, reactor, Failure(ProcessTerminated(exitCode=3)))
    assert [formatEvent(e) for e in events] == [
        "worker 1's replacement (pid 1002) could not start before serving; worker 1 (pid "
        "1000) keeps serving"]
    assert top.workers[1] is old and old.state == "serving" and old.transport.signals == []
    beat(reactor, 1)
    assert top.replacements == {} or top.replacements[1] is not replacement


# -- the number of workers ---------------------------------------------------------------


def test_sigttin_adds_a_worker_and_sigttou_drains_the_last(supervisor):
    top, reactor = supervisor
    with capturedLogs() as events:
        top.add_worker("SIGTTIN")
    assert formatEvent(events[0]) == "received SIGTTIN: adding worker 3 (3 workers)"
    reactor.pump()
    assert reactor.worker(2).start_arguments["index"] == 3
    reactor.worker(2).serve()
    reactor.pump()
    assert sorted(top.workers) == [1, 2, 3]
    third = top.workers[3]
    with capturedLogs() as events:
        top.remove_worker("SIGTTOU")
        top.remove_worker("SIGTTOU")
        top.remove_worker("SIGTTOU")
    assert [formatEvent(e) for e in events] == [
        "received SIGTTOU: worker 3 drains (2 workers)",
        "received SIGTTOU: worker 2 drains (1 workers)",
        "received SIGTTOU: keeping the last worker",
    ]
    assert third.transport.signals == [signal.SIGTERM] and sorted(top.workers) == [1]
    with capturedLogs():
        ended(third, reactor, Failure(ProcessDone(0)))
    assert sorted(top.workers) == [1] and len(reactor.spawned) == 3  # not restarted
    with capturedLogs():
        top.add_worker("SIGTTIN")
    assert sorted(top.workers) == [1, 2]  # the lowest free place


def test_a_single_process_server_explains_sigttin(tmp_path: Path):
    top = build_service(load_config(str(write_site(tmp_path, workers=1))), ProcessReactor())
    with capturedLogs() as events:
        top.add_worker("SIGTTIN")
    assert formatEvent(events[0]).startswith(
        "received SIGTTIN: this server is one process ([server] workers = 1)")


# -- workers that end ---------------------------------------------------------------


def test_a_worker_that_dies_is_started_again_with_backoff(supervisor):
    top, reactor = supervisor
    reactor.advance(30)  # the first worker lived long enough: no back-off
    reactor.pump()
    with capturedLogs() as events:
        ended(top.workers[1], reactor, killed(signal.SIGKILL))
    assert formatEvent(events[-1]) == (
        "worker 1 (pid 1000) was killed by SIGKILL after 30.0 s; starting another in 0 s")
    reactor.advance(0)
    assert len(reactor.spawned) == 3 and top.workers[1].pid == 1002
    assert top.workers[1].seat == 1  # the seat its predecessor left

    with capturedLogs() as events:  # dies again at once: waits
        ended(top.workers[1], reactor, Failure(ProcessTerminated(exitCode=3)))
    assert "could not start after 0.0 s; starting another in 0.5 s" in formatEvent(events[-1])
    reactor.advance(0.4)
    assert 1 not in top.workers
    reactor.advance(0.1)
    assert top.workers[1].pid == 1003


def test_stopping_closes_the_sockets_and_drains_every_worker(supervisor):
    top, reactor = supervisor
    workers = dict(top.workers)
    with capturedLogs():
        stopped = top.stopService()
        assert all(listener.stopped for listener in top.listeners)
        assert [w.transport.signals for w in workers.values()] == [[signal.SIGTERM]] * 2
        ended(workers[1], reactor, Failure(ProcessDone(0)))
        assert not stopped.called
        top.stop("SIGTERM")  # a second SIGTERM is passed on: the workers cut their drain short
        assert workers[2].transport.signals == [signal.SIGTERM, signal.SIGTERM]
        ended(workers[2], reactor, Failure(ProcessDone(0)))
    assert stopped.called
    assert not reactor.getDelayedCalls()  # no restart, no pending kill, no heartbeat


def test_workers_still_running_after_the_graceful_timeout_are_killed(supervisor):
    top, reactor = supervisor
    workers = dict(top.workers)
    with capturedLogs():
        stopped = top.stopService()
        reactor.advance(3 + KILL_GRACE)  # graceful_timeout + KILL_GRACE
        assert [w.transport.signals for w in workers.values()] == [
            [signal.SIGTERM, signal.SIGKILL]] * 2
        for worker in workers.values():
            ended(worker, reactor, killed(signal.SIGKILL))
    assert stopped.called


# -- signals passed on ---------------------------------------------------------------


def test_sighup_sends_the_reloaded_file_to_every_worker(supervisor, tmp_path: Path):
    top, reactor = supervisor
    write_site(tmp_path, max_threads="6")
    with capturedLogs():
        top.reload("SIGHUP")
    reactor.pump()
    assert [[c.max_threads for c in reactor.worker(n).reloads] for n in (0, 1)] == [[6], [6]]
    assert top.config.max_threads == 6


def test_an_invalid_file_on_sighup_is_reported_once_and_sent_nowhere(supervisor, tmp_path: Path):
    top, reactor = supervisor
    before = top.config
    write_site(tmp_path, max_threads="lots")
    with capturedLogs() as events:
        top.reload("SIGHUP")
    reactor.pump()
    assert any("[threadpool] max = 'lots'" in formatEvent(e) for e in events)
    assert [reactor.worker(n).reloads for n in (0, 1)] == [[], []]
    assert top.config is before


def test_sigusr1_is_passed_on(supervisor):
    top, reactor = supervisor
    with capturedLogs():
        top.reopen_logs("SIGUSR1")
    reactor.pump()
    assert [reactor.worker(n).reopened for n in (0, 1)] == [1, 1]


# -- what workers log ------------------------------------------------------------------


def test_worker_events_are_relayed_with_the_worker_named(supervisor):
    top, reactor = supervisor
    outbox = Outbox(reactor)
    Logger(namespace="backtracweb.process.server", observer=outbox.event).info(
        "took {seconds:.1f} s for {what}", seconds=1.2345, what="{braces}")
    outbox.channel = reactor.worker(1)  # the worker's end of worker 2's channel
    with capturedLogs() as events:
        reactor.advance(0)  # the outbox sends once a turn of the reactor
        reactor.pump()
    assert [(e["log_system"], e["log_level"], formatEvent(e)) for e in events] == [
        ("worker 2: backtracweb.process.server#info", LogLevel.info, "took 1.2 s for {braces}")]


def test_access_lines_are_relayed_in_batches_with_the_worker_named(supervisor):
    top, reactor = supervisor
    line = '127.0.0.1 - - [26/Nov/2026:02:00:00 +0000] "GET /{x} HTTP/1.1" 200 14 "-" "-"'
    outbox = Outbox(reactor)
    outbox.channel = reactor.worker(0)
    sent = []
    outbox.channel.callRemote = lambda command, **kw: sent.append(command) or \
        Channel.callRemote(reactor.worker(0), command, **kw)
    for _ in range(3):
        outbox.access_line(line)
    outbox.access_line("split\nin two")  # a template of the admin's may do that
    with capturedLogs() as events:
        reactor.advance(0)
        reactor.pump()
    assert sent == [AccessLines]
    assert [(e["log_system"], formatEvent(e)) for e in events] == [
        ("worker 1: backtracweb.access#info", line)] * 3 + [
        ("worker 1: backtracweb.access#info", "split\nin two")]


def test_events_from_other_threads_cross_to_the_reactor(supervisor):
    top, reactor = supervisor
    crossed = []
    reactor.callFromThread = lambda f, *a: crossed.append(f)
    outbox = Outbox(reactor)
    thread = threading.Thread(target=Logger(observer=outbox.event).info, args=("from a view",))
    thread.start()
    thread.join()
    assert crossed == [outbox.flush]


def test_without_a_channel_events_go_to_standard_error(capsys):
    outbox = Outbox(ProcessReactor())
    Logger(namespace="backtracweb.process.worker", observer=outbox.event).error("cannot {x}", x="go")
    outbox.access_line("GET /")
    outbox.flush()
    err = capsys.readouterr().err
    assert "[backtracweb.process.worker#error] cannot go\n" in err and err.endswith("GET /\n")


def test_anything_else_a_worker_writes_is_logged_line_by_line_as_a_warning(supervisor):
    top, _ = supervisor
    worker = top.workers[1]
    with capturedLogs() as events:
        worker.childDataReceived(2, b"Traceback (most recent call last):\n  File ")
        worker.childDataReceived(1, b"printed\n")
        worker.childDataReceived(2, b'"x.py"\n')
        worker.childDataReceived(2, b"no newline")
        worker.processEnded(Failure(ProcessDone(0)))
    assert [(e["log_level"], formatEvent(e)) for e in events][:4] == [
        (LogLevel.warn, "worker 1: Traceback (most recent call last):"),
        (LogLevel.warn, "worker 1: printed"),
        (LogLevel.warn, 'worker 1:   File "x.py"'),
        (LogLevel.warn, "worker 1: no newline"),
    ]


def test_values_larger_than_an_amp_value_travel_in_chunks():
    argument = JSON()
    strings: dict = {}
    big = ["x" * 50_000, "y" * 50_000]
    argument.toBox(b"lines", strings, {"lines": big}, None)
    assert strings[b"lines"] == b"2" and max(len(v) for v in strings.values()) <= 0xFFFF
    objects: dict = {}
    argument.fromBox(b"lines", dict(strings), objects, None)
    assert objects == {"lines": big}


# -- the whole server's status -------------------------------------------------------------


def worker_stats(requests: int, busy: int) -> dict:
    return {"status": "serving", "pid": 0, "uptime_seconds": 1.0, "config_file": "f",
            "config_loaded_at": "t", "pool": {"min": 2, "max": 4, "threads": 2, "busy": busy,
                                              "queued": 0},
            "connections": {"open": 1, "busy": busy}, "requests_in_flight": 1, "websockets": 0,
            "requests": requests,
            "responses": {"1xx": 0, "2xx": requests, "3xx": 0, "4xx": 0, "5xx": 0},
            "refused_overload": 0, "bytes_sent": 10 * requests, "rss_bytes": 1000}


def test_the_status_of_the_whole_server_is_asked_of_every_worker(supervisor):
    top, reactor = supervisor
    reactor.worker(0).stats = worker_stats(5, 1)
    reactor.worker(1).stats = worker_stats(7, 0)
    asked = reactor.worker(1).callRemote(ServerStats)  # from a worker serving the page
    reactor.pump()
    data = asked.result["stats"]
    assert (data["pid"], data["requests"], data["bytes_sent"], data["rss_bytes"]) == (
        __import__("os").getpid(), 12, 120, 2000)
    assert data["pool"] == {"min": 4, "max": 8, "threads": 4, "busy": 1, "queued": 0}
    assert data["responses"]["2xx"] == 12
    assert [(w["index"], w["pid"], w["state"], w["restarts"], w["requests"])
            for w in data["workers"]] == [(1, 1000, "serving", 0, 5), (2, 1001, "serving", 0, 7)]
    json.dumps(data)  # the page's JSON


def test_a_worker_that_does_not_answer_is_listed_without_numbers(supervisor):
    top, reactor = supervisor
    reactor.worker(0).stats = worker_stats(5, 1)
    reactor.worker(1).alive = False
    shown = top.whole_server()
    reactor.pump()
    assert not shown.called
    reactor.advance(STATS_WAIT)
    data = shown.result
    assert data["requests"] == 5
    assert data["workers"][1] == {"index": 2, "state": "not answering", "pid": 1001,
                                  "restarts": 0}


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


def worker_end(reactor) -> tuple[SupervisorChannel, Channel, Wire]:
    channel = SupervisorChannel(reactor, Outbox(reactor))
    supervisor_end = Channel()
    return channel, supervisor_end, Wire(supervisor_end, channel)


def test_the_worker_applies_each_configuration_the_supervisor_sends(tmp_path: Path):
    first = load_config(str(write_site(tmp_path, max_threads="5")))
    second = load_config(str(write_site(tmp_path, max_threads="6")))
    channel, supervisor_end, wire = worker_end(MemoryReactorClock())
    channel.service = RecordingService()
    for config in (first, second):
        supervisor_end.callRemote(Reload, config=config)
    wire.pump()
    assert [config.max_threads for config in channel.service.applied] == [5, 6]


def test_the_worker_stops_when_the_supervisor_is_gone():
    channel, _, wire = worker_end(MemoryReactorClock())
    channel.service = RecordingService()
    wire.cut()
    assert channel.service.stopped == ["the end of the supervisor"]


def test_a_worker_that_never_served_stops_its_reactor_when_the_supervisor_is_gone():
    reactor = MemoryReactorClock()
    reactor.running = True
    channel, _, wire = worker_end(reactor)
    wire.cut()
    assert reactor.hasStopped


def test_check_warns_of_worker_settings_in_a_single_process(tmp_path: Path):
    """What only a supervisor applies, set in the file for one process: check says so."""
    from backtracweb.cli import single_process_warnings

    one = load_config(str(write_site(tmp_path, workers=1, server="max_requests = 100")))
    assert single_process_warnings(one) == [
        "[server] start_timeout is set but applies only with workers = 2 or more",
        "[server] worker_timeout is set but applies only with workers = 2 or more",
        "[server] max_requests is set but applies only with workers = 2 or more",
    ]
    assert single_process_warnings(load_config(str(write_site(tmp_path, workers=2)))) == []


def test_check_warns_of_thread_settings_under_asgi(tmp_path: Path):
    """An ASGI application runs on the event loop: [threadpool] set in the file is said to be idle."""
    from backtracweb.cli import asgi_warnings, single_process_warnings

    path = write_site(tmp_path, workers=1)
    path.write_text(path.read_text().replace("[app]\n", "[app]\ninterface = asgi\n"))
    config = load_config(str(path))
    assert asgi_warnings(config) == [
        "[threadpool] max is set but applies only with [app] interface = wsgi (an ASGI "
        "application runs on the event loop)"]
    # start_timeout bounds an ASGI application's lifespan startup, in one process too.
    assert "[server] start_timeout is set but applies only with workers = 2 or more" not in \
        single_process_warnings(config)
    assert asgi_warnings(load_config(str(write_site(tmp_path, workers=1)))) == []
