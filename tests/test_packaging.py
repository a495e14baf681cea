"""
`pip install .` into a fresh virtualenv gives a working twistd plugin, the
`backtracweb` command and the sample configuration for packagers.

One virtualenv is built for the module (about ten seconds), from a copy of
the source tree so the build leaves nothing behind in the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packaging")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "twistd.*"))
    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run([str(env / "bin" / "pip"), "install", "-q", str(source)], check=True,
                   capture_output=True)
    return env


def site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


def run(env: Path, *command: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(env / "bin" / command[0]), *command[1:]], capture_output=True,
                          text=True, cwd=cwd or "/", timeout=120)


def test_twistd_lists_the_plugin_without_warnings(venv):
    """The drop-in is installed where twistd looks, and twistd says nothing on stderr."""
    result = run(venv, "twistd", "--help")
    assert result.returncode == 0
    assert "backtracweb" in result.stdout
    assert "Serve a Django or WSGI site" in result.stdout
    assert result.stderr == ""


def test_plugin_is_a_drop_in_without_init(venv):
    """No __init__.py of ours may shadow Twisted's own twisted/ or twisted/plugins/."""
    record = next(site_packages(venv).glob("backtracweb-*.dist-info")) / "RECORD"
    installed = [line.split(",")[0] for line in record.read_text().splitlines()]
    assert "twisted/plugins/backtracweb_plugin.py" in installed
    assert not [path for path in installed
                if path.startswith("twisted/") and path.endswith("__init__.py")]


def test_plugin_cache_refresh_leaves_nothing_to_write(venv):
    """
    After the refresh command the README gives packagers, twistd finds the
    cache current and does not try to rewrite it: a daemon running as an
    unprivileged user then logs no "Unable to write to plugin cache".
    """
    refresh = run(venv, "python", "-c",
                  "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))")
    assert refresh.returncode == 0, refresh.stderr
    cache = site_packages(venv) / "twisted" / "plugins" / "dropin.cache"
    before = cache.stat().st_mtime_ns
    os.utime(cache, ns=(before, before))
    assert run(venv, "twistd", "--help").returncode == 0
    assert cache.stat().st_mtime_ns == before


def test_sample_configuration_is_installed_for_packagers(venv):
    """etc/backtrac.ini ships as share/backtracweb/backtrac.ini."""
    installed = venv / "share" / "backtracweb" / "backtrac.ini"
    assert installed.read_text() == (REPO / "etc" / "backtrac.ini").read_text()


def test_check_command_is_installed(venv):
    """The console script validates the sample against the demo and imports Django."""
    result = run(venv, "backtracweb", "check", "-c", str(REPO / "etc" / "backtrac.ini"))
    assert result.returncode == 0, result.stderr
    assert "serving http://127.0.0.1:8080/" in result.stdout
    assert "application: django.core.handlers.wsgi.WSGIHandler imported" in result.stdout
