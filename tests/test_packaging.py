"""
The release as a distribution builds and installs it: `python -m build`
makes the sdist from a clean copy of the tree and the wheel from that sdist;
the wheel goes into a fresh virtualenv, followed by the plugin-cache refresh
the README asks packagers to run after installing; the tests then use the
commands, the twistd plugin and the samples installed there.

Built and installed once for the module.  The build is isolated (build
installs the setuptools that pyproject.toml asks for into a virtualenv of its
own), so it checks the declared build requirements rather than whatever the
test environment happens to hold; with pip's cache warm it takes a few
seconds, like the install.
"""

from __future__ import annotations

import http.client
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from configobj import ConfigObj
from privileges import readable_code_for_nobody  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[1]
# The samples the README promises under <prefix>/share/backtracweb/.
SAMPLES = {"backtrac.ini", "systemd/backtracweb.service", "systemd/backtracweb.socket",
           "logrotate.d/backtracweb", "nginx/backtracweb.conf"}
# Files of the tree that only its developers use: not in the sdist.
DEVELOPER_ONLY = (".ci/", "bench/", ".gitignore")
# The command the README gives packagers to run after installing or removing.
REFRESH_PLUGIN_CACHE = "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"


def clean_files(tree: Path) -> list[str]:
    """
    The files of C{tree} that a fresh clone of it has (tracked, or new and
    not ignored), as relative paths; outside git (an unpacked sdist), every
    file but bytecode.
    """
    if not (tree / ".git").exists():
        return sorted(str(p.relative_to(tree)) for p in tree.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=tree, capture_output=True, check=True).stdout.decode()
    return sorted(name for name in listed.split("\0") if name and (tree / name).is_file())


def run(env: Path, *command: str) -> subprocess.CompletedProcess:
    """A command of the virtualenv C{env}, run from /, away from the source tree."""
    return subprocess.run([str(env / "bin" / command[0]), *command[1:]], capture_output=True,
                          text=True, cwd="/", timeout=120)


def site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


