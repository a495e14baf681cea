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
them (L{backtracweb.twisted_internals.report_through_status_pipe}).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from backtracweb.errors import CANNOT_START, StartupError
from backtracweb.twisted_internals import report_through_status_pipe

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

    C{runner_class} is twistd's C{UnixApplicationRunner}; anything but a
    L{StartupError} gets twistd's own report.
    """
    report_through_status_pipe(
        runner_class, status_message,
        lambda data, config: parent_report(data, config.get("logfile")), PIPE_BYTES)


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
