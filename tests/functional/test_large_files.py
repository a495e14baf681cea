"""
Large files through a daemonized twistd backtracweb, where they go out with
sendfile (plain TCP and unix sockets) or through Twisted's producer (TLS):
whole and byte-exact, in ranges, as HEAD, on reused and pipelined
connections, to slow readers while other clients are served, to clients
that leave mid-file (without leaking a descriptor), and while draining.

Most tests read from one module-scoped daemon listening on TCP, a unix
socket and TLS at once.  Files come from a [static] mapping (/static/) and
from a WSGI application returning C{wsgi.file_wrapper} (/files/), as Django's
FileResponse and WhiteNoise do.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import shutil
import signal
import socket
import struct
import tempfile
import time
from pathlib import Path

import pytest
from conftest import Daemon, free_port, process_exists, site_ini, split_head, wait_until
from test_listen import UnixHTTPConnection, self_signed_certificate, tls_context, unix_exchange

BIG = random.Random("backtracweb sendfile").randbytes(16 * 1024 * 1024)
SMALL = b"a small file\n"

FILES_APP = '''
"""/files/NAME: the file public/NAME through wsgi.file_wrapper; anything else: a line of text."""
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "public")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/files/"):
        f = open(os.path.join(ROOT, path[len("/files/"):]), "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(os.fstat(f.fileno()).st_size))])
        return environ["wsgi.file_wrapper"](f)
    body = ("app " + path).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_site(etc: Path) -> None:
    """The files, and the application that sends them, under C{etc}."""
    (etc / "public").mkdir(parents=True)
    (etc / "public" / "big.bin").write_bytes(BIG)
    (etc / "public" / "small.txt").write_bytes(SMALL)
    (etc / "apps").mkdir()
    (etc / "apps" / "filesapp.py").write_text(FILES_APP)


def files_ini(server: str) -> str:
    """The configuration of the files site, with these C{[server]} lines."""
    return site_ini(server, application="filesapp:application", static={"/static": "public"})


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One daemon for the module, on TCP, a unix socket and TLS: (daemon, socket path, TLS port, cert)."""
    root = tmp_path_factory.mktemp("sendfile")
    etc, run = root / "etc", root / "run"
    run.mkdir()
    write_site(etc)
    key, cert = self_signed_certificate(etc)
    short = Path(tempfile.mkdtemp(prefix="btw-", dir="/tmp"))  # a unix socket path is short
    sock = short / "web.sock"
    port, tls_port = free_port(), free_port()
    config = etc / "backtrac.ini"
    config.write_text(files_ini(
        f"listen = tcp:{port}:interface=127.0.0.1, unix:{sock}, "
        f"ssl:{tls_port}:privateKey={key}:certKey={cert}"))
    daemon = Daemon(config, run, port)
    try:
        daemon.start()
        yield daemon, sock, tls_port, cert
    finally:
        daemon.kill()
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def daemon(site) -> Daemon:
    return site[0]


def daemon_fds(daemon: Daemon) -> int:
    return len(os.listdir(f"/proc/{daemon.pid}/fd"))


def raw_connection(daemon: Daemon, rcvbuf: int | None = None, timeout: float = 10) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", daemon.port))
    return s


