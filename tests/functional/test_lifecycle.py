"""
The daemon's life and its start-up errors, through real processes.

Every test runs C{twistd backtracweb} (or the C{backtracweb} command) as an
admin would, from a working directory unrelated to the configuration file,
and checks what the admin sees: the exit status, the terminal, the log
file, the pidfile, and whether a process is left behind.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import APPS, DEMO, DEMO_INI, Daemon, process_exists, twistd_command, wait_until

import backtracweb

# -- helpers ----------------------------------------------------------------

FORK_BUG_SITECUSTOMIZE = '''\
"""Start the thread pool in makeService, before twistd forks: the bug pool.py guards."""
import backtracweb.process.tree as _loader

_original = _loader.build_service


def build_service(config, reactor):
    top = _original(config, reactor)
    top.getServiceNamed("threadpool").pool.start()
    return top


_loader.build_service = build_service
'''

BROKEN_SETTINGS = {
    "import-error": ('raise ImportError("boom")\n', "ImportError: boom"),
    "syntax-error": ("DEBUG = (\n", "SyntaxError: '(' was never closed"),
}


def run(command: list[str], cwd: Path, timeout: float = 30, env=None) -> subprocess.CompletedProcess:
    """Run a command to completion; a hang fails the test through the timeout."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def start_daemon(daemon: Daemon, *extra: str, env=None) -> subprocess.CompletedProcess:
    """Like L{Daemon.start}, with an environment for twistd's processes."""
    result = run(
        [*twistd_command(), "--pidfile", str(daemon.pidfile), "--logfile", str(daemon.logfile),
         *extra, "backtracweb", "-c", str(daemon.config)],
        daemon.workdir, env=env,
    )
    assert result.returncode == 0, f"twistd failed to start: {result.stderr}\n{daemon.log()}"
    daemon.pid = int(daemon.pidfile.read_text().strip())
    assert process_exists(daemon.pid)
    return result


