"""
Scaling out: Debian's nginx in front of two daemonized backtracweb
instances, configured from the sample site we ship
(etc/nginx/backtracweb.conf).

The sample's upstream and server blocks are used as written, with only
what must differ in a test rewritten: the instances' addresses, nginx's
listening addresses (loopback, unprivileged ports), and the certificate.
They go inside a minimal nginx.conf of the test's own that keeps nginx's
pid, logs and temporary files under the test's directory.

The instances serve a small Django site (tests/functional/apps/lbsite) and
trust 127.0.0.1, where nginx connects from; the clients connect from
127.0.0.2, so an application that saw nginx's address instead of the
client's would be caught.  Under load, a SIGTERM (one instance, or each in
turn for a rolling restart) must not fail a single GET, nor a single POST
when the instance is first taken out of nginx as the sample says; and every
request the clients got an answer to must have been served exactly once.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import APPS, REPO, Daemon, free_port, process_exists, wait_until
from test_listen import self_signed_certificate

SAMPLE = REPO / "etc" / "nginx" / "backtracweb.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HOST = "site.test"
CLIENT = "127.0.0.2"
"""The clients' source address: not nginx's (127.0.0.1), which the instances trust."""

pytestmark = pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason=f"no nginx at {NGINX}")


# -- nginx, configured from the sample -------------------------------------------------


def site_from_sample(sample: str, http_port: int, https_port: int,
                     upstreams: list[int], cert: Path, key: Path) -> str:
    """
    The sample site with the instances at 127.0.0.1:C{upstreams}, nginx on
    127.0.0.1:C{http_port} and C{https_port} (IPv6 listeners dropped), and
    the given certificate.  Every other line stays as shipped; a sample
    whose shape this no longer fits fails the test instead of being
    half-rewritten.
    """
    lines, in_upstream, servers, listens, certs = [], False, [], [], []
    for line in sample.splitlines():
        code = line.split("#", 1)[0]
        if re.match(r"\s*upstream\s", code):
            in_upstream = True
        elif in_upstream and "}" in code:
            in_upstream = False
        server = re.match(r"(\s*server\s+)[^\s;]+(.*)$", code) if in_upstream else None
        listen = re.match(r"(\s*listen\s+)([^\s;]+)(.*)$", code)
        certificate = re.match(r"(\s*ssl_certificate(_key)?\s+)[^\s;]+(.*)$", code)
        if server:
            servers.append(line)
            if len(servers) > len(upstreams):
                continue
            line = f"{server.group(1)}127.0.0.1:{upstreams[len(servers) - 1]}{server.group(2)}"
        elif listen:
            listens.append(line)
            if listen.group(2).startswith("["):
                continue  # loopback-only: the IPv4 listeners are enough
            port = https_port if re.search(r"\sssl\b", listen.group(3)) else http_port
            line = f"{listen.group(1)}127.0.0.1:{port}{listen.group(3)}"
        elif certificate:
            certs.append(line)
            path = key if certificate.group(2) else cert
            line = f"{certificate.group(1)}{path}{certificate.group(3)}"
        lines.append(line)
    assert len(servers) == len(upstreams), f"expected {len(upstreams)} upstream servers: {servers}"
    assert any(" ssl" in line for line in listens), f"no ssl listener in {listens}"
    assert len(certs) == 2, f"expected ssl_certificate and _key: {certs}"
    return "\n".join(lines) + "\n"


def nginx_conf(directory: Path, site: Path) -> str:
    """A top-level nginx.conf that includes C{site} and keeps every file in C{directory}."""
    # As root, nginx's workers would run as nobody, who may not enter the
    # test's directory.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = "".join(f"    {kind}_temp_path {directory / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"{user}daemon off;\n"  # the test starts and stops it by pid
        "worker_processes 1;\n"
        f"pid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"    access_log {directory / 'access.log'};\n"
        f"{temp}"
        f"    include {site};\n"
        "}\n"
    )


class Nginx:
    """An nginx in the foreground, with its ports and its error log."""

    def __init__(self, directory: Path, site: str, http_port: int, https_port: int,
                 cert: Path) -> None:
        self.directory = directory
        self.http_port, self.https_port = http_port, https_port
        self.cert = cert
        (directory / "site.conf").write_text(site)
        self.conf = directory / "nginx.conf"
        self.conf.write_text(nginx_conf(directory, directory / "site.conf"))
        self.process: subprocess.Popen | None = None

    def command(self, *extra: str) -> list[str]:
        # -e: the log for messages before the configuration is read.
        return [NGINX, "-p", str(self.directory), "-e", str(self.directory / "error.log"),
                "-c", str(self.conf), *extra]

    def start(self) -> None:
        checked = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=10)
        assert checked.returncode == 0, f"nginx -t rejects the configuration:\n{checked.stderr}"
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_until(lambda: self._accepts(self.http_port) and self._accepts(self.https_port),
                   10, "nginx to listen")

    def _accepts(self, port: int) -> bool:
        assert self.process.poll() is None, f"nginx exited:\n{self.errors()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def errors(self) -> str:
        """nginx's error log: refused and retried upstream connections are logged there."""
        path = self.directory / "error.log"
        return path.read_text() if path.exists() else ""