def read_response(s: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One response with a Content-Length from C{s}: (head, body, bytes read past it)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        block = s.recv(1 << 20)
        assert block, f"connection closed before the end of the head: {data[:200]!r}"
        data += block
    head, rest = split_head(data)
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    chunks, have = [rest], len(rest)
    while have < length:
        block = s.recv(1 << 20)
        assert block, f"connection closed after {have} of {length} body bytes"
        chunks.append(block)
        have += len(block)
    body = b"".join(chunks)
    return head, body[:length], body[length:]


# -- whole files, ranges, HEAD --------------------------------------------------------


@pytest.mark.parametrize("path", ["/static/big.bin", "/files/big.bin"])
def test_large_file_arrives_byte_exact(daemon, path):
    """A 16 MiB file, from a static mapping or from the application, arrives whole and exact."""
    response, body = daemon.get(path, timeout=30)
    assert response.status == 200
    assert response.getheader("Content-Length") == str(len(BIG))
    assert response.getheader("Transfer-Encoding") is None
    assert (len(body), sha(body)) == (len(BIG), sha(BIG))


@pytest.mark.parametrize("ranges, start, end", [
    ("bytes=1000000-9999999", 1000000, 10000000),
    ("bytes=15000000-", 15000000, len(BIG)),
    ("bytes=-3000000", len(BIG) - 3000000, len(BIG)),
])
def test_range_of_a_large_file(daemon, ranges, start, end):
    """A large single range is a 206 of exactly those bytes."""
    response, body = daemon.get("/static/big.bin", headers={"Range": ranges}, timeout=30)
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes {start}-{end - 1}/{len(BIG)}"
    assert sha(body) == sha(BIG[start:end])


def test_several_ranges_of_a_large_file(daemon):
    """Several ranges: a multipart 206 holding each part (sent by Twisted's producer)."""
    response, body = daemon.get("/static/big.bin", headers={"Range": "bytes=0-99999,8000000-8099999"},
                                timeout=30)
    assert response.status == 206
    assert response.getheader("Content-Type").startswith("multipart/byteranges")
    assert BIG[:100000] in body and BIG[8000000:8100000] in body


@pytest.mark.parametrize("path", ["/static/big.bin", "/files/big.bin"])
def test_head_of_a_large_file(daemon, path):
    """HEAD: the length of the file and no body; the connection stays in step."""
    with raw_connection(daemon) as s:
        s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                  + b"GET /static/small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"\r\n\r\n") < 2 or not data.endswith(SMALL):
            block = s.recv(65536)
            assert block, data
            data += block
    head, rest = split_head(data)
    assert b"\r\nContent-Length: %d" % len(BIG) in head
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"\r\n\r\n" + SMALL)


def test_not_modified(daemon):
    """A conditional GET of a large file that has not changed is a 304 without a body."""
    response, _ = daemon.get("/static/big.bin", timeout=30)
    last_modified = response.getheader("Last-Modified")
    response, body = daemon.get("/static/big.bin", headers={"If-Modified-Since": last_modified})
    assert (response.status, body) == (304, b"")


# -- connections -----------------------------------------------------------------------


def test_keep_alive_after_large_files(daemon):
    """One connection serves large files and small responses in turn, every one exact."""
    conn = daemon.connection(timeout=30)
    try:
        for path, expected in [("/static/big.bin", BIG), ("/static/small.txt", SMALL),
                               ("/files/big.bin", BIG), ("/page", b"app /page"),
                               ("/static/big.bin", BIG), ("/files/small.txt", SMALL)]:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            assert (response.status, sha(body)) == (200, sha(expected)), path
            assert not response.will_close
    finally:
        conn.close()


def test_pipelined_requests(daemon):
    """Requests sent at once behind a large file are answered in order, each exact."""
    with raw_connection(daemon, timeout=30) as s:
        s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\n\r\n")
        rest = b""
        answers = []
        for _ in range(4):
            head, body, rest = read_response(s, rest)
            answers.append((head.split(b"\r\n")[0], sha(body)))
    assert answers == [(b"HTTP/1.1 200 OK", sha(BIG)), (b"HTTP/1.1 200 OK", sha(b"app /page")),
                       (b"HTTP/1.1 200 OK", sha(BIG)),
                       (b"HTTP/1.1 206 Partial Content", sha(BIG[10:]))]


@pytest.mark.parametrize("path", ["/static/big.bin", "/files/big.bin"])
def test_clients_leaving_mid_file_leak_no_descriptor(daemon, path):
    """
    Clients that close after part of a large file (with a FIN, or a reset)
    leave the daemon with as many open descriptors as before, and it goes
    on serving.
    """
    daemon.get("/static/small.txt")
    baseline = daemon_fds(daemon)
    for i in range(8):
        s = raw_connection(daemon, rcvbuf=64 * 1024)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = 0
        while received < 200000:
            received += len(s.recv(65536))
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    wait_until(lambda: daemon_fds(daemon) <= baseline, 10,
               f"the daemon's descriptors to return to {baseline}")
    response, body = daemon.get(path, timeout=30)
    assert sha(body) == sha(BIG)
    assert "Traceback" not in daemon.log()


