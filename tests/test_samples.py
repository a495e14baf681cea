"""
The samples agree: the README, the template (etc/backtrac.ini), the
systemd unit, the logrotate rules and the nginx site use one set of paths,
L{backtracweb.config.docs.PATHS}, so that combined as shipped they work together
(a logrotate rule that matches no file fails silently).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

import pytest

from backtracweb.config.docs import PATHS

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "etc" / "systemd" / "backtracweb.service"
LOGROTATE = REPO / "etc" / "logrotate.d" / "backtracweb"
NGINX = REPO / "etc" / "nginx" / "backtracweb.conf"
TEMPLATE = REPO / "etc" / "backtrac.ini"
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), TEMPLATE, UNIT,
             REPO / "etc" / "systemd" / "backtracweb.socket", LOGROTATE, NGINX]

# A path of the deployment: under /run or /var/log, or backtracweb's own under /etc.
DEPLOYMENT_PATH = re.compile(r"(?:/run|/var/log|/etc/backtrac)[\w./*-]*")


def deployment_paths(text: str) -> set[str]:
    return {match.rstrip(".") for match in DEPLOYMENT_PATH.findall(text)}


def allowed() -> set[str]:
    """The paths, their directories, and the logrotate glob of the log directory."""
    paths = set(PATHS.values())
    paths |= {os.path.dirname(path) for path in paths}
    return paths | {"/var/log/backtracweb/*.log", "/run", "/var/log"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_is_one_of_the_set(document: Path):
    """No document names a pidfile, log or socket of its own."""
    assert deployment_paths(document.read_text()) - allowed() == set()


def test_the_readme_daemon_is_the_units():
    """The README starts the daemon with the unit's pidfile, log file and configuration."""
    readme = REPO / "README.md"
    started = f"--pidfile {PATHS['pidfile']} --logfile {PATHS['logfile']} backtracweb -c " \
              f"{PATHS['config']}"
    for document in (readme, UNIT):
        assert started in " ".join(document.read_text().replace("\\\n", " ").split()), document


def unit_values(name: str) -> list[str]:
    """The values of a key of the unit, continuation lines joined, comments skipped."""
    text = UNIT.read_text().replace("\\\n", " ")
    return [" ".join(line.split("=", 1)[1].split()) for line in text.splitlines()
            if line.startswith(f"{name}=")]


def test_the_unit_creates_the_directories_it_uses():
    """systemd makes /run/backtracweb and /var/log/backtracweb for the unit's user."""
    assert [f"/run/{name}" for name in unit_values("RuntimeDirectory")] == [
        os.path.dirname(PATHS["pidfile"])]
    assert [f"/var/log/{name}" for name in unit_values("LogsDirectory")] == [
        os.path.dirname(PATHS["logfile"])]
    assert os.path.dirname(PATHS["access_log"]) == os.path.dirname(PATHS["logfile"])
    assert os.path.dirname(PATHS["socket"]) == os.path.dirname(PATHS["pidfile"])
    [check] = unit_values("ExecStartPre")
    assert check.endswith(f"backtracweb check -c {PATHS['config']}")


def test_logrotate_rotates_both_logs_and_signals_the_daemon():
    """The rule's pattern matches twistd's log and the access log; it signals the pidfile's process."""
    text = LOGROTATE.read_text()
    [pattern] = re.findall(r"^(/\S+) \{$", text, re.M)
    for log in (PATHS["logfile"], PATHS["access_log"]):
        assert fnmatch.fnmatch(log, pattern), log
    assert f'kill -USR1 "$(cat {PATHS["pidfile"]})"' in text


def test_the_template_offers_the_paths():
    """The template's examples use the set: access log, socket, env file, drop-ins."""
    text = TEMPLATE.read_text()
    assert f"# access_log = {PATHS['access_log']}\n" in text
    assert f"unix:{PATHS['socket']}:mode=660" in text
    assert f"# env_file = {PATHS['env_file']}\n" in text
    assert f"# include = {PATHS['drop-ins']}\n" in text


def test_nginx_offers_the_socket():
    assert f"server unix:{PATHS['socket']} " in NGINX.read_text()