def processes_running(config: Path) -> list[int]:
    """Pids of live processes whose command line names C{config} (unique per test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config).encode() in argv:
            pids.append(int(entry.name))
    return pids


def assert_no_daemon_left(daemon: Daemon) -> None:
    """No pidfile, and (once a failing child has exited) no process running the file."""
    assert not daemon.pidfile.exists(), f"pidfile left behind: {daemon.pidfile.read_text()!r}"
    wait_until(lambda: not processes_running(daemon.config), 5,
               f"every process running {daemon.config} to exit")


def broken_settings_site(make_daemon, site_dir: Path, source: str) -> Daemon:
    """A Django site whose settings module exists, so passes the checks, but fails to import."""
    package = site_dir / "broken" / "brokensite"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(source)
    return make_daemon(
        """
        [server]
        port = {port}
        [app]
        pythonpath = broken
        DJANGO_SETTINGS_MODULE = brokensite.settings
        """
    )


def http_get(port: int, path: str, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def backtracweb_commands() -> dict[str, list[str]]:
    return {
        "console-script": [str(Path(sys.executable).with_name("backtracweb"))],
        "python-m": [sys.executable, "-m", "backtracweb"],
    }


# -- 1. the fork bug guard ----------------------------------------------------


def test_pool_started_before_fork_hangs_requests_and_only_daemon_mode_shows_it(
    wsgi_daemon, site_dir: Path, tmp_path: Path
):
    """
    A pool started in makeService (before twistd forks) keeps no threads in
    the daemon: the daemon accepts connections and serves static files, but
    every application request hangs.  The same configuration without that
    change answers, and with -n (no fork) even the changed code answers, so
    only a daemonized end-to-end test catches the bug.
    """
    (site_dir / "files").mkdir()
    (site_dir / "files" / "hello.txt").write_text("static still works\n")
    daemon = wsgi_daemon("[static]\n/files = files\n", min_threads=2, max_threads=4)
    patch_dir = tmp_path / "forkbug"
    patch_dir.mkdir()
    (patch_dir / "sitecustomize.py").write_text(FORK_BUG_SITECUSTOMIZE)
    patched_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(patch_dir), os.environ.get("PYTHONPATH")]))}

    # As shipped: the daemon's worker threads answer.
    start_daemon(daemon)
    status, body = http_get(daemon.port, "/thread", timeout=10)
    assert (status, body[:12]) == (200, b"backtracweb-")
    daemon.stop()

    # Pool started before the fork: static files work, the application hangs.
    start_daemon(daemon, env=patched_env)
    assert http_get(daemon.port, "/files/hello.txt", timeout=10) == (200, b"static still works\n")
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        http_get(daemon.port, "/thread", timeout=3)
    assert time.monotonic() - began >= 2.5
    daemon.kill()
    daemon.pidfile.unlink(missing_ok=True)

    # The same patched code in the foreground (-n): no fork, so it answers.
    foreground_log = daemon.workdir / "foreground.log"
    process = subprocess.Popen(
        [*twistd_command(), "-n", "--pidfile", str(daemon.pidfile), "--logfile",
         str(foreground_log), "backtracweb", "-c", str(daemon.config)],
        cwd=daemon.workdir, env=patched_env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: f"serving on 127.0.0.1:{daemon.port}" in (
                foreground_log.read_text() if foreground_log.exists() else ""
            ) or process.poll() is not None,
            30, "the foreground twistd to serve",
        )
        assert process.poll() is None, foreground_log.read_text()
        status, body = http_get(daemon.port, "/thread", timeout=10)
        assert (status, body[:12]) == (200, b"backtracweb-")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in foreground_log.read_text()


# -- 2, 3. SIGTERM ------------------------------------------------------------


def test_sigterm_stops_daemon_promptly_during_streaming_response(wsgi_daemon):
    """
    SIGTERM while a never-ending streaming response is in flight lets it
    run for [server] graceful_timeout (1 s here), then cuts it short,
    naming it in the log, and stops the daemon within a few seconds, well
    under the pool stop timeout; the pidfile is removed and nothing is
    logged as a traceback.
    """
    daemon = wsgi_daemon(server="graceful_timeout = 1\n")
    daemon.start()
    conn = daemon.connection(timeout=10)
    try:
        conn.request("GET", "/forever")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read1(5) == b"tick\n"

        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        pid = daemon.pid
        wait_until(lambda: not process_exists(pid), 5, f"daemon pid {pid} to exit after SIGTERM")
        daemon.pid = None
        assert 1 <= time.monotonic() - began < 5
    finally:
        conn.close()
    assert not daemon.pidfile.exists()
    log = daemon.log()
    assert "received SIGTERM: stopping" in log
    assert "stopping: cut short GET /forever from 127.0.0.1 after 1 s" in log
    assert "still busy after" not in log
    assert "Traceback" not in log


def test_sigterm_stops_idle_daemon(wsgi_daemon):
    """
    SIGTERM to an idle daemon stops it within a few seconds, removes the
    pidfile and logs an orderly shut-down without a traceback.
    """
    daemon = wsgi_daemon()
    daemon.start()
    assert daemon.get("/ping")[1] == b"testapp /ping"
    elapsed = daemon.stop(timeout=10)
    assert elapsed < 5
    assert not daemon.pidfile.exists()
    log = daemon.log()
    assert "received SIGTERM: stopping" in log
    assert "Server Shut Down." in log
    assert "Traceback" not in log
    with pytest.raises(ConnectionRefusedError):
        daemon.get("/ping", timeout=5)


# -- 4. start-up errors -------------------------------------------------------


def test_missing_config_option_is_a_usage_error(workdir: Path):
    """
    Without -c, twistd exits 2 (a usage error) with one line naming --config,
    and nothing else on the terminal, before logging or forking.
    """
    result = run([*twistd_command(), "--pidfile", "twistd.pid", "--logfile", "twistd.log",
                  "backtracweb"], workdir)
    assert result.returncode == 2
    assert (result.stdout, result.stderr) == ("", (
        "twistd backtracweb: --config FILE is required: the INI file describing the site "
        "(twistd backtracweb --help lists the options)\n"))
    assert not (workdir / "twistd.pid").exists()
    assert not (workdir / "twistd.log").exists()


@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_config_errors_read_as_the_readme_shows(make_daemon, foreground):
    """
    A file with two problems, started as the README starts a daemon (and
    with -n): exactly the lines the README shows, on standard error, and
    nothing else (no usage text, no traceback); exit status 1.
    """
    daemon = make_daemon("[server]\nport = 80800\n[threadpool]\nmaxx = 4\n[app]\n"
                         "loader = wsgi\napplication = testapp\npythonpath = " + str(APPS) + "\n")
    result = run([*twistd_command(), *(["-n"] if foreground else []), "--pidfile",
                  str(daemon.pidfile), "--logfile", str(daemon.logfile), "backtracweb", "-c",
                  str(daemon.config)], daemon.workdir)
    assert result.returncode == 1
    assert (result.stdout, result.stderr) == ("", (
        "twistd backtracweb: 2 problems in the configuration:\n"
        f"  {daemon.config}: [server] port = '80800': expected an integer between 1 and 65535\n"
        f"  {daemon.config}: [threadpool] maxx is not a known key (did you mean max?); known "
        "keys: min, max\n"))
    assert not daemon.logfile.exists()


GOOD_DEMO = DEMO_INI

# (id, change to GOOD_DEMO as (old, new), expected fragments after the file name)
OPTION_ERRORS = [
    ("port-out-of-range", ("port = {port}", "port = 70000"),
     ["[server] port = '70000': expected an integer between 1 and 65535"]),
    ("min-above-max", ("min = 2", "min = 5"),
     ["[threadpool] min = 5 is greater than max = 4; min must not exceed max"]),
    ("missing-static-directory", ("/static = demo/static", "/static = nowhere"),
     ["[static] /static = 'nowhere': directory {site_dir}/nowhere does not exist"]),
    ("unknown-key", ("max = 4", "maxx = 4"),
     ["[threadpool] maxx is not a known key (did you mean max?); known keys: min, max"]),
    ("settings-module-not-found", ("demosite.settings", "nosuchsite.settings"),
     ["[app] DJANGO_SETTINGS_MODULE = 'nosuchsite.settings': "
      "module nosuchsite not found in pythonpath or sys.path"]),
]


@pytest.mark.parametrize(
    "change, expected", [pytest.param(c, e, id=i) for i, c, e in OPTION_ERRORS]
)
def test_config_errors_fail_in_option_parsing(make_daemon, site_dir: Path, change, expected):
    """
    Each kind of bad file makes twistd exit non-zero with a line naming the
    file, section and key, without a traceback, during option parsing: no
    log file is opened and no daemon is forked.
    """
    shutil.copytree(DEMO, site_dir / "demo")
    daemon = make_daemon(GOOD_DEMO.replace(*change))
    result = daemon.start(check=False, timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""
    for fragment in expected:
        assert (f"twistd backtracweb: {daemon.config}: {fragment.format(site_dir=site_dir)}"
                in result.stderr)
    assert "Traceback" not in result.stderr
    assert not daemon.logfile.exists()
    assert_no_daemon_left(daemon)


def test_config_file_that_does_not_exist(make_daemon, site_dir: Path):
    """A -c path that does not exist: non-zero exit naming the path and the reason."""
    daemon = make_daemon("[server]\nport = {port}\n")
    daemon.config = site_dir / "missing.ini"
    result = daemon.start(check=False, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{daemon.config}: cannot read the configuration file: No such file or directory" in output
    assert "Traceback" not in output
    assert not daemon.logfile.exists()
    assert_no_daemon_left(daemon)


@pytest.mark.parametrize("kind", BROKEN_SETTINGS)
def test_settings_module_failing_on_import_is_reported_after_fork(make_daemon, site_dir: Path, kind):
    """
    A settings module that is found but fails on import is only found in the
    daemon, after the fork: the twistd parent exits non-zero relaying the
    start of the error, and the log holds the whole message, naming the
    settings module and the cause, without a traceback; no daemon remains.
    """
    source, cause = BROKEN_SETTINGS[kind]
    daemon = broken_settings_site(make_daemon, site_dir, source)
    result = daemon.start(check=False, timeout=30)
    assert result.returncode == 1
    # twistd relays only the first 100 bytes of the error: the cause comes first.
    first, second = result.stderr.splitlines()
    assert first.startswith(f"twistd backtracweb: cannot start: {cause}")
    assert second == f"twistd backtracweb: the whole message is in the log file {daemon.logfile}"
    assert "Traceback" not in result.stdout + result.stderr
    log = daemon.log()
    settings_file = site_dir / "broken" / "brokensite" / "settings.py"
    assert (
        f"backtracweb cannot start: {cause} ({settings_file}, line 1); while loading the "
        "application ([app] loader = django, DJANGO_SETTINGS_MODULE = 'brokensite.settings')"
    ) in log
    assert "Traceback" not in log
    assert_no_daemon_left(daemon)


def test_port_in_use(make_daemon):
    """
    A port another process listens on: twistd exits non-zero saying it
    cannot listen on that address, logs the same without a traceback, and
    leaves no daemon.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = make_daemon(f"""
            [server]
            port = {port}
            [app]
            loader = wsgi
            pythonpath = {APPS}
            application = testapp:application
            """)
        result = daemon.start(check=False, timeout=30)
        message = f"cannot listen on 127.0.0.1:{port}: Address already in use"
        assert result.returncode == 1
        assert result.stderr == (
            f"twistd backtracweb: cannot start: {message}\n"
            f"twistd backtracweb: the whole message is in the log file {daemon.logfile}\n")
        assert "Traceback" not in result.stdout
        log = daemon.log()
        assert f"backtracweb cannot start: {message}" in log
        assert "Traceback" not in log
        assert_no_daemon_left(daemon)


