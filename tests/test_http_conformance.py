"""
HTTP/1.1 conformance: every case of tests/http_cases.py, run against the
protocol in-process.

Each case is fed to a real L{HTTPChannel} of a real site over a
L{StringTransport}, as one read, the site serving the echo application
(tests/functional/apps/echoapp.py) through the real WSGI container, run at
once in this thread; no reactor runs.  The same cases run against a real
daemon over TCP in tests/functional/test_conformance.py: this runner is
the quick one, and sees what a socket hides (a reset, a close).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from helpers import Client, FakeReactor, make_site
from http_cases import CASES, Case
from http_exchange import Exchange

from backtracweb.app.resource import SiteRoot
from backtracweb.app.wsgi import WSGIContainer
from backtracweb.config.spec import check_size

sys.path.insert(0, str(Path(__file__).parent / "functional" / "apps"))
from echoapp import application  # noqa: E402

sys.path.pop(0)


class InlinePool:
    """Runs the application at once, in this thread."""

    def callInThread(self, function) -> None:
        function()


class ChannelSocket:
    """
    The client's end of an in-process connection, with what the conformance
    runner uses of a socket: C{sendall} feeds the channel (and runs what the
    application handed to the reactor), C{recv} returns what the channel
    wrote, then C{b""} once it closed the connection; nothing to read on an
    open connection is a timeout, as it would be on a socket.
    """

    def __init__(self, limits: dict) -> None:
        self.reactor = FakeReactor()
        root = SiteRoot(WSGIContainer(self.reactor, InlinePool(), application))
        settings = {key: check_size(value) for key, value in limits.items()}
        settings.setdefault("max_body", 1 << 20)
        settings.setdefault("max_header_bytes", 64 * 1024)
        settings.setdefault("max_headers", 100)
        self.client = Client(make_site(root, self.reactor, **settings))
        self._read = 0

    def __enter__(self) -> ChannelSocket:
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.client.transport.disconnected:
            self.client.lost()

    def settimeout(self, timeout: float) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        if self.client.closed:
            raise BrokenPipeError("the server closed the connection")
        self.client.send(data)
        self.reactor.run_pending()

    def recv(self, size: int) -> bytes:
        output = self.client.output
        data = output[self._read:self._read + size]
        if data:
            self._read += len(data)
            return data
        if self.client.closed:
            return b""
        raise socket.timeout("nothing to read")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_conformance(case: Case) -> None:
    """The case's bytes get the case's responses, and the connection ends as it says."""
    Exchange(case, lambda: ChannelSocket(case.limits)).run()
