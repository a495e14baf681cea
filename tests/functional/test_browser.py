"""
The demo's Django admin in a real browser, through a daemonized twistd
backtracweb: the admin's stylesheets (collected by collectstatic, served by
the [static] mapping) apply, and a superuser logs in and adds a group, which
takes the CSRF token, a POST, a redirect and the session cookie.  And the
demo's WebSocket (a Channels consumer) through nginx in front of two ASGI
instances, closed with 1001 when its instance drains.

The browser is Debian's Chromium (/usr/bin/chromium, installed by .ci/run),
driven by playwright; playwright never downloads a browser of its own.  The
demo is copied without what it generates, and prepared with demo/manage.py
as the README's quick start does, so nothing is written into the checkout.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEMO, DEMO_INI, Daemon, free_port, process_exists, site_ini, wait_until
from playwright.sync_api import expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet: without the background-networking switches Chromium
# keeps trying to reach Google's services, which a closed network answers
# with timeouts.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
USERNAME, PASSWORD = "admin", "not-a-secret-8e2f"
# The admin's header colour (--header-bg in admin/css/base.css, light scheme):
# what the header is only if that stylesheet was fetched and applied.
ADMIN_HEADER_BG = "rgb(65, 118, 144)"


def _fresh_clone_files(directory: str, names: list[str]) -> list[str]:
    """
    For copytree: leave out what the demo generates (see .gitignore), so the
    test starts from what a fresh clone has even if the checkout ran the demo.
    """
    if Path(directory) == DEMO / "static":
        return [name for name in names if name != "site.css"]
    return [name for name in names if name.startswith("db.sqlite3") or name == "__pycache__"]


def manage(demo: Path, *args: str, **env: str) -> None:
    """Run demo/manage.py with the tests' Python (the one backtracweb is installed in)."""
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, str(demo / "manage.py"), *args],
                            env={**environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stderr}"


