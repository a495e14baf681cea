"""
[limits]: oversized bodies and heads, idle and slow clients, and overload of
the thread pool, against a daemonized twistd, with raw sockets where the
client must misbehave.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Daemon, wait_until

LIMITS = """
[limits]
max_body = 1K
max_header_bytes = 2K
max_headers = 10
idle_timeout = 2
[log]
access_log = access.log
"""
IDLE = 2.0


@pytest.fixture
def limited(wsgi_daemon) -> Daemon:
    """
    A daemon with small limits and a 2 s idle timeout, one worker thread,
    logging access to access.log beside its configuration.
    """
    daemon = wsgi_daemon(LIMITS, min_threads=1, max_threads=1)
    daemon.start()
    return daemon


def connect(daemon: Daemon, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", daemon.port), timeout=timeout)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything received until the server closes (a reset counts as closed)."""
    received = []
    try:
        while block := sock.recv(65536):
            received.append(block)
    except ConnectionResetError:
        pass
    return b"".join(received)


def status_of(data: bytes) -> int:
    assert data.startswith(b"HTTP/1."), data[:200]
    return int(data.split(b" ", 2)[1])


def assert_still_serving(daemon: Daemon) -> None:
    response, body = daemon.get("/still-serving", timeout=5)
    assert (response.status, body) == (200, b"testapp /still-serving")


# -- max_body --------------------------------------------------------------------------


def test_announced_body_over_max_body_gets_413_before_it_is_sent(limited):
    """
    Content-Length: 2000 over max_body = 1K: the server answers 413 and
    closes as soon as it has the headers, without waiting for any of the body.
    """
    with connect(limited) as s:
        began = time.monotonic()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        data = read_until_closed(s)
        elapsed = time.monotonic() - began
    assert status_of(data) == 413
    assert b"\r\nConnection: close\r\n" in data
    assert elapsed < 1.5  # long before the 2 s idle timeout could have closed it
    assert_still_serving(limited)


def test_expect_100_continue_over_max_body_gets_413_and_no_100(limited):
    """
    With Expect: 100-continue and a body over max_body, the answer is 413
    alone: no "100 Continue" invites the client to send the body.
    """
    with connect(limited) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        data = read_until_closed(s)
    assert status_of(data) == 413
    assert b"100 Continue" not in data


def test_expect_100_continue_within_max_body_continues_and_echoes(limited):
    """
    With Expect: 100-continue and a body of exactly max_body (1024 bytes),
    the server says 100 Continue, then the application reads the whole body.
    """
    body = bytes(range(256)) * 4
    with connect(limited) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        interim = s.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        data = read_until_closed(s)
    assert status_of(data) == 200
    assert json.loads(data.partition(b"\r\n\r\n")[2]) == {
        "length": 1024, "sha256": hashlib.sha256(body).hexdigest()}


def test_chunked_body_over_max_body_gets_413(limited):
    """
    A chunked body has no announced length: once the chunks received pass
    max_body (three of 512 bytes), the server answers 413 and closes,
    without waiting for the last chunk.
    """
    with connect(limited) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + (b"200\r\n" + b"c" * 512 + b"\r\n") * 3)
        data = read_until_closed(s)
    assert status_of(data) == 413
    assert_still_serving(limited)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_within_max_body_is_echoed(limited, chunked: bool):
    """A body of 1000 bytes (under max_body = 1K) reaches the application whole."""
    body = b"0123456789" * 100
    # http.client sends an iterable body chunked, a bytes body with Content-Length.
    data = iter([body[:500], body[500:]]) if chunked else body
    response, answer = limited.request("POST", "/echo", body=data)
    assert response.status == 200
    assert json.loads(answer) == {"length": 1000, "sha256": hashlib.sha256(body).hexdigest()}


# -- the request head --------------------------------------------------------------------


HEADS = {
    # Eight lines of 300 bytes: each line is short, all together over 2K.
    "over-max-header-bytes": b"GET / HTTP/1.1\r\nHost: x\r\n"
                             + b"".join(b"X-Header-%d: %s\r\n" % (i, b"b" * 300)
                                        for i in range(8)) + b"\r\n",
    "over-max-headers": b"GET / HTTP/1.1\r\nHost: x\r\n"
                        + b"".join(b"X-Header-%d: v\r\n" % i for i in range(20)) + b"\r\n",
}