def plugin_cache(env: Path) -> Path:
    return site_packages(env) / "twisted" / "plugins" / "dropin.cache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workspace():
    """
    A directory for the module's builds, virtualenv and site.  Not pytest's
    tmp_path, which only its owner may enter: the daemon test runs twistd
    as nobody when the tests run as root.
    """
    path = Path(tempfile.mkdtemp(prefix="backtracweb-packaging-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def source(workspace: Path) -> Path:
    """A clean copy of the tree: the build leaves nothing in the checkout."""
    tree = workspace / "src"
    for name in clean_files(REPO):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tree / name)
    return tree


@pytest.fixture(scope="module")
def dist(workspace: Path, source: Path) -> Path:
    """The sdist and the wheel; build makes the wheel from the unpacked sdist."""
    out = workspace / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def venv(workspace: Path, dist: Path) -> Path:
    """A fresh virtualenv with the wheel installed, and the plugin cache refreshed."""
    env = workspace / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    installed = subprocess.run([str(env / "bin" / "pip"), "install", "-q", str(wheel(dist))],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    refreshed = run(env, "python", "-c", REFRESH_PLUGIN_CACHE)
    assert refreshed.returncode == 0, refreshed.stderr
    return env


def wheel(dist: Path) -> Path:
    [path] = dist.glob("backtracweb-*.whl")
    return path


@dataclass
class Site:
    config: Path
    port: int


def installed_sample(venv: Path) -> Path:
    return venv / "share" / "backtracweb" / "backtrac.ini"


@pytest.fixture(scope="module")
def site(workspace: Path, source: Path, venv: Path) -> Site:
    """
    The installed template made to serve a copy of the demo, as a packager
    or an admin makes it: [app] and [static] set, on a free port.
    """
    root = workspace / "site"
    shutil.copytree(source / "demo", root / "demo")
    config = root / "etc" / "backtrac.ini"
    config.parent.mkdir()
    port = free_port()
    text = installed_sample(venv).read_text()
    for example, value in ((r"port = 8080", f"port = {port}"),
                           (r"# pythonpath = \S+", "pythonpath = ../demo"),
                           (r"# DJANGO_SETTINGS_MODULE = \S+",
                            "DJANGO_SETTINGS_MODULE = demosite.settings"),
                           (r"# /static = \S+", "/static = ../demo/static")):
        text, count = re.subn(rf"(?m)^{example}$", value, text)
        assert count == 1, f"the template no longer has a line {example!r}"
    config.write_text(text)
    return Site(config, port)


def test_sdist_holds_the_tree_but_developer_tools(dist: Path):
    """
    The sdist has every file of the tree but the developers' own (.ci, bench):
    the package, the drop-in, LICENSE, the samples, the demo and the tests,
    so a distribution can rebuild the wheel from it and run the tests.
    """
    [sdist] = dist.glob("backtracweb-*.tar.gz")
    with tarfile.open(sdist) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    expected = {name for name in clean_files(REPO) if not name.startswith(DEVELOPER_ONLY)}
    assert sorted(expected - shipped) == []
    assert {"LICENSE", "tests/test_packaging.py", "demo/demosite/settings.py"} <= shipped


def test_plugin_is_a_drop_in_without_init(venv: Path):
    """No __init__.py of ours may shadow Twisted's own twisted/ or twisted/plugins/."""
    record = next(site_packages(venv).glob("backtracweb-*.dist-info")) / "RECORD"
    installed = [line.split(",")[0] for line in record.read_text().splitlines()]
    assert "twisted/plugins/backtracweb_plugin.py" in installed
    assert not [path for path in installed
                if path.startswith("twisted/") and path.endswith("__init__.py")]


def test_every_sample_is_installed_under_share(venv: Path, source: Path):
    """etc/X is installed as <prefix>/share/backtracweb/X, for every file of etc/."""
    share = venv / "share" / "backtracweb"
    installed = {str(p.relative_to(share)) for p in share.rglob("*") if p.is_file()}
    samples = {str(p.relative_to(source / "etc")) for p in (source / "etc").rglob("*") if p.is_file()}
    assert installed == samples
    assert SAMPLES <= installed
    for name in installed:
        assert (share / name).read_bytes() == (source / "etc" / name).read_bytes(), name


def test_twistd_lists_the_plugin_quietly(venv: Path):
    """
    Installed as pip leaves it (no plugin cache), twistd lists the plugin and
    writes nothing on stderr; the second time too, finding current the cache
    the first run wrote.
    """
    cache = plugin_cache(venv)
    cache.unlink()
    for attempt in ("first", "second"):
        result = run(venv, "twistd", "--help")
        assert result.returncode == 0, result.stderr
        assert "Serve a Django or WSGI site" in result.stdout
        assert result.stderr == "", attempt
        if attempt == "first":
            written = cache.stat().st_mtime_ns
    assert cache.stat().st_mtime_ns == written


def test_packagers_cache_refresh_leaves_twistd_nothing_to_write(venv: Path):
    """
    The README's post-install command writes a cache that twistd finds
    current, so a daemon that may not write to site-packages (a system
    install run as www-data) does not log "Unable to write to plugin cache"
    at every start.
    """
    cache = plugin_cache(venv)
    cache.unlink()
    refreshed = run(venv, "python", "-c", REFRESH_PLUGIN_CACHE)
    assert refreshed.returncode == 0, refreshed.stderr
    written = cache.stat().st_mtime_ns
    assert run(venv, "twistd", "--help").returncode == 0
    assert cache.stat().st_mtime_ns == written


def test_check_on_the_installed_template_asks_for_the_site(venv: Path):
    """As installed, check fails with one line: set [app] (and [static])."""
    result = run(venv, "backtracweb", "check", "-c", str(installed_sample(venv)))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"{installed_sample(venv)}: [app] DJANGO_SETTINGS_MODULE is missing: expected a dotted "
        "Python module name such as mysite.settings; required when loader = django (set [app], "
        "and [static] for the site's files)\n")


def test_check_passes_on_the_template_with_the_site_set(venv: Path, site: Site):
    """The console script validates the file and imports the demo's Django application."""
    result = run(venv, "backtracweb", "check", "-c", str(site.config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"127.0.0.1:{site.port}" in result.stdout
    assert "WSGIHandler" in result.stdout


def stylesheet(config: Path) -> tuple[str, Path]:
    """The URL and file of a stylesheet under the first [static] mapping that has one."""
    for prefix, directory in ConfigObj(str(config), interpolation=False)["static"].items():
        for path in sorted((config.parent / directory).rglob("*.css")):
            return f"{prefix}/{path.relative_to(config.parent / directory)}", path
    pytest.fail(f"no stylesheet under the [static] mappings of {config}")


def get(port: int, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


@pytest.fixture
def run_as(request) -> dict:
    """
    How to run the daemon: as nobody when the tests run as root (with the
    interpreter readable by nobody, see L{readable_code_for_nobody}), else
    as the tests' user.
    """
    if os.geteuid() != 0:
        return {}
    uid, gid = request.getfixturevalue("readable_code_for_nobody")
    return dict(user=uid, group=gid, extra_groups=[])


def test_daemon_serves_the_installed_sample(venv: Path, site: Site, workspace: Path, run_as):
    """
    twistd from the wheel's virtualenv, daemonized as an init script runs it,
    serves the installed template set to the demo: the demo's page, and a
    stylesheet through its [static] mapping; SIGTERM stops it.  When the tests run as
    root, the daemon runs as nobody, who may not write to site-packages, and
    (the plugin cache having been refreshed) logs no plugin-cache warning.
    """
    rundir = workspace / "run"
    rundir.mkdir()
    as_user = run_as
    if as_user:
        os.chown(rundir, as_user["user"], as_user["group"])
    pidfile, logfile = rundir / "twistd.pid", rundir / "twistd.log"
    started = subprocess.run(
        [str(venv / "bin" / "twistd"), "--pidfile", str(pidfile), "--logfile", str(logfile),
         "backtracweb", "-c", str(site.config)],
        cwd=rundir, capture_output=True, text=True, timeout=60, **as_user)
    log = logfile.read_text() if logfile.exists() else ""
    # twistd's parent exits once the daemon has started its services.
    assert started.returncode == 0, started.stderr + log
    pid = int(pidfile.read_text())
    exited = os.pidfd_open(pid)
    try:
        response, _ = get(site.port, "/")
        assert response.status == 200
        url, path = stylesheet(site.config)
        response, body = get(site.port, url)
        assert (response.status, response.getheader("Content-Type")) == (200, "text/css")
        assert body == path.read_bytes()
    finally:
        os.kill(pid, signal.SIGTERM)
        readable, _, _ = select.select([exited], [], [], 15)
        os.close(exited)
        if not readable:
            os.kill(pid, signal.SIGKILL)
    assert readable, f"pid {pid} still running 15 s after SIGTERM"
    log = logfile.read_text()
    assert "Traceback" not in log, log
    assert "Unable to write to plugin cache" not in log, log
    assert not pidfile.exists()
