"""
Several worker processes sharing the listening sockets: C{[server] workers}.

The twistd process binds the sockets (before it drops privileges), starts
C{workers} processes (L{backtracweb.worker}) that inherit them, and then
only supervises: it restarts a worker that dies (with back-off when one
keeps dying), passes SIGHUP's new configuration and SIGUSR1 on, drains
every worker on SIGTERM, and writes their log events into twistd's log.
The supervisor itself runs no thread and imports no application code.
"""

from __future__ import annotations

import base64
import os
import pickle
import select
import signal
import struct
import sys
from dataclasses import dataclass
from typing import Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel, eventFromJSON, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from backtracweb.accesslog import NAMESPACE as ACCESS_NAMESPACE
from backtracweb.config import Config, load_config
from backtracweb.errors import CANNOT_START, ConfigError, StartupError
from backtracweb.server import fatal
from backtracweb.shared import LoadBoard, SharedSocketService
from backtracweb.service import DaemonService, not_reloaded
from backtracweb.twistdlog import TwistdLogLines

WORKER_ENVIRONMENT = "BACKTRACWEB_WORKER"
"""The variable that hands a worker its L{WorkerStart}."""

FIRST_SOCKET_FD = 3
"""Workers inherit the listening sockets from this descriptor on, in order."""

EXIT_STARTUP_FAILED = 3
"""A worker's exit status when it could not start (it logged why)."""

RECORD_START = "\x1e"
"""Starts each record of a worker's event stream (as in RFC 7464's JSON text sequences)."""
ACCESS_LINE = "\x1f"
"""
Marks a record that is an access line as plain text rather than a JSON
event: there is one a request, and encoding it as JSON to decode it here
again would cost more than serving a small request.
"""

_log = Logger(namespace="backtracweb.supervisor")

KILL_GRACE = 5.0
"""Seconds past graceful_timeout before a worker that has not exited is killed."""


@dataclass(frozen=True)
class WorkerStart:
    """
    What a worker needs to serve: the configuration the daemon started
    with (application, sockets), the one in force now (after reloads), its
    listening sockets as (descriptor, endpoint description), and the
    descriptor of the workers' L{LoadBoard}.
    """

    index: int
    started: Config
    current: Config
    sockets: tuple[tuple[int, str], ...]
    board: int

    def encode(self) -> str:
        return base64.b64encode(pickle.dumps(self)).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> WorkerStart:
        return pickle.loads(base64.b64decode(text))


def frame(config: Config) -> bytes:
    """A new configuration for a worker, as written to its standard input."""
    payload = pickle.dumps(config)
    return struct.pack("!I", len(payload)) + payload


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


class WorkerProcess(ProcessProtocol):
    """
    One worker process: relays what it logs (JSON events on its standard
    output, anything else on its standard error) into the supervisor's
    log, and tells the supervisor when it is ready and when it ends.
    """

    def __init__(self, supervisor: Supervisor, index: int, started_at: float) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started_at = started_at
        self.pid: int | None = None
        self.ready = False
        self.failure: str | None = None
        self._events = b""
        self._errors = b""
        self._access = TwistdLogLines(
            ACCESS_NAMESPACE, system=f"worker {index}: {ACCESS_NAMESPACE}#info").write

    def makeConnection(self, transport) -> None:
        self.pid = transport.pid  # the transport forgets it once the process ends
        super().makeConnection(transport)

    def send(self, config: Config) -> None:
        self.transport.writeToChild(0, frame(config))

    def signal(self, signum: int) -> None:
        try:
            self.transport.signalProcess(signum)
        except ProcessExitedAlready:  # processEnded follows
            pass

    def outReceived(self, data: bytes) -> None:
        records = (self._events + data).split(RECORD_START.encode())
        self._events = records.pop()
        if self._events.endswith(b"\n"):  # a complete last record
            records.append(self._events)
            self._events = b""
        for record in records:
            if record.strip():
                self._relay(record.decode("utf-8", "replace"))

    def errReceived(self, data: bytes) -> None:
        *lines, self._errors = (self._errors + data).split(b"\n")
        for line in lines:
            _log.warn("worker {index}: {line}", index=self.index,
                                     line=line.decode("utf-8", "replace"))

    def _relay(self, text: str) -> None:
        if text.startswith(ACCESS_LINE):
            self._access(text[1:].rstrip("\n"))
            return
        try:
            event = eventFromJSON(text)
        except ValueError:
            _log.warn("worker {index}: {line}", index=self.index, line=text.strip())
            return
        if event.get("backtracweb_ready"):
            self.ready = True
        level = event.get("log_level")
        if level is LogLevel.critical:
            self.failure = formatEvent(event).removeprefix(CANNOT_START)
        namespace = event.get("log_namespace", "-")
        event["log_system"] = f"worker {self.index}: {namespace}#{getattr(level, 'name', '-')}"
        globalLogPublisher(event)

    def processEnded(self, reason: Failure) -> None:
        if self._errors:
            self.errReceived(b"\n")
        self.supervisor.worker_ended(self, reason)


