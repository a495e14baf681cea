"""
Workers that are watched: a frozen or stuck worker is replaced (its
threads' stacks logged first), one that cannot start in time fails the
start, a request that runs too long is logged with its stack, and the
status page answers for every worker.  Real daemonized twistd processes
and real signals.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import Daemon, process_exists, refused, wait_until
from test_workers import children

WATCHED = "workers = 2\ngraceful_timeout = 5\nworker_timeout = 2\n"


@pytest.fixture
def watched_daemon(wsgi_daemon) -> Daemon:
    daemon = wsgi_daemon(server=WATCHED, extra="[status]\npath = /-/status\n")
    daemon.start()
    yield daemon
    workers = children(daemon.pid) if daemon.pid else set()
    daemon.kill()
    for pid in workers:
        if process_exists(pid):
            os.kill(pid, signal.SIGKILL)


def ready_count(daemon: Daemon) -> int:
    return daemon.log().count(" ready (pid ")


def test_a_frozen_worker_is_replaced_within_worker_timeout(watched_daemon: Daemon):
    """SIGSTOP a worker: its heartbeats stop; within worker_timeout another serves in its place."""
    workers = children(watched_daemon.pid)
    frozen = min(workers)
    os.kill(frozen, signal.SIGSTOP)
    frozen_at = time.monotonic()
    wait_until(lambda: len(children(watched_daemon.pid) - workers) == 1, 10,
               "a replacement for the frozen worker")
    replaced_after = time.monotonic() - frozen_at
    # worker_timeout = 2, heard from at most one heartbeat (0.5 s) before the stop.
    assert replaced_after < 2 + 0.5 + 1.0, replaced_after
    wait_until(lambda: f"(pid {frozen}) was killed by SIGKILL" in watched_daemon.log(), 10,
               "the frozen worker to be killed")
    wait_until(lambda: ready_count(watched_daemon) == 3, 20, "the replacement to serve")
    log = watched_daemon.log()
    assert f"(pid {frozen}) has not answered for 2 s ([server] worker_timeout)" in log
    for _ in range(4):
        response, _ = watched_daemon.get("/pid")
        assert response.status == 200


def test_a_blocked_event_loop_has_its_stacks_logged_before_it_is_replaced(
        watched_daemon: Daemon):
    """
    A worker whose event loop is stuck (here: sleeping in a function the
    application scheduled on it) answers no heartbeat; its threads' stacks,
    the stuck function among them, are in the log before it is killed.
    """
    response, body = watched_daemon.get("/block-reactor?seconds=120")
    assert response.status == 200
    stuck = int(body)
    killed = f"(pid {stuck}) was killed by SIGKILL"
    wait_until(lambda: killed in watched_daemon.log(), 15, "the stuck worker to be killed")
    log = watched_daemon.log()
    noticed = log.index(f"(pid {stuck}) has not answered")
    stack = log.index("in block_the_event_loop", noticed)
    assert "Thread 0x" in log[noticed:stack] or "Current thread 0x" in log[noticed:stack]
    assert stack < log.index(killed)
    wait_until(lambda: ready_count(watched_daemon) == 3, 20, "the replacement to serve")
    assert len(children(watched_daemon.pid)) == 2


def test_the_status_page_of_any_worker_shows_every_worker(watched_daemon: Daemon):
    """
    Connections held open reach both workers; each answers with the
    whole server: the supervisor's pid, both workers, totals.  Prometheus
    series carry a worker label.  The application is told it is one
    process of several (PEP 3333's wsgi.multiprocess).
    """
    workers = children(watched_daemon.pid)
    # Connections held open go to the less loaded worker, most of the time:
    # a busy machine may let one worker take the next before the other
    # wakes up, so open more until each worker holds one.
    by_worker: dict[int, http.client.HTTPConnection] = {}
    opened = []
    try:
        while len(by_worker) < len(workers) and len(opened) < 20:
            conn = watched_daemon.connection()
            opened.append(conn)
            conn.request("GET", "/pid")
            by_worker.setdefault(int(conn.getresponse().read()), conn)
        pages = []
        for conn in by_worker.values():
            conn.request("GET", "/-/status")
            response = conn.getresponse()
            assert response.status == 200
            pages.append(json.loads(response.read()))
    finally:
        for conn in opened:
            conn.close()
    assert set(by_worker) == workers  # the page was served by each worker once
    for page in pages:
        assert page["pid"] == watched_daemon.pid
        assert {w["pid"] for w in page["workers"]} == workers
        assert [w["index"] for w in page["workers"]] == [1, 2]
        assert all(w["state"] == "serving" and w["rss_bytes"] > 0 for w in page["workers"])
        assert page["requests"] == sum(w["requests"] for w in page["workers"])
    _, text = watched_daemon.get("/-/status?format=prometheus")
    lines = text.decode().splitlines()
    assert "backtracweb_workers 2" in lines
    assert any(line.startswith('backtracweb_requests_total{worker="2"} ') for line in lines)
    _, environ = watched_daemon.get("/environ")
    assert json.loads(environ)["wsgi.multiprocess"] is True


def test_a_worker_not_serving_within_start_timeout_fails_the_start(wsgi_daemon, site_dir: Path):
    """
    An application whose import hangs: twistd exits non-zero after
    start_timeout, naming the setting, with the stacks (the hanging import
    among them) in the log, and no process left behind.
    """
    daemon = wsgi_daemon(server="workers = 2\nstart_timeout = 2\n")
    (site_dir / "apps" / "hangs.py").write_text(
        "import time\n\ndef connect_to_the_database():\n    time.sleep(300)\n\n"
        "connect_to_the_database()\napplication = None\n")
    daemon.config.write_text(daemon.config.read_text().replace("testapp:", "hangs:"))
    began = time.monotonic()
    result = daemon.start(check=False)
    assert result.returncode != 0
    assert time.monotonic() - began < 20
    first = result.stderr.splitlines()[0]
    assert first.startswith("twistd backtracweb: cannot start: it was not serving after 2 s "
                            "([server] start_timeout")
    log = daemon.log()
    assert "in connect_to_the_database" in log
    wait_until(lambda: refused(daemon.port), 20, "every process to let go of the port")


def test_a_request_running_too_long_is_logged_with_its_stack(wsgi_daemon):
    """request_warn, in a single process: the path, the thread, and where it is."""
    daemon = wsgi_daemon(server="request_warn = 1\n")
    daemon.start()
    try:
        response, _ = daemon.get("/sleep?seconds=3")
        assert response.status == 200
        log = daemon.log()
        warning = log.index("request running for ")
        assert "([server] request_warn = 1): GET /sleep?seconds=3 from 127.0.0.1, in thread " \
            in log[warning:]
        assert "testapp.py" in log[warning:] and "time.sleep" in log[warning:]
        assert log.count("request running for ") == 1
    finally:
        daemon.stop()


def test_sigttin_adds_a_worker_and_sigttou_removes_one(watched_daemon: Daemon):
    """The count changes at run time, and the status page shows it."""
    workers = children(watched_daemon.pid)
    watched_daemon.signal(signal.SIGTTIN)
    wait_until(lambda: ready_count(watched_daemon) == 3, 20, "a third worker to serve")
    assert len(children(watched_daemon.pid)) == 3
    _, body = watched_daemon.get("/-/status")
    assert [w["index"] for w in json.loads(body)["workers"]] == [1, 2, 3]
    third = children(watched_daemon.pid) - workers

    for count in (2, 1):  # one at a time: the kernel merges a signal sent twice at once
        watched_daemon.signal(signal.SIGTTOU)
        wait_until(lambda: len(children(watched_daemon.pid)) == count, 20, "a worker to drain")
    remaining = children(watched_daemon.pid)
    assert remaining < workers and not remaining & third
    _, body = watched_daemon.get("/-/status")
    assert [w["pid"] for w in json.loads(body)["workers"]] == list(remaining)
    watched_daemon.signal(signal.SIGTTOU)
    wait_until(lambda: "keeping the last worker" in watched_daemon.log(), 10,
               "the last worker to be kept")
    response, _ = watched_daemon.get("/pid")
    assert response.status == 200
