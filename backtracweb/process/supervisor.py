"""
Several worker processes sharing the listening sockets: C{[server] workers}.

The twistd process binds the sockets (before it drops privileges), starts
C{workers} processes (L{backtracweb.process.worker}) that inherit them, and then
only supervises, talking to each over its control channel
(L{backtracweb.process.control}):

  - a worker that dies is started again (with back-off when one keeps
    dying); one that is not serving within C{[server] start_timeout}, or
    whose event loop stops answering heartbeats for C{[server]
    worker_timeout}, has its threads' stacks written to the log and is
    killed and replaced;
  - SIGHUP's new configuration and SIGUSR1 are passed on; SIGTERM drains
    every worker;
  - the workers' log events and access lines are written to twistd's log.

The supervisor itself runs no thread and imports no application code.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
import time
from typing import Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure

from backtracweb.app.accesslog import NAMESPACE as ACCESS_NAMESPACE
from backtracweb.app.repeat import Repeating
from backtracweb.app.status import iso_time, server_snapshot
from backtracweb.app.twistdlog import TwistdLogLines
from backtracweb.config.settings import MOST_WORKERS, Config, load_config
from backtracweb.errors import ConfigError, StartupError
from backtracweb.process.control import (
    ASGI_FLAG, CONTROL_FD, EXIT_STARTUP_FAILED, STACKS_SIGNAL, AccessLines, CannotStart, Channel,
    Heartbeat, LogEvents, Reload, ReopenLogs, ServerStats, Start, Stats, adopt,
)
from backtracweb.process.server import fatal
from backtracweb.process.service import DaemonService, not_reloaded
from backtracweb.process.shared import LoadBoard, SharedSocketService

_log = Logger(namespace="backtracweb.process.supervisor")

KILL_GRACE = 5.0
"""Seconds past graceful_timeout before a worker that has not exited is killed."""

STACKS_WAIT = 1.0
"""Seconds a stuck worker is given to write its threads' stacks before it is killed."""

STATS_WAIT = 2.0
"""Seconds the status page waits for a worker's numbers before showing it as not answering."""


class Backoff:
    """
    How long to wait before starting a worker again: at once after its
    first failure, then doubling from C{first} up to C{ceiling} while it
    keeps failing within C{stable} seconds of starting.
    """

    def __init__(self, first: float = 0.5, ceiling: float = 30.0, stable: float = 10.0) -> None:
        self.first = first
        self.ceiling = ceiling
        self.stable = stable
        self.failures = 0

    def delay(self, lived: float) -> float:
        """The wait before the next start, after a worker lived C{lived} seconds."""
        if lived >= self.stable:
            self.failures = 0
        self.failures += 1
        if self.failures == 1:
            return 0.0
        return min(self.first * 2 ** (self.failures - 2), self.ceiling)


class WorkerChannel(Channel):
    """
    The supervisor's end of one worker's control channel: the worker's
    log events and access lines arrive here and go to twistd's log, under
    the worker's name.
    """

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__()
        self.worker = worker
        self.lost: Deferred[None] = Deferred()
        self._access = TwistdLogLines(
            ACCESS_NAMESPACE, system=f"worker {worker.index}: {ACCESS_NAMESPACE}#info").write

    @LogEvents.responder
    def log_events(self, events: list[str]) -> dict:
        for text in events:
            event = eventFromJSON(text)
            level = event.get("log_level")
            namespace = event.get("log_namespace", "-")
            event["log_system"] = (f"worker {self.worker.index}: "
                                   f"{namespace}#{getattr(level, 'name', '-')}")
            globalLogPublisher(event)
        return {}

    @AccessLines.responder
    def access_lines(self, lines: list[str]) -> dict:
        for line in lines:
            self._access(line)
        return {}

    @ServerStats.responder
    def server_stats(self) -> Deferred[dict]:
        return self.worker.supervisor.whole_server().addCallback(lambda data: {"stats": data})

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


