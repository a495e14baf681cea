"""
C{[server] workers = 2}: a daemonized supervisor and its worker processes,
driven with real signals, as an admin would.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from conftest import Daemon, process_exists, refused, thread_policies, wait_until

WORKERS = "workers = 2\ngraceful_timeout = 10\n"


def children(pid: int) -> set[int]:
    """The live processes whose parent is C{pid}."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def serving_pids(daemon: Daemon, attempts: int = 20) -> set[int]:
    """
    The pids that answered /pid, each request on a new connection kept open
    with the others (so each new one goes to the worker with fewer), until
    two answered.  One connection at a time may all go to one worker: with
    nothing open, neither is busier.
    """
    seen: set[int] = set()
    held = []
    try:
        for _ in range(attempts):
            conn = daemon.connection()
            held.append(conn)
            conn.request("GET", "/pid")
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200
            seen.add(int(body))
            if len(seen) == 2:
                break
    finally:
        for conn in held:
            conn.close()
    return seen


@pytest.fixture
def workers_daemon(wsgi_daemon) -> Daemon:
    daemon = wsgi_daemon(server=WORKERS)
    daemon.start()
    yield daemon
    workers = children(daemon.pid) if daemon.pid else set()
    daemon.kill()
    for pid in workers:  # they stop by themselves once the supervisor is gone
        wait_until(lambda: not process_exists(pid), 20, f"worker {pid} to exit")


def test_two_workers_serve_and_the_supervisor_runs_no_thread(workers_daemon: Daemon):
    """
    The pidfile names the supervisor; its two children both answer on the
    one port; the supervisor itself runs a single thread (no pool: threads
    started before the fork are the bug backtracweb exists to avoid).
    """
    workers = children(workers_daemon.pid)
    assert len(workers) == 2
    assert serving_pids(workers_daemon) == workers
    assert len(os.listdir(f"/proc/{workers_daemon.pid}/task")) == 1
    # cpu_affinity = auto: each worker on a CPU of its own (when there are two).
    cpus = sorted(os.sched_getaffinity(0))
    placed = sorted(tuple(sorted(os.sched_getaffinity(pid))) for pid in workers)
    assert placed == ([(cpus[0],), (cpus[1],)] if len(cpus) >= 2 else [tuple(cpus)] * 2)
    # cpu_scheduling = batch applies where requests are served.
    for pid in workers:
        assert thread_policies(pid) == {os.SCHED_BATCH}
    assert thread_policies(workers_daemon.pid) == {os.SCHED_OTHER}
    log = workers_daemon.log()
    for index in (1, 2):
        assert f"worker {index} ready" in log
    assert "Traceback" not in log


def test_a_burst_of_keep_alive_connections_is_shared_out(workers_daemon: Daemon):
    """
    Twenty connections arriving at once, as a load balancer or a benchmark
    opens them and then keeps them: each worker gets a fair part (one
    taking them all would leave the other idle for as long as they live).
    """
    workers = children(workers_daemon.pid)
    connections = [workers_daemon.connection() for _ in range(20)]
    try:
        # Stopped workers leave the connections queued on the socket, to be
        # found all at once when they continue.
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            for conn in connections:
                conn.connect()
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        served = []
        for conn in connections:
            conn.request("GET", "/pid")
            served.append(int(conn.getresponse().read()))
    finally:
        for conn in connections:
            conn.close()
    assert {pid: served.count(pid) >= 6 for pid in workers} == {pid: True for pid in workers}, served


def test_a_worker_that_dies_is_replaced(workers_daemon: Daemon):
    """SIGKILL one worker: the supervisor logs it and starts another, which serves."""
    workers = children(workers_daemon.pid)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(children(workers_daemon.pid) - {victim}) == 2, 20,
               "a new worker to replace the killed one")
    replacement = children(workers_daemon.pid) - workers
    assert len(replacement) == 1
    wait_until(lambda: workers_daemon.log().count("ready (pid") == 3, 20,
               "the new worker to serve")
    assert serving_pids(workers_daemon) == children(workers_daemon.pid)
    assert f"(pid {victim}) was killed by SIGKILL" in workers_daemon.log()


