"""
backtracweb's own Python work per request, without sockets or threads: a
request fed to the real channel, request, site root and WSGI container,
with the pool and the reactor hand-off replaced by direct calls.

    bench/.venv/bin/python bench/serverpath.py --path /tiny
    bench/.venv/bin/python bench/serverpath.py --path /tiny --null-app --profile

With the benchmark site's view, the time per request minus the in-process
ceiling (bench/inprocess.py) is what the server's Python code adds; with
--null-app (a WSGI app that answers 14 bytes at once) it is that code
alone.  What a real server adds beyond this is the kernel's part (sockets,
waking threads).  --profile prints cProfile's top functions.  A tool for
finding where the server's time goes, not part of the benchmark.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

SITE = Path(__file__).resolve().parent / "site"


def null_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "14")])
    return [b"Hello, world!\n"]


class InlineReactor:
    """Runs what a worker thread hands to the reactor at once; no timers fire."""

    def __init__(self) -> None:
        from twisted.internet.task import Clock

        self._clock = Clock()
        self.callLater = self._clock.callLater
        self.seconds = time.time

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class InlinePool:
    """Runs the application at once, in the caller's thread."""

    max = 10
    busy = 0
    queued = 0

    def callInThread(self, function):
        function()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--path", default="/tiny")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--null-app", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(SITE))
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchsite.settings"
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    from backtracweb.app.accesslog import AccessLog
    from backtracweb.app.proxy import Addresses, TrustedProxies
    from backtracweb.app.resource import SiteRoot
    from backtracweb.app.website import BacktracSite, SiteSettings
    from backtracweb.app.wsgi import WSGIContainer
    from backtracweb.config.settings import Values, section_defaults

    if args.null_app:
        application = null_app
    else:
        from benchsite.wsgi import application
    reactor, pool = InlineReactor(), InlinePool()
    root = SiteRoot(WSGIContainer(reactor, pool, application), pool)
    settings = SiteSettings(
        routes=(), access_log=AccessLog("off").open(), proxies=TrustedProxies(()),
        limits=Values(**section_defaults("limits")), server=Values(**section_defaults("server")),
        status_path=None, status_allow=Addresses(()), config_file="-", loaded_at=time.time(),
    )
    site = BacktracSite(root, settings, reactor)
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    channel = site.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer,
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8000))
    channel.makeConnection(transport)
    # What wrk sends.
    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n" % args.path.encode()

    def one() -> None:
        channel.dataReceived(request)
        transport.clear()

    channel.dataReceived(request)
    if not transport.value().startswith(b"HTTP/1.1 200 "):
        raise SystemExit(f"{args.path} answered {transport.value()[:80]!r}")
    for _ in range(args.requests // 10):  # warm-up
        one()
    start = time.perf_counter()
    for _ in range(args.requests):
        one()
    elapsed = time.perf_counter() - start
    app = "a null WSGI app" if args.null_app else "the benchmark site"
    print(f"{args.path} with {app}: {elapsed / args.requests * 1e6:.1f} µs a request "
          f"({args.requests:,} requests)")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [one() for _ in range(args.requests)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
