"""
The WebSocket measurements of issue #14 (bench/run --websocket), on the
ASGI servers of bench/harness.py, each running bench/site/wsecho.py (an
echo, and the benchmark site for the rest):

- The echo: round trips a second with 50 clients, each sending a small text
  message and waiting for it to come back, again and again for the
  measurement's duration; and the server's CPU time per round trip.  Rounds
  are interleaved and the report gives medians, as the harness does for HTTP.
- Idle WebSockets: 1,000 opened and held against each server (one process),
  and the server's resident memory (VmRSS) once they are idle; issue #14
  asks under 100 MB for backtracweb-asgi.

    bench/run --websocket                                   # both, about 3 minutes
    bench/run --websocket --only backtracweb-asgi,uvicorn --rounds 5
    bench/run --websocket --idle 0                          # the echo alone

wrk cannot speak WebSocket, so this module is also the load generator: run
with --client, pinned to CPU 1 as wrk is, it is one process and one asyncio
loop of plain protocol callbacks, framing by hand (the client's frame is
built once, its mask too), so that it stays well below its CPU while the
server under test uses all of its own; its CPU share is reported, as wrk's
is, and a row where it reaches 90% is marked client-bound.  It offers no
compression (permessage-deflate), so no server compresses.  Results go to
stdout and bench/results/websocket-latest.md (and .json).  Exits 0 if the
run went through, 1 if a server failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

# --client runs without the harness (and imports nothing of it): it only
# needs the standard library.
BENCH = os.path.dirname(os.path.abspath(__file__))

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
CLIENT_BOUND = 0.90  # as wrk's in bench/harness.py
IDLE_LIMIT = 100_000_000  # issue #14: 1,000 idle WebSockets in under 100 MB of RSS
BATCH = 50  # idle WebSockets opened at once: a listen backlog (Twisted's is 50) is not overrun
WSECHO = "wsecho:application"
WS_SERVERS = ["backtracweb-asgi", "uvicorn", "uvicorn-uvloop", "uvicorn-wsproto", "daphne"]
REFERENCE = "backtracweb-asgi"
TARGET_PEER = "uvicorn"  # issue #14: backtracweb-asgi's round trips >= 1.0x uvicorn's


# -- the client (--client) -------------------------------------------------

class WebSocket(asyncio.Protocol):
    """
    One client connection: the opening handshake, then the same masked text
    frame sent again each time the server's echo of it is back.  Frames from
    the server are unmasked (RFC 6455 5.1) and, for a message this small,
    short; pings are answered, and a close or an unexpected frame ends the
    connection with an error.
    """

    def __init__(self, port: int, message: bytes, stats: "ClientStats") -> None:
        self.port = port
        self.message = message
        self.stats = stats
        self.key = base64.b64encode(os.urandom(16))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(message))
        self.frame = bytes([0x81, 0x80 | len(message)]) + mask + masked  # FIN, text, masked
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.opened = asyncio.get_running_loop().create_future()
        self.echoed: asyncio.Future | None = None  # set when one round trip is awaited
        self.closed = asyncio.get_running_loop().create_future()
        self.looping = False  # sending again as soon as the echo is back
        self.closing = False  # our close frame is sent: the server's is the answer, not an error
        self.sent_at = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        b"Sec-WebSocket-Version: 13\r\n\r\n" % (self.port, self.key))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.opened.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            del self.buffer[:end + 4]
            accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
            fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            if head[0].split()[1:2] != ["101"] or fields.get("sec-websocket-accept") != accept:
                self.fail(f"handshake refused: {head[0]!r}")
                return
            self.opened.set_result(None)
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            size, start = second & 0x7F, 2
            if size == 126:
                if len(self.buffer) < 4:
                    return
                size, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif size == 127:
                if len(self.buffer) < 10:
                    return
                size, start = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < start + size:
                return
            payload = bytes(self.buffer[start:start + size])
            del self.buffer[:start + size]
            opcode = first & 0x0F
            if opcode == 0x9:  # ping: a pong with the same payload
                self.send(0x8A, payload)
            elif opcode == 0x1 and first & 0x80 and not second & 0x80:
                self.received(payload)
            elif opcode == 0x8 and self.closing:
                self.transport.close()
                return
            elif opcode == 0x8:
                self.fail(f"closed by the server ({int.from_bytes(payload[:2], 'big') if payload else ''})")
                return
            elif opcode != 0xA:
                self.fail(f"unexpected frame {first:#04x} {second:#04x}")
                return

    def received(self, payload: bytes) -> None:
        now = time.perf_counter()
        if payload != self.message:
            self.fail(f"echoed {payload!r}, sent {self.message!r}")
            return
        if self.echoed is not None and not self.echoed.done():
            self.echoed.set_result(None)
        elif self.looping:
            stats = self.stats
            if now < stats.deadline:
                stats.latencies.append(now - self.sent_at)
                self.sent_at = now
                self.transport.write(self.frame)
            else:  # the measurement is over: this echo, in flight at the deadline, is not counted
                self.looping = False
                stats.running -= 1
                if not stats.running:
                    stats.done.set_result(None)

    def send(self, first: int, payload: bytes) -> None:
        mask = os.urandom(4)
        self.transport.write(bytes([first, 0x80 | len(payload)]) + mask
                             + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def start_loop(self) -> None:
        self.looping = True
        self.sent_at = time.perf_counter()
        self.transport.write(self.frame)

    async def round_trip(self) -> None:
        self.echoed = asyncio.get_running_loop().create_future()
        self.transport.write(self.frame)
        await self.echoed
        self.echoed = None

    async def close(self) -> None:
        """The closing handshake (1000), waiting a second at most for the server's side of it."""
        if self.transport.is_closing():
            return
        self.closing = True
        self.send(0x88, (1000).to_bytes(2, "big"))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 1.0)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        self.transport.close()

    def fail(self, reason: str) -> None:
        self.stats.errors.append(reason)
        for future in (self.opened, self.echoed, self.stats.done):
            if future is not None and not future.done():
                future.set_exception(ConnectionError(reason))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.looping or not self.opened.done() or (self.echoed and not self.echoed.done()):
            self.fail(f"connection lost ({exc or 'closed by the server'})")


