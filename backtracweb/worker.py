"""
One worker process of a supervisor (C{[server] workers}): serves the site
on the listening sockets it inherited, with a thread pool of its own.

The supervisor starts it as C{python -m backtracweb.worker} with a
L{WorkerStart} in the environment; it is not meant to be run by hand.
Its log events go to the supervisor as JSON on the original standard
output; new configurations arrive on standard input, and its end (the
supervisor is gone) makes the worker drain and exit.
"""

from __future__ import annotations

import os
import signal
import pickle
import struct
import sys
from typing import Callable, TextIO

from twisted.internet.protocol import Protocol
from twisted.logger import Logger, globalLogBeginner, jsonFileLogObserver
from twisted.python.failure import Failure

from backtracweb.accesslog import NAMESPACE as ACCESS_NAMESPACE, route_twistd_log
from backtracweb.cpu import pin_worker
from backtracweb.errors import CANNOT_START, ConfigError, StartupError
from backtracweb.loader import build_site_service
from backtracweb.shared import InheritedSocketService, LoadBoard
from backtracweb.service import BacktracService
from backtracweb.supervisor import (
    ACCESS_LINE, EXIT_STARTUP_FAILED, RECORD_START, WORKER_ENVIRONMENT, WorkerStart,
)

_log = Logger(namespace="backtracweb.worker")


class WorkerService(BacktracService):
    """
    A L{BacktracService} in a worker: SIGINT is the supervisor's to act on
    (Ctrl-C in a terminal reaches every process of the group), so only
    SIGTERM stops it.
    """

    stop_signals = (signal.SIGTERM,)
    announce = False  # the supervisor has


class SupervisorChannel(Protocol):
    """
    The worker's standard input: configurations the supervisor reloaded,
    each a 4-byte length and a pickled L{Config}; its end means the
    supervisor is gone, and the worker stops.
    """

    def __init__(self, service: WorkerService) -> None:
        self.service = service
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = struct.unpack("!I", self._buffer[:4])
            if len(self._buffer) < 4 + length:
                return
            payload, self._buffer = self._buffer[4:4 + length], self._buffer[4 + length:]
            self.service.apply(pickle.loads(payload))

    def connectionLost(self, reason: Failure) -> None:
        if not self.service._stopping:
            self.service.stop("the end of the supervisor")


def access_line_relay(events: TextIO) -> Callable[[str], None]:
    """
    Where a worker's lines for twistd's log go: to the supervisor on the
    event stream, as records of their own (see L{ACCESS_LINE}).
    """
    as_event = Logger(namespace=ACCESS_NAMESPACE)

    def relay(line: str) -> None:
        if "\n" in line or RECORD_START in line:  # (from the template) would break the framing
            as_event.info("{line}", line=line)  # a JSON event, like any other
        else:
            events.write(RECORD_START + ACCESS_LINE + line + "\n")

    return relay


def main() -> int:
    """Serve until stopped; the exit status tells the supervisor how it went."""
    # Anything written to file descriptor 1 would corrupt the event stream:
    # keep the stream on a descriptor of its own, and send fd 1 to stderr.
    events = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(events)])
    route_twistd_log(access_line_relay(events))

    start = WorkerStart.decode(os.environ.pop(WORKER_ENVIRONMENT))
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    if start.started["server"]["cpu_affinity"] == "auto":
        _log.info("worker {index} runs on CPU {cpu}", index=start.index,
                  cpu=pin_worker(start.index))
    seat = LoadBoard(start.board, start.started["server"]["workers"]).seat(start.index)

    def listeners(site):
        site.connections_changed = seat.set
        return [InheritedSocketService(fd, description, site, reactor, seat)
                for fd, description in start.sockets]

    try:
        service = build_site_service(start.started, listeners, reactor, WorkerService)
        service.privilegedStartService()
        service.startService()
    except ConfigError as e:
        _log.critical(CANNOT_START + "{error}", error=e)
        return EXIT_STARTUP_FAILED
    except StartupError:  # logged where it was raised
        return EXIT_STARTUP_FAILED
    if start.current is not start.started:
        service.apply(start.current)

    # StandardIO writes nowhere: the events have their own descriptor.
    StandardIO(SupervisorChannel(service), stdin=0, stdout=os.open(os.devnull, os.O_WRONLY))
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.callWhenRunning(lambda: _log.info(
        "worker {index} ready (pid {pid})", index=start.index, pid=os.getpid(),
        backtracweb_ready=True))
    reactor.run()
    return 0


if __name__ == "__main__":
    # Run the module's own copy, not __main__'s, so that log namespaces
    # and pickled classes name backtracweb.worker.
    from backtracweb.worker import main as worker_main

    sys.exit(worker_main())
