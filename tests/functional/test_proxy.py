"""
[proxy] trusted: the forwarding headers of a reverse proxy (X-Forwarded-For,
-Proto, -Host and RFC 7239 Forwarded) are believed from trusted addresses
only, and then the application and the access log see the real client.

Every request comes from 127.0.0.1, which is the trusted proxy in one
daemon and an untrusted client in the other.  The access log, which must
name the real client, is also checked for the status it records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Daemon, wait_until

ACCESS_LOG = "[log]\naccess_log = access.log\n"


def environ(daemon: Daemon, headers: dict[str, str], host: str = "site.test:8080") -> dict:
    """The application's environ for a GET /environ with C{headers}."""
    response, body = daemon.get("/environ", headers={"Host": host, **headers})
    assert response.status == 200, body
    return json.loads(body)


def client_of(env: dict) -> tuple[str, str, str, str, str]:
    """What the application believes about the request's origin."""
    return (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"], env["SERVER_NAME"],
            env["SERVER_PORT"])


def access_lines(site_dir: Path, marker: str, count: int = 1) -> list[str]:
    """The access-log lines whose request path contains C{marker}, once there are C{count}."""
    path = site_dir / "access.log"

    def lines() -> list[str]:
        text = path.read_text() if path.exists() else ""
        return [line for line in text.splitlines() if marker in line]

    wait_until(lambda: len(lines()) >= count, 5, f"{count} access-log line(s) for {marker}")
    return lines()


@pytest.fixture
def behind_proxy(wsgi_daemon) -> Daemon:
    """A daemon whose trusted proxy is 127.0.0.1, logging access to a file."""
    daemon = wsgi_daemon("[proxy]\ntrusted = 127.0.0.1\n" + ACCESS_LOG)
    daemon.start()
    return daemon


@pytest.fixture
def not_behind_proxy(wsgi_daemon) -> Daemon:
    """A daemon trusting only 10.0.0.0/8, so not 127.0.0.1, logging access to a file."""
    daemon = wsgi_daemon("[proxy]\ntrusted = 10.0.0.0/8\n" + ACCESS_LOG)
    daemon.start()
    return daemon


# -- a trusted proxy ---------------------------------------------------------------


def test_trusted_proxy_without_forwarding_headers_is_the_client(behind_proxy):
    """
    A request from the trusted proxy that carries no forwarding header is
    its own client: REMOTE_ADDR 127.0.0.1, plain http, Host as sent, and
    (as Twisted's WSGI always does) SERVER_PORT the port it came in on.
    """
    assert client_of(environ(behind_proxy, {})) == (
        "127.0.0.1", "http", "site.test:8080", "site.test", str(behind_proxy.port))


def test_x_forwarded_for_from_trusted_proxy_is_the_client(behind_proxy):
    """
    X-Forwarded-For: 203.0.113.7 from the trusted proxy makes 203.0.113.7 the
    client (REMOTE_ADDR); scheme and host are left as they were.
    """
    env = environ(behind_proxy, {"X-Forwarded-For": "203.0.113.7"})
    assert client_of(env) == (
        "203.0.113.7", "http", "site.test:8080", "site.test", str(behind_proxy.port))


@pytest.mark.parametrize("chain", [
    "6.6.6.6, 203.0.113.7",
    "6.6.6.6, 203.0.113.7, 127.0.0.1",
], ids=["spoofed-left-most", "through-a-second-trusted-proxy"])
def test_client_is_the_right_most_untrusted_hop(behind_proxy, chain: str):
    """
    The proxy appends the address it saw to whatever the client sent, so
    only the right-most hop that is not a trusted proxy is believed: a
    client sending "X-Forwarded-For: 6.6.6.6" through the proxy is
    203.0.113.7, also when another trusted proxy (127.0.0.1) is in between.
    """
    assert environ(behind_proxy, {"X-Forwarded-For": chain})["REMOTE_ADDR"] == "203.0.113.7"


def test_x_forwarded_proto_and_host_from_trusted_proxy(behind_proxy):
    """
    X-Forwarded-Proto: https and X-Forwarded-Host: www.example.org from the
    trusted proxy give the application wsgi.url_scheme https, HTTP_HOST
    and SERVER_NAME www.example.org and the https port 443.
    """
    env = environ(behind_proxy, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                                 "X-Forwarded-Host": "www.example.org"})
    assert client_of(env) == ("203.0.113.7", "https", "www.example.org", "www.example.org", "443")


def test_x_forwarded_host_with_port(behind_proxy):
    """X-Forwarded-Host with a port sets SERVER_PORT to it."""
    env = environ(behind_proxy, {"X-Forwarded-For": "203.0.113.7",
                                 "X-Forwarded-Host": "www.example.org:8443"})
    assert client_of(env) == (
        "203.0.113.7", "http", "www.example.org:8443", "www.example.org", "8443")


