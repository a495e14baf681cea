"""
The benchmark harness: backtracweb against Twisted's own web server,
gunicorn, waitress, and two servers that parse HTTP natively (uWSGI and
granian), all serving the Django project in bench/site, and against two
yardsticks: the in-process ceiling (bench/inprocess.py, no server at
all) and the floor (bench/servers/floor.py, the least work any pure-Python
server does).  backtracweb's interface = asgi is measured against the ASGI
servers, uvicorn and daphne, on an async view (tiny-async); their WebSocket
measurements are bench/wsload.py's (bench/run --websocket).

Run it through bench/run, which prepares bench/.venv and wrk first:

    bench/run                     # full: 3 rounds of 5 s per test (about 22 minutes)
    bench/run --quick             # smoke test: 1 round of 3 s
    bench/run --only backtracweb,waitress --endpoints tiny,page

Each round starts every server in turn (A B C, A B C, ...), on a free port
of 127.0.0.1, pinned to one CPU; for each of its endpoints it warms up, then
runs wrk pinned to another CPU, sampling the server's resident memory; then
it stops the server by its PID.  A measurement disturbed by other processes
(more than --max-noise of a CPU) is repeated, within --retry-budget seconds
for the whole run.  The report gives medians over the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import http.client
import json
import os
import platform
import random
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SITE = BENCH / "site"
STATIC = SITE / "static"
WORK = BENCH / ".work"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent  # the virtualenv's bin/
TAC = BENCH / "servers" / "twisted_plain.tac"
PACE = BENCH / "pace.lua"
FLOOR = BENCH / "servers" / "floor.py"

THREADS = 10  # the pool size every server gets, unless its description says otherwise
# wrk has one CPU (one thread, pinned).  When it uses this much of it, it is
# the busy side: req/s is then what wrk can take rather than what the server
# can give (a fast server on the 1 MB file), and on loopback the kernel also
# charges wrk with part of the server's sending: what the server queued is
# transmitted as wrk's reads open the window, inside those reads (perf: a
# third of wrk's CPU in tcp_write_xmit on backtracweb's 1 MB file, 7% on
# gunicorn's), so the server's CPU/req drops too.  The report marks such
# rows; the paced endpoints compare servers at one load instead.
CLIENT_BOUND = 0.90
FILES = {"file-10k.bin": 10 * 1024, "file-1m.bin": 1024 * 1024}


# -- endpoints -------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    name: str
    title: str
    connections: int
    size: int | None = None  # expected body size, checked before measuring
    reference: str = "backtracweb"  # the server the others are compared with
    close: bool = False  # a new connection for every request (wrk sends Connection: close)
    # Paced: each connection waits this many ms before each request (bench/pace.lua), so every
    # server gets about the same load, below what any of them or wrk can take; the servers are
    # then compared by CPU/req, not req/s (see CLIENT_BOUND).
    pause_ms: int = 0

    @property
    def load(self) -> tuple[int, bool, int]:
        """What wrk does: two endpoints with one path and one load are measured once."""
        return self.connections, self.close, self.pause_ms


ENDPOINTS = [
    Endpoint("tiny", "GET /tiny: a few bytes of text from a Django view", 10),
    Endpoint("page", "GET /page: a ~2 KB page rendered from a Django template", 10),
    Endpoint("io", "GET /io: a view that sleeps 50 ms (IO-bound); pool of 10, 50 clients", 50),
    Endpoint("io-c10", "GET /io: the same IO-bound view with as many clients as threads", 10),
    Endpoint("static-10k", "A 10 KB static file, served by the server itself", 10, FILES["file-10k.bin"]),
    Endpoint("static-1m", "A 1 MB static file, served by the server itself", 10, FILES["file-1m.bin"]),
    Endpoint("static-1m-paced", "The same 1 MB file at the same load for every server (each of the "
             "10 connections waits 10 ms before each request: about 850 req/s, below what the servers "
             "and wrk can take), compared by the server's CPU per request", 10, FILES["file-1m.bin"],
             pause_ms=10),
    Endpoint("whitenoise-10k", "A 10 KB file sent by the application (WhiteNoise middleware)", 10,
             FILES["file-10k.bin"]),
    Endpoint("whitenoise-1m", "A 1 MB file sent by the application (WhiteNoise middleware)", 10,
             FILES["file-1m.bin"]),
    Endpoint("whitenoise-1m-paced", "The same file sent by WhiteNoise at the same load for every "
             "server (as static-1m-paced), compared by the server's CPU per request", 10,
             FILES["file-1m.bin"], pause_ms=10),
    Endpoint("tiny-logged", "GET /tiny with an access line per request, as each server ships: "
             "backtracweb's default [log] access_log = - and twistd web's own into twistd's log, "
             "gunicorn's to a file", 10, reference="backtracweb-logged"),
    Endpoint("tiny-2cpu", "GET /tiny using both CPUs: servers and wrk not pinned, 20 clients", 20,
             reference="backtracweb-2w"),
    Endpoint("tiny-2cpu-close", "the same with a new connection for every request "
             "(Connection: close), as from a proxy without keep-alive", 20,
             reference="backtracweb-2w", close=True),
    Endpoint("tiny-async", "GET /tiny-async: the same few bytes from an async Django view, through "
             "Django's ASGI handler on each ASGI server's event loop", 10,
             reference="backtracweb-asgi"),
]
ENDPOINT_BY_NAME = {e.name: e for e in ENDPOINTS}

APP_PATHS = {"tiny": "/tiny", "page": "/page", "io": "/io", "io-c10": "/io",
             "whitenoise-10k": "/whitenoise/file-10k.bin",
             "whitenoise-1m": "/whitenoise/file-1m.bin"}
# The endpoints with an in-process ceiling, and bench/inprocess.py's arguments
# for it: Django's WSGI handler, or with --asgi its ASGI handler.
CEILINGS = {"tiny": ["--path", "/tiny"], "page": ["--path", "/page"],
            "tiny-async": ["--asgi", "--path", "/tiny-async"]}


# -- servers ---------------------------------------------------------------

@dataclass
class Server:
    """
    How to start one server.  C{paths} maps each endpoint it takes part in
    to the URL path it serves it at; C{notes} maps an endpoint to how the
    server serves it, where that differs from the other servers.
    """

    name: str
    description: str
    paths: dict[str, str]
    daemon: bool  # twistd daemonizes: its PID comes from the pidfile
    notes: dict[str, str] = field(default_factory=dict)
    pinned: bool = True  # False: server and wrk share every CPU (the multi-process servers)
    # The ASGI application (module:attribute) of an ASGI server, None for a WSGI one;
    # bench/wsload.py gives them its WebSocket echo instead.
    asgi: str | None = None

    def command(self, port: int, files: dict[str, Path]) -> tuple[list[str], dict[str, str]]:
        """The command line (without the taskset prefix) and extra environment."""
        env = {"PYTHONPATH": str(SITE), "DJANGO_SETTINGS_MODULE": "benchsite.settings"}
        twistd = [str(BIN / "twistd"), "--pidfile", str(files["pid"]), "--logfile", str(files["log"])]
        bind = f"127.0.0.1:{port}"
        listen = f"tcp:{port}:interface=127.0.0.1"
        wsgi = "benchsite.wsgi:application"
        if self.name.startswith("backtracweb"):
            workers = 2 if self.name == "backtracweb-2w" else 1
            access_log = "-" if self.name == "backtracweb-logged" else "off"
            files["ini"].write_text(backtracweb_ini(port, workers, access_log, self.asgi))
            return [*twistd, "backtracweb", "-c", str(files["ini"])], {}
        # benchsite.asgi's own settings (without WhiteNoise's sync-only
        # middleware), which the WSGI servers' environment would override.
        asgi_env = {**env, "DJANGO_SETTINGS_MODULE": ASGI_SETTINGS}
        if self.name.startswith("uvicorn"):
            # --workers 1 runs the server in this process, without a
            # supervisor; --loop asyncio, or uvicorn takes uvloop when it is
            # installed (uvicorn-uvloop asks for it).  --log-level warning:
            # --no-access-log leaves the lines it logs for each WebSocket
            # opened and closed (its access log for them).
            loop = "uvloop" if self.name == "uvicorn-uvloop" else "asyncio"
            ws = "wsproto" if self.name == "uvicorn-wsproto" else "websockets"
            return [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                    "--http", "httptools", "--loop", loop, "--ws", ws, "--no-access-log",
                    "--log-level", "warning", "--timeout-graceful-shutdown", "5", self.asgi], asgi_env
        if self.name == "daphne":
            # -v 0: at the default verbosity (1), daphne writes an access line
            # per request to stdout.
            return [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "-v", "0", self.asgi], asgi_env
        if self.name == "twistd-web-wsgi":
            return [*twistd, "web", "--listen", listen, "--wsgi", "benchsite.wsgi.application"], env
        if self.name == "twisted-wsgi-nolog":
            return [*twistd, "-y", str(TAC)], {**env, "BENCH_PORT": str(port), "BENCH_ROOT": "wsgi",
                                                "BENCH_THREADS": str(THREADS), "BENCH_ACCESS_LOG": "off"}
        if self.name == "twistd-web-path":
            return [*twistd, "web", "--listen", listen, "--path", str(STATIC)], {}
        if self.name == "twisted-static-nolog":
            return [*twistd, "-y", str(TAC)], {"BENCH_PORT": str(port), "BENCH_ROOT": "static",
                                               "BENCH_STATIC": str(STATIC), "BENCH_ACCESS_LOG": "off"}
        gunicorn = [str(BIN / "gunicorn"), "--bind", bind, "--workers", "1", "--graceful-timeout", "5",
                    "--pythonpath", str(SITE)]
        if self.name == "gunicorn-sync":
            return [*gunicorn, "--worker-class", "sync", wsgi], {}
        if self.name == "gunicorn-sync-logged":
            return [*gunicorn, "--worker-class", "sync", "--access-logfile", f"{files['log']}.access",
                    wsgi], {}
        if self.name == "gunicorn-gthread":
            return [*gunicorn, "--worker-class", "gthread", "--threads", str(THREADS), wsgi], {}
        if self.name == "gunicorn-gthread-2w":
            gunicorn[gunicorn.index("--workers") + 1] = "2"
            return [*gunicorn, "--worker-class", "gthread", "--threads", str(THREADS), wsgi], {}
        if self.name == "waitress":
            return [str(BIN / "waitress-serve"), f"--listen={bind}", f"--threads={THREADS}", wsgi], env
        if self.name == "uwsgi":
            # One process and no master: the process taskset starts is the
            # worker, and SIGTERM to it is a graceful stop.  --route-run
            # fixcl: gives the responses Django sends without a length (all
            # but WhiteNoise's) a Content-Length: on --http11-socket, uWSGI
            # keeps the connection open after a response of unknown length,
            # so the client waits for the close until --socket-timeout (4 s).
            # --tcp-nodelay: without it, a 10 KB file on a reused connection
            # (head by write, body by sendfile) stalls 40 ms on Nagle and the
            # client's delayed ACK.
            return [str(BIN / "uwsgi"), "--http11-socket", bind, "--processes", "1",
                    "--threads", str(THREADS), "--enable-threads", "--single-interpreter",
                    "--disable-logging", "--tcp-nodelay", "--route-run", "fixcl:",
                    "--static-map", f"/static={STATIC}", "--pythonpath", str(SITE),
                    "--module", wsgi, "--need-app"], {}
        if self.name == "granian":
            return [str(BIN / "granian"), "--interface", "wsgi", "--http", "1", "--host", "127.0.0.1",
                    "--port", str(port), "--workers", "1", "--blocking-threads", str(THREADS),
                    "--no-ws", "--no-access-log", "--static-path-route", "/static",
                    "--static-path-mount", str(STATIC), wsgi], env
        if self.name == "floor":
            return [str(BIN / "python"), str(FLOOR), "--port", str(port), "--app", wsgi], env
        raise AssertionError(self.name)


def backtracweb_ini(port: int, workers: int = 1, access_log: str = "off", asgi: str | None = None) -> str:
    """
    backtracweb's configuration file; with C{asgi}, the same but for
    C{[app] interface = asgi}: the Django loader with benchsite.asgi's
    settings for Django's own ASGI handler, or any other application
    (bench/wsload.py's echo) by name.
    """
    interface = "" if asgi is None else "interface = asgi\n"
    if asgi is None or asgi == ASGI_APP:
        loader = "django"
        app = f"DJANGO_SETTINGS_MODULE = {'benchsite.settings' if asgi is None else ASGI_SETTINGS}"
    else:
        loader, app = "wsgi", f"application = {asgi}"
    return f"""\
# Generated by bench/harness.py for one benchmark run.
[server]
port = {port}
interface = 127.0.0.1
graceful_timeout = 5
workers = {workers}

[threadpool]
min = {THREADS}
max = {THREADS}

[app]
{interface}loader = {loader}
pythonpath = {SITE}
{app}

[log]
access_log = {access_log}

[static]
/static = {STATIC}
"""


def _app(extra: dict[str, str] | None = None, skip: tuple[str, ...] = ()) -> dict[str, str]:
    paths = {k: v for k, v in APP_PATHS.items() if k not in skip}
    paths.update(extra or {})
    return paths


_STATIC_PATHS = {"static-10k": "/static/file-10k.bin", "static-1m": "/static/file-1m.bin"}
_ROOT_PATHS = {"static-10k": "/file-10k.bin", "static-1m": "/file-1m.bin"}
_WHITENOISE_AS_STATIC = {"static-10k": "/whitenoise/file-10k.bin", "static-1m": "/whitenoise/file-1m.bin"}
_TWO_CPUS = {"tiny-2cpu": "/tiny", "tiny-2cpu-close": "/tiny"}
# The 1 MB file at one load, for the pairs the targets compare (each paced
# test adds about 20 s to a full run); add a server's paths here to pace it too.
_PACED = {
    "backtracweb": {"static-1m-paced": "/static/file-1m.bin",
                    "whitenoise-1m-paced": "/whitenoise/file-1m.bin"},
    "gunicorn-gthread": {"static-1m-paced": "/whitenoise/file-1m.bin",
                         "whitenoise-1m-paced": "/whitenoise/file-1m.bin"},
}
# The ASGI servers serve the site through Django's ASGI handler, on the async
# view alone: Django runs a sync view (every other endpoint's) in a thread of
# its own (sync_to_async), which would measure that hand-over more than the
# server.  bench/wsload.py measures their WebSockets.
ASGI_APP = "benchsite.asgi:application"
ASGI_SETTINGS = "benchsite.settings_asgi"
_ASYNC = {"tiny-async": "/tiny-async"}

SERVERS = [
    Server("backtracweb", f"twistd backtracweb, daemonized; [threadpool] min = max = {THREADS}, "
           "[log] access_log = off, [static] /static = bench/site/static",
           _app({**_STATIC_PATHS, **_PACED["backtracweb"]}), daemon=True,
           notes={"static-10k": "[static] mapping", "static-1m": "[static] mapping",
                  "static-1m-paced": "[static] mapping"}),
    Server("twistd-web-wsgi", "twistd web --wsgi, daemonized: Twisted's own, as shipped "
           "(access log on, into twistd's log; its pool is 5 to 20 threads, which no option sets)",
           _app({"tiny-logged": "/tiny"}, skip=("io", "io-c10")), daemon=True),
    Server("twisted-wsgi-nolog", "the same Site and WSGIResource as twistd web --wsgi, from "
           f"bench/servers/twisted_plain.tac: pool {THREADS} threads, access log off",
           _app(skip=("whitenoise-10k", "whitenoise-1m")), daemon=True),
    Server("twistd-web-path", "twistd web --path bench/site/static, daemonized: Twisted's plain "
           "static.File (access log on, into twistd's log)",
           dict(_ROOT_PATHS), daemon=True,
           notes={"static-10k": "static.File, log on", "static-1m": "static.File, log on"}),
    Server("twisted-static-nolog", "the same static.File from bench/servers/twisted_plain.tac, "
           "access log off", dict(_ROOT_PATHS), daemon=True,
           notes={"static-10k": "static.File, log off", "static-1m": "static.File, log off"}),
    Server("gunicorn-sync", "gunicorn, 1 sync worker: one request at a time and no keep-alive "
           "(so not run on /io, where it would be capped at 20 req/s)",
           _app(_WHITENOISE_AS_STATIC, skip=("io", "io-c10")), daemon=False,
           notes={"static-10k": "WhiteNoise, sendfile", "static-1m": "WhiteNoise, sendfile"}),
    Server("backtracweb-logged", "twistd backtracweb, the same file but for [log] access_log = - "
           "(the default: a line per request into twistd's log)", {"tiny-logged": "/tiny"},
           daemon=True),
    Server("gunicorn-sync-logged", "gunicorn, 1 sync worker as above, with --access-logfile "
           "(a file)", {"tiny-logged": "/tiny"}, daemon=False),
    Server("gunicorn-gthread", f"gunicorn, 1 gthread worker with {THREADS} threads",
           _app({**_WHITENOISE_AS_STATIC, **_PACED["gunicorn-gthread"]}),
           daemon=False,
           notes={"static-10k": "WhiteNoise, sendfile", "static-1m": "WhiteNoise, sendfile",
                  "static-1m-paced": "WhiteNoise, sendfile"}),
    Server("waitress", f"waitress-serve --threads={THREADS}", _app(), daemon=False),
    # The two that parse HTTP natively (C, Rust) and call the same Django
    # application; each serves static-* with its own static-file support.
    Server("uwsgi", f"uWSGI --http11-socket (its own HTTP/1.1 parser in C, keep-alive): one process "
           f"without a master, --threads {THREADS}, --disable-logging (no line per request), "
           "--tcp-nodelay, --route-run fixcl: (a Content-Length on Django's responses, without "
           "which a kept-alive connection hangs after each until --socket-timeout), "
           "--static-map /static=bench/site/static (sendfile). Not run on /io: a thread keeps "
           f"its keep-alive connection, so {THREADS} of the 50 clients are served and the other 40 "
           "wait (wrk would report the 10 alone)",
           _app(_STATIC_PATHS, skip=("io",)), daemon=False,
           notes={"static-10k": "--static-map", "static-1m": "--static-map"}),
    Server("granian", f"granian --interface wsgi --http 1 (its own HTTP parser in Rust): 1 worker "
           f"(plus granian's supervising process), --blocking-threads {THREADS} (the threads that "
           "run the application), --no-access-log, --no-ws, --static-path-mount "
           "bench/site/static at /static",
           _app(_STATIC_PATHS), daemon=False,
           notes={"static-10k": "--static-path-mount", "static-1m": "--static-path-mount"}),
    # The least work any pure-Python server does per request; only the fast
    # views: one thread would stall on /io, and it serves no files.
    Server("floor", "bench/servers/floor.py: not a server, the yardstick: one thread, the "
           "application called inline, no HTTP checks, no request bodies (the least work a "
           "pure-Python server does per request)",
           {name: APP_PATHS[name] for name in ("tiny", "page")}, daemon=False),
    # Both CPUs: [server] workers = 2 against one worker and gunicorn's two.
    Server("backtracweb-2w", f"twistd backtracweb with [server] workers = 2, each with "
           f"{THREADS} threads, not pinned", _TWO_CPUS, daemon=True, pinned=False),
    Server("backtracweb-1w", "twistd backtracweb as above (one process), not pinned",
           _TWO_CPUS, daemon=True, pinned=False),
    Server("gunicorn-gthread-2w", f"gunicorn, 2 gthread workers with {THREADS} threads each, "
           "not pinned", _TWO_CPUS, daemon=False, pinned=False),
    # ASGI: one process and one event loop each, asyncio's own (uvicorn-uvloop
    # apart), with Django's ASGI handler and benchsite.settings_asgi.
    Server("backtracweb-asgi", "twistd backtracweb, daemonized, the same file as backtracweb's but "
           "for [app] interface = asgi and the settings benchsite.settings_asgi (Twisted's asyncio "
           "reactor, which twistd backtracweb installs; WebSockets by wsproto)",
           dict(_ASYNC), daemon=True, asgi=ASGI_APP),
    Server("uvicorn", "uvicorn --http httptools --loop asyncio --ws websockets --no-access-log "
           "--log-level warning (no line per request or WebSocket), --workers 1 (one process, no "
           "supervisor)", dict(_ASYNC), daemon=False, asgi=ASGI_APP),
    Server("uvicorn-uvloop", "uvicorn as above but for --loop uvloop (what it takes when uvloop is "
           "installed, as with uvicorn[standard])", dict(_ASYNC), daemon=False, asgi=ASGI_APP),
    # For bench/wsload.py alone (no HTTP endpoint: its HTTP is uvicorn's):
    # uvicorn's WebSockets by wsproto, the library backtracweb's use.
    Server("uvicorn-wsproto", "uvicorn as above but for --ws wsproto (the WebSocket library "
           "backtracweb uses)", {}, daemon=False, asgi=ASGI_APP),
    Server("daphne", "daphne -v 0 (no access log; at its default verbosity a line per request goes "
           "to stdout): one process, on Twisted's asyncio reactor (WebSockets by autobahn)",
           dict(_ASYNC), daemon=False, asgi=ASGI_APP),
]
SERVER_BY_NAME = {s.name: s for s in SERVERS}


# -- processes -------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    """Whether C{pid} runs (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def process_tree(root: int) -> list[int]:
    """C{root} and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    """Samples the summed RSS of a process tree every 50 ms; keeps the peak."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.pids = process_tree(root)
        self.peak = rss_kib(self.pids)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pids))

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_kib(self.pids))
        return self.peak


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class StartError(Exception):
    pass


