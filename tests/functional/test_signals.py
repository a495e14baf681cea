"""
Operating a daemonized twistd backtracweb through signals, end to end.

  SIGHUP   reload: what can change is applied at once, an invalid file
           changes nothing, listening addresses and [app] need a restart,
           and no connection is dropped;
  SIGTERM  drain: requests in flight finish, new connections are refused,
           idle keep-alive connections close, the rest is cut short after
           [server] graceful_timeout, and a second SIGTERM cuts it short;
  SIGUSR1  reopen the access log and twistd's --logfile after logrotate
           moved them away.

Plus the access log under concurrency and the status page.  Every daemon is
started without -n, exactly as an admin would, and signalled through the
pid in its pidfile.  Waiting is on conditions (log lines, the status page,
the process's exit), not on fixed sleeps.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import stat
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import APPS, Daemon, free_port, process_exists, refused, wait_until

STATUS = "/-/status"

# A combined-format access line, strictly: every field, nothing more.
COMBINED = re.compile(
    r'^(?P<client>127\.0\.0\.1) - - '
    r'\[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] '
    r'"(?P<method>[A-Z]+) (?P<path>\S+) (?P<protocol>HTTP/1\.[01])" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referrer>(?:[^"\\]|\\.)*)" "(?P<user_agent>(?:[^"\\]|\\.)*)"$'
)

# A twistd log line: timestamp, [namespace#level], message.
TWISTD_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\S+ \[[^\]]*\] (?P<message>.*)$")


# -- helpers ------------------------------------------------------------------


def site_ini(
    port: object = "{port}",
    *,
    min_threads: int = 2,
    max_threads: int = 4,
    threadpool: str = "",
    server: str = "",
    application: str = "testapp:application",
    log: str = "",
    status: str = f"path = {STATUS}",
    static: str = "",
    more: str = "",
) -> str:
    """A configuration serving tests/functional/apps/testapp, with the status page on."""
    return "\n".join([
        "[server]", f"port = {port}", server,
        "[threadpool]", f"min = {min_threads}", f"max = {max_threads}", threadpool,
        "[app]", "loader = wsgi", "pythonpath = apps", f"application = {application}",
        "[log]", log,
        "[status]", status,
        more,
        "[static]", static,
        "",
    ])


@pytest.fixture
def site(make_daemon, site_dir: Path):
    """Start a daemon from L{site_ini} keyword arguments; the test app is copied next to it."""
    shutil.copytree(APPS, site_dir / "apps", dirs_exist_ok=True)

    def start(**kwargs) -> Daemon:
        daemon = make_daemon(site_ini(**kwargs))
        daemon.start()
        return daemon

    return start


def rewrite(daemon: Daemon, **kwargs) -> None:
    """Replace the daemon's configuration file with L{site_ini}(**kwargs)."""
    daemon.config.write_text(site_ini(daemon.port, **kwargs))


def messages(daemon: Daemon, since: int = 0) -> list[str]:
    """The messages of twistd's log, from character C{since} on, without timestamps."""
    lines = daemon.log()[since:].splitlines()
    return [m.group("message") for m in map(TWISTD_LINE.match, lines) if m]


def reload(daemon: Daemon) -> list[str]:
    """SIGHUP, wait until the reload has finished or failed, and return what it logged."""
    mark = len(daemon.log())
    daemon.signal(signal.SIGHUP)

    def finished() -> bool:
        return any(m.startswith("reload: done") or "nothing changed, still serving" in m
                   for m in messages(daemon, mark))

    wait_until(finished, 10, "the reload's outcome in the log")
    return messages(daemon, mark)


def wait_for_message(daemon: Daemon, message: str, timeout: float = 10, since: int = 0) -> None:
    wait_until(lambda: message in messages(daemon, since), timeout, f"log line {message!r}")


def get_status(daemon: Daemon, query: str = "", headers=None) -> tuple[http.client.HTTPResponse, bytes]:
    return daemon.get(STATUS + query, headers=headers)


def status_json(daemon: Daemon) -> dict:
    response, body = get_status(daemon)
    assert response.status == 200, body
    return json.loads(body)




