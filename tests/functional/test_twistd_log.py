"""
Access lines in twistd's log (C{[log] access_log = -}, the default), from
one process and from workers: every request exactly once, in the format
twistd gives its own events, which backtracweb writes without twistd's
per-event formatting (L{backtracweb.app.twistdlog}).
"""

from __future__ import annotations

import re

import pytest
from conftest import wait_until
from test_workers import WORKERS

# twistd's own prefix: RFC 3339 time, then [system].
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[(?P<system>[^\]]+)\] "
    r'127\.0\.0\.1 - - \[[^\]]+\] "GET /pid\?n=(?P<n>\d+) HTTP/1\.1" 200 \d+ "-" "[^"]*"$',
    re.M,
)
REQUESTS = 40


@pytest.mark.parametrize("server, systems", [
    ("", {"backtracweb.access#info"}),
    (WORKERS, {"worker 1: backtracweb.access#info", "worker 2: backtracweb.access#info"}),
], ids=["one process", "two workers"])
def test_every_request_is_logged_once_as_twistd_would(wsgi_daemon, server, systems):
    daemon = wsgi_daemon(server=server)
    daemon.start()
    held, pids = [], set()

    def get(conn, n: int) -> int:
        conn.request("GET", f"/pid?n={n}")
        response = conn.getresponse()
        assert response.status == 200
        return int(response.read())

    try:
        # Connections held open together, until each process has one: a
        # new connection goes to the worker with fewer.
        while len(pids) < len(systems) and len(held) < 20:
            held.append(daemon.connection())
            pids.add(get(held[-1], len(held) - 1))
        for n in range(len(held), REQUESTS):
            get(held[n % len(held)], n)
        for conn in held:
            conn.close()
        wait_until(lambda: len(LINE.findall(daemon.log())) >= REQUESTS, 20,
                   "every access line to reach the log")
    finally:
        daemon.stop()
    found = [(m["system"], int(m["n"])) for m in LINE.finditer(daemon.log())]
    assert sorted(n for _, n in found) == list(range(REQUESTS))
    assert {system for system, _ in found} == systems
