"""
The in-process ceiling: the benchmark site's views called through Django's
WSGI handler in a loop, with no server and no socket, on one core.  What a
server reaches on the same view, divided by this, is the share of each
request's time that is Django's own; the rest is the server's.  With
--asgi, the same through Django's ASGI handler (benchsite.asgi), one request
after another on an asyncio loop, as an ASGI server's would run it.

    python bench/inprocess.py --path /tiny --seconds 5     # prints JSON
    python bench/inprocess.py --asgi --path /tiny-async --seconds 5
"""

import argparse
import asyncio
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

SITE = Path(__file__).resolve().parent / "site"


def base_environ(path: str) -> dict:
    """A GET request as a server on 127.0.0.1 would pass it to the application."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def base_scope(path: str) -> dict:
    """The same GET request as an ASGI server would pass it to the application."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


def run_asgi(args: argparse.Namespace) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchsite.settings_asgi"
    from benchsite.asgi import application

    template = base_scope(args.path)

    async def one() -> tuple[int, int]:
        """One request: its status and body size."""
        sent: list[dict] = []
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # Django then waits for http.disconnect, and cancels the wait
            # once the response is sent.
            await asyncio.get_running_loop().create_future()

        async def send(message: dict) -> None:
            sent.append(message)

        await application(dict(template), receive, send)
        return sent[0]["status"], sum(len(m.get("body", b"")) for m in sent[1:])

    async def hundred() -> None:
        for _ in range(100):
            await one()

    # Django's handler needs a running loop: one, for every request, entered
    # once a hundred requests, as the timing loop below runs them.
    loop = asyncio.new_event_loop()
    try:
        status, size = loop.run_until_complete(one())
        if status != 200:
            raise SystemExit(f"{args.path} answered {status}")
        time_requests(lambda: loop.run_until_complete(hundred()), args, size)
    finally:
        loop.close()


def time_requests(hundred: Callable[[], None], args: argparse.Namespace, size: int) -> None:
    """Run C{hundred} (a hundred requests) over and over: warm up, measure, print the rate."""
    for phase, seconds in (("warmup", args.warmup), ("measure", args.seconds)):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            hundred()
            count += 100
            now = time.perf_counter()
            if now >= deadline:
                break
    elapsed = now - start
    print(json.dumps({"path": args.path, "requests": count, "seconds": elapsed,
                      "rps": count / elapsed, "bytes": size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--path", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--asgi", action="store_true", help="through Django's ASGI handler")
    args = parser.parse_args()

    sys.path.insert(0, str(SITE))
    if args.asgi:
        run_asgi(args)
        return
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchsite.settings"
    from benchsite.wsgi import application

    template = base_environ(args.path)
    status: list[str] = []

    def start_response(s, headers, exc_info=None):
        status.append(s)

    def one() -> int:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(b"")
        result = application(environ, start_response)
        try:
            size = sum(len(chunk) for chunk in result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return size

    size = one()
    if not status or not status[-1].startswith("200"):
        raise SystemExit(f"{args.path} answered {status[-1] if status else 'nothing'}")

    def hundred() -> None:
        for _ in range(100):
            one()

    time_requests(hundred, args, size)


if __name__ == "__main__":
    main()