# -- the instances ---------------------------------------------------------------------

INSTANCE = """
[server]
port = {port}
graceful_timeout = 10
[threadpool]
min = 2
max = 4
[app]
pythonpath = apps
DJANGO_SETTINGS_MODULE = lbsite.settings
[proxy]
trusted = 127.0.0.1
[status]
path = /-/status
[log]
access_format = {method} {path} {status} {client}
"""

_SERVED = re.compile(r"^(GET|POST) /work 200 ", re.M)
_STATUS_READ = re.compile(r"^GET /-/status 200 127\.0\.0\.1$")


class Instance:
    """A backtracweb daemon behind nginx, and what its files say."""

    def __init__(self, daemon: Daemon, access_log: Path) -> None:
        self.daemon = daemon
        self.access_log = access_log

    def served(self) -> int:
        """The /work requests it answered (its access log, across restarts)."""
        text = self.access_log.read_text() if self.access_log.exists() else ""
        return len(_SERVED.findall(text))

    def others(self) -> list[str]:
        """Access-log lines other than /work answered with 200 or the test's status reads."""
        text = self.access_log.read_text() if self.access_log.exists() else ""
        return [line for line in text.splitlines()
                if line and not _SERVED.match(line) and not _STATUS_READ.match(line)]

    def status(self) -> dict:
        """Its status page, read directly (what a health checker would do)."""
        response, body = self.daemon.get("/-/status")
        assert response.status == 200, body
        return json.loads(body)

    def in_flight_at_stop(self) -> int:
        """How many requests its twistd log says it had in flight when it last stopped."""
        found = re.findall(r"stopping: .* for (\d+) request\(s\) in flight", self.daemon.log())
        assert found, f"no drain in the log:\n{self.daemon.log()}"
        return int(found[-1])


def make_instance(make_daemon, site_dir: Path, name: str, server: str = "") -> Instance:
    """An instance (not started) with C{server} lines added to its [server] section."""
    shutil.copytree(APPS, site_dir / "apps", dirs_exist_ok=True)
    config = INSTANCE.replace("[server]\n", "[server]\n" + server)
    daemon = make_daemon(config + f"access_log = {name}-access.log\n", name=f"{name}.ini")
    # make_daemon gives the daemons of one test one working directory, so one
    # pidfile, which twistd will not share: each gets its own.
    own = daemon.workdir / name
    own.mkdir()
    daemon.workdir, daemon.pidfile, daemon.logfile = own, own / "twistd.pid", own / "twistd.log"
    return Instance(daemon, site_dir / f"{name}-access.log")


@pytest.fixture
def instances(make_daemon, site_dir: Path) -> list[Instance]:
    """Two running instances, A and B."""
    both = [make_instance(make_daemon, site_dir, name) for name in ("a", "b")]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: i.daemon.start(), both))
    yield both
    for instance in both:
        if instance.daemon.pid is not None:
            instance.daemon.stop()


