"""
Lines of text into twistd's log at the cost of a write.

twistd's log observer formats each event it is given: the format string
is parsed, the time converted and formatted, the system worked out.  On a
loaded server that is about 25 µs an event, more than backtracweb's own
work for a small request, and the access log (C{access_log = -}, the
default) sends one event per request.  An access line is already text:
L{TwistdLogLines} writes it to the file twistd's observer writes to, with
the prefix that observer would give it, worked out once a second.

The shortcut is taken only where it is exact.  At the first line, the
observer formats a probe event, and the result must be what the shortcut
would write; otherwise (syslog, a custom C{--logger}, a worker's JSON
stream, other observers besides twistd's) each line goes through
C{twisted.logger} as any event does.  The decision holds for the writer's
life (an access log's, until a reload opens a new one; on the supervisor,
a worker's): twistd sets its observer up once.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from twisted.logger import FileLogObserver, Logger, LogLevel, formatTime, globalLogPublisher
from twisted.python.compat import ioType

from backtracweb.twisted_internals import observer_file, only_observer


class TwistdLogLines:
    """
    Writes lines to twistd's log as info events of C{namespace}, shown with
    C{system} if given (as C{log_system}), else as C{namespace#info}.
    """

    def __init__(self, namespace: str, system: str | None = None,
                 publisher: Any = globalLogPublisher, clock: Callable[[], float] = time.time) -> None:
        self._log = Logger(namespace=namespace, observer=publisher)
        self._system = system or f"{namespace}#info"
        self._extra = {"log_system": system} if system else {}
        self._publisher = publisher
        self._clock = clock
        self._write: Callable[[str], None] | None = None  # decided at the first line
        self._second = -1
        self._prefix = ""

    def write(self, line: str) -> None:
        """Log C{line}, one line of text."""
        if self._write is None:
            # Not sooner: twistd starts logging after the plugin made its service.
            self._write = self._direct_writer() or self._emit
        self._write(line)

    def _emit(self, line: str) -> None:
        self._log.info("{line}", line=line, **self._extra)

    def _direct_writer(self) -> Callable[[str], None] | None:
        # Twisted offers no public way to write to twistd's log but an
        # event; where what we look for is missing, lines are events.
        observer = only_observer(self._publisher)
        if not isinstance(observer, FileLogObserver):
            return None
        out = observer_file(observer)
        if out is None:
            return None
        now = float(int(self._clock()))
        probe = {"log_namespace": self._log.namespace, "log_level": LogLevel.info,
                 "log_format": "{line}", "line": "probe", "log_time": now, **self._extra}
        if observer.formatEvent(probe) != self._prefix_at(now) + "probe\n":
            return None
        encode = ioType(out) is not str

        def write(line: str) -> None:
            text = self._prefix_at(self._clock()) + line + "\n"
            try:
                # As FileLogObserver writes: one write and a flush per event.
                out.write(text.encode("utf-8") if encode else text)
                out.flush()
            except (OSError, ValueError):  # a full disk, a closed file
                self._emit(line)  # twisted.logger reports what observers fail at

        return write

    def _prefix_at(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._prefix = f"{formatTime(second)} [{self._system}] "
            self._second = second
        return self._prefix
