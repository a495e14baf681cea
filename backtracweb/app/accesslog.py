"""
The access log: one line per request, to a file, to twistd's log, or off.

Lines are written from the reactor thread only, each with a single
C{write} to a file opened with C{O_APPEND}, so they never interleave or
tear, even with several processes appending to one file.  C{reopen} lets
logrotate move the file away and signal the daemon (no C{copytruncate}).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from typing import Callable

from backtracweb.app.twistdlog import TwistdLogLines
from backtracweb.config.logformat import COMBINED
from backtracweb.http.request import Request

NAMESPACE = "backtracweb.access"
OFF = "off"
TWISTD_LOG = "-"

# What writes the lines meant for twistd's log, for each access log opened
# in this process; a worker sends them to its supervisor instead.
_twistd_log_writer: Callable[[], Callable[[str], None]] = lambda: TwistdLogLines(NAMESPACE).write


def route_twistd_log(write: Callable[[str], None]) -> None:
    """Send the lines meant for twistd's log to C{write}, in access logs opened from now on."""
    global _twistd_log_writer
    _twistd_log_writer = lambda: write


def open_append(path: str, mode: int, recreate_mode: int | None = None) -> int:
    """
    A descriptor appending to the log file at C{path}, created if missing:
    with C{mode} less the umask, or, given C{recreate_mode} (reopening after
    logrotate moved the file away: the old file's mode), with exactly that
    mode, which a daemon's umask (077 under twistd) must not tighten.  A
    file someone else made meanwhile (logrotate's C{create}) keeps its own.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    if recreate_mode is None:
        return os.open(path, flags, mode)
    try:
        fd = os.open(path, flags | os.O_EXCL, recreate_mode)
    except FileExistsError:
        return os.open(path, flags, mode)
    os.fchmod(fd, recreate_mode)
    return fd


def _escape(value: bytes) -> str:
    """
    Make a client-supplied value safe for one log line, as nginx does:
    quotes and backslashes escaped, every byte outside printable ASCII as
    C{\\xHH}, so a line can neither be split nor forged.
    """
    text = value.decode("latin-1")  # one character per byte
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isascii() and char.isprintable():
            out.append(char)
        else:
            out.append(f"\\x{ord(char):02x}")
    return "".join(out)


@dataclass(frozen=True)
class Entry:
    """One finished request, as the access log needs it."""

    client: str
    started: float  # time.time() when the request arrived
    duration: float  # seconds
    method: bytes
    path: bytes
    protocol: bytes
    host: bytes | None
    status: int
    sent: int
    referrer: bytes | None
    user_agent: bytes | None

    @classmethod
    def of(cls, request: Request) -> Entry:
        """A finished (or refused, or abandoned) request as an entry."""
        return cls(
            client=request.client or "-",
            started=request.started_at,
            duration=time.monotonic() - request.started,
            method=request.method,
            path=request.target,
            protocol=request.version,
            host=request.host or request.header(b"host"),  # (a refused request's may be unchecked)
            status=request.code,
            sent=request.sent,
            referrer=request.header(b"referer"),
            user_agent=request.header(b"user-agent"),
        )

    def fields(self) -> dict[str, str]:
        when = time.gmtime(self.started)
        return {
            "client": self.client,
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", when),
            "iso_time": time.strftime("%Y-%m-%dT%H:%M:%S", when)
            + f".{int(self.started % 1 * 1000):03d}Z",
            "method": _escape(self.method),
            "path": _escape(self.path),
            "protocol": _escape(self.protocol),
            "host": _escape(self.host or b"-"),
            "status": str(self.status),
            "bytes": str(self.sent) if self.sent else "-",
            "duration_ms": f"{self.duration * 1000:.1f}",
            "referrer": _escape(self.referrer or b"-"),
            "user_agent": _escape(self.user_agent or b"-"),
        }


class AccessLog:
    """
    Where access lines go: C{off}, C{-} (twistd's log) or a file path.

    Opening happens in L{open}, so that a reload can open the new file
    first and swap only if that worked.
    """

    def __init__(self, destination: str, template: str = "combined") -> None:
        self.destination = destination
        self.template = COMBINED if template == "combined" else template
        self._fd: int | None = None
        self._emit: Callable[[str], None] = self._discard
        self._enabled = False

    def open(self) -> AccessLog:
        """
        Open the destination; returns self.

        @raise OSError: the file cannot be opened for appending.
        """
        if self.destination == TWISTD_LOG:
            self._emit = _twistd_log_writer()
        elif self.destination != OFF:
            self._fd = self._open_file()
            self._emit = self._to_file
        self._enabled = self.destination != OFF
        return self

    def _open_file(self, recreate_mode: int | None = None) -> int:
        return open_append(self.destination, 0o640, recreate_mode)

    @property
    def enabled(self) -> bool:
        """Whether lines are written anywhere (building an entry costs time)."""
        return self._enabled

    def format(self, entry: Entry) -> str:
        """The line for one request."""
        return self.template.format_map(entry.fields())

    def write(self, entry: Entry) -> None:
        """Log one finished request."""
        if self._enabled:
            self._emit(self.format(entry))

    def reopen(self) -> None:
        """
        Reopen the file at its path, after logrotate moved it away.

        @raise OSError: the new file cannot be opened; the old one stays in use.
        """
        if self._fd is not None:
            new = self._open_file(recreate_mode=stat.S_IMODE(os.fstat(self._fd).st_mode))
            old, self._fd = self._fd, new
            os.close(old)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._emit = self._discard
        self._enabled = False

    def _discard(self, line: str) -> None:
        pass

    def _to_file(self, line: str) -> None:
        os.write(self._fd, (line + "\n").encode("utf-8", "backslashreplace"))