def wait_for_exit(daemon: Daemon, timeout: float) -> float:
    """Wait for the daemon's process to end; return when it did (monotonic)."""
    pid = daemon.pid
    wait_until(lambda: not process_exists(pid), timeout, f"daemon pid {pid} to exit")
    daemon.pid = None
    return time.monotonic()


def fetch(daemon: Daemon, path: str, timeout: float = 20) -> tuple[int, bytes, dict]:
    """GET on a new connection: (status, body, headers), for running in a thread."""
    response, body = daemon.get(path, timeout=timeout)
    return response.status, body, {k.lower(): v for k, v in response.getheaders()}


def access_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def make_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


# -- SIGHUP ---------------------------------------------------------------------


def test_sighup_applies_pool_size_static_mappings_and_access_format(site, site_dir: Path):
    """
    After SIGHUP, without a restart: the status page shows the new pool
    min and max, a changed [static] directory and an added mapping are
    served (the added prefix went to the application before), new access
    lines use the new access_format while the earlier ones keep theirs,
    and the log lists exactly what changed.
    """
    make_files(site_dir, {"one/a.txt": "one v1\n", "one-v2/a.txt": "one v2\n", "two/b.txt": "two\n"})
    daemon = site(max_threads=4, log="access_log = access.log", static="/one = one")
    access_log = site_dir / "access.log"
    assert status_json(daemon)["pool"]["max"] == 4
    assert daemon.get("/one/a.txt")[1] == b"one v1\n"
    assert daemon.get("/two/b.txt")[1] == b"testapp /two/b.txt"

    new_format = "{method} {path} {status} {bytes}"
    rewrite(daemon, min_threads=3, max_threads=7, static="/one = one-v2\n/two = two",
            log=f"access_log = access.log\naccess_format = {new_format}")
    logged = reload(daemon)

    assert logged[0] == f"received SIGHUP: reloading {daemon.config}"
    assert logged[-1] == (
        "reload: done; changed: [threadpool] min 2 -> 3, [threadpool] max 4 -> 7, "
        f"[log] access_format combined -> {new_format}, "
        f"[static] /one {site_dir / 'one'} -> {site_dir / 'one-v2'}, "
        f"[static] /two (none) -> {site_dir / 'two'}"
    )
    pool = status_json(daemon)["pool"]
    assert (pool["min"], pool["max"]) == (3, 7)
    assert daemon.get("/one/a.txt")[1] == b"one v2\n"
    response, body = daemon.get("/two/b.txt")
    assert (response.status, body) == (200, b"two\n")

    wait_until(lambda: access_lines(access_log)[-1:] == ["GET /two/b.txt 200 4"], 5,
               "the last request's access line in the new format")
    lines = access_lines(access_log)
    assert len(lines) == 6, lines
    old, new = lines[:3], lines[3:]
    assert [COMBINED.match(line).group("path") for line in old] == [STATUS, "/one/a.txt",
                                                                     "/two/b.txt"]
    assert re.fullmatch(rf"GET {STATUS} 200 \d+", new[0])
    assert new[1:] == ["GET /one/a.txt 200 7", "GET /two/b.txt 200 4"]
    assert "Traceback" not in daemon.log()