@pytest.mark.parametrize("head", HEADS.values(), ids=list(HEADS))
def test_head_over_limits_gets_400_and_server_keeps_serving(limited, head: bytes):
    """
    A request head over max_header_bytes = 2K in total, or with more than
    max_headers = 10 header lines, is answered 400 (or 431) and closed;
    the next client is served.
    """
    with connect(limited) as s:
        s.sendall(head)
        data = read_until_closed(s)
    assert status_of(data) in (400, 431)
    assert_still_serving(limited)


def test_single_header_line_over_max_header_bytes_gets_400(limited):
    """
    One header line longer than max_header_bytes = 2K (a 3 KB cookie) is
    answered 400 (or 431), as a head over the limit in total is: the
    client learns why, rather than seeing the connection drop.
    """
    with connect(limited) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=" + b"b" * 3000 + b"\r\n\r\n")
        data = read_until_closed(s)
    assert status_of(data) in (400, 431)
    assert_still_serving(limited)


def test_head_within_limits_is_served(limited):
    """Nine headers and about 1.5 KB of head, within both limits, are served."""
    headers = {f"X-Header-{i}": "v" * 150 for i in range(8)}
    response, body = limited.get("/within", headers=headers)
    assert (response.status, body) == (200, b"testapp /within")


def test_long_header_field_within_max_header_field_is_served(wsgi_daemon):
    """
    A 20 KB Cookie header is refused with 431 under the default
    max_header_field (8K), and served once the file raises it: the
    documented limit is the one in force.
    """
    cookie = b"GET /cookie HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: a=" + b"c" * 20000
    daemon = wsgi_daemon("[limits]\nmax_header_bytes = 64K\n")
    daemon.start()
    with connect(daemon) as s:
        s.sendall(cookie + b"\r\n\r\n")
        data = read_until_closed(s)
    assert status_of(data) == 431
    assert b"max_header_field" in data
    daemon.stop()
    daemon = wsgi_daemon("[limits]\nmax_header_bytes = 64K\nmax_header_field = 32K\n")
    daemon.start()
    with connect(daemon) as s:
        s.sendall(cookie + b"\r\n\r\n")
        data = read_until_closed(s)
    assert status_of(data) == 200
    assert data.endswith(b"\r\n\r\ntestapp /cookie")


# -- idle and slow clients ------------------------------------------------------------------


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(limited):
    """
    After a response on a keep-alive connection, a client that sends
    nothing more is disconnected by the server after idle_timeout (2 s).
    """
    with connect(limited) as s:
        s.sendall(b"GET /keep HTTP/1.1\r\nHost: x\r\n\r\n")
        response = http.client.HTTPResponse(s)
        response.begin()
        assert (response.status, response.read()) == (200, b"testapp /keep")
        assert not response.will_close
        idle_since = time.monotonic()
        rest = read_until_closed(s)  # blocks until the server closes
        idle = time.monotonic() - idle_since
    assert rest == b""
    assert IDLE - 0.3 <= idle <= IDLE + 1.5


class Slowloris(threading.Thread):
    """
    A client that sends C{prefix} and then one more header byte every 0.5 s
    (C{trickle} first), never finishing its request head, until the server
    closes on it; with no C{prefix} and no C{trickle}, one that connects
    and sends nothing.
    """

    def __init__(self, daemon: Daemon, prefix: bytes, trickle: bytes = b"X-Slow: ") -> None:
        super().__init__(daemon=True)
        self.sock = connect(daemon)
        self.connected = time.monotonic()
        self.prefix = prefix
        self.trickle = trickle
        self.received = b""
        self.closed_after: float | None = None
        self.trickling = threading.Event()

    def run(self) -> None:
        sock, data = self.sock, self.prefix
        try:
            for byte in [self.trickle] + [b"a" if self.prefix else b""] * 20:
                sock.sendall(data + byte)
                data = b""
                self.trickling.set()
                readable, _, _ = select.select([sock], [], [], 0.5)
                if readable:
                    self.received = read_until_closed(sock)
                    break
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            self.closed_after = time.monotonic() - self.connected
            sock.close()


