"""
Privileges and socket activation, end to end with a real twistd: a daemon
started as root binds a port below 1024 and then runs as nobody (the README's
"the port is bound before --uid/--gid drop privileges"); and a listening
socket handed over the way systemd does it is adopted through
[server] listen = systemd:domain=INET:index=0.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import APPS, Daemon, refused, site_ini, twistd_command, wait_until
from privileges import readable_code_for_nobody, unreadable_as  # noqa: F401 (a fixture)
from test_listen import APP, fetch, self_signed_certificate, tls_context

ENDPOINT = "systemd:domain=INET:index=0"

# A WSGI app next to testapp.py that reports the credentials of the worker
# thread running the request (getres[ug]id are per calling thread on Linux)
# at /ids, two variables of its environment at /env, and hands every other
# path to testapp.
IDS_APP = '''\
import json
import os
import threading

from testapp import application as testapp


def application(environ, start_response):
    if environ["PATH_INFO"] == "/env":
        body = json.dumps({name: os.environ.get(name) for name in ("BTW_SECRET", "BTW_MODE")})
    elif environ["PATH_INFO"] == "/ids":
        body = json.dumps({
            "uids": os.getresuid(), "gids": os.getresgid(), "groups": os.getgroups(),
            "thread": threading.current_thread().name,
        })
    else:
        return testapp(environ, start_response)
    body = body.encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''




# -- privileges -------------------------------------------------------------------


def free_privileged_port() -> int:
    """A port below 1024 on 127.0.0.1 that nothing listens on (binding needs root)."""
    for port in range(900, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 900..999 on 127.0.0.1")


@pytest.fixture
def world_readable_dir():
    """
    A 0755 directory under /tmp: pytest's tmp_path sits below 0700
    directories, which nobody could not enter once privileges are dropped.
    """
    path = Path(tempfile.mkdtemp(prefix="btw-priv-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def proc_ids(pid: int, task: str | None = None) -> dict[str, list[int]]:
    """The Uid, Gid (real, effective, saved, filesystem) and Groups of a process or thread."""
    status = Path(f"/proc/{pid}" + (f"/task/{task}" if task else "") + "/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {key: [int(v) for v in fields[key].split()] for key in ("Uid", "Gid", "Groups")}


@pytest.fixture
def nobody_daemon(readable_code_for_nobody, world_readable_dir: Path):
    """
    A daemon to be started as root with --uid nobody --gid nogroup and
    [server] port below 1024, serving testapp plus /ids from a directory
    nobody can read: (daemon, uid, gid).  Killed by pid at the end if still up.
    """
    uid, gid = readable_code_for_nobody
    port = free_privileged_port()
    base = world_readable_dir
    apps = base / "apps"
    shutil.copytree(APPS, apps)
    (apps / "ids.py").write_text(IDS_APP)
    for path in [apps, *apps.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    config = base / "backtrac.ini"
    config.write_text(site_ini(f"port = {port}\ninterface = 127.0.0.1", application="ids:application"))
    config.chmod(0o644)
    # twistd opens the log and writes the pidfile as root, before the drop,
    # so base (root's, 0755) does for those; but it removes the pidfile at
    # exit as nobody, which needs a directory nobody may write in.
    run = base / "run"
    run.mkdir()
    os.chown(run, uid, gid)
    daemon = Daemon(config, base, port)
    daemon.pidfile = run / "twistd.pid"
    yield daemon, uid, gid
    daemon.kill()


def test_privileged_port_then_runs_as_nobody(nobody_daemon):
    """
    twistd --uid nobody --gid nogroup, started as root with [server] port
    below 1024: the port is bound before the drop and serves the application
    (200); afterwards every thread of the daemon, worker threads included,
    has real, effective, saved and filesystem ids nobody/nogroup and no
    root group, so root cannot be regained; the application's code itself
    runs as nobody; SIGTERM stops the daemon, which (as nobody) can still
    remove its pidfile because the pidfile's directory belongs to nobody.
    """
    daemon, uid, gid = nobody_daemon
    daemon.start("--uid", str(uid), "--gid", str(gid))

    response, body = daemon.get("/hello")
    assert (response.status, body) == (200, b"testapp /hello")
    response, body = daemon.get("/ids")
    assert response.status == 200, body
    app = json.loads(body)
    assert app["uids"] == [uid] * 3 and app["gids"] == [gid] * 3, app
    assert 0 not in app["groups"], app
    assert app["thread"] != "MainThread"

    tasks = os.listdir(f"/proc/{daemon.pid}/task")
    assert len(tasks) >= 3  # the reactor thread and the 2 workers of [threadpool] min
    for task in tasks:
        ids = proc_ids(daemon.pid, task)
        assert ids["Uid"] == [uid] * 4 and ids["Gid"] == [gid] * 4, (task, ids)
        assert 0 not in ids["Groups"], (task, ids)

    log = daemon.log()
    assert f"set uid/gid {uid}/{gid}" in log
    assert f"serving on 127.0.0.1:{daemon.port}" in log

    daemon.stop()
    assert refused(daemon.port)
    wait_until(lambda: not daemon.pidfile.exists(), 5, "the pidfile to be removed")
    log = daemon.log()
    assert "No permission to delete pid file" not in log
    assert "Traceback" not in log, log


@pytest.mark.parametrize("workers", [1, 2])
def test_an_env_file_only_root_may_read_reaches_the_application_as_nobody(nobody_daemon, workers):
    """
    [app] env_file readable by root only, with twistd --uid nobody: twistd
    reads it before the drop, and the application (imported as nobody,
    after the fork; with workers, in each worker) sees its variables and
    [env]'s; SIGHUP reloads without reading it again, and no value reaches
    the log.
    """
    daemon, uid, gid = nobody_daemon
    secrets = daemon.workdir / "secret.env"
    secrets.write_text("# the application's secrets\nBTW_SECRET='only root reads this'\n")
    secrets.chmod(0o600)
    assert unreadable_as(uid, gid, [str(secrets)]) == [str(secrets)]
    config = daemon.config.read_text().replace("[app]\n", f"[app]\nenv_file = {secrets}\n")
    daemon.config.write_text(config.replace("[server]\n", f"[server]\nworkers = {workers}\n")
                             + "[env]\nBTW_MODE = production\n")
    daemon.start("--uid", str(uid), "--gid", str(gid))
    expected = {"BTW_SECRET": "only root reads this", "BTW_MODE": "production"}

    def seen() -> dict:
        response, body = daemon.get("/env")
        assert response.status == 200, body
        return json.loads(body)

    assert seen() == expected
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: daemon.log().count("reload: done") == workers, 20, "the reload")
    assert seen() == expected
    daemon.stop()
    log = daemon.log()
    assert "only root reads this" not in log
    assert "not reloaded" not in log and "Traceback" not in log, log


@pytest.mark.parametrize("workers", [1, 2])
def test_a_tls_key_only_root_may_read_serves_and_reloads_as_nobody(nobody_daemon, workers):
    """
    An ssl: endpoint whose key and certificate only root may read, with
    twistd --uid nobody: they are read before the drop (with workers, by
    the supervisor, for its workers), HTTPS is served, and SIGHUP reloads
    (the endpoint in use is not parsed again, as nobody, for nothing).
    """
    daemon, uid, gid = nobody_daemon
    tls = daemon.workdir / "tls"
    tls.mkdir(mode=0o700)
    key, cert = self_signed_certificate(tls)
    for path in (key, cert):
        path.chmod(0o600)
    assert unreadable_as(uid, gid, [str(key), str(cert)]) == [str(key), str(cert)]
    config = daemon.config.read_text().replace(
        f"port = {daemon.port}\ninterface = 127.0.0.1\n",
        f"listen = ssl:{daemon.port}:privateKey={key}:certKey={cert}:interface=127.0.0.1\n"
        f"workers = {workers}\n")
    daemon.config.write_text(config)
    daemon.start("--uid", str(uid), "--gid", str(gid))

    def hello() -> tuple[int, bytes]:
        response, body = fetch(http.client.HTTPSConnection(
            "127.0.0.1", daemon.port, timeout=10, context=tls_context(cert)), "/hello")
        return response.status, body

    assert hello() == (200, b"testapp /hello")
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: daemon.log().count("reload: done") == workers, 20, "the reload")
    assert hello() == (200, b"testapp /hello")
    daemon.stop()
    log = daemon.log()
    assert "not reloaded" not in log and "Traceback" not in log, log


def test_sigusr1_after_dropping_privileges_keeps_logging(nobody_daemon):
    """
    SIGUSR1 (log reopen) in a daemon that dropped to nobody, with twistd's
    --logfile created by root before the drop: the daemon goes on logging to
    its --logfile (reopened, or the old file kept with the failure logged, as
    backtracweb does for the access log); the access line of a request made
    after the signal and the stop message are in the log.
    """
    daemon, uid, gid = nobody_daemon
    daemon.start("--uid", str(uid), "--gid", str(gid))
    daemon.signal(signal.SIGUSR1)
    response, _ = daemon.get("/after-sigusr1")
    assert response.status == 200
    daemon.stop()  # the log is complete once the daemon has exited
    log = daemon.log()
    assert "GET /after-sigusr1 " in log, log
    assert "received SIGTERM: stopping" in log, log
    assert f"cannot reopen twistd's log file {daemon.logfile} (running as uid {uid})" in log


# -- systemd socket activation ------------------------------------------------------

# Emulates systemd starting a socket-activated service: the listening socket
# as fd 3 (preexec_fn), and LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, the
# last equal to the pid of twistd itself: sh exports its own pid, then execs
# twistd, which keeps it. Twisted's ListenFDs ignores the variables unless
# LISTEN_PID is its pid and (Twisted 26.10, as installed here) unless
# LISTEN_FDNAMES names as many descriptors as LISTEN_FDS counts; systemd >= 227
# always sets it.
#
# twistd daemonizes here, the normal twistd use: ListenFDs reads the
# environment when twisted.internet.endpoints is first imported, which
# backtracweb does while parsing the file in twistd's first process, whose pid
# is LISTEN_PID; the forked daemon inherits the parsed descriptor list and
# fd 3, so the pid changing in the fork does not matter.
SYSTEMD_SH = 'export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=backtracweb.socket; exec "$@"'


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}


def start_socket_activated(daemon: Daemon, listening: socket.socket) -> subprocess.CompletedProcess:
    fd = listening.fileno()

    def as_fd_3() -> None:
        os.dup2(fd, 3)
        os.set_inheritable(3, True)  # in case fd was already 3

    return subprocess.run(
        ["sh", "-c", SYSTEMD_SH, "sh", *twistd_command(),
         "--pidfile", str(daemon.pidfile), "--logfile", str(daemon.logfile),
         "backtracweb", "-c", str(daemon.config)],
        cwd=daemon.workdir, env=clean_environment(), capture_output=True, text=True,
        timeout=60, close_fds=False, preexec_fn=as_fd_3,
        # close_fds=False: fd 3 is made in the child, after subprocess chose
        # which descriptors to keep; the test's other descriptors are
        # non-inheritable (PEP 446) and close at exec anyway.
    )


@pytest.fixture
def systemd_daemon(make_daemon, site_dir: Path) -> Daemon:
    """The test app, listening only on the socket systemd passes as fd 3."""
    shutil.copytree(APPS, site_dir / "apps")
    return make_daemon(f"[server]\nlisten = {ENDPOINT}\n" + APP)


@pytest.mark.parametrize("workers", [1, 2])
def test_socket_passed_by_systemd_is_adopted_and_served(systemd_daemon: Daemon, workers: int):
    """
    With listen = systemd:domain=INET:index=0, a listening socket passed as
    fd 3 with LISTEN_FDS=1 (as systemd does) is served by the daemonized
    twistd (or its worker processes) once the test has closed its own copy;
    the log names the endpoint; on SIGTERM the daemon exits and the port
    refuses connections, so the daemon held the only remaining copy of the
    socket.
    """
    daemon = systemd_daemon
    daemon.config.write_text(daemon.config.read_text().replace(
        "[threadpool]", f"workers = {workers}\n[threadpool]"))
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        daemon.port = listening.getsockname()[1]
        result = start_socket_activated(daemon, listening)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{daemon.log()}"
    daemon.pid = int(daemon.pidfile.read_text())

    response, body = daemon.get("/hello")
    assert (response.status, body) == (200, b"testapp /hello")
    response, body = daemon.get("/environ")
    assert json.loads(body)["SERVER_PORT"] == str(daemon.port)
    log = daemon.log()
    assert f"serving on {ENDPOINT}" in log
    assert "Traceback" not in log

    daemon.stop()
    assert refused(daemon.port)


def test_systemd_endpoint_without_socket_activation_fails_clearly(systemd_daemon: Daemon):
    """
    The same file started without LISTEN_FDS (not by systemd) makes twistd
    exit non-zero before it forks (no log file, no pidfile), with one line
    naming the file, [server] listen and the systemd endpoint, and saying
    that no socket was passed, not a bare IndexError.
    """
    daemon = systemd_daemon
    result = subprocess.run(
        [*twistd_command(), "--pidfile", str(daemon.pidfile), "--logfile", str(daemon.logfile),
         "backtracweb", "-c", str(daemon.config)],
        cwd=daemon.workdir, env=clean_environment(), capture_output=True, text=True, timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert not daemon.logfile.exists() and not daemon.pidfile.exists()
    assert "Traceback" not in output
    line = next((l for l in output.splitlines() if f"[server] listen = '{ENDPOINT}'" in l), None)
    assert line is not None and f"{daemon.config}:" in line, output
    explanation = line.split(f"'{ENDPOINT}'")[-1]
    assert "IndexError" not in line and "list index out of range" not in line, line
    assert "LISTEN_FDS" in explanation or "socket" in explanation.lower(), line


def test_check_accepts_systemd_endpoint_outside_socket_activation(systemd_daemon: Daemon):
    """
    backtracweb check, run without LISTEN_FDS as the sample unit's
    ExecStartPre= and ExecReload= run it (systemd hands the socket only to
    ExecStart=), accepts listen = systemd:domain=INET:index=0 and exits 0.
    """
    daemon = systemd_daemon
    check = Path(sys.executable).with_name("backtracweb")
    command = [str(check)] if check.exists() else [sys.executable, "-m", "backtracweb"]
    result = subprocess.run([*command, "check", "-c", str(daemon.config)],
                            env=clean_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