def test_sighup_with_invalid_file_logs_every_problem_and_changes_nothing(site, site_dir: Path):
    """
    A file with an unknown key and bad values, next to valid changes (pool
    size, static mappings, access format): SIGHUP logs every problem, one
    line each, and that nothing changed; the daemon keeps serving with the
    old configuration: the pool size, the old static directory, no new
    mapping, the old access format and load time.  Once the file is fixed,
    the next SIGHUP applies it.
    """
    make_files(site_dir, {"one/a.txt": "one v1\n", "one-v2/a.txt": "one v2\n", "two/b.txt": "two\n"})
    daemon = site(max_threads=4, log="access_log = access.log", static="/one = one")
    before = status_json(daemon)
    config = daemon.config

    rewrite(daemon, max_threads=9, static="/one = one-v2\n/two = two",
            log="access_log = access.log\naccess_format = {status}",
            threadpool="maxx = 5", more="[limits]\nidle_timeout = soon\nmax_queue = -1")
    logged = reload(daemon)

    loaded_at = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                              time.strptime(before["config_loaded_at"], "%Y-%m-%dT%H:%M:%SZ"))
    problems = [m for m in logged if m.startswith("reload: ") and m != logged[-1]]
    assert sorted(problems) == sorted([
        f"reload: {config}: [limits] idle_timeout = 'soon': expected a number of seconds of at least 1",
        f"reload: {config}: [limits] max_queue = '-1': expected an integer of at least 0",
        f"reload: {config}: [threadpool] maxx is not a known key (did you mean max?); "
        "known keys: min, max",
    ])
    assert logged[-1] == (
        f"reload: 3 problem(s) in the configuration; nothing changed, still serving with "
        f"{config} as loaded at {loaded_at}"
    )

    after = status_json(daemon)
    assert after["pool"] == before["pool"]
    assert after["config_loaded_at"] == before["config_loaded_at"]
    assert daemon.get("/one/a.txt")[1] == b"one v1\n"
    assert daemon.get("/two/b.txt")[1] == b"testapp /two/b.txt"
    wait_until(lambda: len(access_lines(site_dir / "access.log")) == 4, 5, "4 access lines")
    assert [COMBINED.match(line).group("path") for line in access_lines(site_dir / "access.log")
            ] == [STATUS, STATUS, "/one/a.txt", "/two/b.txt"]

    rewrite(daemon, max_threads=9, static="/one = one-v2\n/two = two")
    assert reload(daemon)[-1].startswith("reload: done; changed: [threadpool] max 4 -> 9")
    assert status_json(daemon)["pool"]["max"] == 9
    assert daemon.get("/two/b.txt")[1] == b"two\n"


def test_sighup_logs_port_and_app_changes_as_needing_a_restart(site, site_dir: Path):
    """
    A reload whose file changes [server] port and an [app] key logs each as
    taking a restart, applies the rest of the file (the pool size), and
    keeps serving the same application on the old port; nothing listens on
    the new one.
    """
    daemon = site(max_threads=4)
    new_port = free_port()
    rewrite(daemon, max_threads=5, application="testapp")
    config_text = daemon.config.read_text().replace(f"port = {daemon.port}", f"port = {new_port}")
    daemon.config.write_text(config_text)

    logged = reload(daemon)

    assert (f"reload: [server] port changed from {daemon.port} to {new_port}; this takes a "
            f"restart, so the running server keeps {daemon.port}") in logged
    assert ("reload: [app] application changed from testapp:application to testapp; this takes "
            "a restart, so the running server keeps testapp:application") in logged
    assert logged[-1] == "reload: done; changed: [threadpool] max 4 -> 5"
    assert status_json(daemon)["pool"]["max"] == 5
    assert daemon.get("/ping")[1] == b"testapp /ping"
    assert refused(new_port)


def test_sighup_drops_no_connection(site):
    """
    A slow request in flight while SIGHUP arrives completes with 200, and a
    keep-alive connection opened before the reload serves another request
    after it, on the same socket.
    """
    daemon = site(max_threads=4)
    keep_alive = daemon.connection()
    try:
        keep_alive.request("GET", "/before")
        response = keep_alive.getresponse()
        assert (response.status, response.read()) == (200, b"testapp /before")
        sock = keep_alive.sock

        with ThreadPoolExecutor(1) as executor:
            slow = executor.submit(fetch, daemon, "/sleep?seconds=1")
            wait_until(lambda: status_json(daemon)["pool"]["busy"] == 1, 5,
                       "the slow request to be running")
            rewrite(daemon, max_threads=6)
            assert reload(daemon)[-1] == "reload: done; changed: [threadpool] max 4 -> 6"
            assert not slow.done(), "the slow request ended before the reload: test too slow"
            status, body, _ = slow.result(timeout=10)
        assert (status, body) == (200, b"slept\n")

        keep_alive.request("GET", "/after")
        response = keep_alive.getresponse()
        assert (response.status, response.read()) == (200, b"testapp /after")
        assert keep_alive.sock is sock, "the keep-alive connection was reopened"
    finally:
        keep_alive.close()


# -- SIGTERM --------------------------------------------------------------------