def nginx_in_front(instances: list[Instance], directory: Path) -> Nginx:
    """nginx, configured from the sample, in front of C{instances}, started."""
    directory.mkdir()
    key, cert = self_signed_certificate(directory)
    ports = free_port(), free_port()
    site = site_from_sample(SAMPLE.read_text(), *ports, [i.daemon.port for i in instances],
                            cert, key)
    front = Nginx(directory, site, *ports, cert)
    front.start()
    return front


@pytest.fixture
def nginx(instances, tmp_path: Path) -> Nginx:
    """nginx, configured from the sample, in front of the two instances."""
    front = nginx_in_front(instances, tmp_path / "nginx")
    yield front
    front.stop()


# -- clients ---------------------------------------------------------------------------


def connect(nginx: Nginx, tls: bool = False) -> http.client.HTTPConnection:
    """A connection to nginx from the client address."""
    if tls:
        context = ssl.create_default_context(cafile=str(nginx.cert))
        return http.client.HTTPSConnection("127.0.0.1", nginx.https_port, timeout=10,
                                           source_address=(CLIENT, 0), context=context)
    return http.client.HTTPConnection("127.0.0.1", nginx.http_port, timeout=10,
                                      source_address=(CLIENT, 0))


class Load:
    """
    Client threads requesting /work through nginx, each over one
    keep-alive connection (a new one only after a close), as fast as the
    answers come: with twelve threads, several hundred requests a second.
    """

    def __init__(self, nginx: Nginx, method: str = "GET", threads: int = 12) -> None:
        self.nginx = nginx
        self.method = method
        self.answered = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _run(self) -> None:
        body = b"form=1" if self.method == "POST" else None
        conn = None
        while not self._stop.is_set():
            if conn is None:
                conn = connect(self.nginx)
            try:
                conn.request(self.method, "/work", body=body, headers={"Host": HOST})
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = None
                with self._lock:
                    self.failures.append(f"{type(e).__name__}: {e}")
                continue
            with self._lock:
                if response.status == 200 and answer == b"done\n":
                    self.answered += 1
                else:
                    self.failures.append(f"{response.status} {answer[:200]!r}")
            if response.will_close:
                conn.close()
                conn = None

    def report(self) -> str:
        return (f"{self.answered} answered, {len(self.failures)} failed: {self.failures[:5]}\n"
                f"nginx's error log:\n{self.nginx.errors()[-3000:]}")


def wait_for_traffic(instance: Instance, more: int, what: str, timeout: float = 15) -> None:
    """Until C{instance} has served C{more} requests beyond what it had now."""
    target = instance.served() + more
    wait_until(lambda: instance.served() >= target, timeout, what)


def wait_until_busy(instance: Instance) -> None:
    """Until a request is running in one of the instance's threads."""
    wait_until(lambda: instance.status()["pool"]["busy"] >= 1, 10, "a request in flight")


def assert_all_served_once(instances: list[Instance], load: Load) -> None:
    """The instances served exactly the requests the clients got answers to, all 200."""
    wait_until(lambda: sum(i.served() for i in instances) >= load.answered, 5,
               "the access logs to catch up")
    assert sum(i.served() for i in instances) == load.answered
    assert [line for i in instances for line in i.others()] == []


