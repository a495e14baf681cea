"""
ASGI end to end (C{[app] interface = asgi}): a real daemonized twistd
serving Django's async views and server-sent events (the demo) and a
plain ASGI application (apps/asgiapp.py): the scope and bodies, lifespan
startup and shutdown, a disconnect cancelling the view, draining, worker
processes, and the errors an admin can meet.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import APPS, DEMO, Daemon, process_exists, site_ini, wait_until
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, TextMessage


@pytest.fixture
def asgi_daemon(make_daemon, site_dir: Path):
    """A daemon serving apps/asgiapp.py; C{server} lines go into [server], C{extra} at the end."""

    def make(server: str = "", extra: str = "") -> Daemon:
        shutil.copytree(APPS, site_dir / "apps", dirs_exist_ok=True)
        return make_daemon(site_ini("port = {port}\n" + server, application="asgiapp:application",
                                    interface="asgi", extra=extra))

    return make


@pytest.fixture
def django_asgi_daemon(make_daemon, site_dir: Path) -> Daemon:
    """The demo Django site served through ASGI."""
    shutil.copytree(DEMO, site_dir / "demo")
    return make_daemon(site_ini(django="demosite.settings", interface="asgi"))


def open_stream(daemon: Daemon, path: str) -> tuple[socket.socket, float, bytes]:
    """Ask for C{path} on a raw connection: the socket, seconds to the first byte, what came."""
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    began = time.monotonic()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    first = sock.recv(65536)
    return sock, time.monotonic() - began, first


def read_until(sock: socket.socket, data: bytes, marker: bytes) -> bytes:
    while marker not in data:
        block = sock.recv(65536)
        assert block, f"the connection closed before {marker!r}: {data!r}"
        data += block
    return data


def test_django_async_views_and_events_as_they_are_made(django_asgi_daemon):
    """
    Daemonized, the demo's async view answers, and server-sent events
    arrive one by one (the first within 1.5 s), not as a whole at the
    end; a client that goes away cancels the view, which logs it.
    """
    daemon = django_asgi_daemon
    daemon.start()
    response, body = daemon.get("/hello-async")
    assert (response.status, body) == (200, b"Hello from an async Django view under backtracweb.\n")
    assert "reactor class: twisted.internet.asyncioreactor.AsyncioSelectorReactor" in daemon.log()
    sock, first_byte, data = open_stream(daemon, "/ticks?every=0.3&count=100000")
    try:
        assert first_byte < 1.5
        data = read_until(sock, data, b"data: tick 2\n\n")
        assert b"content-type: text/event-stream" in data.lower()
    finally:
        sock.close()
    wait_until(lambda: "ticks: cancelled after" in daemon.log(), 10, "the view to be cancelled")
    response, body = daemon.get("/hello")  # a sync view, through Django's thread
    assert response.status == 200
    assert daemon.stop() < 5


def test_check_names_the_interface(django_asgi_daemon):
    result = subprocess.run(
        [str(Path(sys.executable).with_name("backtracweb")), "check", "-c",
         str(django_asgi_daemon.config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # The demo's settings.ASGI_APPLICATION: Django, and Channels for its WebSocket.
    assert "application: channels.routing.ProtocolTypeRouter imported (ASGI)" in result.stdout


def test_the_scope_the_body_and_the_lifespan_state(asgi_daemon):
    daemon = asgi_daemon()
    daemon.start()
    response, body = daemon.get("/scope?x=%20y")
    scope = json.loads(body)
    assert {key: scope[key] for key in ("type", "method", "scheme", "path", "query_string",
                                        "root_path", "http_version")} == {
        "type": "http", "method": "GET", "scheme": "http", "path": "/scope",
        "query_string": "x=%20y", "root_path": "", "http_version": "1.1"}
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", daemon.port]
    assert scope["state"] == {"started": daemon.pid}  # from lifespan startup, in the daemon
    body = bytes(range(256)) * 800  # 204,800 bytes: parts of at most 64 KiB, as they arrive
    response, answer = daemon.request("POST", "/echo", body=body)
    echoed = json.loads(answer)
    assert echoed["length"] == len(body) and echoed["messages"] >= 4
    assert echoed["body"].encode("latin-1") == body


def test_an_application_error_is_500_and_logged(asgi_daemon):
    daemon = asgi_daemon()
    daemon.start()
    response, body = daemon.get("/error")
    assert (response.status, body) == (500, b"Internal Server Error\n")
    wait_until(lambda: "ASGI application error in GET /error" in daemon.log(), 5, "the error")
    assert "RuntimeError: asgiapp: the /error path raises" in daemon.log()
    assert daemon.get("/after")[1] == b"asgiapp /after"


@pytest.mark.parametrize("how, why", [
    ("fail", "the ASGI application's lifespan startup failed: no database here"),
])
def test_a_failing_lifespan_startup_is_a_start_up_error(asgi_daemon, how, why):
    daemon = asgi_daemon(extra=f"[env]\nASGIAPP_STARTUP = {how}\n")
    result = daemon.start(check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"twistd backtracweb: cannot start: {why}"
    assert f"backtracweb cannot start: {why}" in daemon.log()


def test_draining_ends_streams_then_runs_lifespan_shutdown(asgi_daemon):
    """
    On SIGTERM a stream that never ends is cut at graceful_timeout; the
    application is told its client went away, then its lifespan shutdown
    runs, and the daemon exits.
    """
    daemon = asgi_daemon(server="graceful_timeout = 1")
    daemon.start()
    sock, _, data = open_stream(daemon, "/ticks?every=0.2")
    try:
        read_until(sock, data, b"tick 1")
        assert daemon.stop() < 6
    finally:
        sock.close()
    log = daemon.log()
    assert "asgiapp: ticks: the client went away after" in log
    assert log.index("asgiapp: ticks: the client went away") < log.index(
        "asgiapp: lifespan shutdown")


def test_workers_each_run_the_application_and_its_lifespan(asgi_daemon):
    daemon = asgi_daemon(server="workers = 2\ncpu_affinity = off")
    daemon.start()
    seen = set()
    for _ in range(20):
        scope = json.loads(daemon.get("/scope")[1])
        seen.add(scope["state"]["started"])  # the worker's own startup, in the worker
        if len(seen) == 2:
            break
    assert daemon.pid not in seen and 1 <= len(seen) <= 2
    assert daemon.log().count("worker 1 ready") + daemon.log().count("worker 2 ready") == 2
    assert daemon.stop() < 10
    assert daemon.log().count("asgiapp: lifespan shutdown") == 2


def test_another_reactor_is_refused_before_twistd_forks(asgi_daemon):
    daemon = asgi_daemon()
    result = daemon.start("-r", "epoll", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"twistd backtracweb: {daemon.config}: [app] interface = asgi needs Twisted's asyncio "
        "reactor, but twistd runs its epoll reactor (twistd -r epoll): leave -r out, or give "
        "-r asyncio\n")
    assert not daemon.pidfile.exists()


def test_an_application_of_the_other_interface_is_named(asgi_daemon):
    daemon = asgi_daemon()
    daemon.config.write_text(daemon.config.read_text().replace("asgiapp:application",
                                                               "testapp:application"))
    result = daemon.start(check=False)
    assert result.returncode == 1
    assert "is not an ASGI 3 application" in result.stderr


class WebSocketClient:
    """A WebSocket client on a raw socket to the daemon, its frames by wsproto."""

    def __init__(self, daemon: Daemon, path: str = "/ws") -> None:
        self.sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        data = read_until(self.sock, b"", b"\r\n\r\n")
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.ws = Connection(ConnectionType.CLIENT)
        self.ws.receive_data(rest)

    def send(self, event) -> None:
        self.sock.sendall(self.ws.send(event))

    def next_event(self):
        while True:
            for event in self.ws.events():
                return event
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)


def test_a_websocket_session_through_the_daemon(asgi_daemon):
    """
    Echoes both ways, closes with the application's code, shows on the
    status page while open, and logs one access line with 101 when it ends.
    """
    daemon = asgi_daemon(extra="[status]\npath = /-/status\n")
    daemon.start()
    client = WebSocketClient(daemon, "/ws?room=1")
    try:
        client.send(TextMessage(data="héllo"))
        assert client.next_event().data == "héllo"
        assert json.loads(daemon.get("/-/status")[1])["websockets"] == 1
        client.send(TextMessage(data="close"))
        close = client.next_event()
        assert isinstance(close, CloseConnection) and close.code == 4000
        client.send(close.response())
    finally:
        client.sock.close()
    wait_until(lambda: '"GET /ws?room=1 HTTP/1.1" 101' in daemon.log(), 5, "the access line")
    assert json.loads(daemon.get("/-/status")[1])["websockets"] == 0


def test_draining_closes_websockets_with_1001(asgi_daemon):
    daemon = asgi_daemon(server="graceful_timeout = 10")
    daemon.start()
    client = WebSocketClient(daemon)
    try:
        client.send(TextMessage(data="hi"))
        assert client.next_event().data == "hi"
        daemon.signal(signal.SIGTERM)
        close = client.next_event()
        assert isinstance(close, CloseConnection) and close.code == 1001
        client.send(close.response())
        wait_until(lambda: not process_exists(daemon.pid), 10, "the daemon to exit")
    finally:
        client.sock.close()
    assert "asgiapp: websocket disconnect 1001" in daemon.log()