def test_sigterm_drains_in_flight_request_refuses_new_connections_closes_idle_ones(site):
    """
    SIGTERM with one request in flight and one idle keep-alive connection:
    the idle connection is closed at once, new connections are refused
    while the request still runs, the request then completes with 200 (and
    Connection: close), and the daemon exits, removing its pidfile, without
    a traceback.
    """
    daemon = site()
    idle = daemon.connection()
    try:
        idle.request("GET", "/ping")
        response = idle.getresponse()
        assert response.status == 200 and response.read() == b"testapp /ping"
        assert not response.will_close

        with ThreadPoolExecutor(1) as executor:
            slow = executor.submit(fetch, daemon, "/sleep?seconds=1.5")
            wait_until(lambda: status_json(daemon)["pool"]["busy"] == 1, 5,
                       "the slow request to be running")
            daemon.signal(signal.SIGTERM)
            signalled = time.monotonic()

            idle.sock.settimeout(5)
            assert idle.sock.recv(1) == b"", "the idle keep-alive connection was not closed"
            assert time.monotonic() - signalled < 1.0
            wait_for_message(daemon, "stopping: no new connections; waiting up to 30 s for "
                                     "1 request(s) in flight")
            wait_until(lambda: refused(daemon.port), 1, "new connections to be refused")
            assert not slow.done(), "the request in flight ended before the checks"

            status, body, headers = slow.result(timeout=10)
        assert (status, body) == (200, b"slept\n")
        assert headers.get("connection") == "close"
    finally:
        idle.close()

    wait_for_exit(daemon, 5)
    assert not daemon.pidfile.exists()
    log = daemon.log()
    assert '"GET /sleep?seconds=1.5 HTTP/1.1" 200 6' in log
    assert "cut short" not in log
    assert "Server Shut Down." in log
    assert "Traceback" not in log


def test_sigterm_cuts_short_request_running_at_graceful_timeout(site):
    """
    With graceful_timeout = 1, a request still running at the deadline has
    its connection cut then, is logged by method, path and client, and the
    daemon exits once its worker thread is free, removing its pidfile,
    without a traceback.  A request that finishes in time completes.
    """
    daemon = site(server="graceful_timeout = 1")
    with ThreadPoolExecutor(2) as executor:
        quick = executor.submit(fetch, daemon, "/sleep?seconds=0.5")
        long = executor.submit(fetch, daemon, "/sleep?seconds=3")
        wait_until(lambda: status_json(daemon)["pool"]["busy"] == 2, 5, "both requests to run")
        daemon.signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert quick.result(timeout=5)[:2] == (200, b"slept\n")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            long.result(timeout=5)
        cut_after = time.monotonic() - signalled
    assert 0.9 <= cut_after < 2.5

    exited = wait_for_exit(daemon, 10)
    assert exited - signalled < 5
    assert not daemon.pidfile.exists()
    log = daemon.log()
    assert ("stopping: cut short GET /sleep?seconds=3 from 127.0.0.1 after 1 s "
            "([server] graceful_timeout)") in messages(daemon)
    assert "cut short GET /sleep?seconds=0.5" not in log
    assert '"GET /sleep?seconds=3 HTTP/1.1" 499 -' in log
    assert "Traceback" not in log


def test_sigterm_exit_is_bounded_by_graceful_timeout(site):
    """
    graceful_timeout is "how long requests in flight may take to finish
    before the server exits anyway": with graceful_timeout = 1 and a request
    sleeping 10 s in the application, the request is cut short at 1 s and
    the daemon exits within a few seconds, not when the application code
    returns.
    """
    daemon = site(server="graceful_timeout = 1")
    with ThreadPoolExecutor(1) as executor:
        long = executor.submit(fetch, daemon, "/sleep?seconds=10")
        wait_until(lambda: status_json(daemon)["pool"]["busy"] == 1, 5, "the request to run")
        daemon.signal(signal.SIGTERM)
        wait_for_message(daemon, "stopping: cut short GET /sleep?seconds=10 from 127.0.0.1 "
                                 "after 1 s ([server] graceful_timeout)", timeout=5)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            long.result(timeout=5)
        wait_for_exit(daemon, 4)
    assert not daemon.pidfile.exists()