def test_sigterm_drains_every_worker(workers_daemon: Daemon, tmp_path: Path):
    """
    A request in flight when SIGTERM arrives completes; the supervisor and
    both workers exit, and the port refuses connections.
    """
    workers = children(workers_daemon.pid)
    marker = tmp_path / "started"
    result = {}

    def request() -> None:
        response, body = workers_daemon.get(f"/sleep?seconds=1.5&marker={marker}", timeout=20)
        result["status"], result["body"] = response.status, body

    client = threading.Thread(target=request)
    client.start()
    wait_until(marker.exists, 10, "the request to reach the application")
    workers_daemon.stop(timeout=20)
    client.join(20)
    assert result == {"status": 200, "body": b"slept\n"}
    for pid in workers:
        assert not process_exists(pid)
    assert refused(workers_daemon.port)
    assert "Traceback" not in workers_daemon.log(), workers_daemon.log()


def test_sighup_reaches_every_worker(workers_daemon: Daemon, site_dir: Path):
    """A static mapping added to the file is served by both workers after SIGHUP."""
    files = site_dir / "files"
    files.mkdir()
    (files / "hello.txt").write_text("hello\n")
    with open(workers_daemon.config, "a") as config:
        config.write(f"[static]\n/files = {files}\n")
    workers_daemon.signal(signal.SIGHUP)
    wait_until(lambda: workers_daemon.log().count("reload: done") == 2, 20,
               "both workers to reload")
    answers = {workers_daemon.get("/files/hello.txt")[1] for _ in range(20)}
    assert answers == {b"hello\n"}


def test_an_invalid_file_on_sighup_changes_nothing(workers_daemon: Daemon):
    """The supervisor reports the problem once; the workers keep serving."""
    text = workers_daemon.config.read_text()
    workers_daemon.config.write_text(text.replace("max = 4", "max = lots"))
    workers_daemon.signal(signal.SIGHUP)
    wait_until(lambda: "nothing changed" in workers_daemon.log(), 20, "the reload to fail")
    log = workers_daemon.log()
    assert log.count("[threadpool] max = 'lots'") == 1
    assert "reload: done" not in log
    assert serving_pids(workers_daemon) == children(workers_daemon.pid)


def test_sigusr1_reopens_every_access_log(wsgi_daemon, workdir: Path):
    """After logrotate moves the access log, SIGUSR1 makes both workers write a new one."""
    access = workdir / "access.log"
    daemon = wsgi_daemon(server=WORKERS, extra=f"[log]\naccess_log = {access}\n")
    daemon.start()
    try:
        assert len(serving_pids(daemon)) == 2
        access.rename(workdir / "access.log.1")
        daemon.signal(signal.SIGUSR1)
        wait_until(lambda: daemon.log().count("log files reopened") == 2, 20,
                   "both workers to reopen their logs")
        seen = serving_pids(daemon)
        assert len(seen) == 2
        # A worker writes its line just after sending the response: the test
        # may read the file between the two.
        wait_until(lambda: access.read_text().count("GET /pid") >= 2, 5,
                   "both workers' lines in the new access log")
    finally:
        daemon.stop()


def test_a_worker_that_cannot_start_fails_the_start(wsgi_daemon, site_dir: Path):
    """
    An application that raises on import: twistd exits non-zero before
    forking, naming the error, and leaves no process behind.
    """
    daemon = wsgi_daemon(server=WORKERS)
    (site_dir / "apps" / "broken.py").write_text(
        "raise RuntimeError('the database is not configured')\napplication = None\n")
    daemon.config.write_text(daemon.config.read_text().replace("testapp:", "broken:"))
    result = daemon.start(check=False)
    assert result.returncode != 0
    # The terminal gets the cause in words and where the rest is.
    first, second = result.stderr.splitlines()
    assert first.startswith(
        "twistd backtracweb: cannot start: RuntimeError: the database is not configured (")
    assert second == ("twistd backtracweb: the whole message is in the log file "
                      f"{daemon.logfile}")
    assert "Traceback" not in result.stdout + result.stderr
    assert "; in worker " in daemon.log()
    wait_until(lambda: refused(daemon.port), 20, "every process to let go of the port")


def test_workers_stop_when_the_supervisor_is_killed(workers_daemon: Daemon):
    """No orphans: a worker whose supervisor vanished drains and exits."""
    workers = children(workers_daemon.pid)
    os.kill(workers_daemon.pid, signal.SIGKILL)
    for pid in workers:
        wait_until(lambda: not process_exists(pid), 20, f"worker {pid} to exit")
    workers_daemon.pid = None
