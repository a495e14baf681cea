"""
Unit tests for L{backtracweb.process.startup}: what the terminal shows when twistd
cannot start the daemon, through twistd's real C{UnixApplicationRunner}
(a subclass of it, so the class itself is left as it is).  That the
private methods wrapped are still there is checked in
tests/test_twisted_internals.py.
"""

from __future__ import annotations

import io
import os
import sys

import pytest
from twisted.scripts._twistd_unix import UnixApplicationRunner

from backtracweb.errors import AppLoadError, StartupError
from backtracweb.process.startup import (
    PIPE_BYTES, parent_report, report_daemon_failures, status_message,
)


class Runner(UnixApplicationRunner):
    """twistd's runner, to be given backtracweb's reports."""


report_daemon_failures(Runner)


def runner(logfile: str | None = "/var/log/backtracweb.log") -> Runner:
    return Runner({"logfile": logfile, "nodaemon": False, "profile": None})


def parent_prints(data: bytes, monkeypatch, logfile="/var/log/backtracweb.log") -> tuple[int, str]:
    """What the waiting parent returns and prints when the daemon sent C{data}."""
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", terminal)
    reader, writer = os.pipe()
    os.write(writer, data)
    os.close(writer)
    try:
        code = runner(logfile)._waitForStart(reader)
    finally:
        os.close(reader)
    return code, terminal.getvalue()


def test_the_daemon_sends_the_message_alone():
    """A start-up error goes to the status pipe as its message, without the class's name."""
    sent = runner()._formatChildException(AppLoadError("No module named 'django_extensionz'"))
    assert sent == "1 \x1eNo module named 'django_extensionz'".encode()


def test_a_long_message_is_cut_to_fit_between_characters():
    """A message longer than the pipe takes is cut at a character boundary, within 100 bytes."""
    sent = status_message(StartupError("é" * 200))
    assert len(sent) <= PIPE_BYTES
    sent.decode("utf-8")  # whole characters only


def test_other_exceptions_keep_twisteds_format():
    """Anything but a start-up error (a bug) is formatted as twistd does."""
    assert runner()._formatChildException(ValueError("a bug")) == b"1 ValueError: a bug"


def test_the_parent_prints_words_and_the_log_file(monkeypatch):
    """The parent prints the message after the command's name, names the log, returns 1."""
    code, printed = parent_prints(status_message(AppLoadError("No module named 'x' (app.py)")),
                                  monkeypatch)
    assert code == 1
    assert printed == (
        "twistd backtracweb: cannot start: No module named 'x' (app.py)\n"
        "twistd backtracweb: the whole message is in the log file /var/log/backtracweb.log\n")


def test_a_cut_message_says_so(monkeypatch):
    """A message cut to fit the pipe ends with an ellipsis."""
    _, printed = parent_prints(status_message(StartupError("x" * 300)), monkeypatch)
    assert printed.splitlines()[0].endswith("x...")


@pytest.mark.parametrize("logfile, where", [
    ("twistd.log", f"the log file {os.path.abspath('twistd.log')}"),
    ("-", "twistd's log"),
    (None, "twistd's log"),
])
def test_where_the_log_is(monkeypatch, logfile, where):
    """A relative log file is named absolutely; standard output or none, as twistd's log."""
    assert parent_report(status_message(StartupError("x")), logfile).endswith(
        f"the whole message is in {where}\n")


def test_success_prints_nothing(monkeypatch):
    """The daemon's b"0" (started) is a 0 from the parent, and nothing printed."""
    assert parent_prints(b"0", monkeypatch) == (0, "")


def test_twisteds_own_reports_are_left_alone(monkeypatch):
    """A status that is not a start-up error's is reported by twistd's own code."""
    code, printed = parent_prints(b"1 ValueError: a bug", monkeypatch)
    assert code == 1
    assert printed == ("An error has occurred: b'ValueError: a bug'\n"
                       "Please look at log file for more information.\n")
