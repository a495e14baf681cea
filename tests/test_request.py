"""
What L{BacktracRequest.process} sets on every response before a resource
runs: the Server and Date headers, the latter formatted once a second.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.web.http import datetimeToString, stringToDatetime

from backtracweb import request as request_module


def test_the_date_is_formatted_once_a_second(monkeypatch):
    now = [1_764_000_000.2]
    monkeypatch.setattr(request_module, "time", SimpleNamespace(time=lambda: now[0]))
    monkeypatch.setattr(request_module, "_date_cache", (0, b""))
    first = request_module._http_date()
    assert first == datetimeToString(1_764_000_000)
    now[0] += 0.7
    assert request_module._http_date() is first
    now[0] += 0.2
    second = request_module._http_date()
    assert stringToDatetime(second) == 1_764_000_001
