"""
HTTP/1.1 conformance: every case of tests/http_cases.py, run against a real
daemonized twistd backtracweb serving apps/echoapp.py, over TCP.

One daemon per distinct set of [limits] (started the first time a case
needs it, shared by the module), one new TCP connection per case, run and
checked by tests/http_exchange.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import APPS, Daemon, free_port, site_ini
from http_cases import CASES, Case
from http_exchange import TIMEOUT, Exchange, expectation, show

# -- daemons ------------------------------------------------------------------------


def ini_limits(limits: dict) -> str:
    if not limits:
        return ""
    return "[limits]\n" + "".join(f"{key} = {value}\n" for key, value in sorted(limits.items()))


def start_echo_daemon(root: Path, limits: dict) -> Daemon | str:
    """
    A started daemon serving echoapp under C{root}, with these [limits];
    or, if it would not start, why (so that each case it was for fails
    saying so, rather than erroring in a fixture).
    """
    etc, run = root / "etc", root / "run"
    etc.mkdir()
    run.mkdir()
    shutil.copytree(APPS, etc / "apps")
    port = free_port()
    config = etc / "backtrac.ini"
    ini = site_ini(application="echoapp:application", extra=ini_limits(limits))
    config.write_text(ini.replace("{port}", str(port)))
    daemon = Daemon(config, run, port)
    try:
        daemon.start()
    except (AssertionError, subprocess.TimeoutExpired) as error:
        daemon.kill()
        started = daemon.started
        said = (f"twistd exited {started.returncode}: {started.stdout}{started.stderr}"
                f"{daemon.log()}" if started is not None else str(error))
        return (f"the daemon with {ini_limits(limits) or 'default limits'!r} did not start: "
                f"{said.strip()}")
    return daemon


@pytest.fixture(scope="module")
def daemons(tmp_path_factory):
    """A function of a case's [limits]: the daemon serving them, started on first use."""
    started: dict[tuple, Daemon | str] = {}

    def daemon_for(limits: dict) -> Daemon | str:
        key = tuple(sorted(limits.items()))
        if key not in started:
            started[key] = start_echo_daemon(tmp_path_factory.mktemp("conformance"), limits)
        return started[key]

    yield daemon_for
    for daemon in started.values():
        if isinstance(daemon, Daemon):
            daemon.kill()


def failure_to_start(case: Case, why: str) -> str:
    return "\n".join([f"{case.id}: {case.source}", f"  why: {case.why}",
                      f"  sent: {show(case.send)}", f"  expected: {expectation(case)}",
                      f"  not run: {textwrap.indent(why[-2000:], '    ').strip()}"])


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_conformance(case: Case, daemons) -> None:
    """The case's bytes get the case's responses, and the connection ends as it says."""
    daemon = daemons(case.limits)
    if isinstance(daemon, str):
        pytest.fail(failure_to_start(case, daemon), pytrace=False)
    Exchange(case, lambda: socket.create_connection(("127.0.0.1", daemon.port),
                                                    timeout=TIMEOUT)).run()