def test_x_forwarded_proto_alone_from_trusted_proxy(behind_proxy):
    """
    A trusted proxy that terminates TLS and sends only X-Forwarded-Proto:
    https (no X-Forwarded-For) is believed about the scheme; the client is
    the proxy itself.
    """
    env = environ(behind_proxy, {"X-Forwarded-Proto": "https"}, host="www.example.org")
    assert client_of(env) == ("127.0.0.1", "https", "www.example.org", "www.example.org", "443")


@pytest.mark.parametrize("forwarded, expected", [
    ('for=203.0.113.7;proto=https;host=www.example.org',
     ("203.0.113.7", "https", "www.example.org", "www.example.org", "443")),
    ('for=6.6.6.6;proto=http, for="203.0.113.7:4711";proto=https;host="www.example.org:8443"',
     ("203.0.113.7", "https", "www.example.org:8443", "www.example.org", "8443")),
    ('for="[2001:db8::17]:4711";proto=https',
     ("2001:db8::17", "https", "site.test:8080", "site.test", "8080")),
], ids=["simple", "spoofed-left-most-quoted", "ipv6"])
def test_rfc7239_forwarded_from_trusted_proxy(behind_proxy, forwarded: str, expected):
    """
    RFC 7239 Forwarded from the trusted proxy: the right-most element sets
    the client (without its port, IPv6 unbracketed), the scheme and the
    host; a spoofed element to its left is ignored.
    """
    assert client_of(environ(behind_proxy, {"Forwarded": forwarded})) == expected


def test_access_log_shows_the_real_client(behind_proxy, site_dir: Path):
    """
    The access log's client field is the client the proxy vouched for,
    not the proxy: 203.0.113.7, with status 200.
    """
    response, _ = behind_proxy.get("/proxied-request", headers={
        "X-Forwarded-For": "6.6.6.6, 203.0.113.7"})
    assert response.status == 200
    line = access_lines(site_dir, "/proxied-request")[0]
    assert line.startswith('203.0.113.7 - - [')
    assert '"GET /proxied-request HTTP/1.1" 200 ' in line


# -- an untrusted client --------------------------------------------------------------


def test_forwarding_headers_from_untrusted_client_are_ignored(not_behind_proxy, site_dir: Path):
    """
    With trusted = 10.0.0.0/8, the same forwarding headers from 127.0.0.1
    change nothing: REMOTE_ADDR stays 127.0.0.1, the scheme http, the host
    the one sent, and the access log names 127.0.0.1.
    """
    env = environ(not_behind_proxy, {
        "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "www.example.org",
        "Forwarded": "for=198.51.100.9;proto=https;host=evil.example"})
    assert client_of(env) == (
        "127.0.0.1", "http", "site.test:8080", "site.test", str(not_behind_proxy.port))
    response, _ = not_behind_proxy.get("/unproxied-request", headers={
        "X-Forwarded-For": "203.0.113.7"})
    assert response.status == 200
    assert access_lines(site_dir, "/unproxied-request")[0].startswith("127.0.0.1 - - [")


def test_untrusted_client_without_forwarding_headers(not_behind_proxy, site_dir: Path):
    """
    A request without forwarding headers from an address that is not a
    trusted proxy is served with its own address, in the environ and in
    the access log.
    """
    assert client_of(environ(not_behind_proxy, {})) == (
        "127.0.0.1", "http", "site.test:8080", "site.test", str(not_behind_proxy.port))
    not_behind_proxy.get("/plain-request")
    assert access_lines(site_dir, "/plain-request")[0].startswith("127.0.0.1 - - [")


# -- the access log's status ----------------------------------------------------------

# A complete Content-Length response whose close() takes a moment after the
# body was written, as Django's does (request_finished handlers, closing
# database connections): the client has everything before the server finishes.
LINGERING_APP = '''
import time


class Response:
    def __init__(self, body):
        self.body = body

    def __iter__(self):
        yield self.body

    def close(self):
        time.sleep(0.3)


def application(environ, start_response):
    body = b"complete\\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return Response(body)
'''


def test_completed_response_is_logged_with_its_status(make_daemon, site_dir: Path):
    """
    A client that reads a whole Content-Length response and closes at once
    (as http.client, curl and health checks do) got a 200: the access log
    says 200 with the bytes sent, not 499 ("client went away").
    """
    (site_dir / "lingering").mkdir()
    (site_dir / "lingering" / "lingering.py").write_text(LINGERING_APP)
    daemon = make_daemon("""
        [server]
        port = {port}
        [app]
        loader = wsgi
        pythonpath = lingering
        application = lingering:application
        [log]
        access_log = access.log
        """)
    daemon.start()
    response, body = daemon.get("/complete")
    assert (response.status, body) == (200, b"complete\n")
    line = access_lines(site_dir, "/complete")[0]
    assert '"GET /complete HTTP/1.1" 200 9 ' in line, line
