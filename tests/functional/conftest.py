"""
Fixtures for end-to-end tests: a real, daemonized C{twistd backtracweb}.

The daemon is started exactly as an admin would (no C{-n}), with a pidfile
and a log file, from a working directory unrelated to its configuration
file.  twistd's parent process exits only once the daemon has started its
services (or failed to), so its exit is the readiness signal; the daemon is
stopped by SIGTERM to the pid in its pidfile.
"""

from __future__ import annotations

import http.client
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo"
APPS = Path(__file__).resolve().parent / "apps"


def twistd_command() -> list[str]:
    """twistd from the environment the tests run in (the installed one)."""
    script = Path(sys.executable).with_name("twistd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "twisted"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int) -> bool:
    """Whether a new TCP connection to 127.0.0.1:port is refused (nothing listens)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(predicate, timeout: float, what: str) -> None:
    """Poll C{predicate} until true; fail the test naming C{what} if it never is."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def process_exists(pid: int) -> bool:
    """
    Whether C{pid} is a live process.  A zombie counts as gone: a daemon is
    reparented to init, which may reap it a moment after it exited.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def thread_policies(pid: int) -> set[int]:
    """The scheduling policies (os.SCHED_*) of the threads of process C{pid}."""
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@dataclass
class Daemon:
    """One daemonized twistd backtracweb, and the files it uses."""

    config: Path
    workdir: Path
    port: int
    pidfile: Path = field(init=False)
    logfile: Path = field(init=False)
    pid: int | None = None
    started: subprocess.CompletedProcess | None = None

    def __post_init__(self) -> None:
        self.pidfile = self.workdir / "twistd.pid"
        self.logfile = self.workdir / "twistd.log"

    def start(self, *extra: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """
        Run twistd (daemonizing) and return its parent's result; with
        C{check}, insist that it started and record the daemon's pid.
        """
        self.started = subprocess.run(
            [*twistd_command(), "--pidfile", str(self.pidfile), "--logfile", str(self.logfile),
             *extra, "backtracweb", "-c", str(self.config)],
            cwd=self.workdir, capture_output=True, text=True, timeout=timeout,
        )
        if check:
            assert self.started.returncode == 0, (
                f"twistd failed to start: {self.started.stderr}\n{self.log()}"
            )
            self.pid = int(self.pidfile.read_text().strip())
            assert process_exists(self.pid)
        return self.started

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""

    def connection(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 10):
        """One request on a new connection; returns (response, body bytes)."""
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def signal(self, signum: int) -> None:
        assert self.pid is not None
        os.kill(self.pid, signum)

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM the daemon, wait for it to exit; return how long it took."""
        assert self.pid is not None
        began = time.monotonic()
        self.signal(signal.SIGTERM)
        wait_until(lambda: not process_exists(self.pid), timeout, f"pid {self.pid} to exit")
        elapsed = time.monotonic() - began
        self.pid = None
        return elapsed

    def kill(self) -> None:
        """Last-resort cleanup: SIGKILL by pid, never by name."""
        if self.pid is not None and process_exists(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    """A directory holding a configuration file; the daemon runs elsewhere."""
    path = tmp_path / "etc"
    path.mkdir()
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The daemon's working directory, unrelated to the configuration's."""
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def make_daemon(site_dir: Path, workdir: Path):
    """
    Build a daemon from an INI body; C{{port}} in it is replaced by a free
    port.  Every daemon made is killed at the end of the test if still up.
    """
    daemons: list[Daemon] = []

    def make(ini: str, name: str = "backtrac.ini") -> Daemon:
        port = free_port()
        config = site_dir / name
        config.write_text(textwrap.dedent(ini).replace("{port}", str(port)))
        daemon = Daemon(config, workdir, port)
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        daemon.kill()


def site_ini(server: str = "port = {port}", *, application: str = "testapp:application",
             django: str | None = None, threads: tuple[int, int] = (2, 4),
             static: dict[str, str] | None = None, extra: str = "",
             interface: str = "wsgi") -> str:
    """
    A configuration file for a test site: the C{[server]} lines given, a
    pool of C{threads} (min, max), the WSGI (or, with C{interface}, ASGI)
    C{application} from apps/ beside the file (or the C{django} settings
    module of demo/), the C{static} mappings, then the C{extra} sections as
    written.
    """
    lines = ["[server]", *textwrap.dedent(server).strip().splitlines(),
             "[threadpool]", f"min = {threads[0]}", f"max = {threads[1]}", "[app]",
             f"interface = {interface}"]
    if django:
        lines += ["pythonpath = demo", f"DJANGO_SETTINGS_MODULE = {django}"]
    else:
        lines += ["loader = wsgi", "pythonpath = apps", f"application = {application}"]
    if static:
        lines += ["[static]", *(f"{prefix} = {directory}" for prefix, directory in static.items())]
    return "\n".join(lines) + "\n" + textwrap.dedent(extra)


DEMO_INI = site_ini(django="demosite.settings", static={"/static": "demo/static"})
"""The demo Django site, for a copy of demo/ beside the file ({port} to fill in)."""


@pytest.fixture
def demo_daemon(make_daemon, site_dir: Path) -> Daemon:
    """The demo Django site, configured with paths relative to the file."""
    shutil.copytree(DEMO, site_dir / "demo")
    return make_daemon(DEMO_INI)


@pytest.fixture
def wsgi_daemon(make_daemon, site_dir: Path):
    """
    A daemon serving the WSGI test app in tests/functional/apps (module
    C{testapp}, attribute C{application}), plus any extra INI lines given:
    C{server} lines go into [server], C{extra} (whole sections) at the end.
    """

    def make(extra: str = "", min_threads: int = 2, max_threads: int = 4,
             server: str = "") -> Daemon:
        shutil.copytree(APPS, site_dir / "apps", dirs_exist_ok=True)
        return make_daemon(site_ini("port = {port}\n" + textwrap.dedent(server),
                                    threads=(min_threads, max_threads), extra=extra))

    return make


# -- raw HTTP, for what http.client would refuse to send ------------------------


def exchange(daemon: Daemon, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes on a new connection; everything received until it closes."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=timeout) as s:
        s.sendall(data)
        received = []
        while True:
            block = s.recv(65536)
            if not block:
                return b"".join(received)
            received.append(block)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def makefile(self, *args, **kwargs):
        return self._file


def parse(data: bytes, method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
    """Parse a raw response with http.client: (response, decoded body)."""
    response = http.client.HTTPResponse(_Bytes(data), method=method)
    response.begin()
    return response, response.read()


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """A raw response's head and whatever bytes follow it."""
    head, separator, rest = data.partition(b"\r\n\r\n")
    assert separator, f"no end of headers in {data[:200]!r}"
    return head, rest
