"""
The memory check of issue #4: backtracweb's resident memory after 200,000
requests must be within 5% of what it was after 20,000.  A leak grows with
every request; caches, the allocator's arenas and the thread stacks settle
in the first thousands.  Run it through bench/run, which prepares the venv:

    bench/run --memory                                  # /tiny, 20,000 then 200,000 requests
    bench/run --memory --endpoint page --requests 2000,20000

backtracweb runs alone, started and pinned as for the benchmark (same
configuration file), and wrk sends the requests in steps (-c10, stopped
after a given number of responses by bench/stop_after.lua).  The resident
memory (VmRSS) of the daemon is read after each step, once the server has
been idle for a second; the trajectory is printed, so that a leak (steady
growth) can be told from a one-time increase.  Exits 0 if the check passes,
1 if it fails, 2 if something else went wrong.  The result also goes to
bench/results/memory-latest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time

from harness import (
    BENCH, ENDPOINT_BY_NAME, RESULTS, SERVER_BY_NAME, WORK, StartError, check_endpoint, cpus,
    machine, make_static_files, parse_wrk, process_tree, rss_kib, start, stop_all,
)

SCRIPT = BENCH / "stop_after.lua"
LIMIT = 0.05  # issue #4: within 5%
STEPS = 10  # RSS readings between the first count and the second
MAX_SECONDS = 300  # for one step of requests
# backtracweb's endpoints, but for the paced ones (wrk here sends as fast as it can)
MEASURABLE = [e for e, endpoint in ENDPOINT_BY_NAME.items()
              if e in SERVER_BY_NAME["backtracweb"].paths and not endpoint.pause_ms]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run --memory",
        description="Issue #4's memory check: backtracweb's RSS after the second number of "
                    "requests must be within 5% of its RSS after the first.")
    parser.add_argument("--memory", action="store_true", help="(selects this check in bench/run)")
    parser.add_argument("--endpoint", default="tiny",
                        help="the endpoint to request: " + ", ".join(MEASURABLE) + " (default tiny)")
    parser.add_argument("--requests", default="20000,200000",
                        help="the two request counts, FIRST,SECOND (default 20000,200000)")
    args = parser.parse_args(argv)
    if args.endpoint not in MEASURABLE:
        parser.error(f"unknown endpoint {args.endpoint}")
    try:
        args.first, args.second = (int(n) for n in args.requests.split(","))
    except ValueError:
        parser.error("--requests takes two numbers, FIRST,SECOND")
    if not 0 < args.first < args.second:
        parser.error("--requests: expected 0 < FIRST < SECOND")
    return args


def send(port: int, path: str, count: int, connections: int, pin: list[str]) -> int:
    """Have wrk send about C{count} requests; how many it got answers to."""
    command = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{MAX_SECONDS}s", "--timeout", "2s",
               "-s", str(SCRIPT), f"http://127.0.0.1:{port}{path}", "--", str(count)]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The script stops wrk's one load thread after COUNT responses, but
        # wrk's main thread sleeps out the duration regardless: when only it
        # is left, SIGINT ends the sleep and it reports, as on Ctrl-C.
        # (It has one thread before it starts the load thread, too.)
        deadline = time.monotonic() + MAX_SECONDS
        started = False
        while wrk.poll() is None and time.monotonic() < deadline:
            try:
                threads = len(os.listdir(f"/proc/{wrk.pid}/task"))
            except FileNotFoundError:
                break  # exited meanwhile
            if threads > 1:
                started = True
            elif started:
                wrk.send_signal(signal.SIGINT)
                break
            time.sleep(0.005)
        out, err = wrk.communicate(timeout=30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    if wrk.returncode != 0:
        raise subprocess.CalledProcessError(wrk.returncode, command, out, err)
    result = parse_wrk(out)
    if result["socket_errors"] or result["non_2xx"]:
        raise StartError(f"wrk saw {result['socket_errors']} socket errors and "
                         f"{result['non_2xx']} error responses:\n{out}")
    return result["requests"]


def resident_kib(pid: int) -> int:
    time.sleep(1.0)  # idle: requests still in flight are done
    return rss_kib(process_tree(pid))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    WORK.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    make_static_files()
    server_pin, wrk_pin, _, pin_text = cpus()
    info = machine()
    server = SERVER_BY_NAME["backtracweb"]
    endpoint = ENDPOINT_BY_NAME[args.endpoint]
    path = server.paths[args.endpoint]
    started = dt.datetime.now(dt.timezone.utc)
    print(f"bench --memory: backtracweb, GET {path}, RSS after {args.first:,} and after "
          f"{args.second:,} requests. {pin_text}.", file=sys.stderr)
    readings: list[tuple[int, int]] = []  # (requests so far, RSS in KiB)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)  # so that the server is stopped too
    try:
        running = start(server, server_pin)
        check_endpoint(running, path, endpoint)
        sent = 0  # by wrk (the readiness and size checks add a few)
        targets = [args.first] + [args.first + (args.second - args.first) * i // STEPS
                                  for i in range(1, STEPS + 1)]
        for target in targets:
            sent += send(running.port, path, target - sent, endpoint.connections, wrk_pin)
            readings.append((sent, resident_kib(running.pid)))
            print(f"  {sent:>9,} requests: RSS {readings[-1][1] / 1024:7.1f} MiB", file=sys.stderr)
    except (StartError, subprocess.CalledProcessError, OSError) as e:
        print(f"bench --memory: failed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        stop_all()
    (first_n, first_rss), (last_n, last_rss) = readings[0], readings[-1]
    ratio = last_rss / first_rss
    passed = ratio <= 1 + LIMIT
    lines = [
        f"# backtracweb memory check, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"GET {path} ({endpoint.title}), wrk -t1 -c{endpoint.connections}; backtracweb configured "
        f"as for the benchmark. {pin_text}.",
        "",
        f"- RSS after {first_n:,} requests: {first_rss / 1024:.1f} MiB",
        f"- RSS after {last_n:,} requests: {last_rss / 1024:.1f} MiB",
        f"- ratio: {ratio:.3f} (issue #4: at most {1 + LIMIT:.2f}): "
        f"**{'passed' if passed else 'FAILED'}**",
        "",
        "| requests | RSS |",
        "|---:|---:|",
        *(f"| {n:,} | {kib / 1024:.1f} MiB |" for n, kib in readings),
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in info.items()),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "memory-latest.md").write_text(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