# -- 5. the same errors in the foreground ---------------------------------------


def test_app_error_in_foreground_prints_message_without_traceback(make_daemon, site_dir: Path):
    """
    twistd -n (logging to stdout, as under a supervisor) with a settings
    module failing on import exits non-zero instead of hanging, prints the
    whole message, and shows no Python traceback.
    """
    daemon = broken_settings_site(make_daemon, site_dir, BROKEN_SETTINGS["import-error"][0])
    result = run([*twistd_command(), "-n", "--pidfile", str(daemon.pidfile),
                  "backtracweb", "-c", str(daemon.config)], daemon.workdir, timeout=30)
    assert result.returncode != 0
    assert "backtracweb cannot start: ImportError: boom (" in result.stdout
    assert ("while loading the application ([app] loader = django, DJANGO_SETTINGS_MODULE = "
            "'brokensite.settings')") in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert_no_daemon_left(daemon)


def test_app_error_in_foreground_with_log_file_reaches_terminal(make_daemon, site_dir: Path):
    """
    twistd -n --logfile FILE with a settings module failing on import says
    why on the terminal, as a configuration error would, not only in the log.
    """
    daemon = broken_settings_site(make_daemon, site_dir, BROKEN_SETTINGS["import-error"][0])
    result = run([*twistd_command(), "-n", "--pidfile", str(daemon.pidfile), "--logfile",
                  str(daemon.logfile), "backtracweb", "-c", str(daemon.config)],
                 daemon.workdir, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr + daemon.log()
    assert "brokensite.settings" in daemon.log()
    assert "backtracweb cannot start" in result.stdout + result.stderr


# -- 6. backtracweb check -------------------------------------------------------


@pytest.mark.parametrize("command", backtracweb_commands())
def test_check_good_demo_config(demo_daemon, site_dir: Path, command):
    """
    backtracweb check on the demo configuration exits 0 and summarises the
    address, the pool, the static mappings (made absolute) and the
    application it imported.
    """
    result = run([*backtracweb_commands()[command], "check", "-c", str(demo_daemon.config)],
                 demo_daemon.workdir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{demo_daemon.config}: configuration is valid" in out
    assert f"serving http://127.0.0.1:{demo_daemon.port}/" in out
    assert "  min = 2\n  max = 4\n" in out
    assert f"[static]\n  /static = {site_dir / 'demo' / 'static'}\n" in out
    assert f"  pythonpath = {site_dir / 'demo'}\n" in out
    assert "  DJANGO_SETTINGS_MODULE = demosite.settings\n" in out
    assert "application: django.core.handlers.wsgi.WSGIHandler imported" in out
    assert result.stderr == ""


@pytest.mark.parametrize("command", backtracweb_commands())
def test_check_lists_every_problem(make_daemon, site_dir: Path, command):
    """A file with several mistakes: exit 1, each problem on its own line, no traceback."""
    daemon = make_daemon(
        """
        [server]
        port = 0
        interface = localhost
        [threadpool]
        min = 8
        max = 4
        [app]
        pythonpath = nowhere
        DJANGO_SETTINGS_MODULE = mysite.settings
        [static]
        /static = missing
        """
    )
    result = run([*backtracweb_commands()[command], "check", "-c", str(daemon.config)],
                 daemon.workdir)
    assert result.returncode == 1
    err = result.stderr
    where = f"  {daemon.config}: "
    assert "problems in the configuration:\n" in err
    for problem in [
        "[server] port = '0': expected an integer between 1 and 65535",
        "[server] interface = 'localhost': expected an IPv4 or IPv6 address",
        f"[app] pythonpath = 'nowhere': directory {site_dir}/nowhere does not exist",
        f"[static] /static = 'missing': directory {site_dir}/missing does not exist",
        "[threadpool] min = 8 is greater than max = 4",
    ]:
        assert where + problem in err
    assert "Traceback" not in err + result.stdout
    assert result.stdout == ""


def test_check_settings_module_failing_on_import(make_daemon, site_dir: Path):
    """backtracweb check imports the application: a failing settings module exits 1, named."""
    daemon = broken_settings_site(make_daemon, site_dir, BROKEN_SETTINGS["import-error"][0])
    result = run([*backtracweb_commands()["console-script"], "check", "-c", str(daemon.config)],
                 daemon.workdir)
    assert result.returncode == 1
    assert result.stderr.startswith("ImportError: boom (")
    assert ("while loading the application ([app] loader = django, DJANGO_SETTINGS_MODULE = "
            "'brokensite.settings')") in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", backtracweb_commands())
def test_check_without_config_is_usage_error(workdir: Path, command):
    """backtracweb check without -c is an argparse usage error: exit 2 naming -c/--config."""
    result = run([*backtracweb_commands()[command], "check"], workdir)
    assert result.returncode == 2
    assert "usage: backtracweb check" in result.stderr
    assert "the following arguments are required: -c/--config" in result.stderr


def test_check_warns_of_a_port_in_use(make_daemon):
    """
    backtracweb check on a file whose port another process listens on: it
    still passes (a running server, checked before a reload, holds its own
    port) but says which address is taken, so a start is not a surprise.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = make_daemon(f"[server]\nport = {port}\n[app]\nloader = wsgi\n"
                             f"pythonpath = {APPS}\napplication = testapp:application\n")
        result = run([*backtracweb_commands()["console-script"], "check", "-c",
                      str(daemon.config)], daemon.workdir)
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == (
        f"warning: 127.0.0.1:{port} is in use: twistd backtracweb cannot listen on it until the "
        "process holding it (this server, if it runs) lets it go")
    result = run([*backtracweb_commands()["console-script"], "check", "-c", str(daemon.config)],
                 daemon.workdir)
    assert "warning" not in result.stdout


@pytest.mark.parametrize("command", [
    [*backtracweb_commands()["console-script"], "--version"],
    [*backtracweb_commands()["python-m"], "--version"],
    [*twistd_command(), "backtracweb", "--version"],
], ids=["console-script", "python-m", "twistd"])
def test_version(workdir: Path, command):
    """Every way in says the version of backtracweb, Twisted, Django and Python, and exits 0."""
    result = run(command, workdir)
    assert result.returncode == 0
    assert result.stdout.startswith(f"backtracweb {backtracweb.__version__} (Twisted ")
    assert ", Django " in result.stdout and ", Python " in result.stdout


# -- 7. relative paths ------------------------------------------------------------


def test_relative_paths_resolve_against_config_directory(demo_daemon, site_dir: Path, workdir: Path):
    """
    pythonpath and static directories written relative in the file mean
    next to the file, not the daemon's working directory: decoys of the
    same relative paths under the working directory are ignored.
    """
    decoy = workdir / "demo"
    (decoy / "static").mkdir(parents=True)
    (decoy / "static" / "site.css").write_text("DECOY: resolved against the cwd\n")
    (decoy / "demosite").mkdir()
    (decoy / "demosite" / "__init__.py").write_text("")
    (decoy / "demosite" / "settings.py").write_text('raise ImportError("decoy settings")\n')

    demo_daemon.start()
    response, body = demo_daemon.get("/static/site.css")
    assert response.status == 200
    assert body == (site_dir / "demo" / "static" / "site.css").read_bytes()
    assert b"DECOY" not in body
    response, body = demo_daemon.get("/")
    assert response.status == 200
    assert b"It works: Django under backtracweb" in body
    demo_daemon.stop()
    assert "decoy" not in demo_daemon.log()