class WorkerProcess(ProcessProtocol):
    """
    One worker process: its control channel, what it writes on its
    standard output and error (the application's prints, its stacks when
    stuck) relayed line by line into the log, and its end.

    @ivar state: C{starting} until it answers L{Start}, then C{serving};
        C{leaving} once it is being stopped or replaced.
    @ivar config: the configuration it serves with (after reloads).
    """

    def __init__(self, supervisor: Supervisor, index: int, seat: int, started_at: float,
                 config: Config) -> None:
        self.supervisor = supervisor
        self.index = index
        self.seat = seat
        self.started_at = started_at
        self.config = config
        self.pid: int | None = None
        self.state = "starting"
        self.channel = WorkerChannel(self)
        self.heartbeat_sent: float | None = None
        """When the heartbeat not yet answered was sent."""
        self.max_requests = 0
        """Requests after which it is recycled ([server] max_requests and jitter); 0: never."""
        self.recycle_after = 0.0
        """Not recycled before this time: its last replacement failed to start."""
        self._partial = {1: b"", 2: b""}

    def makeConnection(self, transport) -> None:
        self.pid = transport.pid  # the transport forgets it once the process ends
        super().makeConnection(transport)

    def signal(self, signum: int) -> None:
        try:
            self.transport.signalProcess(signum)
        except ProcessExitedAlready:  # processEnded follows
            pass

    def childDataReceived(self, fd: int, data: bytes) -> None:
        *lines, self._partial[fd] = (self._partial.get(fd, b"") + data).split(b"\n")
        for line in lines:
            _log.warn("worker {index}: {line}", index=self.index,
                      line=line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self.childDataReceived(fd, b"\n")
        self.supervisor.worker_ended(self, reason)


class Supervisor(DaemonService):
    """
    The top service with C{[server] workers} above 1: the shared sockets
    (L{SharedSocketService} children) and the worker processes.

    @ivar workers: the worker serving (or starting to serve) in each
        place, by index from 1.
    @ivar replacements: workers starting to take over a place whose
        worker is being recycled; it drains once its replacement serves.
    @ivar leaving: workers being stopped or replaced, until they end.
    """

    def __init__(self, config: Config, listeners: Iterable[SharedSocketService], reactor,
                 executable: str = sys.executable) -> None:
        super().__init__(reactor)
        self.setName("backtracweb")
        self.config = config
        self._started_config = config
        self._executable = executable
        self.listeners = list(listeners)
        for listener in self.listeners:
            listener.setServiceParent(self)
        self.workers: dict[int, WorkerProcess] = {}
        self.replacements: dict[int, WorkerProcess] = {}
        self.leaving: set[WorkerProcess] = set()
        self.board: LoadBoard | None = None
        self._backoff = {index: Backoff() for index in range(1, MOST_WORKERS + 1)}
        self._pending_starts: dict[int, object] = {}
        """The calls that will start a worker again, by place."""
        self._all_ended: Deferred[None] | None = None
        self._first_failure: str | None = None
        self._first_start_over = False
        self.restarts = {index: 0 for index in range(1, MOST_WORKERS + 1)}
        """How many times each place's worker was started again."""
        self._started_at = 0.0
        self._heartbeats = Repeating(reactor, self._heartbeat_interval(), self._beat)
        self._devnull: int | None = None

    @property
    def indexes(self) -> range:
        return range(1, self._started_config["server"]["workers"] + 1)

    # -- starting -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._started_at = time.time()
        # Two seats a place: a worker's replacement serves beside it while it drains.
        self.board = LoadBoard.create(2 * MOST_WORKERS)
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        for index in self.indexes:
            self._start_worker(index)
        self._wait_until_ready()
        self._heartbeats.start()

    def _heartbeat_interval(self) -> float:
        return min(1.0, self.config["server"]["worker_timeout"] / 4)

    def _all_workers(self) -> list[WorkerProcess]:
        return [*self.workers.values(), *self.replacements.values(), *self.leaving]

    def _worker_flags(self) -> list[str]:
        # The reactor is chosen as a worker starts, before it is told what to serve.
        return [ASGI_FLAG] if self._started_config.app["interface"] == "asgi" else []

    def _free_seat(self, index: int) -> int:
        taken = {w.seat for w in self._all_workers()}
        return index if index not in taken else index + MOST_WORKERS

    def _start_worker(self, index: int, replacing: bool = False) -> WorkerProcess:
        """Start a worker for place C{index}; as a replacement, beside the one serving there."""
        self._pending_starts.pop(index, None)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        board_fd = CONTROL_FD + 1
        child_fds: dict[int, int | str] = {
            0: self._devnull, 1: "r", 2: "r", CONTROL_FD: theirs.fileno(), board_fd: self.board.fd}
        sockets = []
        next_fd = board_fd + 1  # then the listening sockets, and the files they read (TLS)
        for listener in self.listeners:
            socket_fd, next_fd = next_fd, next_fd + 1
            child_fds[socket_fd] = listener.fileno()
            inherited = {}
            for name, fd in listener.files.items():
                child_fds[next_fd] = fd
                inherited[name] = next_fd
                next_fd += 1
            sockets.append((socket_fd, listener.worker_endpoint(inherited)))
        seat = self._free_seat(index)
        self.board.set(seat, 0)
        worker = WorkerProcess(self, index, seat, self._reactor.seconds(), self.config)
        try:
            self._reactor.spawnProcess(
                worker, self._executable, [self._executable, "-m", "backtracweb.process.worker",
                                           *self._worker_flags()],
                env=os.environ, childFDs=child_fds,
            )
        finally:
            theirs.close()
        adopt(self._reactor, ours.fileno(), worker.channel)
        ours.close()  # the connection holds a duplicate
        (self.replacements if replacing else self.workers)[index] = worker
        requests = self.config["server"]["max_requests"]
        if requests:
            worker.max_requests = requests + random.randint(
                0, self.config["server"]["max_requests_jitter"])
        self._log.info("worker {index} starting (pid {pid})", index=index, pid=worker.pid)
        current = None if self.config is self._started_config else self.config
        started = worker.channel.callRemote(
            Start, index=index, seat=seat, started=self._started_config, current=current,
            sockets=sockets, board=board_fd, board_size=self.board.seats)
        timeout = self.config["server"]["start_timeout"]
        too_late = self._reactor.callLater(timeout, self._start_timed_out, worker, timeout)

        def answered(result: object) -> object:
            if too_late.active():
                too_late.cancel()
            return result

        started.addBoth(answered)
        started.addCallbacks(lambda _: self._serving(worker),
                             lambda failure: self._not_started(worker, failure))
        return worker

    def _serving(self, worker: WorkerProcess) -> None:
        if worker.state != "starting":
            return
        worker.state = "serving"
        if worker.config is not self.config:  # reloaded while it started
            self._send_config(worker, self.config)
        if self.replacements.get(worker.index) is worker:
            del self.replacements[worker.index]
            old = self.workers.get(worker.index)
            self.workers[worker.index] = worker
            if old is not None:
                self._log.info("worker {index} (pid {pid}) serves; its predecessor (pid "
                               "{old}) drains", index=worker.index, pid=worker.pid, old=old.pid)
                self._leave(old)
                old.signal(signal.SIGTERM)

    def _not_started(self, worker: WorkerProcess, failure: Failure) -> None:
        if worker.state != "starting":
            return
        if failure.check(CannotStart):
            why = str(failure.value)
        else:  # the channel closed: it died (and said why in the log, if it could)
            why = "it exited before serving (see the log)"
        self._startup_failure(worker, why)

    def _start_timed_out(self, worker: WorkerProcess, timeout: float) -> None:
        if worker.state != "starting":
            return
        self._log.error(
            "worker {index} (pid {pid}) is not serving after {timeout:g} s ([server] "
            "start_timeout): its threads' stacks follow, then it is killed",
            index=worker.index, pid=worker.pid, timeout=timeout)
        self._kill_stuck(worker)
        self._startup_failure(worker, f"it was not serving after {timeout:g} s ([server] "
                                      "start_timeout; its threads' stacks are in the log)")

    def _startup_failure(self, worker: WorkerProcess, why: str) -> None:
        worker.state = "failed"
        if not self._first_start_over and self._first_failure is None:
            self._first_failure = f"{why}; in worker {worker.index}"

    def _wait_until_ready(self) -> None:
        """
        Run the reactor's loop until every worker serves; raise
        L{StartupError} with the reason if one cannot.

        twistd's first process exits, reporting success, as soon as
        C{startService} returns, and the reactor runs only after that; an
        admin must learn there that the application failed to load, as
        with a single process.
        """
        while self._first_failure is None and any(
                w.state == "starting" for w in self.workers.values()):
            self._reactor.iterate(0.05)
        if self._first_failure is None:
            self._first_start_over = True  # failures from now on are restarts, not fatal
            return
        # Let a worker that timed out write its stacks to the log before it is killed.
        deadline = self._reactor.seconds() + STACKS_WAIT
        while self._reactor.seconds() < deadline and any(
                w.state == "failed" and not w.channel.lost.called for w in self.workers.values()):
            self._reactor.iterate(0.05)
        for worker in self.workers.values():
            worker.signal(signal.SIGKILL)
        # The cause first: twistd relays only the start of the message.
        raise fatal(StartupError(self._first_failure))

    # -- liveness -------------------------------------------------------------

    def _beat(self) -> None:
        """
        Send each serving worker a heartbeat; replace those that stopped
        answering, and recycle those past C{max_requests} or C{max_memory}.
        """
        now = self._reactor.seconds()
        timeout = self.config["server"]["worker_timeout"]
        for worker in list(self.workers.values()):
            if worker.state != "serving":
                continue
            if worker.heartbeat_sent is None:
                worker.heartbeat_sent = now
                answered = worker.channel.callRemote(Heartbeat)
                answered.addCallbacks(lambda answer, w=worker: self._heard(w, answer),
                                      lambda _: None)  # the channel closed: it ended
            elif now - worker.heartbeat_sent >= timeout:
                self._log.error(
                    "worker {index} (pid {pid}) has not answered for {timeout:g} s ([server] "
                    "worker_timeout): its threads' stacks follow; killing it and starting "
                    "another", index=worker.index, pid=worker.pid, timeout=timeout)
                self._kill_stuck(worker)
                self._leave(worker)
                self.restarts[worker.index] += 1
                if worker.index not in self.replacements:
                    self._start_worker(worker.index)
        self._heartbeats.interval = self._heartbeat_interval()

    def _heard(self, worker: WorkerProcess, answer: dict) -> None:
        worker.heartbeat_sent = None
        if worker.state != "serving" or worker.index in self.replacements:
            return
        if self._reactor.seconds() < worker.recycle_after:
            return  # its last replacement failed to start: not again yet
        server = self.config["server"]
        if worker.max_requests and answer["requests"] >= worker.max_requests:
            why = f"has served {answer['requests']} requests ([server] max_requests)"
        elif server["max_memory"] and answer["rss"] >= server["max_memory"]:
            why = (f"uses {answer['rss'] // 2**20} MB of memory ([server] max_memory = "
                   f"{server['max_memory'] // 2**20} MB)")
        else:
            return
        self._log.info("worker {index} (pid {pid}) {why}: starting its replacement, then it "
                       "drains", index=worker.index, pid=worker.pid, why=why)
        self._start_worker(worker.index, replacing=True)

    def _kill_stuck(self, worker: WorkerProcess) -> None:
        """Have the worker write its threads' stacks (see L{STACKS_SIGNAL}), then kill it."""
        worker.signal(STACKS_SIGNAL)
        self._reactor.callLater(STACKS_WAIT, worker.signal, signal.SIGKILL)

    def _leave(self, worker: WorkerProcess) -> None:
        """C{worker} no longer serves its place: it is stopping, or being replaced."""
        self._forget(worker)
        worker.state = "leaving"
        self.leaving.add(worker)

    def _forget(self, worker: WorkerProcess) -> None:
        """C{worker} holds no place nor seat any more."""
        for place in (self.workers, self.replacements):
            if place.get(worker.index) is worker:
                del place[worker.index]
        self.leaving.discard(worker)
        self.board.retire(worker.seat)

    # -- the number of workers -----------------------------------------------

    def _places(self) -> set[int]:
        """The places with a worker, or one about to start."""
        return {*self.workers, *self.replacements, *self._pending_starts}

    def add_worker(self, signame: str = "add request") -> None:
        """One worker more (SIGTTIN), up to the most C{[server] workers} allows."""
        places = self._places()
        if self._stopping:
            return
        if len(places) >= MOST_WORKERS:
            self._log.warn("received {signal}: already {count} workers, the most there may be",
                           signal=signame, count=len(places))
            return
        index = min(set(range(1, MOST_WORKERS + 1)) - places)
        self._log.info("received {signal}: adding worker {index} ({count} workers)",
                       signal=signame, index=index, count=len(places) + 1)
        self._start_worker(index)

    def remove_worker(self, signame: str = "remove request") -> None:
        """One worker fewer (SIGTTOU): the last one drains; the first always stays."""
        places = self._places()
        if self._stopping:
            return
        if len(places) <= 1:
            self._log.warn("received {signal}: keeping the last worker", signal=signame)
            return
        index = max(places)
        call = self._pending_starts.pop(index, None)
        if call is not None:
            call.cancel()
        self._log.info("received {signal}: worker {index} drains ({count} workers)",
                       signal=signame, index=index, count=len(places) - 1)
        for place in (self.replacements, self.workers):
            worker = place.get(index)
            if worker is not None:
                self._leave(worker)
                worker.signal(signal.SIGTERM)

    # -- the status page ------------------------------------------------------

    def whole_server(self) -> Deferred[dict]:
        """
        The numbers of the whole server for the status page (see
        L{server_snapshot}): every worker's, asked over its channel; one
        that does not answer within L{STATS_WAIT} is listed without them.
        """
        own = {
            "status": "draining" if self._stopping else "serving",
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self._started_at, 3),
            "config_file": self.config.path,
            "config_loaded_at": iso_time(self.config.loaded_at),
        }

        def ask(worker: WorkerProcess) -> Deferred[dict]:
            entry = {"index": worker.index, "state": worker.state, "pid": worker.pid,
                     "restarts": self.restarts[worker.index]}
            if worker.state != "serving":
                return succeed(entry)
            asked = worker.channel.callRemote(Stats).addTimeout(STATS_WAIT, self._reactor)
            # The index first; the supervisor's view of the worker over its own.
            return asked.addCallbacks(lambda answer: {**entry, **answer["stats"], **entry},
                                      lambda _: {**entry, "state": "not answering"})

        workers = sorted(self.workers.values(), key=lambda w: w.index)
        return gatherResults([ask(w) for w in workers]).addCallback(
            lambda entries: server_snapshot(own, entries))

    # -- workers that end -----------------------------------------------------

    def worker_ended(self, worker: WorkerProcess, reason: Failure) -> None:
        how = _how_it_ended(reason)
        index = worker.index
        was_current = self.workers.get(index) is worker
        was_replacement = self.replacements.get(index) is worker
        self._forget(worker)
        if worker.state == "leaving" or self._stopping:
            self._log.info("worker {index} (pid {pid}) {how}", index=index, pid=worker.pid,
                           how=how)
            self._maybe_all_ended()
            return
        if not self._first_start_over or not (was_current or was_replacement):
            return  # a failed first start is reported by startService
        lived = self._reactor.seconds() - worker.started_at
        if was_current and index in self.replacements:
            self._log.error("worker {index} (pid {pid}) {how} after {lived:.1f} s; its "
                            "replacement is starting", index=index, pid=worker.pid, how=how,
                            lived=lived)
            return
        delay = self._backoff[index].delay(lived)
        current = self.workers.get(index)
        if was_replacement and current is not None:
            current.recycle_after = self._reactor.seconds() + max(delay, 1.0)
            self._log.error(
                "worker {index}'s replacement (pid {pid}) {how} before serving; worker "
                "{index} (pid {current}) keeps serving", index=index, pid=worker.pid,
                how=how, current=current.pid)
            return
        self._restart_later(worker, how, lived, delay)

    def _restart_later(self, worker: WorkerProcess, how: str, lived: float,
                       delay: float) -> None:
        self._log.error(
            "worker {index} (pid {pid}) {how} after {lived:.1f} s; starting another in "
            "{delay:g} s", index=worker.index, pid=worker.pid, how=how, lived=lived, delay=delay,
        )
        self.restarts[worker.index] += 1
        self._pending_starts[worker.index] = self._reactor.callLater(
            delay, self._start_worker, worker.index)

    def _maybe_all_ended(self) -> None:
        if self._stopping and not self._all_workers():
            if self._all_ended is not None and not self._all_ended.called:
                self._all_ended.callback(None)

    # -- signals ----------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """
        Close the shared sockets (new connections are refused, so a load
        balancer moves on), then drain every worker, killing those still
        running C{KILL_GRACE} seconds after the graceful timeout.
        """
        self._stopping = True
        if self._heartbeats.running:
            self._heartbeats.stop()
        for call in self._pending_starts.values():
            call.cancel()
        self._pending_starts.clear()
        closed = DeferredList([
            d for d in (listener.stopService() for listener in self.listeners) if d is not None
        ])
        Service.stopService(self)
        self._all_ended = Deferred()
        running = self._all_workers()
        if not running:
            self._all_ended.callback(None)
        for worker in running:
            worker.signal(signal.SIGTERM)
        timeout = self.config["server"]["graceful_timeout"] + KILL_GRACE
        kill = self._reactor.callLater(timeout, self._kill_remaining)
        self._all_ended.addBoth(lambda _: kill.cancel() if kill.active() else None)
        return DeferredList([closed, self._all_ended]).addCallback(lambda _: None)

    def _kill_remaining(self) -> None:
        for worker in self._all_workers():
            self._log.warn("worker {index} (pid {pid}) still running; killing it",
                           index=worker.index, pid=worker.pid)
            worker.signal(signal.SIGKILL)

    def cut_short(self) -> None:
        for worker in self._all_workers():
            worker.signal(signal.SIGTERM)

    def reload(self, signame: str = "reload request") -> None:
        """
        Check the file once here; if it is valid, every worker applies it
        (and a worker started later starts with it).
        """
        if self._stopping:
            self._log.info("received {signal} while stopping: not reloading", signal=signame)
            return
        self._log.info("received {signal}: reloading {path}", signal=signame,
                       path=self.config.path)
        try:
            new = load_config(self.config.path, running=self._started_config)
        except ConfigError as e:
            not_reloaded(self._log, e, self.config)
            return
        self.config = new
        for worker in self.workers.values():
            if worker.state == "serving":
                self._send_config(worker, new)

    def _send_config(self, worker: WorkerProcess, config: Config) -> None:
        worker.config = config
        sent = worker.channel.callRemote(Reload, config=config)
        sent.addErrback(lambda failure: None if worker.channel.lost.called else
                        self._log.failure("worker {index} did not take the new configuration",
                                          failure, index=worker.index))

    def reopen_logs(self, signame: str = "reopen request") -> None:
        """Reopen twistd's log file here; each worker reopens its access log."""
        if self.reopen_twistd_log(signame):
            self._log.info("received {signal}: log file reopened", signal=signame)
        for worker in self.workers.values():
            if worker.state == "serving":
                worker.channel.callRemote(ReopenLogs).addErrback(lambda _: None)


def _how_it_ended(reason: Failure) -> str:
    if reason.check(ProcessDone):
        return "exited"
    if reason.check(ProcessTerminated):
        if reason.value.signal is not None:
            return f"was killed by {signal.Signals(reason.value.signal).name}"
        if reason.value.exitCode == EXIT_STARTUP_FAILED:
            return "could not start"
        return f"exited with status {reason.value.exitCode}"
    return str(reason.value)