# -- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_django_sees_the_client_and_scheme_through_nginx_and_both_instances_serve(
        nginx, instances, tls):
    """
    Through the sample's headers, Django sees the client's address
    (127.0.0.2, not nginx's 127.0.0.1), the scheme nginx was reached by and
    the Host asked for, whatever forwarding headers the client forged; and
    nginx spreads requests over both instances.  The status page is not
    reachable through nginx.
    """
    scheme, other = ("https", "http") if tls else ("http", "https")
    forged = {"Host": f"{HOST}:{nginx.https_port if tls else nginx.http_port}",
              "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": other,
              "X-Forwarded-Host": "evil.test", "Forwarded": f"for=198.51.100.7;proto={other}"}
    seen, pids = [], set()
    for _ in range(4):
        conn = connect(nginx, tls)
        try:
            conn.request("GET", "/whoami", headers=forged)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 200, body
        who = json.loads(body)
        pids.add(who.pop("pid"))
        seen.append(who)
    assert seen == 4 * [{
        "remote_addr": CLIENT, "scheme": scheme, "host": HOST, "url": f"{scheme}://{HOST}/whoami",
        "forwarded": None, "x_forwarded_for": CLIENT,
    }]
    assert pids == {i.daemon.pid for i in instances}

    conn = connect(nginx, tls)
    conn.request("GET", "/-/status", headers={"Host": HOST})
    assert conn.getresponse().status == 404
    conn.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sigterm_to_one_instance_under_load_fails_no_request(nginx, instances, method):
    """
    With clients keeping both instances busy, SIGTERM to A while it runs a
    request: A finishes what it has in flight and exits, nginx sends the
    rest to B, and no client sees an error, even for POSTs, which nginx
    cannot resend: A answers the requests nginx wrote on its kept-alive
    connections as the drain began, and those queued on its socket.  Each
    answered request was served exactly once.
    """
    a, b = instances
    with Load(nginx, method=method) as load:
        wait_for_traffic(a, 20, "A to serve through nginx")
        wait_for_traffic(b, 20, "B to serve through nginx")
        wait_until_busy(a)
        a.daemon.stop()
        wait_for_traffic(b, 100, "B to serve on alone")
    assert load.failures == [], load.report()
    assert a.in_flight_at_stop() >= 1
    assert "cut short" not in a.daemon.log()
    assert_all_served_once(instances, load)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_rolling_restart_under_load_fails_no_request(nginx, instances, method):
    """
    A rolling restart as the sample describes it: SIGTERM A, start it again
    on its port, wait until nginx sends it requests again, then the same
    for B.  No client sees an error, POSTs included, and the instances
    served exactly the requests the clients got answers to.
    """
    with Load(nginx, method=method) as load:
        for instance in instances:
            wait_for_traffic(instance, 20, "the instance to serve through nginx")
        for instance in instances:
            old_pid = instance.daemon.pid
            wait_until_busy(instance)
            instance.daemon.stop()
            assert not process_exists(old_pid)
            instance.daemon.start()
            wait_for_traffic(instance, 20, "nginx to send the restarted instance requests")
        wait_for_traffic(instances[1], 20, "the last one to serve on")
    assert load.failures == [], load.report()
    assert load.answered > 200
    for instance in instances:
        assert "cut short" not in instance.daemon.log()
    assert_all_served_once(instances, load)


RECYCLING = "workers = 2\nmax_requests = 150\nmax_requests_jitter = 50\n"
_RECYCLED = "([server] max_requests): starting its replacement"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_recycling_workers_under_load_fails_no_request(make_daemon, site_dir: Path,
                                                        tmp_path: Path, method):
    """
    One instance of two workers, each replaced after 150 to 200 requests
    ([server] max_requests and its jitter), behind nginx under load: the
    replacement serves before the old worker drains, so no client sees an
    error, POSTs included, and every answered request was served once.
    """
    instance = make_instance(make_daemon, site_dir, "a", server=RECYCLING)
    instance.daemon.start()
    # The sample names two upstream servers: both are this instance.
    front = nginx_in_front([instance, instance], tmp_path / "nginx")
    try:
        with Load(front, method=method) as load:
            wait_until(lambda: instance.daemon.log().count(_RECYCLED) >= 4, 60,
                       "four workers to be recycled")
            wait_until(lambda: instance.daemon.log().count("drains") >= 4, 30,
                       "their replacements to serve")
            wait_for_traffic(instance, 50, "the replacements to serve on")
        assert load.failures == [], load.report()
        log = instance.daemon.log()
        assert "cut short" not in log and "Traceback" not in log
        assert_all_served_once([instance], load)
        workers = instance.status()["workers"]
        assert len(workers) == 2 and sum(w["restarts"] for w in workers) == 0
    finally:
        front.stop()
        instance.daemon.stop()