def test_second_sigterm_cuts_a_long_drain_short(site):
    """
    With graceful_timeout = 30 and a never-ending response in flight, a
    second SIGTERM during the drain cuts the request short at once (logged)
    and the daemon exits within a few seconds, without a traceback.
    """
    daemon = site(server="graceful_timeout = 30")
    conn = daemon.connection()
    try:
        conn.request("GET", "/forever")
        response = conn.getresponse()
        assert response.read1(5) == b"tick\n"
        daemon.signal(signal.SIGTERM)
        wait_for_message(daemon, "stopping: no new connections; waiting up to 30 s for "
                                 "1 request(s) in flight")
        daemon.signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_for_exit(daemon, 4)
        assert time.monotonic() - signalled < 4
    finally:
        conn.close()
        daemon.kill()
    found = messages(daemon)
    assert "received SIGTERM while stopping: cutting requests in flight short" in found
    assert "stopping: cut short GET /forever from 127.0.0.1" in found
    assert not daemon.pidfile.exists()
    assert "Traceback" not in daemon.log()


def test_sighup_during_drain_neither_reloads_nor_kills(site):
    """
    SIGHUP while draining is logged as not reloading and changes nothing:
    the request in flight still completes with 200 and the daemon exits
    cleanly, removing its pidfile.
    """
    daemon = site(server="graceful_timeout = 30")
    with ThreadPoolExecutor(1) as executor:
        slow = executor.submit(fetch, daemon, "/sleep?seconds=1.5")
        wait_until(lambda: status_json(daemon)["pool"]["busy"] == 1, 5, "the request to run")
        daemon.signal(signal.SIGTERM)
        wait_for_message(daemon, "stopping: no new connections; waiting up to 30 s for "
                                 "1 request(s) in flight")
        daemon.signal(signal.SIGHUP)
        try:
            assert slow.result(timeout=5)[:2] == (200, b"slept\n")
        finally:
            pid = daemon.pid
            wait_until(lambda: not process_exists(pid), 5, "the daemon to exit")
            daemon.pid = None
    assert "received SIGHUP while stopping: not reloading" in messages(daemon)
    assert not daemon.pidfile.exists()
    assert "Server Shut Down." in daemon.log()


