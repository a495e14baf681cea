"""
[server] listen: several Twisted endpoints at once (TCP on IPv4 and IPv6,
a unix socket, TLS), served by one daemonized twistd, and the errors an
admin sees when an endpoint is wrong or cannot be bound.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import tempfile
from pathlib import Path

import pytest
from certificates import self_signed_certificate
from conftest import APPS, Daemon, free_port, wait_until

APP = """
[threadpool]
min = 1
max = 2
[app]
loader = wsgi
pythonpath = apps
application = testapp:application
"""


def ipv6_loopback_available() -> bool:
    """Whether ::1 can be bound here (containers often lack IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = ipv6_loopback_available()
needs_ipv6 = pytest.mark.skipif(not IPV6, reason="::1 is not available on this host")


def free_port6() -> int:
    """A TCP port on ::1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


@pytest.fixture
def short_dir():
    """
    A short absolute directory for unix sockets: a socket path is limited to
    about 108 bytes, which pytest's tmp_path can exceed.
    """
    path = Path(tempfile.mkdtemp(prefix="btw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def listen_daemon(make_daemon, site_dir: Path):
    """
    A daemon serving tests/functional/apps/testapp.py from a [server] section
    given whole (C{{port}} is the daemon's free port), plus C{extra} sections.
    """

    def make(server: str, extra: str = "") -> Daemon:
        shutil.copytree(APPS, site_dir / "apps", dirs_exist_ok=True)
        return make_daemon("[server]\n" + server + APP + extra)

    return make


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket."""

    def __init__(self, path: Path, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def fetch(conn: http.client.HTTPConnection, path: str, headers=None):
    """One request on C{conn}, then close it: (response, body)."""
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def environ_via(conn: http.client.HTTPConnection, headers=None) -> dict:
    response, body = fetch(conn, "/environ", headers)
    assert response.status == 200, body
    return json.loads(body)


def unix_exchange(path: Path, data: bytes, timeout: float = 10) -> bytes:
    """Raw bytes over a unix socket; everything received until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(data)
        received = []
        while block := s.recv(65536):
            received.append(block)
    return b"".join(received)


def tls_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts only C{cert}, verifying name and chain."""
    context = ssl.create_default_context(cafile=str(cert))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


def assert_failed_before_fork(daemon: Daemon, result) -> str:
    """twistd exited non-zero in option parsing: no log file, no pidfile."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert not daemon.logfile.exists()
    assert not daemon.pidfile.exists()
    return output


# -- every kind of endpoint at once -------------------------------------------------


@needs_ipv6
@pytest.mark.parametrize("workers", [1, 2])
def test_every_endpoint_kind_serves_at_once(listen_daemon, short_dir: Path, site_dir: Path,
                                            workers: int):
    """
    One listen line with TCP on 127.0.0.1, TCP on ::1 (written with bare
    colons), a unix socket and TLS: the daemon serves the application on
    each, the log names each address, and the application sees the client
    address and scheme of the endpoint it was reached through; the same
    when worker processes inherit the sockets.
    """
    port6, tls_port = free_port6(), free_port()
    sock = short_dir / "web.sock"
    key, cert = self_signed_certificate(site_dir)
    daemon = listen_daemon(
        f"listen = tcp:{{port}}:interface=127.0.0.1, tcp:{port6}:interface=::1, "
        f"unix:{sock}:mode=660, ssl:{tls_port}:privateKey={key}:certKey={cert}\n"
        f"workers = {workers}\n"
    )
    daemon.start()

    ipv4 = environ_via(daemon.connection())
    ipv6 = environ_via(http.client.HTTPConnection("::1", port6, timeout=10))
    unix = environ_via(UnixHTTPConnection(sock))
    tls = environ_via(http.client.HTTPSConnection(
        "127.0.0.1", tls_port, timeout=10, context=tls_context(cert)))

    seen = {name: (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["SERVER_PORT"])
            for name, env in [("ipv4", ipv4), ("ipv6", ipv6), ("unix", unix), ("tls", tls)]}
    assert seen == {
        "ipv4": ("127.0.0.1", "http", str(daemon.port)),
        "ipv6": ("::1", "http", str(port6)),
        "unix": ("", "http", "80"),
        "tls": ("127.0.0.1", "https", str(tls_port)),
    }
    log = daemon.log()
    for address in (f"127.0.0.1:{daemon.port}", f"[::1]:{port6}", f"unix:{sock}:mode=660",
                    f"ssl:{tls_port}:"):
        assert f"serving on {address}" in log
    assert "Traceback" not in log

    daemon.stop()
    assert not sock.exists()
    for host, port in [("127.0.0.1", daemon.port), ("::1", port6), ("127.0.0.1", tls_port)]:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=5).close()


@needs_ipv6
def test_ipv6_endpoint_does_not_listen_on_ipv4(listen_daemon):
    """
    tcp:PORT:interface=::1 binds exactly ::1: the same port on 127.0.0.1
    refuses connections, so the escaped address was not misread as "any".
    """
    daemon = listen_daemon("listen = tcp:{port}:interface=::1\n")
    daemon.start()
    response, body = fetch(http.client.HTTPConnection("::1", daemon.port, timeout=10), "/hello")
    assert (response.status, body) == (200, b"testapp /hello")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", daemon.port), timeout=5).close()


# -- the unix socket ----------------------------------------------------------------


def test_unix_socket_has_mode_and_serves(listen_daemon, short_dir: Path):
    """
    unix:PATH:mode=660 creates the socket with exactly mode 0660 (whatever
    twistd's umask); a request over it is served; the application sees an
    empty REMOTE_ADDR, and SERVER_NAME and SERVER_PORT from the Host header
    (port 80 when the Host names none).
    """
    sock = short_dir / "web.sock"
    daemon = listen_daemon(f"listen = unix:{sock}:mode=660\n")
    daemon.start()

    mode = os.stat(sock).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660

    with_port = environ_via(UnixHTTPConnection(sock), {"Host": "www.example.test:8443"})
    assert (with_port["REMOTE_ADDR"], with_port["SERVER_NAME"], with_port["SERVER_PORT"],
            with_port["HTTP_HOST"]) == ("", "www.example.test", "8443", "www.example.test:8443")
    plain = environ_via(UnixHTTPConnection(sock), {"Host": "www.example.test"})
    assert (plain["REMOTE_ADDR"], plain["SERVER_NAME"], plain["SERVER_PORT"],
            plain["wsgi.url_scheme"]) == ("", "www.example.test", "80", "http")


def test_unix_socket_request_without_host_gets_a_server_name(listen_daemon, short_dir: Path):
    """
    An HTTP/1.0 request without a Host header over the unix socket still
    gives the application a non-empty SERVER_NAME, as PEP 3333 requires.
    """
    sock = short_dir / "web.sock"
    daemon = listen_daemon(f"listen = unix:{sock}\n")
    daemon.start()
    data = unix_exchange(sock, b"GET /environ HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")  # the server's version (RFC 9110 2.5)
    environ = json.loads(body)
    assert environ["SERVER_PORT"]
    assert environ["SERVER_NAME"] != ""


def test_access_log_line_of_unix_socket_request_has_a_client_field(listen_daemon,
                                                                   short_dir: Path,
                                                                   site_dir: Path):
    """
    A request over the unix socket is logged in the combined format with a
    non-empty first field, so log tools splitting on spaces still parse it.
    """
    sock = short_dir / "web.sock"
    daemon = listen_daemon(f"listen = unix:{sock}\n", "[log]\naccess_log = access.log\n")
    daemon.start()
    response, _ = fetch(UnixHTTPConnection(sock), "/logged")
    assert response.status == 200
    access_log = site_dir / "access.log"
    wait_until(lambda: access_log.exists() and "/logged" in access_log.read_text(), 5,
               "the access-log line")
    line = next(l for l in access_log.read_text().splitlines() if "/logged" in l)
    assert line.split(" ")[0] != "", line


# -- TLS ------------------------------------------------------------------------------


def test_tls_endpoint_serves_https_with_the_given_certificate(listen_daemon, site_dir: Path):
    """
    ssl:PORT:privateKey=KEY:certKey=CERT serves HTTPS with that
    certificate: a client verifying against it succeeds, the application
    sees wsgi.url_scheme https; a client that does not trust it is refused
    in the handshake, and plain HTTP on that port gets no HTTP answer.
    """
    key, cert = self_signed_certificate(site_dir)
    daemon = listen_daemon(f"listen = ssl:{{port}}:privateKey={key}:certKey={cert}\n")
    daemon.start()

    environ = environ_via(http.client.HTTPSConnection(
        "127.0.0.1", daemon.port, timeout=10, context=tls_context(cert)))
    assert (environ["wsgi.url_scheme"], environ["SERVER_PORT"], environ["REMOTE_ADDR"]) == (
        "https", str(daemon.port), "127.0.0.1")

    with pytest.raises(ssl.SSLCertVerificationError):
        fetch(http.client.HTTPSConnection(
            "127.0.0.1", daemon.port, timeout=10, context=ssl.create_default_context()), "/")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = s.recv(65536)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/")


def test_tls_key_paths_relative_to_the_configuration_file(listen_daemon, site_dir: Path):
    """
    ssl:PORT:privateKey=key.pem:certKey=cert.pem, with both files next to the
    configuration file and twistd started elsewhere, serves HTTPS: relative
    paths mean "next to the file".
    """
    _, cert = self_signed_certificate(site_dir)
    daemon = listen_daemon("listen = ssl:{port}:privateKey=key.pem:certKey=cert.pem\n")
    result = daemon.start(check=False)
    assert result.returncode == 0, result.stderr
    daemon.pid = int(daemon.pidfile.read_text())
    environ = environ_via(http.client.HTTPSConnection(
        "127.0.0.1", daemon.port, timeout=10, context=tls_context(cert)))
    assert environ["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_renewed_certificate_is_served_after_sighup(listen_daemon, site_dir: Path,
                                                      tmp_path: Path, workers: int):
    """
    certbot renews the files in place and sends SIGHUP: the next client
    gets the new certificate, a connection opened before keeps working,
    and files that cannot serve (a half-written PEM) are logged and leave
    the last good certificate in force.  In one process and with workers.
    """
    (tmp_path / "old").mkdir()
    old_key, old_cert = self_signed_certificate(tmp_path / "old")
    key, cert = site_dir / "key.pem", site_dir / "cert.pem"
    key.write_bytes(old_key.read_bytes())
    cert.write_bytes(old_cert.read_bytes())
    daemon = listen_daemon(f"listen = ssl:{{port}}:privateKey={key}:certKey={cert}\n"
                           f"workers = {workers}\n")
    daemon.start()

    def served_certificate(trusting: Path) -> bytes:
        conn = http.client.HTTPSConnection("127.0.0.1", daemon.port, timeout=10,
                                           context=tls_context(trusting))
        try:
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"testapp /"
            return conn.sock.getpeercert(binary_form=True)
        finally:
            conn.close()

    def der(path: Path) -> bytes:
        return ssl.PEM_cert_to_DER_cert(path.read_text())

    before = http.client.HTTPSConnection("127.0.0.1", daemon.port, timeout=10,
                                         context=tls_context(old_cert))
    before.request("GET", "/kept")
    assert before.getresponse().read() == b"testapp /kept"

    (tmp_path / "new").mkdir()
    new_key, new_cert = self_signed_certificate(tmp_path / "new")
    key.write_bytes(new_key.read_bytes())
    cert.write_bytes(new_cert.read_bytes())
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: daemon.log().count("new certificate and key loaded") == workers, 15,
               "every serving process to load the new certificate")
    assert served_certificate(new_cert) == der(new_cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        served_certificate(old_cert)
    before.request("GET", "/still")  # opened before the reload, with the old certificate
    assert before.getresponse().read() == b"testapp /still"
    before.close()

    cert.write_text("-----BEGIN CERTIFICATE-----\nhalf a renewal\n")
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: daemon.log().count("still serving the certificate loaded before")
               == workers, 15, "the bad files to be refused")
    assert served_certificate(new_cert) == der(new_cert)
    daemon.stop()


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("other", ["port = 8081", "interface = 127.0.0.1"])
def test_listen_with_port_or_interface_is_a_config_error(listen_daemon, other: str):
    """
    listen together with port (or interface) is refused before twistd forks,
    with one line naming the file, listen and the other key.
    """
    key = other.split()[0]
    daemon = listen_daemon(f"listen = tcp:{{port}}\n{other}\n")
    output = assert_failed_before_fork(daemon, daemon.start(check=False))
    assert (f"{daemon.config}: [server] listen = 'tcp:{daemon.port}' and {key} are both set; "
            "use either listen or port and interface") in output


@pytest.mark.parametrize("endpoint, reason", [
    ("tcp:notaport", "is not a usable Twisted endpoint"),
    ("bogus:8080", "is not a usable Twisted endpoint: ValueError: Unknown endpoint type: 'bogus'"),
    ("ssl:0:privateKey=missing.pem", "is not a usable Twisted endpoint"),
], ids=["bad-port", "unknown-type", "missing-tls-key"])
def test_bad_endpoint_string_is_a_config_error(listen_daemon, endpoint: str, reason: str):
    """
    An endpoint string Twisted cannot use is refused before twistd forks,
    naming the file, the string and why, even beside a good endpoint.
    """
    daemon = listen_daemon(f"listen = tcp:{{port}}, {endpoint}\n")
    output = assert_failed_before_fork(daemon, daemon.start(check=False))
    assert f"{daemon.config}: [server] listen = " in output
    assert f"'{endpoint}' {reason}" in output or f"'{endpoint}': {reason}" in output


@pytest.mark.parametrize("family", [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param("::1", id="ipv6", marks=needs_ipv6),
])
def test_endpoint_that_cannot_bind_stops_the_daemon_naming_it(listen_daemon, family: str):
    """
    When the second of two endpoints is in use, twistd exits non-zero with
    "cannot listen on ADDRESS: Address already in use" on the terminal and
    in the log, no daemon remains and the first endpoint is not left open.
    """
    inet = socket.AF_INET6 if ":" in family else socket.AF_INET
    with socket.socket(inet) as taken:
        taken.bind((family, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        daemon = listen_daemon(
            f"listen = tcp:{{port}}:interface=127.0.0.1, tcp:{busy}:interface={family}\n")
        result = daemon.start(check=False)
        address = f"[{family}]:{busy}" if ":" in family else f"{family}:{busy}"
        message = f"cannot listen on {address}: Address already in use"
        assert result.returncode != 0
        assert message in result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        # The daemon writes its log after twistd's parent has relayed the error and exited.
        wait_until(lambda: f"backtracweb cannot start: {message}" in daemon.log(), 5,
                   "the error in the log")
        assert "Traceback" not in daemon.log()
        wait_until(lambda: not daemon.pidfile.exists(), 5, "the pidfile to be removed")

        def first_port_closed() -> bool:
            try:
                socket.create_connection(("127.0.0.1", daemon.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_until(first_port_closed, 5, f"port {daemon.port} to be closed")
