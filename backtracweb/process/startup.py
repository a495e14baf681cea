"""
What the admin's terminal shows when C{twistd backtracweb} cannot start.

Two moments, two ways out:

  - Before twistd forks, a configuration or usage error: one line (or the
    list of problems) after C{twistd backtracweb:}, on standard error, and
    the exit status, without twistd's usage text (L{exit_with}).
  - After it forks, an error only the daemon meets (the application fails
    to import, the port is taken): the daemon reports to the waiting
    parent through twistd's status pipe, 100 bytes at most, and the parent
    prints it.  twistd would print the Python representation of the
    exception's first 100 bytes, class name included; here the daemon
    sends the message alone, and the parent prints it as words and says
    where the log file is (L{report_daemon_failures}).  In the foreground
    (C{-n}) the exception leaves twistd, and the hook of
    L{report_startup_errors} prints its message instead of a traceback.

The daemon side and the parent side are two private methods of twistd's
C{UnixApplicationRunner}, replaced before the fork so both processes have
them; C{tests/test_startup.py} fails if Twisted changes them.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import NoReturn

from backtracweb.errors import CANNOT_START, StartupError

PROGRAM = "twistd backtracweb"
"""How the terminal names the command, as the README shows it."""
PIPE_BYTES = 100
"""What twistd's parent reads from the status pipe (and its daemon writes), at most."""
_OURS = b"\x1e"
"""Marks a status message as a L{StartupError}'s text, not twistd's formatting."""


def exit_with(message: str, status: int) -> NoReturn:
    """Say C{message} after the command's name on standard error, and exit with C{status}."""
    print(f"{PROGRAM}: {message}", file=sys.stderr)
    raise SystemExit(status)


def status_message(error: Exception) -> bytes | None:
    """
    What the daemon writes to the status pipe for C{error}: b"1 " and the
    marked message of a L{StartupError}, cut to fit at a character boundary;
    None for any other exception (a bug: twistd's own formatting).
    """
    if not isinstance(error, StartupError):
        return None
    room = PIPE_BYTES - 2 - len(_OURS)
    text = str(error).replace("\n", " ").encode("utf-8")
    if len(text) > room:
        text = text[:room].decode("utf-8", "ignore").encode("utf-8")
    return b"1 " + _OURS + text


def parent_report(data: bytes, logfile: str | None) -> str | None:
    """
    The lines the waiting parent prints for the daemon's status C{data},
    or None when it is not a L{StartupError}'s (twistd's own report then).
    """
    if not data.startswith(b"1 " + _OURS):
        return None
    text = data[2 + len(_OURS):].decode("utf-8", "replace")
    cut = len(data) >= PIPE_BYTES
    where = (f"the log file {os.path.abspath(logfile)}" if logfile and logfile != "-"
             else "twistd's log")
    return (f"{PROGRAM}: cannot start: {text}{'...' if cut else ''}\n"
            f"{PROGRAM}: the whole message is in {where}\n")


def report_daemon_failures(runner_class) -> None:
    """
    Have twistd's daemon and its waiting parent report a L{StartupError}
    as words: the daemon sends the message alone (L{status_message}), the
    parent prints it and names the log file (L{parent_report}).

    C{runner_class} is twistd's C{UnixApplicationRunner}: its private
    C{_formatChildException} (the daemon's side) and C{_waitForStart} (the
    parent's) are wrapped; anything but a L{StartupError} gets twistd's own.
    """
    if getattr(runner_class, "_backtracweb_reports", False):
        return
    format_child_exception = runner_class._formatChildException
    wait_for_start = runner_class._waitForStart

    @functools.wraps(format_child_exception)
    def _formatChildException(self, exception):
        return status_message(exception) or format_child_exception(self, exception)

    @functools.wraps(wait_for_start)
    def _waitForStart(self, readPipe):
        data = os.read(readPipe, PIPE_BYTES)
        if data == b"0":
            return 0
        report = parent_report(data, self.config.get("logfile"))
        if report is None:
            # Not ours: twistd's own report, from the bytes it would have read.
            reader, writer = os.pipe()
            os.write(writer, data)
            os.close(writer)
            try:
                return wait_for_start(self, reader)
            finally:
                os.close(reader)
        sys.__stderr__.write(report)
        sys.__stderr__.flush()
        return 1

    runner_class._formatChildException = _formatChildException
    runner_class._waitForStart = _waitForStart
    runner_class._backtracweb_reports = True


def report_startup_errors() -> None:
    """
    Make a L{StartupError} that escapes twistd end the process with its
    message, not a traceback, in the foreground (C{-n}) or in the daemon.

    twistd lets exceptions from C{startService} propagate out of the
    process; the service has logged the whole message already (see
    L{backtracweb.process.server.fatal}), and it goes to the terminal twistd was
    started from too (C{sys.stderr} may be redirected to the log).  In a
    daemon the terminal is the parent's, which L{report_daemon_failures}
    has told what to print.
    """
    previous = sys.excepthook
    if getattr(previous, "reports_startup_errors", False):
        return

    def hook(kind, value, traceback) -> None:
        if isinstance(value, StartupError):
            print(f"{CANNOT_START}{value}", file=sys.__stderr__)
        else:
            previous(kind, value, traceback)

    hook.reports_startup_errors = True
    sys.excepthook = hook