@dataclass
class ClientStats:
    deadline: float = float("inf")
    latencies: list[float] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    running: int = 0
    done: asyncio.Future | None = None


async def open_all(port: int, count: int, stats: ClientStats) -> list[WebSocket]:
    """C{count} WebSockets, opened C{BATCH} at a time, each message its own (16 bytes)."""
    loop = asyncio.get_running_loop()
    sockets: list[WebSocket] = []
    for first in range(0, count, BATCH):
        batch = [WebSocket(port, b"client %04d ping" % (n % 10_000), stats)
                 for n in range(first, min(count, first + BATCH))]
        await asyncio.gather(*(loop.create_connection(lambda w=w: w, "127.0.0.1", port) for w in batch))
        await asyncio.gather(*(w.opened for w in batch))
        sockets.extend(batch)
    return sockets


async def client_echo(port: int, connections: int, seconds: float) -> dict:
    """Every connection sends, waits for the echo, sends again, until the deadline."""
    stats = ClientStats()
    sockets = await open_all(port, connections, stats)
    stats.done = asyncio.get_running_loop().create_future()
    stats.running = len(sockets)
    cpu, start = time.process_time(), time.perf_counter()
    stats.deadline = start + seconds
    for w in sockets:
        w.start_loop()
    await asyncio.wait_for(stats.done, seconds + 10)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    await asyncio.gather(*(w.close() for w in sockets))
    latencies = sorted(stats.latencies)
    # Round trips a second: those completed within the measurement, over its length.
    return {"round_trips": len(latencies), "seconds": seconds, "client_cpu": cpu / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else float("nan"),
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else float("nan"),
            "errors": len(stats.errors)}


