"""
C{[server] request_warn}: requests running too long in the application
are logged once each, with their method, path, thread and stack.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from types import SimpleNamespace

from helpers import settle
from twisted.logger import LogLevel, capturedLogs, formatEvent

from backtracweb.app.slowrequests import SlowRequestLog, describe_task


def request(method: bytes = b"GET", target: bytes = b"/report?year=2026") -> SimpleNamespace:
    return SimpleNamespace(method=method, target=target, client="192.0.2.7", peer="127.0.0.1")


def stuck_in_a_view() -> object:
    """A frame as a thread running a view would have it."""
    return sys._getframe()


def test_a_request_past_the_threshold_is_logged_once_with_its_stack():
    me = threading.get_ident()
    running = {me: (100.0, request())}
    frame = stuck_in_a_view()
    log = SlowRequestLog(running, frames=lambda: {me: frame})
    with capturedLogs() as events:
        assert log.check(60, now=159.0) == 0
        assert log.check(60, now=161.5) == 1
        assert log.check(60, now=200.0) == 0  # once
    [event] = events
    text = formatEvent(event)
    assert event["log_level"] == LogLevel.warn
    assert text.startswith(
        "request running for 62 s ([server] request_warn = 60): GET /report?year=2026 from "
        f"192.0.2.7, in thread {threading.current_thread().name}; it is at:\n")
    assert "in stuck_in_a_view" in text


def test_the_next_request_on_the_same_thread_is_watched_afresh():
    running = {7: (100.0, request())}
    log = SlowRequestLog(running, frames=dict)
    with capturedLogs() as events:
        log.check(10, now=111.0)
        running[7] = (200.0, request(b"POST", b"/upload"))
        log.check(10, now=205.0)
        log.check(10, now=211.0)
    assert [formatEvent(e).split(":")[1].split(" from")[0] for e in events] == [
        " GET /report?year=2026", " POST /upload"]
    assert "(gone)" in formatEvent(events[1])  # the thread finished meanwhile


def test_off_at_zero():
    log = SlowRequestLog({1: (0.0, request())}, frames=dict)
    with capturedLogs() as events:
        assert log.check(0, now=10_000.0) == 0
    assert events == []


async def query_that_never_returns():
    await asyncio.sleep(3600)


async def slow_view():
    await query_that_never_returns()


def test_an_asyncio_task_is_logged_with_the_coroutines_it_awaits(loop):
    """Under ASGI the request runs in a task: the chain of awaits is its stack."""
    task = loop.create_task(slow_view(), name="Task-7")
    settle(loop)
    log = SlowRequestLog({task: (100.0, request())}, describe=describe_task)
    with capturedLogs() as events:
        assert log.check(60, now=161.0) == 1
    text = formatEvent(events[0])
    assert ", in asyncio task Task-7; it is at:\n" in text
    assert text.index("in slow_view") < text.index("in query_that_never_returns")