def cpu_seconds(daemon: Daemon) -> float:
    """The daemon's CPU time so far (user + system)."""
    fields = Path(f"/proc/{daemon.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_slow_reader_does_not_hold_up_others(daemon):
    """
    A client that stops reading mid-file holds only its own connection:
    the daemon waits for it without spinning, other clients are answered
    at once meanwhile, and when it reads again its file arrives exact.
    """
    with raw_connection(daemon, rcvbuf=32 * 1024, timeout=30) as slow:
        slow.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        first = slow.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        time.sleep(0.3)  # the daemon fills the socket, then waits for it
        cpu = cpu_seconds(daemon)
        time.sleep(1)
        assert cpu_seconds(daemon) - cpu < 0.2, "the daemon is busy while the client does not read"
        began = time.monotonic()
        for path, expected in [("/static/small.txt", SMALL), ("/page", b"app /page"),
                               ("/files/small.txt", SMALL)] * 5:
            response, body = daemon.get(path, timeout=5)
            assert body == expected
        assert time.monotonic() - began < 5
        head, body, _ = read_response(slow, first)
    assert sha(body) == sha(BIG)


# -- other transports ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/static/big.bin", "/files/big.bin"])
def test_unix_socket(site, path):
    """Over the unix socket, the large file arrives exact, and the connection is reused."""
    _, sock, _, _ = site
    conn = UnixHTTPConnection(sock, timeout=30)
    try:
        for _ in range(2):
            conn.request("GET", path)
            response = conn.getresponse()
            assert sha(response.read()) == sha(BIG)
    finally:
        conn.close()
    data = unix_exchange(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=5-\r\n"
                               "Connection: close\r\n\r\n".encode())
    expected = BIG[5:] if path.startswith("/static/") else BIG  # the application ignores ranges
    assert sha(split_head(data)[1]) == sha(expected)


@pytest.mark.parametrize("path", ["/static/big.bin", "/files/big.bin"])
def test_tls_served_through_twisted(site, path):
    """Over TLS, where sendfile cannot be used, the large file arrives exact, twice on one connection."""
    _, _, tls_port, cert = site
    conn = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=30, context=tls_context(cert))
    try:
        for headers, expected in [({}, BIG), ({"Range": "bytes=100-"}, BIG[100:])]:
            if path.startswith("/files/"):
                expected = BIG  # the application ignores ranges
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            assert sha(response.read()) == sha(expected)
    finally:
        conn.close()


# -- draining -----------------------------------------------------------------------------


@pytest.fixture
def drain_daemon(make_daemon, site_dir: Path):
    """A daemon of its own (it is stopped by the test), with a given graceful_timeout."""

    def make(graceful_timeout: int) -> Daemon:
        write_site(site_dir)
        daemon = make_daemon(files_ini(f"""
            port = {{port}}
            interface = 127.0.0.1
            graceful_timeout = {graceful_timeout}
            """))
        daemon.start()
        return daemon

    return make


@pytest.mark.parametrize("path", ["/static/big.bin", "/files/big.bin"])
def test_sigterm_lets_a_transfer_finish(drain_daemon, path):
    """
    SIGTERM while a large file is half sent: the daemon waits for it, the
    client gets the whole file and then the end of the connection, and only
    then does the daemon exit.
    """
    daemon = drain_daemon(30)
    with raw_connection(daemon, rcvbuf=32 * 1024, timeout=30) as slow:
        slow.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        first = slow.recv(65536)
        time.sleep(0.3)
        daemon.signal(signal.SIGTERM)
        time.sleep(1)
        assert process_exists(daemon.pid), "the daemon did not wait for the transfer"
        head, body, rest = read_response(slow, first)
        assert sha(body) == sha(BIG)
        assert rest == b"" and slow.recv(1) == b""  # closed after the response
    wait_until(lambda: not process_exists(daemon.pid), 15, "the daemon to exit")
    daemon.pid = None
    assert "cut short" not in daemon.log() and "Traceback" not in daemon.log()


def test_sigterm_cuts_a_stalled_transfer_short(drain_daemon):
    """
    A client that stops reading mid-file does not keep a draining daemon:
    at graceful_timeout the transfer is cut short, logged, and the daemon
    exits.
    """
    daemon = drain_daemon(2)
    with raw_connection(daemon, rcvbuf=32 * 1024, timeout=30) as slow:
        slow.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        slow.recv(65536)
        time.sleep(0.3)
        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        wait_until(lambda: not process_exists(daemon.pid), 15, "the daemon to exit")
        elapsed = time.monotonic() - began
        daemon.pid = None
    assert 1.5 < elapsed < 10
    log = daemon.log()
    assert "stopping: cut short GET /static/big.bin from 127.0.0.1 after 2 s" in log
    assert "Traceback" not in log