async def client_idle(port: int, connections: int) -> dict:
    """
    Open the WebSockets and say so on stdout; hold them, idle, until a line
    comes on stdin; then one round trip on each (all still open?), and close.
    """
    stats = ClientStats()
    t = time.perf_counter()
    sockets = await open_all(port, connections, stats)
    print(json.dumps({"open": len(sockets), "seconds": time.perf_counter() - t}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    results = await asyncio.gather(*(w.round_trip() for w in sockets), return_exceptions=True)
    echoed = sum(1 for r in results if not isinstance(r, BaseException))
    await asyncio.gather(*(w.close() for w in sockets))
    return {"open": len(sockets), "echoed": echoed, "errors": len(stats.errors)}


def client_main(args: argparse.Namespace) -> int:
    # 1,000 sockets and then some: the soft limit up to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.client == "echo":
        result = asyncio.run(client_echo(args.port, args.connections, args.duration))
    else:
        result = asyncio.run(client_idle(args.port, args.connections))
    print(json.dumps(result), flush=True)
    return 0


# -- the measurements ------------------------------------------------------

def ws_server(name: str):
    """
    The harness's server, running the echo (which serves the site besides:
    the harness's readiness check asks for /tiny-async).
    """
    from harness import SERVER_BY_NAME

    return dataclasses.replace(SERVER_BY_NAME[name], asgi=WSECHO, paths={"tiny-async": "/tiny-async"})


def client_command(pin: list[str], mode: str, port: int, connections: int, seconds: float = 0) -> list[str]:
    return [*pin, sys.executable, os.path.join(BENCH, "wsload.py"), "--client", mode, "--port", str(port),
            "--connections", str(connections), "--duration", f"{seconds:g}"]


@dataclass
class EchoSample:
    rps: float  # round trips a second
    p50_ms: float
    p99_ms: float
    round_trips: int
    errors: int
    rss_kib: int
    others_cpu: float
    cpu_us: float  # the server's CPU time (user + system) per round trip
    client_cpu: float  # the client's share of its one CPU during the measurement


def measure_echo(running, args, pin: list[str]) -> EchoSample:
    """
    Warm up, then run the client while sampling the server's memory and CPU
    time, and other processes' CPU time, as bench/harness.py's measure does
    around wrk.
    """
    from harness import TICK, RssSampler, busy_ticks, process_ticks

    if args.warmup > 0:
        subprocess.run(client_command(pin, "echo", running.port, args.connections, args.warmup),
                       capture_output=True, text=True, check=True)
        time.sleep(0.2)
    sampler = RssSampler(running.pid)
    ours = [*sampler.pids, os.getpid()]
    before_server = process_ticks(sampler.pids)
    before_all, before_ours, t = busy_ticks(), process_ticks(ours), time.monotonic()
    sampler.start()
    try:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = subprocess.run(client_command(pin, "echo", running.port, args.connections, args.duration),
                                capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        peak = sampler.stop()
    elapsed = time.monotonic() - t
    # The server's CPU time covers the client's handshakes and closes too:
    # 50 of each, next to some 100,000 round trips.
    server_seconds = (process_ticks(sampler.pids) - before_server) / TICK
    client_seconds = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    others = ((busy_ticks() - before_all) - (process_ticks(ours) - before_ours)) / TICK - client_seconds
    time.sleep(0.2)
    if client.returncode != 0:
        raise subprocess.CalledProcessError(client.returncode, client.args, client.stdout, client.stderr)
    got = json.loads(client.stdout.strip().splitlines()[-1])
    trips = got["round_trips"]
    return EchoSample(rps=trips / got["seconds"], p50_ms=got["p50_ms"], p99_ms=got["p99_ms"],
                      round_trips=trips, errors=got["errors"], rss_kib=peak,
                      others_cpu=max(0.0, others / elapsed),
                      cpu_us=server_seconds / trips * 1e6 if trips else float("nan"),
                      client_cpu=got["client_cpu"])


@dataclass
class IdleSample:
    before_kib: int  # after a warm-up echo, its WebSockets closed
    idle_kib: int  # with the idle WebSockets open
    opened: int
    echoed: int  # of them, still answering after the reading
    open_seconds: float


def measure_idle(running, args, pin: list[str]) -> IdleSample:
    """
    RSS after a second's echo (so that the WebSocket code is loaded and has
    run), then with C{args.idle} WebSockets open and idle for 2 s; then each
    of them echoes once, to show that they were all still open.
    """
    from harness import StartError, process_tree, rss_kib

    subprocess.run(client_command(pin, "echo", running.port, args.connections, 1),
                   capture_output=True, text=True, check=True)
    time.sleep(1.0)
    before = rss_kib(process_tree(running.pid))
    client = subprocess.Popen(client_command(pin, "idle", running.port, args.idle), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = client.stdout.readline()
        if not line:
            raise StartError(f"the client could not open {args.idle} WebSockets:\n{client.stderr.read()}")
        opened = json.loads(line)
        time.sleep(2.0)  # idle: the handshakes' buffers are freed
        idle = rss_kib(process_tree(running.pid))
        out, err = client.communicate("go\n", timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    if client.returncode != 0:
        raise subprocess.CalledProcessError(client.returncode, client.args, out, err)
    got = json.loads(out.strip().splitlines()[-1])
    return IdleSample(before, idle, opened["open"], got["echoed"], opened["seconds"])


# -- the report ------------------------------------------------------------

def summarize(samples: list[EchoSample]) -> dict:
    rps = [s.rps for s in samples]
    return {
        "rps": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
        "p50_ms": statistics.median(s.p50_ms for s in samples),
        "p99_ms": statistics.median(s.p99_ms for s in samples),
        "cpu_us": statistics.median(s.cpu_us for s in samples),
        "client_cpu": statistics.median(s.client_cpu for s in samples),
        "errors": sum(s.errors for s in samples),
        "rss_mib": max(s.rss_kib for s in samples) / 1024,
        "others_cpu": max(s.others_cpu for s in samples),
        "rounds": len(samples),
    }


def report(echo: dict, idle: dict, args, info: dict, commands: dict, pin_text: str,
           started: dt.datetime, elapsed: float, retrier) -> str:
    from harness import (
        REPO, configuration_file, fmt_ms, fmt_share, fmt_us, machine_section, ratio,
        server_commands,
    )

    lines = []
    w = lines.append
    w(f"# backtracweb WebSocket measurements, {started:%Y-%m-%d %H:%M} UTC")
    w("")
    w(f"Took {elapsed / 60:.1f} minutes. {pin_text}. Each server runs bench/site/wsecho.py "
      "(`wsecho:application`): a plain ASGI WebSocket echo, and the benchmark site for the rest.")
    if echo:
        ours = echo.get(REFERENCE, {})
        w("")
        w(f"## WebSocket echo: {args.connections} clients, each sending a 16-byte text message and "
          "waiting for its echo, again and again")
        w("")
        w(f"{args.rounds} round(s) of {args.duration:g} s per server (after a {args.warmup:g} s warm-up), "
          "servers interleaved in each round; medians over the rounds. Columns as in the HTTP report: "
          "round trips/s (range: lowest to highest round), p50 and p99 of a round trip, CPU/round "
          "trip is the server's own CPU time (user + system) per round trip the client counted, "
          f"client CPU is the share of its one CPU that the client used (at {CLIENT_BOUND:.0%} or "
          "more it is the busy side: *client-bound*), errors are connections that failed (summed "
          "over the rounds), peak RSS is the server's during a measurement, others' CPU the CPU "
          f"time other processes took (largest of the rounds); the last two columns are {REFERENCE}'s "
          f"round trips/s over this row's, and this row's CPU/round trip over {REFERENCE}'s (which "
          "other work on the machine moves less).")
        w("")
        w(f"A measurement during which other processes took more than {args.max_noise:.0%} of a CPU "
          f"was repeated (up to twice, keeping the least disturbed attempt, within "
          f"{args.retry_budget:.0f} s for the run): {retrier.retries} repeat(s), taking "
          f"{retrier.spent:.0f} s; {retrier.still_noisy} measurement(s) stayed above the limit.")
        w("")
        w(f"| server | round trips/s | range | p50 | p99 | CPU/round trip | client CPU | errors | "
          f"peak RSS | others' CPU | {REFERENCE} / this | CPU/round trip: this / {REFERENCE} |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, s in echo.items():
            label = name + (" *client-bound*" if s["client_cpu"] >= CLIENT_BOUND else "")
            w(f"| {label} | {s['rps']:,.0f} | {s['rps_min']:,.0f}-{s['rps_max']:,.0f} | "
              f"{fmt_ms(s['p50_ms'])} | {fmt_ms(s['p99_ms'])} | {fmt_us(s['cpu_us'])} | "
              f"{fmt_share(s['client_cpu'])} | {s['errors']} | {s['rss_mib']:.0f} MiB | "
              f"{s['others_cpu']:.0%} | {ratio(ours.get('rps'), s['rps'])} | "
              f"{ratio(s['cpu_us'], ours.get('cpu_us'))} |")
    if idle:
        w("")
        w(f"## {args.idle:,} idle WebSockets")
        w("")
        w(f"Each server's RSS (VmRSS of its process tree) after a second of echo with "
          f"{args.connections} clients, once they have closed; then with {args.idle:,} WebSockets "
          f"open (opened {BATCH} at a time) and idle for 2 s; then each of them sent one message, "
          "to show that all were still open (column echoed).")
        w("")
        w("| server | RSS before | RSS, WebSockets open | per WebSocket | echoed | time to open them |")
        w("|---|---:|---:|---:|---:|---:|")
        for name, s in idle.items():
            per = (s.idle_kib - s.before_kib) / s.opened if s.opened else float("nan")
            w(f"| {name} | {s.before_kib / 1024:.1f} MiB | {s.idle_kib / 1024:.1f} MiB | "
              f"{per:.1f} KiB | {s.echoed:,} of {s.opened:,} | {s.open_seconds:.1f} s |")
    checks = []
    if REFERENCE in echo and TARGET_PEER in echo:
        got = echo[REFERENCE]["rps"] / echo[TARGET_PEER]["rps"]
        by_cpu = echo[TARGET_PEER]["cpu_us"] / echo[REFERENCE]["cpu_us"]
        checks.append(f"| WebSocket echo: round trips/s >= 1.0x {TARGET_PEER} (#14) | {got:.2f} | "
                      f"{'met' if got >= 1.0 else 'not met'} (by CPU/round trip: {TARGET_PEER}'s "
                      f"is {by_cpu:.2f}x {REFERENCE}'s) |")
    if REFERENCE in idle and args.idle >= 1000:  # the target is for 1,000
        s = idle[REFERENCE]
        checks.append(f"| {args.idle:,} idle WebSockets: RSS under 100 MB (#14) | "
                      f"{s.idle_kib * 1024 / 1e6:.1f} MB ({s.idle_kib / 1024:.1f} MiB) | "
                      f"{'met' if s.idle_kib * 1024 < IDLE_LIMIT and s.echoed == s.opened else 'not met'} |")
    if checks:
        w("")
        w("## Issue #14's targets, in this run")
        w("")
        w(f"| target | {REFERENCE}, measured | |")
        w("|---|---:|---|")
        lines.extend(checks)
    lines.extend(machine_section(info))
    w("Each server was started as below (the port changes every time), pinned with `taskset`, "
      "and stopped by SIGTERM to its PID; the client ran as")
    w("")
    client = client_command(["taskset", "-c", "C"], "echo", 0, args.connections, args.duration)
    w(f"    {shlex.join(client).replace('--port 0', '--port PORT')}")
    w("")
    lines.extend(server_commands(commands))
    if REFERENCE in commands:
        lines.extend(configuration_file(REFERENCE, WSECHO))
    if lines[-1] == "":
        lines.pop()
    return "\n".join(lines).replace(str(REPO) + "/", "") + "\n"


# -- main ------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run --websocket",
        description="Issue #14's WebSocket measurements: echo round trips a second with concurrent "
                    "clients, and the RSS of idle WebSockets held open, on backtracweb-asgi, uvicorn "
                    "and daphne. Results: stdout and bench/results/websocket-latest.md.")
    parser.add_argument("--websocket", action="store_true", help="(selects these measurements in bench/run)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the echo (default 3)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per echo measurement (default 5)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of warm-up per echo (default 1)")
    parser.add_argument("--connections", type=int, default=50, help="echo clients (default 50)")
    parser.add_argument("--idle", type=int, default=1000,
                        help="idle WebSockets held open against each server (default 1000; 0: none)")
    parser.add_argument("--only", help="comma-separated servers: " + ",".join(WS_SERVERS))
    parser.add_argument("--max-noise", type=float, default=0.10,
                        help="measure again (up to twice) when other processes took more than this "
                             "many CPUs during a measurement (default 0.10)")
    parser.add_argument("--retry-budget", type=float, default=60.0,
                        help="seconds the whole run may spend on measuring again (default 60)")
    # The load generator, started by the measurements (not through bench/run).
    parser.add_argument("--client", choices=("echo", "idle"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in (args.only or ",".join(WS_SERVERS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in WS_SERVERS]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}; known: {', '.join(WS_SERVERS)}")
    args.servers = [n for n in WS_SERVERS if n in names]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main(args)
    from harness import (
        RESULTS, RUNNING, WORK, Retrier, StartError, cpus, machine, make_static_files, start,
        stop_all,
    )

    WORK.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    make_static_files()
    server_pin, client_pin, _, pin_text = cpus()
    pin_text = pin_text.replace("wrk", "the client")
    info = machine()
    servers = [ws_server(name) for name in args.servers]
    estimate = len(servers) * (args.rounds * (args.duration + args.warmup + 3) + (8 if args.idle else 0))
    print(f"bench --websocket: {len(servers)} server(s), {args.rounds} round(s) of {args.duration:g} s "
          f"with {args.connections} clients, then {args.idle:,} idle WebSockets; about "
          f"{estimate / 60:.0f} min. {pin_text}.", file=sys.stderr)
    samples: dict[str, list[EchoSample]] = {}
    idle: dict[str, IdleSample] = {}
    commands: dict[str, tuple[list[str], dict]] = {}
    failures: list[str] = []
    retrier = Retrier(args.max_noise, args.retry_budget)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    def run(server, what, measure):
        """Start the server, measure, stop it; a failure is reported, not raised."""
        try:
            running = start(server, server_pin)
        except StartError as e:
            failures.append(f"{what}: {e}")
            print(f"  {e}", file=sys.stderr)
            return None
        commands[server.name] = ([a.replace(str(running.port), "PORT") for a in running.command],
                                 {k: v.replace(str(running.port), "PORT") for k, v in running.env.items()})
        try:
            return measure(running)
        except (StartError, OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired,
                ValueError) as e:
            failures.append(f"{what}: {server.name}: {e}")
            print(f"  {server.name} {what}: FAILED: {e}", file=sys.stderr)
            return None
        finally:
            RUNNING.remove(running)
            running.stop()

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for round_no in range(1, args.rounds + 1):
            print(f"echo, round {round_no}/{args.rounds}", file=sys.stderr)
            for server in servers:
                s = run(server, f"echo, round {round_no}",
                        lambda running: retrier(lambda: measure_echo(running, args, client_pin)))
                if s:
                    samples.setdefault(server.name, []).append(s)
                    print(f"  {server.name:18} {s.rps:10,.0f} round trips/s  p99 {s.p99_ms:7.2f} ms  "
                          f"CPU/round trip {s.cpu_us:5.0f} µs  client CPU {s.client_cpu:4.0%}  "
                          f"errors {s.errors}  RSS {s.rss_kib / 1024:.0f} MiB  others {s.others_cpu:.0%}",
                          file=sys.stderr)
        if args.idle:
            print(f"{args.idle:,} idle WebSockets", file=sys.stderr)
            for server in servers:
                s = run(server, "idle", lambda running: measure_idle(running, args, client_pin))
                if s:
                    idle[server.name] = s
                    print(f"  {server.name:18} RSS {s.before_kib / 1024:6.1f} MiB before, "
                          f"{s.idle_kib / 1024:6.1f} MiB with {s.opened:,} open; {s.echoed:,} echoed",
                          file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; stopping the servers", file=sys.stderr)
        stop_all()
        return 130
    finally:
        stop_all()
    elapsed = time.monotonic() - t0
    echo = {name: summarize(samples[name]) for name in args.servers if name in samples}
    text = report(echo, idle, args, info, commands, pin_text, started, elapsed, retrier)
    if failures:
        text += "\n## Failures\n\n" + "\n".join(f"- {f.splitlines()[0]}" for f in failures) + "\n"
    print(text)
    stamp = f"{started:%Y%m%d-%H%M%S}"
    for target in (RESULTS / "websocket-latest.md", RESULTS / f"websocket-{stamp}.md"):
        target.write_text(text)
    raw = {"started": started.isoformat(), "elapsed_s": elapsed, "args": sys.argv[1:], "machine": info,
           "echo": echo, "echo_samples": {n: [dataclasses.asdict(x) for x in v] for n, v in samples.items()},
           "idle": {n: dataclasses.asdict(s) for n, s in idle.items()}, "failures": failures}
    for target in (RESULTS / "websocket-latest.json", RESULTS / f"websocket-{stamp}.json"):
        target.write_text(json.dumps(raw, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
