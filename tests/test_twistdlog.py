"""
Unit tests for L{backtracweb.app.twistdlog}: lines written straight to twistd's
log file must read exactly as twistd's own observer would have written
them, and the shortcut must step aside wherever that cannot be checked.
"""

from __future__ import annotations

import io

import pytest
from twisted.logger import (
    FileLogObserver, LogLevel, LogPublisher, jsonFileLogObserver, textFileLogObserver,
)

from backtracweb.app.twistdlog import TwistdLogLines

LINE = '127.0.0.1 - - [26/Nov/2026:02:00:00 +0000] "GET /{path} HTTP/1.1" 200 14 "-" "-"'
NOW = 1_795_000_000.25


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingObserver(FileLogObserver):
    """twistd's text observer, counting the events it formats."""

    def __init__(self, out) -> None:
        text = textFileLogObserver(out)
        super().__init__(out, self._count)
        self._format = text.formatEvent
        self.formatted = 0

    def _count(self, event):
        self.formatted += 1
        return self._format(event)


def twistd_would_write(event_fields: dict, when: float) -> str:
    """What twistd's own text observer writes for one info event."""
    out = io.StringIO()
    textFileLogObserver(out)({"log_namespace": "backtracweb.access", "log_level": LogLevel.info,
                              "log_format": "{line}", "log_time": when, **event_fields})
    return out.getvalue()


@pytest.mark.parametrize("system", [None, "worker 2: backtracweb.access#info"])
def test_lines_read_as_twistd_would_write_them_without_being_formatted(system):
    out = io.StringIO()
    observer = CountingObserver(out)
    clock = Clock()
    lines = TwistdLogLines("backtracweb.access", system, LogPublisher(observer), clock)
    lines.write(LINE)
    clock.now += 61.5  # another second, another prefix
    lines.write("second")
    extra = {"log_system": system} if system else {}
    assert out.getvalue() == (twistd_would_write({"line": LINE, **extra}, NOW)
                              + twistd_would_write({"line": "second", **extra}, NOW + 61.5))
    assert observer.formatted == 1  # the probe, once


def test_a_binary_log_file_gets_utf8():
    out = io.BytesIO()
    lines = TwistdLogLines("backtracweb.access", publisher=LogPublisher(textFileLogObserver(out)),
                           clock=Clock())
    lines.write("caf\u00e9")
    assert out.getvalue().decode("utf-8") == twistd_would_write({"line": "caf\u00e9"}, NOW)


def captured(publisher: LogPublisher) -> list[dict]:
    events: list[dict] = []
    publisher.addObserver(events.append)
    return events


@pytest.mark.parametrize("observers", ["json", "text and another", "not a file observer"])
def test_lines_are_events_where_the_shortcut_cannot_be_checked(observers):
    """
    A JSON stream (a worker's), a second observer beside twistd's, or an
    observer of unknown kind: each line is an ordinary event.
    """
    out = io.StringIO()
    publisher = LogPublisher()
    events = captured(publisher) if observers != "json" else []
    if observers == "json":
        publisher.addObserver(jsonFileLogObserver(out))
    elif observers == "text and another":
        publisher.addObserver(textFileLogObserver(out))
    lines = TwistdLogLines("backtracweb.access", "worker 1: backtracweb.access#info", publisher,
                           Clock())
    lines.write(LINE)
    if observers == "json":
        assert '"line": "127.0.0.1' in out.getvalue()
        assert '"log_system": "worker 1: backtracweb.access#info"' in out.getvalue()
    else:
        assert [(e["line"], e["log_system"], e["log_namespace"]) for e in events] == [
            (LINE, "worker 1: backtracweb.access#info", "backtracweb.access")]
    if observers == "text and another":
        assert out.getvalue().endswith(f"[worker 1: backtracweb.access#info] {LINE}\n")


def test_a_time_format_of_its_own_is_left_to_the_observer():
    out = io.StringIO()
    publisher = RecordingPublisher(textFileLogObserver(out, timeFormat="%H:%M"))
    TwistdLogLines("backtracweb.access", publisher=publisher, clock=Clock()).write(LINE)
    assert [e["line"] for e in publisher.seen] == [LINE]
    assert out.getvalue().endswith(f"[backtracweb.access#info] {LINE}\n")


class FailingFile(io.StringIO):
    def write(self, text):
        raise OSError(28, "No space left on device")


class RecordingPublisher(LogPublisher):
    def __init__(self, *observers) -> None:
        super().__init__(*observers)
        self.seen: list[dict] = []

    def __call__(self, event) -> None:
        self.seen.append(event)
        super().__call__(event)


def test_a_failing_write_hands_the_line_to_the_publisher():
    """The publisher deals with the failing observer as it would; the write does not raise."""
    publisher = RecordingPublisher(textFileLogObserver(FailingFile()))
    lines = TwistdLogLines("backtracweb.access", publisher=publisher, clock=Clock())
    lines.write(LINE)
    assert [e["line"] for e in publisher.seen] == [LINE]