def test_status_page_answers_503_during_drain_on_an_open_connection(site):
    """
    While draining, the status page answers 503 (status "draining") to a
    request on a connection opened before SIGTERM.  Only a connection whose
    request had begun arriving can show it: idle keep-alive connections are
    closed when the drain starts, those with a request in flight are closed
    after their response, and new connections are refused.
    """
    daemon = site()
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    try:
        sock.sendall(f"GET {STATUS} HTTP/1.1\r\n".encode())
        # Ours and the status request's own connection both hold a request.
        wait_until(lambda: status_json(daemon)["connections"]["busy"] == 2, 5,
                   "the server to have received the request line")
        daemon.signal(signal.SIGTERM)
        wait_until(lambda: any(m.startswith("stopping: no new connections")
                               for m in messages(daemon)), 5, "the drain to start")
        wait_until(lambda: refused(daemon.port), 1, "new connections to be refused")
        sock.sendall(b"Host: 127.0.0.1\r\nAccept: application/json\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = json.loads(response.read())
        assert response.status == 503
        assert response.getheader("connection") == "close"
        assert body["status"] == "draining"
    finally:
        sock.close()
    wait_for_exit(daemon, 5)
    assert not daemon.pidfile.exists()


# -- SIGUSR1 --------------------------------------------------------------------


def test_sigusr1_reopens_access_log_and_twistd_log_after_rotation(site, site_dir: Path):
    """
    logrotate without copytruncate, twice: both the access log (relative to
    the configuration's directory) and twistd's --logfile are renamed, then
    SIGUSR1.  New lines go to fresh files at the original paths; the renamed
    files keep their lines and get no new ones; no access line is lost or
    torn.  The new files have the modes the first ones had (the daemon's
    umask, 077, does not make them 0600).
    """
    daemon = site(log="access_log = access.log", status="path = off")
    access_log = site_dir / "access.log"
    counts = {0: 3, 1: 4, 2: 5}  # requests made into each generation of the files
    access_log.chmod(0o640)
    daemon.logfile.chmod(0o644)

    def make_requests(generation: int) -> None:
        for i in range(counts[generation]):
            assert daemon.get(f"/gen{generation}/{i}")[0].status == 200
        wait_until(lambda: len(access_lines(access_log)) == counts[generation], 5,
                   f"{counts[generation]} access lines in generation {generation}")

    make_requests(0)
    rotated_twistd_logs = {}
    for generation in (1, 2):
        access_log.rename(site_dir / f"access.log.{generation}")
        daemon.logfile.rename(daemon.workdir / f"twistd.log.{generation}")
        daemon.signal(signal.SIGUSR1)
        wait_until(lambda: "received SIGUSR1: log files reopened" in messages(daemon), 5,
                   "the reopen to be logged in a fresh twistd log")
        rotated_twistd_logs[generation] = (daemon.workdir / f"twistd.log.{generation}").read_text()
        make_requests(generation)
        assert stat.S_IMODE(access_log.stat().st_mode) == 0o640
        assert stat.S_IMODE(daemon.logfile.stat().st_mode) == 0o644

    daemon.stop()
    assert "Server Shut Down." in daemon.log()
    for generation, old in rotated_twistd_logs.items():
        assert (daemon.workdir / f"twistd.log.{generation}").read_text() == old
    assert "reopened" not in rotated_twistd_logs[1]
    assert "Server Shut Down." not in rotated_twistd_logs[1] + rotated_twistd_logs[2]
    files = {1: site_dir / "access.log.1", 2: site_dir / "access.log.2", 0: access_log}
    # Generation g's requests went to the file renamed at rotation g + 1, or the live one.
    for generation, path in ((0, files[1]), (1, files[2]), (2, access_log)):
        lines = access_lines(path)
        paths = [COMBINED.match(line).group("path") for line in lines]
        assert paths == [f"/gen{generation}/{i}" for i in range(counts[generation])], lines


# -- the access log under concurrency ----------------------------------------------


def test_access_log_lines_never_tear_under_concurrency(site, site_dir: Path):
    """
    200 requests from 20 concurrent keep-alive clients, each with a 4 KB
    User-Agent holding a quote and a backslash: the access log holds
    exactly one strict combined-format line per request, with the
    User-Agent escaped and complete.
    """
    daemon = site(min_threads=4, max_threads=8, log="access_log = access.log",
                  status="path = off")
    user_agent = 'load-test "quoted" back\\slash ' + "x" * 4000
    escaped = user_agent.replace("\\", "\\\\").replace('"', '\\"')

    def client(n: int) -> list[int]:
        conn = daemon.connection()
        try:
            statuses = []
            for i in range(10):
                conn.request("GET", f"/c{n}/r{i}", headers={"User-Agent": user_agent})
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
            return statuses
        finally:
            conn.close()

    with ThreadPoolExecutor(20) as executor:
        results = list(executor.map(client, range(20)))
    assert results == [[200] * 10] * 20

    access_log = site_dir / "access.log"
    wait_until(lambda: len(access_lines(access_log)) >= 200, 5, "200 access lines")
    lines = access_lines(access_log)
    assert len(lines) == 200
    matches = [COMBINED.match(line) for line in lines]
    assert all(matches), [line[:120] for line, m in zip(lines, matches) if not m][:3]
    assert sorted(m.group("path") for m in matches) == sorted(
        f"/c{n}/r{i}" for n in range(20) for i in range(10))
    assert {m.group("user_agent") for m in matches} == {escaped}
    assert {m.group("status") for m in matches} == {"200"}


def test_connection_closed_mid_head_leaves_no_unparsable_access_line(site, site_dir: Path):
    """
    A client that sends part of a request head and goes away has made no
    request: the access log holds no line for it, or at least none that
    breaks the combined format; every line still parses.
    """
    daemon = site(log="access_log = access.log")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(b"GET /half HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        wait_until(lambda: status_json(daemon)["connections"]["busy"] == 2, 5,
                   "the server to have received the partial head")
    wait_until(lambda: status_json(daemon)["connections"]["open"] == 1, 5,
               "the server to see the connection closed")
    lines = access_lines(site_dir / "access.log")
    assert lines, "no access line at all: the status requests were not logged"
    assert [line for line in lines if not COMBINED.match(line)] == []


# -- the status page ------------------------------------------------------------


def test_status_page_json_and_prometheus(site, site_dir: Path):
    """
    The status page is JSON by default, with the documented fields and the
    exact counts of the requests before it (one 200, one 404, the bytes
    they sent); Prometheus text with Accept: text/plain and with
    ?format=prometheus, with the same numbers, every line well formed.
    """
    make_files(site_dir, {"files/a.txt": "hello\n"})
    daemon = site(min_threads=2, max_threads=4, static="/files = files")
    ok = daemon.get("/files/a.txt")
    missing = daemon.get("/files/missing.txt")
    assert (ok[0].status, missing[0].status) == (200, 404)

    response, body = get_status(daemon)
    assert response.status == 200
    assert response.getheader("content-type") == "application/json"
    assert response.getheader("cache-control") == "no-store"
    data = json.loads(body)
    assert set(data) >= {"status", "pool", "requests", "responses", "bytes_sent",
                         "uptime_seconds", "config_file", "config_loaded_at"}
    assert data["status"] == "serving"
    assert data["pool"]["min"] == 2 and data["pool"]["max"] == 4
    assert set(data["pool"]) == {"min", "max", "threads", "busy", "queued"}
    assert 2 <= data["pool"]["threads"] <= 4
    assert (data["pool"]["busy"], data["pool"]["queued"]) == (0, 0)
    assert data["requests"] == 2
    assert data["responses"] == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0}
    assert data["bytes_sent"] == len(ok[1]) + len(missing[1])
    assert 0 <= data["uptime_seconds"] < 60
    assert data["config_file"] == str(daemon.config)
    loaded = time.mktime(time.strptime(data["config_loaded_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(loaded - time.mktime(time.gmtime())) < 120

    sample = re.compile(r'^backtracweb_[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$')
    # The JSON request above, then each Prometheus one, count as answered requests.
    for answered, query, headers in ((3, "", {"Accept": "text/plain"}),
                                     (4, "?format=prometheus", {})):
        response, body = get_status(daemon, query, headers)
        assert response.status == 200
        assert response.getheader("content-type") == "text/plain; version=0.0.4; charset=utf-8"
        lines = body.decode().splitlines()
        assert all(line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line)
                   for line in lines), lines
        assert "backtracweb_up 1" in lines
        assert "backtracweb_pool_max 4" in lines
        assert "backtracweb_pool_min 2" in lines
        assert 'backtracweb_responses_total{class="4xx"} 1' in lines
        assert f"backtracweb_requests_total {answered}" in lines
        assert f'backtracweb_config_info{{file="{daemon.config}",loaded_at="' \
               f'{data["config_loaded_at"]}"}} 1' in lines


def test_status_page_is_403_for_addresses_not_allowed(site):
    """
    With [status] allow = 10.0.0.0/8, a request from 127.0.0.1 gets 403 and
    no numbers, in both formats; other paths are still served.
    """
    daemon = site(status=f"path = {STATUS}\nallow = 10.0.0.0/8")
    for query in ("", "?format=prometheus"):
        response, body = get_status(daemon, query)
        assert response.status == 403
        assert body == b"Forbidden: this address may not read the status page ([status] allow).\n"
    assert daemon.get("/ping")[1] == b"testapp /ping"


def test_status_page_answers_while_every_thread_is_busy(site):
    """
    With max = 2 and two requests sleeping in the application, plus a third
    waiting for a thread, the status page still answers 200 at once and
    shows busy = 2 and queued = 1; all three requests then complete.
    """
    daemon = site(min_threads=2, max_threads=2)
    with ThreadPoolExecutor(3) as executor:
        sleepers = [executor.submit(fetch, daemon, "/sleep?seconds=2") for _ in range(2)]
        waiting: list[Future] = []
        timings = []

        def pool_state() -> dict:
            began = time.monotonic()
            data = status_json(daemon)
            timings.append(time.monotonic() - began)
            return data["pool"]

        wait_until(lambda: pool_state()["busy"] == 2, 1.5, "both threads to be busy")
        waiting.append(executor.submit(fetch, daemon, "/queued"))
        wait_until(lambda: pool_state()["queued"] == 1, 1.5, "the third request to queue")
        state = pool_state()
        assert (state["busy"], state["queued"], state["max"]) == (2, 1, 2)
        assert all(not f.done() for f in sleepers)
        assert max(timings) < 0.5, timings
        assert [f.result(timeout=10)[:2] for f in sleepers] == [(200, b"slept\n")] * 2
        assert waiting[0].result(timeout=10)[:2] == (200, b"testapp /queued")