@pytest.fixture(scope="module")
def admin_site(tmp_path_factory) -> Daemon:
    """
    The demo, migrated, its static files collected and a superuser created,
    served by a daemonized twistd; stopped by SIGTERM afterwards.
    """
    root = tmp_path_factory.mktemp("admin")
    etc, run = root / "etc", root / "run"
    run.mkdir()
    demo = etc / "demo"
    shutil.copytree(DEMO, demo, ignore=_fresh_clone_files)
    manage(demo, "migrate", "-v0")
    manage(demo, "collectstatic", "--noinput", "-v0")
    manage(demo, "createsuperuser", "--noinput", "--username", USERNAME,
           "--email", "admin@example.com", DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    port = free_port()
    config = etc / "backtrac.ini"
    config.write_text(DEMO_INI.replace("{port}", str(port)))
    daemon = Daemon(config, run, port)
    try:
        daemon.start()
        yield daemon
        daemon.stop()
    finally:
        daemon.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """
    One Chromium for the module, with a profile directory of its own and a
    home of its own: its crash reporter writes under $XDG_CONFIG_HOME
    whatever the profile directory, and the suite leaves nothing in ~.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (as .ci/run does)")
    home = tmp_path_factory.mktemp("chromium-home")
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            home / "profile", env=env,
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            color_scheme="light", viewport={"width": 1280, "height": 800},
        )
        # Fail within the test's time budget rather than playwright's 30 s.
        context.set_default_timeout(10_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser):
    """A new tab, with no cookie left from another test."""
    browser.clear_cookies()
    page = browser.new_page()
    yield page
    page.close()


def save_artifact(page, tmp_path: Path, name: str) -> Path:
    """
    Screenshot the page into the test's tmp_path, and into
    $BACKTRACWEB_ARTIFACTS when set (for CI to keep); return the first.
    """
    path = tmp_path / name
    page.screenshot(path=path, full_page=True)
    artifacts = os.environ.get("BACKTRACWEB_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    print(f"screenshot: {path}" + (f" (and in {artifacts})" if artifacts else ""))
    return path


def test_admin_login_page_is_styled_by_the_static_mapping(admin_site, page):
    """
    The login page's stylesheets come from the [static] directory that
    collectstatic filled (Django itself serves no static file, DEBUG being
    off), and the browser applies them.
    """
    base = f"http://127.0.0.1:{admin_site.port}"
    with page.expect_response(f"{base}/static/admin/css/base.css") as css:
        response = page.goto(f"{base}/admin/login/")
    assert response.status == 200
    assert css.value.status == 200
    assert css.value.headers["content-type"] == "text/css"
    expect(page.locator("#header")).to_have_css("background-color", ADMIN_HEADER_BG)
    expect(page.locator("#site-name")).to_have_text("Django administration")


def test_superuser_logs_in_and_adds_a_group(admin_site, page, tmp_path):
    """
    The superuser logs in and reaches the admin index; adding a group through
    its form redirects to the group list with Django's success message, and
    the group is in the database.
    """
    base = f"http://127.0.0.1:{admin_site.port}"
    page.goto(f"{base}/admin/")
    page.wait_for_url(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
    expect(page.locator("#content h1")).to_have_text("Site administration")
    cookies = {cookie["name"] for cookie in page.context.cookies(base)}
    assert {"sessionid", "csrftoken"} <= cookies

    page.click('a[href="/admin/auth/group/add/"]')
    page.wait_for_url(f"{base}/admin/auth/group/add/")
    page.fill("#id_name", "Browser testers")
    page.click("input[name=_save]")
    page.wait_for_url(f"{base}/admin/auth/group/")
    expect(page.locator(".messagelist .success")).to_contain_text("Browser testers")
    expect(page.locator("#result_list")).to_contain_text("Browser testers")
    screenshot = save_artifact(page, tmp_path, "admin-group-added.png")
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    database = admin_site.config.parent / "demo" / "db.sqlite3"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT name FROM auth_group").fetchall() == [("Browser testers",)]
    # The form went through backtracweb: its access log has the POST and its redirect.
    wait_until(lambda: '"POST /admin/auth/group/add/ HTTP/1.1" 302' in admin_site.log(), 5,
               "the POST in the access log")
    assert "Traceback" not in admin_site.log()


# -- WebSockets: the demo's Channels consumer, through nginx ----------------------------

ASGI_INSTANCE = site_ini("port = {port}\ngraceful_timeout = 10", django="demosite.settings",
                         interface="asgi", extra="[proxy]\ntrusted = 127.0.0.1\n")

OPEN_AND_ECHO = """
async (url) => {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    window.websocketClosed = new Promise((resolve) => { ws.onclose = (e) => resolve(e.code); });
    const reply = new Promise((resolve) => { ws.onmessage = (e) => resolve(e.data); });
    ws.send("hello");
    return await reply;
}
"""


def test_a_websocket_through_nginx_goes_away_with_its_instance(page, make_daemon, site_dir,
                                                               tmp_path):
    """
    Chromium opens a WebSocket to the demo's Channels consumer through
    nginx (the sample site) in front of two ASGI instances, and exchanges a
    message; when the instance it reached drains, the browser sees the
    close code 1001 (going away).
    """
    from test_nginx import Instance, nginx_in_front

    shutil.copytree(DEMO, site_dir / "demo", ignore=_fresh_clone_files)
    instances = []
    for name in ("a", "b"):
        daemon = make_daemon(ASGI_INSTANCE, name=f"{name}.ini")
        own = daemon.workdir / name  # a pidfile of its own
        own.mkdir()
        daemon.workdir, daemon.pidfile, daemon.logfile = own, own / "twistd.pid", own / "twistd.log"
        daemon.start()
        instances.append(Instance(daemon, own / "access.log"))
    front = nginx_in_front(instances, tmp_path / "nginx")
    try:
        base = f"127.0.0.1:{front.http_port}"
        page.goto(f"http://{base}/hello-async")
        expect(page.locator("body")).to_contain_text("Hello from an async Django view")
        reply = page.evaluate(OPEN_AND_ECHO, f"ws://{base}/ws/echo")
        pid, _, text = reply.partition(": ")
        assert text == "hello"
        [reached] = [i.daemon for i in instances if i.daemon.pid == int(pid)]
        reached.signal(signal.SIGTERM)
        assert page.evaluate("window.websocketClosed") == 1001
        wait_until(lambda: not process_exists(reached.pid), 15, "the instance to exit")
        reached.pid = None
    finally:
        front.stop()
        for instance in instances:
            if instance.daemon.pid is not None:
                instance.daemon.stop()