def test_slowloris_is_cut_off_while_other_clients_are_served(limited):
    """
    Clients trickling one byte of their request head every 0.5 s, each
    keeping its connection busy, are cut off idle_timeout (2 s) after
    connecting: 408 once a request had begun (in its headers or still in
    its request line), a plain close for one that sent nothing.  Meanwhile
    a normal request is answered at once by the single worker thread,
    which the slow clients never held.
    """
    slow = [Slowloris(limited, b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Slowloris(limited, b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Slowloris(limited, b"GET /", trickle=b"a"),
            Slowloris(limited, b"", trickle=b"")]
    for client in slow:
        client.start()
    for client in slow:
        assert client.trickling.wait(5)

    began = time.monotonic()
    response, body = limited.get("/thread", timeout=5)
    served_in = time.monotonic() - began
    assert response.status == 200 and body.startswith(b"backtracweb-")
    assert served_in < 1.0
    assert all(client.closed_after is None for client in slow), "cut off too early"

    for client in slow:
        client.join(10)
        assert not client.is_alive(), "a slow client was never cut off"
        assert IDLE - 0.3 <= client.closed_after <= IDLE + 1.5
    for client in slow[:3]:
        assert status_of(client.received) == 408
    assert slow[3].received == b""
    assert_still_serving(limited)


# -- the access log of refused requests -----------------------------------------------------


def test_refused_requests_are_not_logged_as_abandoned(limited, site_dir: Path):
    """
    A body refused with 413 and a head refused with 408 are not logged as
    "499 client went away" with Twisted's placeholders for the method and
    path: the access log holds only real requests with the status sent.
    """
    for data in (b"POST /too-big HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n",
                 b"GET /too-slow HTTP/1.1\r\nHost: x\r\n"):
        with connect(limited) as s:
            s.sendall(data)
            assert status_of(read_until_closed(s)) in (408, 413)
    assert_still_serving(limited)
    access_log = site_dir / "access.log"
    wait_until(lambda: access_log.exists() and "/still-serving" in access_log.read_text(), 5,
               "the access-log line of /still-serving")
    lines = access_log.read_text().splitlines()
    assert [line for line in lines if "(no method yet)" in line or '" 499 ' in line] == []
    assert "refused a request from 127.0.0.1: its body of 2000 bytes" in limited.log()


# -- max_queue --------------------------------------------------------------------------------


def test_requests_beyond_threads_and_queue_get_503_at_once(wsgi_daemon):
    """
    With max = 2 threads and max_queue = 2, six simultaneous 2 s requests:
    four are served (two at once, two after waiting), two get 503 with
    Retry-After at once; the log holds one warning naming [threadpool] max
    and [limits] max_queue; afterwards requests are served normally.
    """
    daemon = wsgi_daemon("[limits]\nmax_queue = 2\n", min_threads=1, max_threads=2)
    daemon.start()
    began = time.monotonic()

    def one(_):
        response, body = daemon.get("/sleep?seconds=2", timeout=15)
        return response.status, response.getheader("Retry-After"), time.monotonic() - began

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))

    refused = [r for r in results if r[0] == 503]
    served = sorted(r[2] for r in results if r[0] == 200)
    assert len(refused) == 2 and len(served) == 4, results
    for _, retry_after, elapsed in refused:
        assert retry_after is not None and int(retry_after) > 0
        assert elapsed < 1.0
    assert served[1] < 3.5 and served[2] >= 3.5  # two ran at once, two waited for them

    warnings = [line for line in daemon.log().splitlines() if "overloaded:" in line]
    assert len(warnings) == 1, warnings
    assert "[threadpool] max (now 2)" in warnings[0]
    assert "[limits] max_queue (now 2)" in warnings[0]

    with ThreadPoolExecutor(4) as pool:
        after = list(pool.map(lambda _: daemon.get("/sleep?seconds=0.2")[0].status, range(4)))
    assert after == [200] * 4