@dataclass
class Running:
    server: Server
    port: int
    pid: int
    command: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's PID, wait; then SIGKILL what is left of its tree, by PID."""
        tree = process_tree(self.pid) if alive(self.pid) else []
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None:
                if self.popen.poll() is not None:
                    break
            elif not alive(self.pid):
                break
            time.sleep(0.05)
        for pid in tree:
            if alive(pid):
                print(f"  {self.server.name}: pid {pid} still running; SIGKILL", file=sys.stderr)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.popen is not None:
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


RUNNING: list[Running] = []  # stopped on any exit


def stop_all() -> None:
    while RUNNING:
        RUNNING.pop().stop()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(server: Server, pin: list[str]) -> Running:
    port = free_port()
    stem = WORK / server.name
    files = {"pid": stem.with_suffix(".pid"), "log": stem.with_suffix(".log"),
             "ini": stem.with_suffix(".ini")}
    for old in [files["pid"], *WORK.glob(f"{server.name}.log*")]:
        old.unlink(missing_ok=True)
    command, extra_env = server.command(port, files)
    command = [*pin, *command]
    env = {**os.environ, **extra_env}
    if server.daemon:
        done = subprocess.run(command, env=env, cwd=WORK, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not files["pid"].exists():
            raise StartError(f"{server.name} did not start (exit {done.returncode}):\n"
                             f"{done.stdout}{done.stderr}\n{log_tail(files['log'])}")
        pid = int(files["pid"].read_text().strip())
        running = Running(server, port, pid, command, extra_env, files["log"])
    else:
        with open(files["log"], "wb") as log:
            popen = subprocess.Popen(command, env=env, cwd=WORK, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        running = Running(server, port, popen.pid, command, extra_env, files["log"], popen)
    RUNNING.append(running)
    ready_path = next(iter(server.paths.values()))
    deadline = time.monotonic() + 60
    while True:
        if not alive(running.pid):
            RUNNING.remove(running)
            raise StartError(f"{server.name} exited while starting:\n{log_tail(files['log'])}")
        try:
            status, _ = http_get(port, ready_path, timeout=2)
            if status == 200:
                return running
        except OSError:
            pass
        if time.monotonic() > deadline:
            RUNNING.remove(running)
            running.stop()
            raise StartError(f"{server.name} did not answer {ready_path} within 60 s:\n"
                             f"{log_tail(files['log'])}")
        time.sleep(0.05)


# -- wrk -------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
    return float(number) * _UNITS[unit]


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: int
    non_2xx: int
    rss_kib: int
    others_cpu: float  # CPUs' worth of time other processes used during the run
    cpu_us: float = float("nan")  # the server's CPU time (user + system) per request, in µs
    wrk_cpu: float = float("nan")  # CPUs' worth of time wrk used (user + system), of its one CPU


def parse_wrk(output: str) -> dict:
    result = {"socket_errors": 0, "non_2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not m:
        raise ValueError(f"no Requests/sec in wrk's output:\n{output}")
    result["rps"] = float(m.group(1))
    result["requests"] = int(re.search(r"(\d+) requests in", output).group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+[a-z]+)", output, re.M)
        result[key] = _ms(m.group(1)) if m else float("nan")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        result["socket_errors"] = sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        result["non_2xx"] = int(m.group(1))
    return result


def wrk_command(pin: list[str], connections: int, seconds: int, url: str,
                close: bool = False, pause_ms: int = 0) -> list[str]:
    header = ["-H", "Connection: close"] if close else []
    script = ["-s", str(PACE)] if pause_ms else []
    script_args = ["--", str(pause_ms)] if pause_ms else []
    return [*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "2s",
            *header, *script, url, *script_args]


def busy_ticks() -> int:
    """Clock ticks that every CPU has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle  # user..steal; guest time is already in user


def process_ticks(pids: list[int]) -> int:
    """Clock ticks the processes have used (utime + stime)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


TICK = os.sysconf("SC_CLK_TCK")


def measure(running: Running, path: str, endpoint: Endpoint, args, wrk_pin: list[str]) -> Sample:
    """
    Warm up, then run wrk while sampling the server's memory and the CPU
    time that processes other than the server, wrk and this harness took
    (another workload on a shared machine: the noise to read the numbers
    against).
    """
    url = f"http://127.0.0.1:{running.port}{path}"
    if args.warmup > 0:
        subprocess.run(wrk_command(wrk_pin, endpoint.connections, args.warmup, url, endpoint.close,
                                   endpoint.pause_ms),
                       capture_output=True, text=True, check=True)
        time.sleep(settle(endpoint))
    sampler = RssSampler(running.pid)
    ours = [*sampler.pids, os.getpid()]
    before_server = process_ticks(sampler.pids)
    before_all, before_ours, t = busy_ticks(), process_ticks(ours), time.monotonic()
    sampler.start()
    try:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk = subprocess.run(wrk_command(wrk_pin, endpoint.connections, args.duration, url,
                                         endpoint.close, endpoint.pause_ms),
                             capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, now reaped
    finally:
        peak = sampler.stop()
    elapsed = time.monotonic() - t
    # The server's own CPU time is read before the settling pause, so that
    # it covers what wrk measured (give or take the requests in flight).
    server_seconds = (process_ticks(sampler.pids) - before_server) / TICK
    wrk_seconds = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    others = ((busy_ticks() - before_all) - (process_ticks(ours) - before_ours)) / TICK - wrk_seconds
    out, err = wrk.stdout, wrk.stderr
    time.sleep(settle(endpoint))  # let requests still queued in the server finish
    if wrk.returncode != 0:
        raise subprocess.CalledProcessError(wrk.returncode, wrk.args, out, err)
    parsed = parse_wrk(out)
    cpu_us = server_seconds / parsed["requests"] * 1e6 if parsed["requests"] else float("nan")
    return Sample(rss_kib=peak, others_cpu=max(0.0, others / elapsed), cpu_us=cpu_us,
                  wrk_cpu=wrk_seconds / elapsed, **parsed)


def settle(endpoint: Endpoint) -> float:
    """Seconds to wait after wrk: long enough for requests left queued to finish."""
    return 1.0 if endpoint.name.startswith("io") else 0.2


def check_endpoint(running: Running, path: str, endpoint: Endpoint) -> None:
    status, body = http_get(running.port, path, timeout=10)
    if status != 200:
        raise StartError(f"{running.server.name} answered {status} for {path}")
    if endpoint.size is not None and len(body) != endpoint.size:
        raise StartError(f"{running.server.name} sent {len(body)} bytes for {path}, "
                         f"expected {endpoint.size}")


# -- the in-process ceiling ------------------------------------------------

@dataclass
class CeilingSample:
    rps: float
    others_cpu: float


def ceiling(endpoint: str, seconds: int, pin: list[str]) -> CeilingSample:
    before_all, before_self, t = busy_ticks(), process_ticks([os.getpid()]), time.monotonic()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([*pin, sys.executable, str(BENCH / "inprocess.py"), *CEILINGS[endpoint],
                           "--seconds", str(seconds)], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = time.monotonic() - t
    child = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    others = ((busy_ticks() - before_all) - (process_ticks([os.getpid()]) - before_self)) / TICK - child
    return CeilingSample(json.loads(done.stdout.strip().splitlines()[-1])["rps"],
                         max(0.0, others / elapsed))


class Retrier:
    """
    Measures again when other processes took more than C{max_noise} of a CPU
    during a measurement (up to twice, within a time budget for the whole
    run), and keeps the least disturbed attempt.
    """

    def __init__(self, max_noise: float, budget: float) -> None:
        self.max_noise = max_noise
        self.budget = budget
        self.spent = 0.0
        self.retries = 0
        self.still_noisy = 0

    def __call__(self, attempt):
        best = attempt()
        tries = 1
        while best.others_cpu > self.max_noise and tries < 3 and self.spent < self.budget:
            t = time.monotonic()
            print(f"    (others took {best.others_cpu:.0%} of a CPU; measuring again)", file=sys.stderr)
            time.sleep(2)
            again = attempt()
            self.spent += time.monotonic() - t
            self.retries += 1
            tries += 1
            if again.others_cpu < best.others_cpu:
                best = again
        if best.others_cpu > self.max_noise:
            self.still_noisy += 1
        return best


# -- setup -----------------------------------------------------------------

def make_static_files() -> None:
    """The static files, the same bytes every time (seeded), written once."""
    STATIC.mkdir(parents=True, exist_ok=True)
    for name, size in FILES.items():
        path = STATIC / name
        data = random.Random(f"backtracweb-bench-{name}").randbytes(size)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)


def cpus() -> tuple[list[str], list[str], list[str], str]:
    """
    taskset prefixes for the servers, for wrk, and for both when they share
    every CPU (the servers that are not pinned), and a description.
    """
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return [], [], [], f"not pinned: only CPU {available} available"
    server_cpu, wrk_cpu = available[0], available[1]
    os.sched_setaffinity(0, {wrk_cpu})  # the harness itself stays off the server's CPU
    # Children inherit the harness's affinity: the unpinned ones get every CPU back.
    every = ["taskset", "-c", ",".join(map(str, available))]
    return (["taskset", "-c", str(server_cpu)], ["taskset", "-c", str(wrk_cpu)], every,
            f"server on CPU {server_cpu}, wrk (and the harness) on CPU {wrk_cpu}")


def machine() -> dict[str, str]:
    info = {}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        info["CPU"] = m.group(1).strip() if m else platform.processor() or "unknown"
    except OSError:
        info["CPU"] = "unknown"
    info["cores"] = str(os.cpu_count())
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        info["memory"] = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        info["memory"] = "unknown"
    info["kernel"] = f"{platform.system()} {platform.release()}"
    info["Python"] = platform.python_version()
    for package in ("backtracweb", "Twisted", "Django", "gunicorn", "waitress", "whitenoise", "uWSGI",
                    "granian", "daphne", "autobahn", "uvicorn", "httptools", "websockets", "uvloop",
                    "wsproto"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", ".",
                                ":!bench", ":!BENCHMARKS.md"],
                               capture_output=True, text=True, check=True).stdout.strip()
        info["backtracweb"] += f" (commit {head}{' + uncommitted changes' if dirty else ''})"
    except (OSError, subprocess.CalledProcessError):
        pass
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    info["wrk"] = (wrk.stdout + wrk.stderr).splitlines()[0].split(" Copyright")[0] if (
        wrk.stdout + wrk.stderr) else "unknown"
    return info


# -- report ----------------------------------------------------------------

def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:.2f} ms" if x < 10 else f"{x:.0f} ms" if x >= 100 else f"{x:.1f} ms"


def fmt_us(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:,.0f} µs"


def fmt_share(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.0%}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}"


def summarize(samples: list[Sample]) -> dict:
    rps = [s.rps for s in samples]
    return {
        "rps": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
        "p50_ms": statistics.median(s.p50_ms for s in samples),
        "p99_ms": statistics.median(s.p99_ms for s in samples),
        "cpu_us": statistics.median(s.cpu_us for s in samples),
        "wrk_cpu": statistics.median(s.wrk_cpu for s in samples),
        "socket_errors": sum(s.socket_errors for s in samples),
        "non_2xx": sum(s.non_2xx for s in samples),
        "requests": sum(s.requests for s in samples),
        "rss_mib": max(s.rss_kib for s in samples) / 1024,
        "others_cpu": max(s.others_cpu for s in samples),
        "rounds": len(samples),
    }


TARGETS = [
    # (endpoint, peer or "ceiling", minimum ratio backtracweb/peer, what issue #4 or #11 asks)
    ("tiny", "waitress", 1.0, "tiny view: >= 1.0x waitress"),
    ("tiny", "gunicorn-sync", 1.3, "tiny view: >= 1.3x gunicorn sync"),
    ("tiny", "uwsgi", 1.0, "tiny view: >= 1.0x uWSGI (#11)"),
    ("tiny", "granian", 1.0, "tiny view: >= 1.0x granian (#11)"),
    ("page", "ceiling", 0.9, "template page: >= 0.9x the in-process ceiling"),
    ("whitenoise-1m", "gunicorn-gthread", 1.0, "1 MB file sent by WhiteNoise: >= 1.0x gunicorn + WhiteNoise"),
    ("whitenoise-1m-paced", "gunicorn-gthread", 1.0,
     "1 MB file sent by WhiteNoise at one load: gunicorn's CPU/req >= 1.0x backtracweb's"),
    ("static-10k", "twistd-web-path", 1.2, "static 10 KB: >= 1.2x Twisted's plain static.File"),
    ("static-10k", "twisted-static-nolog", 2.0,
     "static 10 KB: >= 2x static.File with its access log off (#11)"),
    ("static-1m", "gunicorn-gthread", 1.0, "static 1 MB: >= 1.0x WhiteNoise under gunicorn"),
    ("static-1m-paced", "gunicorn-gthread", 1.0,
     "static 1 MB at one load: gunicorn + WhiteNoise's CPU/req >= 1.0x backtracweb's"),
    ("tiny-2cpu", "backtracweb-1w", 1.8, "2 workers on 2 CPUs: >= 1.8x one worker"),
    ("tiny-2cpu", "gunicorn-gthread-2w", 1.0, "2 workers on 2 CPUs: >= 1.0x gunicorn gthread, 2 workers"),
    ("tiny-async", "daphne", 1.5, "async view through ASGI: >= 1.5x daphne (#14)"),
    ("tiny-async", "uvicorn", 1.0, "async view through ASGI: >= 1.0x uvicorn (#14)"),
]


def report(results: dict, ceilings: dict, ceiling_noise: dict, retrier: Retrier, args, info: dict,
           commands: dict, pin_text: str, started: dt.datetime, elapsed: float) -> str:
    lines = []
    w = lines.append
    w(f"# backtracweb benchmark, {started:%Y-%m-%d %H:%M} UTC")
    w("")
    w(f"{args.rounds} round(s) of {args.duration} s per test (after a {args.warmup} s warm-up), "
      f"servers interleaved in each round; medians over the rounds. "
      f"Took {elapsed / 60:.1f} minutes. {pin_text}, except for the servers marked not "
      "pinned, which share every CPU with wrk.")
    w("")
    w("Columns: req/s is the median over the rounds (range: lowest to highest round); p50 and p99 "
      "are wrk's latency percentiles (median over the rounds); errors are wrk's socket errors "
      "(connect, read, write, timeout after 2 s) and non-2xx its responses with status >= 400, "
      "summed over the rounds; RSS is the peak resident memory of the server's process tree "
      "during a measurement (largest of the rounds); CPU/req is the server's own CPU time (user + "
      "system, all its processes) per request wrk counted (median over the rounds; only the "
      "server's own time, so another workload moves it less than req/s); wrk CPU is the share of "
      "its one CPU that wrk used (user + system, median over the rounds): at "
      f"{CLIENT_BOUND:.0%} or more, wrk is the busy side and req/s is what it can take, not what "
      "the server can give (marked *wrk-bound*); others' CPU is the CPU time that processes "
      "other than the server, wrk and the harness used during a measurement, in CPUs' worth "
      "(largest of the rounds; on a shared machine, the noise to read the row against); the last "
      "column is backtracweb's median req/s divided by this row's, or for a paced endpoint (one "
      "load for every server) this row's CPU/req divided by backtracweb's.")
    w("")
    w(f"A measurement during which other processes took more than {args.max_noise:.0%} of a CPU "
      f"was repeated (up to twice, keeping the least disturbed attempt, within {args.retry_budget:.0f} s "
      f"for the run): {retrier.retries} repeat(s), taking {retrier.spent:.0f} s; "
      f"{retrier.still_noisy} measurement(s) stayed above the limit.")
    busiest = max((s["others_cpu"] for rows in results.values() for s in rows.values()), default=0.0)
    if busiest > args.max_noise:
        w("")
        w(f"**Noise:** other processes used up to {busiest:.0%} of a CPU during some measurements "
          "(column others' CPU); on this machine's cores that takes time from the server or wrk, "
          "so trust the rows with little of it, or run again on a quiet machine.")
    for endpoint in ENDPOINTS:
        rows = results.get(endpoint.name)
        if not rows and endpoint.name not in ceilings:
            continue
        w("")
        w(f"## {endpoint.name}: {endpoint.title}")
        w("")
        close = ' -H "Connection: close"' if endpoint.close else ""
        paced = f" -s bench/pace.lua URL -- {endpoint.pause_ms}" if endpoint.pause_ms else ""
        w(f"`wrk -t1 -c{endpoint.connections} -d{args.duration}s --latency{close}{paced}`")
        w("")
        last = (f"CPU/req: this / {endpoint.reference}" if endpoint.pause_ms
                else f"{endpoint.reference} / this")
        w("| server | req/s | range | p50 | p99 | CPU/req | wrk CPU | errors | non-2xx | peak RSS "
          f"| others' CPU | {last} |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        ours = rows.get(endpoint.reference, {}) if rows else {}
        bound = []
        for name, s in (rows or {}).items():
            note = SERVER_BY_NAME[name].notes.get(endpoint.name)
            label = f"{name} ({note})" if note else name
            if s.get("wrk_cpu", 0.0) >= CLIENT_BOUND:
                label += " *wrk-bound*"
                bound.append(name)
            compared = (ratio(s.get("cpu_us"), ours.get("cpu_us")) if endpoint.pause_ms
                        else ratio(ours.get("rps"), s["rps"]))
            w(f"| {label} | {fmt_int(s['rps'])} | {fmt_int(s['rps_min'])}-{fmt_int(s['rps_max'])} | "
              f"{fmt_ms(s['p50_ms'])} | {fmt_ms(s['p99_ms'])} | {fmt_us(s.get('cpu_us'))} | "
              f"{fmt_share(s.get('wrk_cpu'))} | {s['socket_errors']} | {s['non_2xx']} | "
              f"{s['rss_mib']:.0f} MiB | {s['others_cpu']:.0%} | {compared} |")
        ours = ours.get("rps")
        if endpoint.name in ceilings:
            c = ceilings[endpoint.name]
            handler = "ASGI" if "--asgi" in CEILINGS[endpoint.name] else "WSGI"
            w(f"| in-process ceiling (Django's {handler} handler in a loop, no server) | "
              f"{fmt_int(statistics.median(c))} | {fmt_int(min(c))}-{fmt_int(max(c))} | | | | | | | | "
              f"{ceiling_noise.get(endpoint.name, 0.0):.0%} | "
              f"{ratio(ours, statistics.median(c))} |")
        if bound:
            w("")
            w(f"*wrk-bound*: wrk used {CLIENT_BOUND:.0%} or more of its CPU on {', '.join(bound)}; "
              "there req/s is what wrk can take, and part of the server's sending is charged to wrk "
              "(so the server's CPU/req is low too). Compare servers on such an endpoint by a paced "
              "measurement (the same load for each, by CPU/req) rather than by this table's req/s.")
        floor = rows.get("floor", {}).get("rps") if rows else None
        if ours and floor and endpoint.name in ceilings:
            w("")
            w(f"The floor (bench/servers/floor.py) reaches "
              f"{floor / statistics.median(ceilings[endpoint.name]):.2f} of the ceiling; "
              f"backtracweb reaches {ours / floor:.2f} of the floor.")
        if endpoint.name == "io" and ours:
            w("")
            w(f"Pool of {THREADS} threads and 50 ms per request: at most {THREADS / 0.05:,.0f} req/s; "
              f"backtracweb reaches {ours / (THREADS / 0.05):.2f} of that (issue #4 asks >= 0.95).")
    checks = []
    for endpoint, peer, minimum, text in TARGETS:
        rows = results.get(endpoint, {})
        mine = rows.get(ENDPOINT_BY_NAME[endpoint].reference, {})
        other = rows.get(peer, {})
        if ENDPOINT_BY_NAME[endpoint].pause_ms:  # the same load: the peer's CPU/req over ours
            ours, theirs = other.get("cpu_us"), mine.get("cpu_us")
        else:
            ours = mine.get("rps")
            theirs = (statistics.median(ceilings[endpoint]) if peer == "ceiling" and endpoint in ceilings
                      else other.get("rps"))
        if ours and theirs:
            got = ours / theirs
            verdict = "met" if got >= minimum else "not met"
            busy = [f"{n} {s['wrk_cpu']:.0%}" for n, s in ((ENDPOINT_BY_NAME[endpoint].reference, mine),
                                                          (peer, other))
                    if s.get("wrk_cpu", 0.0) >= CLIENT_BOUND]
            if busy:
                verdict += f" (wrk-bound: wrk CPU on {', '.join(busy)}; req/s measures wrk there)"
            checks.append(f"| {text} | {got:.2f} | {verdict} |")
    io_rows = results.get("io", {})
    if io_rows.get("backtracweb"):
        got = io_rows["backtracweb"]["rps"] / (THREADS / 0.05)
        checks.append(f"| IO-bound view: >= 0.95 x pool / 50 ms | {got:.2f} | "
                      f"{'met' if got >= 0.95 else 'not met'} |")
    c10 = results.get("io-c10", {}).get("backtracweb")
    if c10:
        checks.append(f"| IO-bound view, clients = pool: p99 under 60 ms | {c10['p99_ms']:.1f} ms | "
                      f"{'met' if c10['p99_ms'] < 60 else 'not met'} |")
    tiny = results.get("tiny", {}).get("backtracweb")
    if tiny and tiny.get("cpu_us") == tiny.get("cpu_us"):
        checks.append(f"| tiny view: CPU under 75 µs a request (#11) | {tiny['cpu_us']:.0f} µs | "
                      f"{'met' if tiny['cpu_us'] < 75 else 'not met'} |")
    if checks:
        w("")
        w("## Issue #4's, #11's and #14's targets, in this run")
        w("")
        w("| target | backtracweb, measured | |")
        w("|---|---:|---|")
        lines.extend(checks)
    lines.extend(machine_section(info))
    w("Each server was started as below (the port changes every time), pinned with "
      "`taskset`, and stopped by SIGTERM to its PID; wrk ran as")
    w("")
    w(f"    {shlex.join(wrk_command(['taskset', '-c', 'W'], 10, args.duration, 'http://127.0.0.1:PORT/PATH'))}")
    w("")
    w("with -c50 for /io, and `-s bench/pace.lua URL -- PAUSE_MS` for a paced endpoint. "
      "The in-process ceiling ran as "
      f"`taskset -c S python bench/inprocess.py --path /tiny --seconds {args.duration}` (with "
      "`--asgi --path /tiny-async` for tiny-async).")
    w("")
    lines.extend(server_commands(commands))
    shown = [(name, asgi) for name, asgi in (("backtracweb", None), ("backtracweb-asgi", ASGI_APP))
             if name in commands]
    for i, (name, asgi) in enumerate(shown):
        if i:
            w("")
        lines.extend(configuration_file(name, asgi))
    return "\n".join(lines).replace(str(REPO) + "/", "") + "\n"


def machine_section(info: dict) -> list[str]:
    """A report's Machine section, then its Commands heading (bench/wsload.py's too)."""
    return ["", "## Machine", "", *(f"- {key}: {value}" for key, value in info.items()),
            "", "## Commands", ""]


def server_commands(commands: dict) -> list[str]:
    """Each server's description and command line (with its environment), as reported."""
    lines = []
    for name, (command, env) in commands.items():
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        lines += [f"- {name}: {SERVER_BY_NAME[name].description}", "",
                  f"      {(shown + ' ') if shown else ''}{shlex.join(command)}", ""]
    return lines


def configuration_file(name: str, asgi: str | None) -> list[str]:
    """The INI file of a backtracweb server C{name}, as reported (any port)."""
    ini = backtracweb_ini(0, asgi=asgi).replace("port = 0", "port = PORT").rstrip()
    return [f"{name}'s configuration file:", "", "```ini", *ini.splitlines(), "```"]


# -- main ------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark backtracweb against Twisted's web server, gunicorn, waitress, uWSGI "
                    "and granian on the same Django project (bench/site), and its ASGI interface "
                    "against uvicorn and daphne. Results: stdout and bench/results/latest.md.",
        epilog="bench/run --memory [--help] runs issue #4's memory check instead (bench/memory.py); "
               "bench/run --websocket [--help] the WebSocket measurements (bench/wsload.py).",
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 round of 3 s per test, 1 s warm-up")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; --quick: 1)")
    parser.add_argument("--duration", type=int, help="seconds per measurement (default 5; --quick: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per test (default 1)")
    parser.add_argument("--only", help="comma-separated servers: " + ",".join(SERVER_BY_NAME))
    parser.add_argument("--endpoints", help="comma-separated endpoints: " + ",".join(ENDPOINT_BY_NAME))
    parser.add_argument("--no-ceiling", action="store_true", help="skip the in-process ceiling")
    parser.add_argument("--max-noise", type=float, default=0.10,
                        help="measure again (up to twice) when other processes took more than this "
                             "many CPUs during a measurement (default 0.10)")
    parser.add_argument("--retry-budget", type=float,
                        help="seconds the whole run may spend on measuring again (default 180; "
                             "--quick: 60)")
    parser.add_argument("--list", action="store_true", help="list the servers and endpoints, and exit")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 5)
    if args.retry_budget is None:
        args.retry_budget = 60.0 if args.quick else 180.0

    def pick(text, known, what):
        if not text:
            return list(known)
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
        return [n for n in known if n in names]

    args.servers = pick(args.only, SERVER_BY_NAME, "server(s)")
    args.endpoint_names = pick(args.endpoints, ENDPOINT_BY_NAME, "endpoint(s)")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SERVERS:
            print(f"{s.name:22} {', '.join(s.paths)}\n{'':22} {s.description}")
        for e in ENDPOINTS:
            print(f"{e.name:22} c{e.connections}: {e.title}")
        return 0
    WORK.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    make_static_files()
    server_pin, wrk_pin, every_cpu, pin_text = cpus()
    info = machine()  # now: the commit that bench/run has just installed

    # The plan: which server measures which endpoint, once per round; two
    # endpoints served at the same path (whitenoise-1m and static-1m under
    # gunicorn) are measured once.
    plan: list[tuple[Server, list[tuple[str, Endpoint]]]] = []
    for name in args.servers:
        server = SERVER_BY_NAME[name]
        tests, seen = [], set()
        for endpoint in ENDPOINTS:
            path = server.paths.get(endpoint.name)
            if endpoint.name in args.endpoint_names and path and (path, endpoint.load) not in seen:
                seen.add((path, endpoint.load))
                tests.append((path, endpoint))
        if tests:
            plan.append((server, tests))
    ceiling_paths = [] if args.no_ceiling else [e for e in CEILINGS if e in args.endpoint_names]
    n_tests = sum(len(t) for _, t in plan)
    if not n_tests and not ceiling_paths:
        print("nothing to run with these filters", file=sys.stderr)
        return 2
    estimate = args.rounds * (n_tests * (args.duration + args.warmup + 0.6) + len(plan) * 2
                              + len(ceiling_paths) * (args.duration + 1.5))
    print(f"bench: {len(plan)} server(s), {n_tests} test(s) per round, {args.rounds} round(s) of "
          f"{args.duration} s; about {estimate / 60:.0f} min. {pin_text}.", file=sys.stderr)

    samples: dict[tuple[str, str], list[Sample]] = {}
    ceilings: dict[str, list[float]] = {}
    ceiling_noise: dict[str, float] = {}
    retrier = Retrier(args.max_noise, args.retry_budget)
    commands: dict[str, tuple[list[str], dict]] = {}
    failures: list[str] = []
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}", file=sys.stderr)
            for name in ceiling_paths:
                got = retrier(lambda: ceiling(name, args.duration, server_pin))
                ceilings.setdefault(name, []).append(got.rps)
                ceiling_noise[name] = max(ceiling_noise.get(name, 0.0), got.others_cpu)
                print(f"  in-process ceiling {name:16} {got.rps:10,.0f} req/s  others {got.others_cpu:.0%}",
                      file=sys.stderr)
            for server, tests in plan:
                try:
                    running = start(server, server_pin if server.pinned else every_cpu)
                except StartError as e:
                    failures.append(f"round {round_no}: {e}")
                    print(f"  {e}", file=sys.stderr)
                    continue
                commands[server.name] = ([a.replace(str(running.port), "PORT") for a in running.command],
                                         {k: v.replace(str(running.port), "PORT") for k, v in running.env.items()})
                try:
                    for path, endpoint in tests:
                        try:
                            check_endpoint(running, path, endpoint)
                            sample = retrier(lambda: measure(running, path, endpoint, args,
                                                             wrk_pin if server.pinned else every_cpu))
                        except (StartError, OSError, subprocess.CalledProcessError, ValueError) as e:
                            failures.append(f"round {round_no}: {server.name} {endpoint.name}: {e}")
                            print(f"  {server.name} {endpoint.name}: FAILED: {e}", file=sys.stderr)
                            continue
                        samples.setdefault((server.name, path, endpoint.load), []).append(sample)
                        print(f"  {server.name:20} {endpoint.name:15} {sample.rps:10,.0f} req/s  "
                              f"p99 {fmt_ms(sample.p99_ms):>9}  CPU/req {fmt_us(sample.cpu_us):>8}  "
                              f"wrk CPU {fmt_share(sample.wrk_cpu):>4}  "
                              f"errors {sample.socket_errors}  "
                              f"non-2xx {sample.non_2xx}  RSS {sample.rss_kib / 1024:.0f} MiB  "
                              f"others {sample.others_cpu:.0%}",
                              file=sys.stderr)
                finally:
                    RUNNING.remove(running)
                    running.stop()
    except KeyboardInterrupt:
        print("interrupted; stopping the servers", file=sys.stderr)
        stop_all()
        return 130
    finally:
        stop_all()
    elapsed = time.monotonic() - t0

    results: dict[str, dict[str, dict]] = {}
    for endpoint in ENDPOINTS:
        if endpoint.name not in args.endpoint_names:
            continue
        for name in args.servers:
            path = SERVER_BY_NAME[name].paths.get(endpoint.name)
            got = samples.get((name, path, endpoint.load))
            if got:
                results.setdefault(endpoint.name, {})[name] = summarize(got)
    text = report(results, ceilings, ceiling_noise, retrier, args, info, commands, pin_text,
                  started, elapsed)
    if failures:
        text += "\n## Failures\n\n" + "\n".join(f"- {f.splitlines()[0]}" for f in failures) + "\n"
    print(text)
    stamp = f"{started:%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}"
    for target in (RESULTS / "latest.md", RESULTS / f"{stamp}.md"):
        target.write_text(text)
    raw = {
        "started": started.isoformat(), "elapsed_s": elapsed, "args": sys.argv[1:],
        "machine": info, "summary": results, "ceilings": ceilings,
        "samples": {f"{s} {p} c{c}": [dataclasses.asdict(x) for x in v] for (s, p, c), v in samples.items()},
        "failures": failures,
        "retries": {"max_noise": args.max_noise, "budget_s": args.retry_budget,
                    "repeats": retrier.retries, "spent_s": retrier.spent,
                    "still_noisy": retrier.still_noisy},
    }
    for target in (RESULTS / "latest.json", RESULTS / f"{stamp}.json"):
        target.write_text(json.dumps(raw, indent=1))
    print(f"bench: wrote {RESULTS.relative_to(REPO)}/latest.md and .json, and {stamp}.md and .json",
          file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
