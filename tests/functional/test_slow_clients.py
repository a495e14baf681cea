"""
Clients that cost other clients nothing, against a daemonized twistd with
one application thread: a large form POST (no body is decoded on the
reactor thread), a client that stops reading a streamed response (cut off
after [limits] send_timeout, its thread freed), and a client that gives up
while its request waits for the thread (the application never runs it).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import Daemon, wait_until

SEND_TIMEOUT = 2.0
SETTINGS = f"""
[limits]
max_body = 64M
send_timeout = {SEND_TIMEOUT:g}
[log]
access_log = access.log
"""


@pytest.fixture
def one_thread(wsgi_daemon) -> Daemon:
    """A daemon with one application thread, a 2 s send_timeout and an access log file."""
    daemon = wsgi_daemon(SETTINGS, min_threads=1, max_threads=1)
    daemon.start()
    return daemon


def access_lines(site_dir: Path, until: str) -> list[str]:
    """The access log's lines, once one of them holds C{until}."""
    log = site_dir / "access.log"
    wait_until(lambda: log.exists() and until in log.read_text(), 10, f"a line with {until}")
    return log.read_text().splitlines()


def test_a_large_form_post_does_not_stall_other_clients(one_thread):
    """
    While a 20 MB urlencoded form is uploaded and then read by the
    application, requests the reactor answers by itself (a refused
    Expect, 417: no application thread involved) on other connections are
    answered at once: the reactor frames the body and never decodes it.
    (Twisted's own request decoded such a form on the reactor thread,
    and every other client waited 5.6 s.)
    """
    body = b"field=" + b"v" * (20 * 1024 * 1024) + b"&other=1"
    head = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    result: list = []

    def post() -> None:
        with socket.create_connection(("127.0.0.1", one_thread.port), timeout=30) as s:
            s.sendall(head + body)
            result.append(s.recv(65536))

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    slowest = 0.0
    while poster.is_alive():
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", one_thread.port), timeout=10) as s:
            s.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\n\r\n")
            answer = s.recv(65536)
        slowest = max(slowest, time.monotonic() - began)
        assert answer.startswith(b"HTTP/1.1 417 ")  # answered by the server, not the app
    poster.join()
    assert result and result[0].startswith(b"HTTP/1.1 200 ")
    assert b'"length": %d' % len(body) in result[0]
    assert slowest < 1.0, f"a request waited {slowest:.2f} s while the form was posted"


def test_a_client_that_stops_reading_is_cut_off(one_thread, site_dir: Path):
    """
    A client that asks for a 64 MB streamed response and reads none of it
    is disconnected after send_timeout; the one application thread it
    held is freed (another request is served), and the access log says
    499 with the bytes the client took, not what the application made.
    """
    size, chunks = 65536, 1024
    with socket.create_connection(("127.0.0.1", one_thread.port), timeout=30) as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stalled.sendall(b"GET /stream?chunks=%d&size=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                        % (chunks, size))
        began = time.monotonic()
        response, body = one_thread.get("/thread", timeout=30)
        waited = time.monotonic() - began
        assert (response.status, body.startswith(b"backtracweb-")) == (200, True)
        assert SEND_TIMEOUT - 0.5 <= waited <= SEND_TIMEOUT + 5
        assert "took nothing of the response to GET /stream" in one_thread.log()
    [line] = [line for line in access_lines(site_dir, "/stream") if "/stream" in line]
    status, sent = line.split('" ')[1].split()[:2]
    assert status == "499"
    assert 0 < int(sent) < size * chunks


def test_a_request_whose_client_left_while_queued_is_not_run(one_thread, site_dir: Path):
    """
    With the one thread busy, a request whose client disconnects while it
    waits is dropped: once the thread is free the application never runs
    it (its marker file is never made), and the next request is served.
    """
    marker = site_dir / "ran"
    with socket.create_connection(("127.0.0.1", one_thread.port), timeout=10) as busy:
        busy.sendall(b"GET /sleep?seconds=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        with socket.create_connection(("127.0.0.1", one_thread.port), timeout=10) as gone:
            gone.sendall(b"GET /sleep?seconds=0&marker=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                         % str(marker).encode())
        assert busy.recv(65536).startswith(b"HTTP/1.1 200 ")
    response, _ = one_thread.get("/after")  # queued behind the dropped one, if it ran
    assert response.status == 200
    assert not marker.exists()
    lines = access_lines(site_dir, "/after")
    assert any("/sleep?seconds=0" in line and '" 499 ' in line for line in lines)
