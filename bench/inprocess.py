"""
The in-process ceiling: the benchmark site's views called through Django's
WSGI handler in a loop, with no server and no socket, on one core.  What a
server reaches on the same view, divided by this, is the share of each
request's time that is Django's own; the rest is the server's.

    python bench/inprocess.py --path /tiny --seconds 5     # prints JSON
"""

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--path", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()

    sys.path.insert(0, str(SITE))
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

    for phase, seconds in (("warmup", args.warmup), ("measure", args.seconds)):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(100):
                one()
            count += 100
            now = time.perf_counter()
            if now >= deadline:
                break
    elapsed = now - start
    print(json.dumps({"path": args.path, "requests": count, "seconds": elapsed,
                      "rps": count / elapsed, "bytes": size}))


if __name__ == "__main__":
    main()
