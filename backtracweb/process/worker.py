"""
One worker process of a supervisor (C{[server] workers}): serves the site
on the listening sockets it inherited, with a thread pool of its own.

The supervisor starts it as C{python -m backtracweb.process.worker}; it is not
meant to be run by hand.  Everything between the two goes over the control
channel (L{backtracweb.process.control}) the worker inherits as descriptor
L{CONTROL_FD}: what to serve, reloads, log events, heartbeats.  Its end
(the supervisor is gone) makes the worker drain and exit.  What the
application prints goes to the supervisor's log through the worker's
standard output and error, and so do the stacks of its threads when the
supervisor finds it stuck (L{STACKS_SIGNAL}).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import (
    Logger, eventAsJSON, eventFromJSON, formatEvent, formatEventAsClassicLogText, globalLogBeginner,
)
from twisted.python import threadable
from twisted.python.failure import Failure

from backtracweb.app.accesslog import route_twistd_log
from backtracweb.app.status import rss_bytes, snapshot
from backtracweb.config.settings import Config
from backtracweb.errors import CANNOT_START, ConfigError, StartupError
from backtracweb.process.control import (
    ASGI_FLAG, CONTROL_FD, EXIT_STARTUP_FAILED, STACKS_SIGNAL, AccessLines, CannotStart, Channel,
    Heartbeat, LogEvents, Reload, ReopenLogs, ServerStats, Start, Stats, adopt,
)
from backtracweb.process.cpu import pin_worker
from backtracweb.process.eventloop import install_asyncio_reactor
from backtracweb.process.service import BacktracService
from backtracweb.process.shared import InheritedSocketService, LoadBoard
from backtracweb.process.tree import build_site_service

_log = Logger(namespace="backtracweb.process.worker")


class WorkerService(BacktracService):
    """
    A L{BacktracService} in a worker: SIGINT is the supervisor's to act on
    (Ctrl-C in a terminal reaches every process of the group), so only
    SIGTERM stops it.
    """

    stop_signals = (signal.SIGTERM,)
    announce = False  # the supervisor has

    def add_worker(self, signame: str = "add request") -> None:
        self._log.warn("received {signal}: the number of workers is the supervisor's to "
                       "change; send it to pid {pid}", signal=signame, pid=os.getppid())

    remove_worker = add_worker


class Outbox:
    """
    What the worker's log says, on its way to the supervisor: log events
    (from any thread) and access lines (from the reactor thread), sent in
    a batch once per turn of the reactor.  Without a channel (before it
    is connected, after it is lost) events go to standard error, which the
    supervisor relays too.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._lock = threading.Lock()
        self._events: list[str] = []
        self._lines: list[str] = []
        self._scheduled = False
        self.channel: Channel | None = None

    def event(self, event: dict[str, Any]) -> None:
        """A log observer."""
        # Formatted here: Twisted's JSON form of an event loses format
        # specifications such as {seconds:.1f} on the way.
        message = formatEvent(event).replace("{", "{{").replace("}", "}}")
        event = {**event, "log_format": message}
        try:
            text = eventAsJSON(event)
        except Exception:  # an unserializable event: its text will do
            text = eventAsJSON({"log_format": "{text}", "text": formatEventAsClassicLogText(event),
                                "log_level": event.get("log_level")})
        with self._lock:
            self._events.append(text)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            if threadable.isInIOThread():
                self._reactor.callLater(0, self.flush)
            else:
                self._reactor.callFromThread(self.flush)

    def access_line(self, line: str) -> None:
        """Where the access log's lines for twistd's log go (reactor thread only)."""
        self._lines.append(line)
        if not self._scheduled:
            self._scheduled = True
            self._reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Send what has gathered."""
        with self._lock:
            events, self._events = self._events, []
            lines, self._lines = self._lines, []
            self._scheduled = False
        channel = self.channel
        if channel is None:
            self._to_stderr(events, lines)
            return
        if events:
            channel.callRemote(LogEvents, events=events)
        if lines:
            channel.callRemote(AccessLines, lines=lines)

    @staticmethod
    def _to_stderr(events: list[str], lines: list[str]) -> None:
        text = [formatEventAsClassicLogText(eventFromJSON(e)) for e in events]
        text += [line + "\n" for line in lines]
        try:
            sys.stderr.write("".join(text))
            sys.stderr.flush()
        except OSError:  # nobody reads any more
            pass


class SupervisorChannel(Channel):
    """
    The worker's end of the control channel: starts serving on L{Start},
    and stops when the supervisor is gone.
    """

    def __init__(self, reactor, outbox: Outbox) -> None:
        super().__init__()
        self._reactor = reactor
        self._outbox = outbox
        self.service: WorkerService | None = None
        self.exit_status = 0
        self._lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self._outbox.channel = self
        self._outbox.flush()

    def connectionLost(self, reason: Failure) -> None:
        self._outbox.channel = None
        super().connectionLost(reason)
        self._lost.callback(None)
        if self.service is None:
            self._reactor.stop()  # never served, or could not start
        elif not self.service._stopping:
            self.service.stop("the end of the supervisor")

    def close(self, _: object = None) -> Deferred[None]:
        """Send what is left, and close the channel; fires once it is closed."""
        if self._lost.called:
            return succeed(None)
        self._outbox.flush()
        self.transport.loseConnection()
        return self._lost

    @Start.responder
    def start(self, index: int, seat: int, started: Config, current: Config | None,
              sockets: list, board: int, board_size: int) -> Deferred[dict]:
        reactor = self._reactor
        if started["server"]["cpu_affinity"] == "auto":
            _log.info("worker {index} runs on CPU {cpu}", index=index, cpu=pin_worker(index))
        my_seat = LoadBoard(board, board_size).seat(seat)

        def listeners(site):
            site.connections_changed = my_seat.set
            return [InheritedSocketService(fd, description, site, reactor, my_seat, configured)
                    for (fd, description), configured in zip(sockets, started.listen)]

        try:
            service = build_site_service(started, listeners, reactor, WorkerService,
                                         whole_server=self.whole_server)
            service.privilegedStartService()
            service.startService()
        except ConfigError as e:
            _log.critical(CANNOT_START + "{error}", error=e)
            self._give_up()
            raise CannotStart(str(e)) from None
        except StartupError as e:  # logged where it was raised
            self._give_up()
            raise CannotStart(str(e)) from None

        def serving(_: object) -> dict:
            self.service = service
            if current is not None:
                service.apply(current)
            reactor.addSystemEventTrigger("before", "shutdown", self._shut_down)
            _log.info("worker {index} ready (pid {pid})", index=index, pid=os.getpid())
            return {"pid": os.getpid()}

        def failed(failure: Failure) -> None:
            # An ASGI application's lifespan startup, run as the loop runs here.
            failure.trap(StartupError)
            self._give_up()
            raise CannotStart(failure.getErrorMessage())

        return service.web.ready.addCallbacks(serving, failed)

    def _give_up(self) -> None:
        self.exit_status = EXIT_STARTUP_FAILED
        self._reactor.callLater(0, self.close)  # once the answer is on its way

    def _shut_down(self) -> Deferred[None]:
        # The log of the drain reaches the supervisor before the channel closes.
        return self.service.stopService().addBoth(self.close)

    @Reload.responder
    def reload(self, config: Config) -> dict:
        self.service.apply(config)
        return {}

    @ReopenLogs.responder
    def reopen_logs(self) -> dict:
        self.service.reopen_logs("SIGUSR1 (from the supervisor)")
        return {}

    @Heartbeat.responder
    def heartbeat(self) -> dict:
        return {"requests": self.service.web.site.stats.requests, "rss": rss_bytes()}

    @Stats.responder
    def stats(self) -> dict:
        return {"stats": snapshot(self.service.web.site, self.service.pool.pool)}

    def whole_server(self) -> Deferred[dict]:
        """The whole server's numbers, asked of the supervisor (for the status page)."""
        return self.callRemote(ServerStats).addCallback(lambda answer: answer["stats"])


def main() -> int:
    """Serve until stopped; the exit status tells the supervisor how it went."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.register(STACKS_SIGNAL, file=sys.stderr, all_threads=True)
    if ASGI_FLAG in sys.argv[1:]:
        install_asyncio_reactor()
    from twisted.internet import reactor

    outbox = Outbox(reactor)
    globalLogBeginner.beginLoggingTo([outbox.event])
    route_twistd_log(outbox.access_line)
    channel = SupervisorChannel(reactor, outbox)
    adopt(reactor, CONTROL_FD, channel)
    os.close(CONTROL_FD)  # the connection holds a duplicate
    reactor.run()
    return channel.exit_status


if __name__ == "__main__":
    # Run the module's own copy, not __main__'s, so that log namespaces
    # and pickled classes name backtracweb.process.worker.
    from backtracweb.process.worker import main as worker_main

    sys.exit(worker_main())
