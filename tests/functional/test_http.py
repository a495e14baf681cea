"""
What HTTP clients see of a WSGI application served by a daemonized twistd
backtracweb: the WSGI environ, request bodies, streaming, errors, malformed
requests, keep-alive, the worker pool's parallelism and the Django demo.

Tests that only read share one daemon per module (module-scoped fixtures);
the clients are http.client and raw sockets.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import socket
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import (
    APPS, DEMO, DEMO_INI, Daemon, exchange, free_port, parse, site_ini, split_head, wait_until,
)

# Delegates to testapp, except that a request carrying X-Dump-Environ gets its
# environ back as JSON whatever its path: testapp's own /environ only shows
# the environ of the path /environ.
ENVDUMP = '''
import json

from testapp import application as testapp


def application(environ, start_response):
    if "HTTP_X_DUMP_ENVIRON" not in environ:
        return testapp(environ, start_response)
    values = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool))}
    body = json.dumps(values).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def start_daemon(root: Path, ini: str) -> Daemon:
    """Write C{ini} (C{{port}} filled in) under C{root}/etc and start twistd."""
    etc, run = root / "etc", root / "run"
    etc.mkdir(exist_ok=True)
    run.mkdir(exist_ok=True)
    port = free_port()
    config = etc / "backtrac.ini"
    config.write_text(textwrap.dedent(ini).replace("{port}", str(port)))
    daemon = Daemon(config, run, port)
    try:
        daemon.start()
    except BaseException:
        daemon.kill()
        raise
    return daemon


def envdump_daemon(root: Path, max_threads: int) -> Daemon:
    """testapp through envdump, with a pool of at most C{max_threads}, under C{root}."""
    (root / "etc").mkdir()
    shutil.copytree(APPS, root / "etc" / "apps")
    (root / "etc" / "apps" / "envdump.py").write_text(ENVDUMP)
    (root / "etc" / "public").mkdir()
    return start_daemon(root, site_ini(application="envdump:application",
                                       threads=(1, max_threads), static={"/static": "public"}))


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Daemon:
    """One daemon serving testapp (through envdump) for the read-only tests."""
    daemon = envdump_daemon(tmp_path_factory.mktemp("http"), max_threads=4)
    yield daemon
    daemon.kill()


@pytest.fixture(scope="module")
def pool_app(tmp_path_factory) -> Daemon:
    """A daemon of its own for the timing tests: max = POOL threads, none busy."""
    daemon = envdump_daemon(tmp_path_factory.mktemp("pool"), max_threads=POOL)
    yield daemon
    daemon.kill()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Daemon:
    """The demo Django site, copied next to its configuration file."""
    root = tmp_path_factory.mktemp("demo")
    (root / "etc").mkdir()
    shutil.copytree(DEMO, root / "etc" / "demo")
    daemon = start_daemon(root, DEMO_INI)
    yield daemon
    daemon.kill()


# -- raw HTTP helpers ---------------------------------------------------------




def dump_environ(daemon: Daemon, path: str, method: str = "GET", body=None, headers=None) -> dict:
    response, data = daemon.request(
        method, path, body=body, headers={"X-Dump-Environ": "1", **(headers or {})}
    )
    assert response.status == 200, data
    return json.loads(data)


def assert_still_serving(daemon: Daemon) -> None:
    response, body = daemon.get("/still-serving")
    assert (response.status, body) == (200, b"testapp /still-serving")


def logged_errors(daemon: Daemon, message: str) -> int:
    """How many "WSGI application error" entries in the log end with C{message}."""
    entry = re.compile(r"WSGI application error\n(?:\t.*\n)*?\t" + re.escape(message) + r"\n")
    return len(entry.findall(daemon.log()))


# -- the environ ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/environ", "/x/y/z", "/staticfoo/bar", "/static.css"])
def test_script_name_is_empty_and_path_info_is_the_whole_path(app, path):
    """
    Every application path, including ones that look like the /static
    mapping but are not under it, reaches the app with SCRIPT_NAME empty
    and the whole path in PATH_INFO.
    """
    environ = dump_environ(app, path)
    assert environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == path


def test_path_info_is_percent_decoded_as_a_wsgi_latin1_string(app):
    """
    PATH_INFO is percent-decoded and, as PEP 3333 requires, holds the raw
    bytes as a latin-1 string: %C3%A9 (UTF-8 for e-acute) is two characters.
    """
    environ = dump_environ(app, "/a%20b/c%C3%A9")
    assert environ["PATH_INFO"] == "/a b/c\u00c3\u00a9"
    assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/a b/c\u00e9"


def test_encoded_slash_is_decoded_into_path_info(app):
    """
    Twisted decodes %2F inside a segment, so the app sees a plain slash:
    /a%2Fb and /a/b are indistinguishable in PATH_INFO.
    """
    assert dump_environ(app, "/a%2Fb")["PATH_INFO"] == "/a/b"
    assert dump_environ(app, "/x%2fy/z")["PATH_INFO"] == "/x/y/z"


def test_query_string_is_raw_and_undecoded(app):
    """QUERY_STRING is passed exactly as sent, percent-escapes and all."""
    environ = dump_environ(app, "/q?a=1&b=%20x&c=%2F+")
    assert environ["QUERY_STRING"] == "a=1&b=%20x&c=%2F+"
    assert environ["PATH_INFO"] == "/q"


def test_environ_of_a_get(app):
    """
    A GET sets the request line, connection and server variables: method,
    protocol, client address 127.0.0.1, the listening port, http scheme,
    and wsgi.multithread (the app runs in a thread pool).
    """
    response, body = app.get("/environ")
    assert response.status == 200
    environ = json.loads(body)
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == str(app.port)
    assert environ["HTTP_HOST"] == f"127.0.0.1:{app.port}"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.input.read"] == ""


def test_environ_of_a_post_with_headers(app):
    """
    A POST's body type and length are CONTENT_TYPE and CONTENT_LENGTH, its
    body is wsgi.input, other headers become HTTP_* with dashes turned into
    underscores, and a repeated header's values are joined in order.
    """
    conn = app.connection()
    try:
        conn.putrequest("POST", "/environ?x=1")
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("Content-Length", "11")
        conn.putheader("X-Custom-Thing", "v1")
        conn.putheader("X-Multi", "one")
        conn.putheader("X-Multi", "two")
        conn.endheaders(b"a=1&b=%20x!")
        response = conn.getresponse()
        environ = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert environ["CONTENT_LENGTH"] == "11"
    assert environ["wsgi.input.read"] == "a=1&b=%20x!"
    assert environ["QUERY_STRING"] == "x=1"
    assert environ["HTTP_X_CUSTOM_THING"] == "v1"
    assert environ["HTTP_X_MULTI"] == "one,two"


# -- request bodies ---------------------------------------------------------------


def test_large_post_body_arrives_intact(app):
    """A 20 MiB POST body reaches the app complete: same length and sha256."""
    pattern = bytes(range(251))  # a prime period, so shifted blocks differ
    body = (pattern * (20 * 2**20 // len(pattern) + 1))[: 20 * 2**20]
    response, data = app.request(
        "POST", "/echo", body=body,
        headers={"Content-Type": "application/octet-stream"}, timeout=30,
    )
    assert response.status == 200
    assert json.loads(data) == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_chunked_post_body_arrives_intact(app):
    """
    A body sent with Transfer-Encoding: chunked (chunks of varied sizes,
    one with a chunk extension, sent in separate writes) is reassembled.
    """
    chunks = [b"a", bytes(range(256)) * 40, b"z" * 65536, b"\r\n0\r\n\r\n" * 3, b"end"]
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for i, chunk in enumerate(chunks):
            extension = b";note=x" if i == 1 else b""
            s.sendall(b"%x%s\r\n%s\r\n" % (len(chunk), extension, chunk))
        s.sendall(b"0\r\n\r\n")
        data = b""
        while block := s.recv(65536):
            data += block
    response, body = parse(data)
    whole = b"".join(chunks)
    assert response.status == 200
    assert json.loads(body) == {"length": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


# -- streaming ----------------------------------------------------------------------


def test_streamed_response_is_complete_in_order_one_http_chunk_per_block(app):
    """
    A generator response is sent chunked, one HTTP chunk per yielded block,
    all of them, in order: the server streams rather than buffering.
    """
    count, size = 40, 1000
    data = exchange(app, b"GET /stream?chunks=%d&size=%d&delay=0.005 HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n" % (count, size))
    head, rest = split_head(data)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nTransfer-Encoding: chunked" in head
    blocks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        length = int(size_line, 16)
        if length == 0:
            break
        blocks.append(rest[:length])
        assert rest[length:length + 2] == b"\r\n"
        rest = rest[length + 2:]
    assert rest == b"\r\n"
    assert blocks == [bytes([65 + i % 26]) * size for i in range(count)]


def test_first_bytes_arrive_before_the_response_is_generated(app):
    """
    /forever never finishes generating its body, so receiving its first
    ticks proves each block is sent as soon as the app yields it.
    """
    conn = app.connection(timeout=10)
    try:
        conn.request("GET", "/forever")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read(5) == b"tick\n"
        assert response.read(5) == b"tick\n"
    finally:
        conn.close()


def test_head_to_an_app_path_sends_no_body(app):
    """A HEAD to an application path gets the app's headers and no body bytes."""
    data = exchange(app, b"HEAD /stream?chunks=3&size=10 HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    head, rest = split_head(data)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Type: application/octet-stream" in head
    assert rest == b""


# -- application errors -----------------------------------------------------------


def test_app_error_is_500_logged_and_server_keeps_serving(app):
    """
    An exception before start_response gives a 500 without the traceback,
    is logged with its message, and the next request is served.
    """
    message = "builtins.RuntimeError: testapp: deliberate failure"
    before = logged_errors(app, message)
    response, body = app.get("/error")
    assert response.status == 500
    assert b"deliberate" not in body and b"Traceback" not in body
    wait_until(lambda: logged_errors(app, message) == before + 1, 10, "the error in the log")
    assert_still_serving(app)


def test_app_error_midstream_cuts_the_response_and_server_keeps_serving(app):
    """
    An exception after the first block was sent closes the connection
    without the chunked terminator (the client sees an incomplete body),
    is logged, and the next request is served.
    """
    message = "builtins.RuntimeError: testapp: deliberate failure mid-stream"
    before = logged_errors(app, message)
    data = exchange(app, b"GET /error-midstream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head, rest = split_head(data)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert rest == b"c\r\nfirst chunk\n\r\n"  # and then the connection closed
    with pytest.raises(http.client.IncompleteRead):
        parse(data)
    wait_until(lambda: logged_errors(app, message) == before + 1, 10, "the error in the log")
    assert_still_serving(app)


# -- malformed requests -----------------------------------------------------------

MALFORMED = {
    "garbage request line": b"THIS IS NOT HTTP\r\n\r\n",
    "binary request line": b"\x00\x01\x02\xff garbage\r\n\r\n",
    "header line without colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "non-numeric Content-Length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "negative Content-Length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nabcde",
    "conflicting Content-Lengths": (b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    "invalid chunk size": (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\nabc\r\n0\r\n\r\n"),
    "oversized chunk size line": (b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 2000 + b"\r\n"),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_request_gets_400_and_server_keeps_serving(app, data):
    """A malformed request is answered 400 and the connection closed; others are served."""
    received = exchange(app, data)
    assert received.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nConnection: close\r\n" in received
    assert_still_serving(app)


def test_unknown_http_version_gets_505(app):
    """A major version other than 1 is answered 505 (RFC 9110 15.6.6), and others are served."""
    received = exchange(app, b"GET / HTTP/9.9\r\nHost: x\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 505 ")
    assert_still_serving(app)


# -- connections --------------------------------------------------------------------


def test_keep_alive_serves_two_requests_on_one_connection(app):
    """
    Two requests on one HTTP/1.1 connection both succeed, and the app sees
    the same client port for both: the TCP connection was reused.
    """
    conn = app.connection()
    try:
        conn.request("GET", "/environ")
        first = conn.getresponse()
        first_environ = json.loads(first.read())
        sock = conn.sock
        conn.request("GET", "/environ")
        second = conn.getresponse()
        second_environ = json.loads(second.read())
        assert conn.sock is sock
    finally:
        conn.close()
    assert (first.status, second.status) == (200, 200)
    assert first.getheader("Connection") is None
    assert first_environ["REMOTE_PORT"] == second_environ["REMOTE_PORT"]


def test_absolute_form_request_target_gets_its_path(app):
    """
    RFC 9112 3.2.2: a server must accept the absolute form
    (GET http://host/path); the app should see PATH_INFO /some/path.
    """
    data = exchange(app, b"GET http://127.0.0.1/some/path HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    response, body = parse(data)
    assert (response.status, body) == (200, b"testapp /some/path")


# -- the worker pool ----------------------------------------------------------------

POOL = 4
SLEEP = 0.5


def sleep_requests(daemon: Daemon, count: int) -> tuple[float, list[tuple[int, bytes]]]:
    """C{count} simultaneous /sleep requests: (seconds for all, [(status, body)])."""

    def one(_):
        response, body = daemon.get(f"/sleep?seconds={SLEEP}", timeout=30)
        return response.status, body

    with ThreadPoolExecutor(count) as clients:
        began = time.monotonic()
        results = list(clients.map(one, range(count)))
        return time.monotonic() - began, results


def test_pool_runs_max_requests_in_parallel(pool_app):
    """
    max = 4 simultaneous half-second requests finish in well under the
    2 s they would take one after another.
    """
    elapsed, results = sleep_requests(pool_app, POOL)
    assert results == [(200, b"slept\n")] * POOL
    assert elapsed < SLEEP * POOL * 0.6


def test_requests_beyond_max_queue_and_complete(pool_app):
    """
    Twice max simultaneous requests all complete; they take at least two
    rounds (so no more than max ran at once) and far less than serially.
    """
    elapsed, results = sleep_requests(pool_app, 2 * POOL)
    assert results == [(200, b"slept\n")] * (2 * POOL)
    assert 2 * SLEEP * 0.95 <= elapsed < SLEEP * 2 * POOL * 0.6


# -- the Django demo ----------------------------------------------------------------


def test_django_page(demo):
    """GET / on the demo is Django's page, HTML, rendered with the client address."""
    response, body = demo.get("/")
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/html")
    assert b"<h1>It works: Django under backtracweb</h1>" in body
    assert b"<dd>127.0.0.1</dd>" in body


def test_django_unknown_path_is_djangos_404(demo):
    """An unknown path reaches Django, whose own 404 page answers (not Twisted's)."""
    response, body = demo.get("/no/such/page")
    assert response.status == 404
    assert b"The requested resource was not found on this server." in body
    assert b"No Such Resource" not in body


def test_django_disallowed_host_is_400_and_server_keeps_serving(demo):
    """
    A Host not in ALLOWED_HOSTS is refused by Django with 400, and the
    next request with a good Host is served.
    """
    response, body = demo.get("/", headers={"Host": "evil.example"})
    assert response.status == 400
    assert b"It works" not in body
    response, body = demo.get("/hello")
    assert (response.status, body) == (200, b"Hello from Django under backtracweb.\n")


def test_request_target_without_leading_slash_is_400(app):
    """A target that is neither a path, `*`, nor absolute-form is refused, not guessed at."""
    data = exchange(app, b"GET static/a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    response, body = parse(data)
    assert response.status == 400
    assert b"request target" in body
    response, body = app.get("/after-bad-target")
    assert (response.status, body) == (200, b"testapp /after-bad-target")


def test_headers_with_underscores_never_reach_the_app(app):
    """
    X_Forwarded_For would become HTTP_X_FORWARDED_FOR, indistinguishable
    from the real header a proxy sends; such headers are dropped.
    """
    response, body = app.get("/environ", headers={"X_Forwarded_For": "6.6.6.6",
                                                  "X-Real-Header": "kept"})
    environ = json.loads(body)
    assert "HTTP_X_FORWARDED_FOR" not in environ
    assert environ["HTTP_X_REAL_HEADER"] == "kept"