class Supervisor(DaemonService):
    """
    The top service with C{[server] workers} above 1: the shared sockets
    (L{SharedSocketService} children) and the worker processes.
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
        self.board: LoadBoard | None = None
        self._backoff = {index: Backoff() for index in self.indexes}
        self._restarts: dict[int, object] = {}
        self._all_ended: Deferred[None] | None = None

    @property
    def indexes(self) -> range:
        return range(1, self._started_config["server"]["workers"] + 1)

    # -- starting -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.board = LoadBoard.create(len(self.indexes))
        for index in self.indexes:
            self._start_worker(index)
        self._wait_until_ready()

    def _start_worker(self, index: int) -> None:
        self._restarts.pop(index, None)
        board_fd = FIRST_SOCKET_FD + len(self.listeners)
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r", board_fd: self.board.fd}
        sockets = []
        next_fd = board_fd + 1  # then the files the endpoints read (TLS keys)
        for n, listener in enumerate(self.listeners):
            child_fds[FIRST_SOCKET_FD + n] = listener.fileno()
            inherited = {}
            for name, fd in listener.files.items():
                child_fds[next_fd] = fd
                inherited[name] = next_fd
                next_fd += 1
            sockets.append((FIRST_SOCKET_FD + n, listener.worker_endpoint(inherited)))
        start = WorkerStart(index, self._started_config, self.config, tuple(sockets), board_fd)
        self.board.set(index, 0)
        worker = WorkerProcess(self, index, self._reactor.seconds())
        environment = {**os.environ, WORKER_ENVIRONMENT: start.encode()}
        self._reactor.spawnProcess(
            worker, self._executable, [self._executable, "-m", "backtracweb.worker"],
            env=environment, childFDs=child_fds,
        )
        self.workers[index] = worker
        self._log.info("worker {index} starting (pid {pid})", index=index, pid=worker.pid)

    def _wait_until_ready(self) -> None:
        """
        Block until every worker serves, or raise L{StartupError} with the
        reason one could not start.

        twistd's first process exits, reporting success, as soon as
        C{startService} returns; an admin must learn there that the
        application failed to load, as with a single process.  The
        reactor does not run yet, so the workers' output is read here.
        """
        pending = {worker: worker.transport.pipes for worker in self.workers.values()}
        while any(not worker.ready for worker in pending):
            readers = {pipes[fd].fileno(): (worker, fd)
                       for worker, pipes in pending.items() if not worker.ready
                       for fd in (1, 2) if fd in pipes}
            readable, _, _ = select.select(list(readers), [], [])
            for fileno in readable:
                worker, fd = readers[fileno]
                data = os.read(fileno, 65536)
                if data:
                    worker.childDataReceived(fd, data)
                elif fd == 1:
                    self._startup_failed(worker)
                else:
                    del pending[worker][2]

    def _startup_failed(self, worker: WorkerProcess) -> None:
        for other in self.workers.values():
            other.signal(signal.SIGTERM)
        # The cause first: twistd relays only the start of the message.
        why = worker.failure or "it exited before serving (see the log)"
        raise fatal(StartupError(f"{why}; in worker {worker.index}"))

    # -- workers that end -----------------------------------------------------

    def worker_ended(self, worker: WorkerProcess, reason: Failure) -> None:
        if self.workers.get(worker.index) is not worker:
            return
        del self.workers[worker.index]
        self.board.retire(worker.index)
        how = _how_it_ended(reason)
        if self._stopping:
            self._log.info("worker {index} (pid {pid}) {how}", index=worker.index,
                          pid=worker.pid, how=how)
            if not self.workers and self._all_ended is not None:
                self._all_ended.callback(None)
            return
        lived = self._reactor.seconds() - worker.started_at
        delay = self._backoff[worker.index].delay(lived)
        self._log.error(
            "worker {index} (pid {pid}) {how} after {lived:.1f} s; starting another in "
            "{delay:g} s", index=worker.index, pid=worker.pid, how=how, lived=lived, delay=delay,
        )
        self._restarts[worker.index] = self._reactor.callLater(
            delay, self._start_worker, worker.index)

    # -- signals ----------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """
        Close the shared sockets (new connections are refused, so a load
        balancer moves on), then drain every worker, killing those still
        running C{KILL_GRACE} seconds after the graceful timeout.
        """
        self._stopping = True
        for call in self._restarts.values():
            call.cancel()
        self._restarts.clear()
        closed = DeferredList([
            d for d in (listener.stopService() for listener in self.listeners) if d is not None
        ])
        Service.stopService(self)
        self._all_ended = Deferred()
        if not self.workers:
            self._all_ended.callback(None)
        for worker in self.workers.values():
            worker.signal(signal.SIGTERM)
        timeout = self.config["server"]["graceful_timeout"] + KILL_GRACE
        kill = self._reactor.callLater(timeout, self._kill_remaining)
        self._all_ended.addBoth(lambda _: kill.cancel() if kill.active() else None)
        return DeferredList([closed, self._all_ended]).addCallback(lambda _: None)

    def _kill_remaining(self) -> None:
        for worker in self.workers.values():
            self._log.warn("worker {index} (pid {pid}) still running; killing it",
                          index=worker.index, pid=worker.pid)
            worker.signal(signal.SIGKILL)

    def cut_short(self) -> None:
        for worker in self.workers.values():
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
            worker.send(new)

    def reopen_logs(self, signame: str = "reopen request") -> None:
        """Reopen twistd's log file here; each worker reopens its access log."""
        if self.reopen_twistd_log(signame):
            self._log.info("received {signal}: log file reopened", signal=signame)
        for worker in self.workers.values():
            worker.signal(signal.SIGUSR1)


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
