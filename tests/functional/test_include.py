"""
include: drop-in files merged into the main configuration, observed through
C{backtracweb check --print} (run as the console script, from a working
directory unrelated to the files) and through a daemonized twistd; and the
"did you mean" hints for near-miss names.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import APPS, Daemon, free_port

MAIN = """\
include = conf.d/*.ini
[threadpool]
min = 1
max = 3
[app]
loader = wsgi
pythonpath = apps
application = testapp:application
"""


def check(config: Path, cwd: Path, *options: str) -> subprocess.CompletedProcess:
    """C{backtracweb check -c CONFIG}, the console script installed beside python."""
    command = [str(Path(sys.executable).with_name("backtracweb")), "check", "-c", str(config),
               *options]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=30)


def printed_values(output: str) -> dict[tuple[str, str], tuple[str, str]]:
    """
    C{check --print}'s lines as {(section, key): (value, source)}, where
    source is a file path or "default".
    """
    values, section = {}, ""
    for line in output.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line.startswith("  ") and " = " in line and line.endswith(")"):
            key, _, rest = line.strip().partition(" = ")
            value, _, source = rest.rpartition("  (")
            values[(section, key)] = (value, source[:-1])
    return values


@pytest.fixture
def site(site_dir: Path) -> Path:
    """The main file (including conf.d/*.ini) beside the test app, and an empty conf.d."""
    shutil.copytree(APPS, site_dir / "apps")
    (site_dir / "conf.d").mkdir()
    config = site_dir / "backtrac.ini"
    config.write_text(MAIN)
    return config


def drop_in(config: Path, name: str, text: str) -> Path:
    path = config.parent / "conf.d" / name
    path.write_text(textwrap.dedent(text))
    return path


def failed_check(config: Path, cwd: Path) -> str:
    """Run check, insist that it failed without a traceback; return its stderr."""
    result = check(config, cwd)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    return result.stderr


# -- merging ------------------------------------------------------------------------------


def test_included_files_merge_in_sorted_order_later_winning(site: Path, workdir: Path):
    """
    conf.d/*.ini is resolved next to the main file; its files are merged
    after the main file in sorted name order (not creation order), each
    value from the last file that sets it; check --print names that file,
    or "default".
    """
    b = drop_in(site, "20-b.ini", "[threadpool]\nmax = 7\n")
    a = drop_in(site, "10-a.ini", "[server]\nport = 8123\n[threadpool]\nmax = 5\n")

    result = check(site, workdir, "--print")
    assert result.returncode == 0, result.stderr
    assert f"files: {site}, {a}, {b}" in result.stdout
    values = printed_values(result.stdout)
    assert values[("server", "port")] == ("8123", str(a))
    assert values[("threadpool", "max")] == ("7", str(b))
    assert values[("threadpool", "min")] == ("1", str(site))
    assert values[("server", "interface")] == ("127.0.0.1", "default")
    assert values[("app", "application")] == ("testapp:application", str(site))
    assert "serving http://127.0.0.1:8123/" in result.stdout


def test_daemon_serves_with_the_merged_values(site: Path, workdir: Path):
    """
    A daemon started with drop-ins uses the merged values: it listens on the
    port a drop-in sets, starts the pool with the max a later drop-in sets,
    and enforces a [limits] max_body set only in a drop-in.
    """
    daemon = Daemon(site, workdir, port=free_port())
    drop_in(site, "10-a.ini", f"[server]\nport = {daemon.port}\n[threadpool]\nmax = 5\n")
    drop_in(site, "20-b.ini", "[threadpool]\nmax = 6\n[limits]\nmax_body = 1K\n")
    try:
        daemon.start()
        response, body = daemon.get("/merged")
        assert (response.status, body) == (200, b"testapp /merged")
        assert daemon.request("POST", "/echo", body=b"x" * 2000)[0].status == 413
        assert daemon.request("POST", "/echo", body=b"x" * 1000)[0].status == 200
        assert "thread pool started: min 1, max 6" in daemon.log()
    finally:
        daemon.kill()


def test_include_pattern_matching_nothing_is_fine(site: Path, workdir: Path):
    """
    A glob that matches no file (an empty conf.d, a directory that does not
    exist) includes nothing: the file is valid and only the main file is used.
    """
    site.write_text(MAIN.replace("conf.d/*.ini", "conf.d/*.ini, nowhere.d/*.ini"))
    result = check(site, workdir, "--print")
    assert result.returncode == 0, result.stderr
    assert f"{site}: configuration is valid" in result.stdout
    assert "files:" not in result.stdout
    assert printed_values(result.stdout)[("threadpool", "max")] == ("3", str(site))


# -- errors in included files -----------------------------------------------------------------


@pytest.mark.parametrize("text, problem", [
    ("[threadpool]\nmax = lots\n", "[threadpool] max = 'lots': expected an integer of at least 1"),
    ("[threadpool]\nmaxx = 4\n",
     "[threadpool] maxx is not a known key (did you mean max?); known keys: min, max"),
    ("[server]\nport = 8123\n[threadpool]\nmax = 4\nthis is not valid\n",
     ", line 5: expected key = value, a [section] header or a # comment: 'this is not valid'"),
    ("[threadpool]\nmin = 9\n",
     "[threadpool] min = 9 is greater than max = 3; min must not exceed max"),
], ids=["bad-value", "unknown-key", "syntax-error", "cross-key-rule"])
def test_error_in_included_file_names_that_file(site: Path, workdir: Path, text: str,
                                               problem: str):
    """
    A problem in a drop-in is reported naming the drop-in (and the line,
    for a syntax error), both by check and by twistd, which exits non-zero
    before forking.
    """
    drop_in(site, "10-ok.ini", "[threadpool]\nmax = 3\n")
    bad = drop_in(site, "20-bad.ini", text)
    separator = "" if problem.startswith(",") else ": "
    expected = f"{bad}{separator}{problem}"
    assert expected in failed_check(site, workdir)

    daemon = Daemon(site, workdir, port=0)
    result = daemon.start(check=False, timeout=30)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert not daemon.pidfile.exists() and not daemon.logfile.exists()


def test_unknown_section_in_included_file_names_that_file(site: Path, workdir: Path):
    """An unknown section ([threadpol]) in a drop-in is reported naming the drop-in."""
    bad = drop_in(site, "20-bad.ini", "[threadpol]\nmax = 4\n")
    errors = failed_check(site, workdir)
    assert f"{bad}: [threadpol] is not a known section (did you mean threadpool?)" in errors


def test_include_in_an_included_file_is_an_error(site: Path, workdir: Path):
    """Only the main file may include others: an include in a drop-in is an error naming it."""
    (site.parent / "more.ini").write_text("[threadpool]\nmax = 4\n")
    nested = drop_in(site, "10-nested.ini", "include = ../more.ini\n[threadpool]\nmax = 4\n")
    errors = failed_check(site, workdir)
    assert f"{nested}: include is only allowed in the main configuration file" in errors


def test_literal_include_that_does_not_exist_is_an_error(site: Path, workdir: Path):
    """
    A path without glob characters must exist: a missing one is an error
    naming the main file and the path, resolved next to the main file.
    """
    site.write_text(MAIN.replace("conf.d/*.ini", "conf.d/*.ini, site-local.ini"))
    missing = site.parent / "site-local.ini"
    errors = failed_check(site, workdir)
    assert f"{site}: include = '{missing}': file {missing} does not exist" in errors


# -- did you mean -----------------------------------------------------------------------


@pytest.mark.parametrize("change, problem", [
    (("max = 3", "maxx = 3"),
     "[threadpool] maxx is not a known key (did you mean max?); known keys: min, max"),
    (("[threadpool]", "[threadpol]"),
     "[threadpol] is not a known section (did you mean threadpool?)"),
    (("loader = wsgi", "loader = wsgii"),
     "[app] loader = 'wsgii': unknown loader (did you mean wsgi?)"),
    (("include = conf.d/*.ini", "includes = conf.d/*.ini"),
     "includes = 'conf.d/*.ini' is outside any section (did you mean include?)"),
], ids=["key", "section", "loader", "top-level-key"])
def test_near_miss_names_get_a_suggestion(site: Path, workdir: Path, change, problem: str):
    """A near-miss key, section, loader or top-level key is reported with the name meant."""
    site.write_text(MAIN.replace(*change))
    assert f"{site}: {problem}" in failed_check(site, workdir)
