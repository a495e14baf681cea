"""
Running one HTTP conformance case (tests/http_cases.py) on one new
connection and checking what comes back, for both runners: against a real
daemon over TCP (tests/functional/test_conformance.py) and against the
protocol in-process (tests/test_http_conformance.py).

The case's bytes go out in one write; its responses are read and parsed
(status line, fields, a body framed by Content-Length, chunked coding or
the close; none for 1xx, 204, 304 or an answer to HEAD) with a deadline.
Then either the server must close the connection, sending nothing more, or
the connection must still serve a probe request, whose answer proves the
server split the byte stream where the bytes said: a request smuggled
inside the case would answer in the probe's place.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest
from http_cases import ABSENT, Case

TIMEOUT = 5.0
"""Seconds to wait for the responses of a case, for the close, for the probe's answer."""

PROBE = b"GET /probe HTTP/1.1\r\nHost: probe.example\r\n\r\n"

ECHO_KEYS = {"method", "path", "query", "protocol", "body", "headers"}
"""Keys by which a response body is known to be the echo app's report."""


# -- reading responses -----------------------------------------------------------------


class ReadTimeout(Exception):
    """Nothing (or not enough) arrived before the deadline."""


class ServerClosed(Exception):
    """The server closed (or reset) the connection while more was expected."""


class BadResponse(Exception):
    """What arrived is not an HTTP/1.1 response."""


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    raw: bytes = b""

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def members(self, name: str) -> set[str]:
        """The comma-separated members of every line of field C{name}, lower-cased."""
        return {member.strip().lower() for value in self.values(name)
                for member in value.split(",") if member.strip()}

    def report(self) -> dict | None:
        """The echo app's JSON report, if this is one."""
        if not 200 <= self.status < 300 or not self.body:
            return None
        try:
            report = json.loads(self.body)
        except ValueError:
            return None
        return report if isinstance(report, dict) and ECHO_KEYS <= report.keys() else None


@dataclass
class Client:
    """One TCP connection to the daemon, read with deadlines, never blocking past them."""

    sock: socket.socket
    buffer: bytes = b""
    received: bytes = b""
    """Every byte received, for the failure message."""
    eof: bool = False
    reset: bool = False
    _raw: list[bytes] = field(default_factory=list)

    def _fill(self, deadline: float) -> None:
        if self.eof:
            raise ServerClosed()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReadTimeout()
        self.sock.settimeout(remaining)
        try:
            block = self.sock.recv(65536)
        except socket.timeout:
            raise ReadTimeout() from None
        except ConnectionResetError:
            block, self.reset = b"", True
        if not block:
            self.eof = True
            raise ServerClosed()
        self.buffer += block
        self.received += block

    def _take(self, count: int) -> bytes:
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        self._raw.append(taken)
        return taken

    def line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill(deadline)
        return self._take(self.buffer.index(b"\r\n") + 2)[:-2]

    def exactly(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            self._fill(deadline)
        return self._take(count)

    def until_close(self, deadline: float) -> bytes:
        try:
            while True:
                self._fill(deadline)
        except ServerClosed:
            return self._take(len(self.buffer))

    def wait_close(self, deadline: float) -> bool:
        """Whether the server closes before the deadline; what it sends meanwhile stays in buffer."""
        try:
            while True:
                self._fill(deadline)
        except ServerClosed:
            return True
        except ReadTimeout:
            return False

    def response(self, deadline: float, to_head: bool = False) -> Response:
        """Read one response; C{to_head}: a final response to HEAD has no body."""
        self._raw = []
        status_line = self.line(deadline)
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise BadResponse(f"not a status line: {status_line!r}")
        version, status = parts[0].decode("latin-1"), int(parts[1])
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        headers = []
        while line := self.line(deadline):
            name, colon, value = line.partition(b":")
            if not colon:
                raise BadResponse(f"not a header line: {line!r}")
            headers.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
        response = Response(version, status, reason, headers)
        if status < 200 or status in (204, 304) or to_head:
            pass
        elif "chunked" in response.members("Transfer-Encoding"):
            response.body = self._chunked(deadline)
        elif response.values("Content-Length"):
            response.body = self.exactly(int(response.values("Content-Length")[0]), deadline)
        else:
            response.body = self.until_close(deadline)
        response.raw = b"".join(self._raw)
        return response

    def _chunked(self, deadline: float) -> bytes:
        body = []
        while True:
            size_line = self.line(deadline)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise BadResponse(f"not a chunk-size line: {size_line!r}") from None
            if size == 0:
                while self.line(deadline):  # the trailer section
                    pass
                return b"".join(body)
            body.append(self.exactly(size, deadline))
            if self.exactly(2, deadline) != b"\r\n":
                raise BadResponse("chunk data not followed by CRLF")


# -- checking a case ------------------------------------------------------------------------


def show(data: bytes, limit: int = 600) -> str:
    text = repr(data)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(data)} bytes)"


def mismatches(expected: dict, actual: dict, where: str = "") -> list[str]:
    """How C{actual} fails to hold C{expected} as a subset (nested dicts too)."""
    problems = []
    for key, want in expected.items():
        here = f"{where}{key}"
        if want is ABSENT:
            if key in actual:
                problems.append(f"{here} should be absent, is {actual[key]!r}")
        elif key not in actual:
            problems.append(f"{here} is missing, expected {want!r}")
        elif isinstance(want, dict) and isinstance(actual[key], dict):
            problems.extend(mismatches(want, actual[key], here + "."))
        elif actual[key] != want:
            problems.append(f"{here} is {actual[key]!r}, expected {want!r}")
    return problems


def expectation(case: Case) -> str:
    seen = ("not checked" if case.seen is None
            else "nothing" if not case.seen else " then ".join(map(repr, case.seen)))
    after = "the server closes" if case.closed else "the connection serves a probe"
    return f"statuses {case.statuses}; the application saw {seen}; then {after}"


@dataclass
class Exchange:
    """One case on one new connection, and everything that went wrong with it."""

    case: Case
    connect: Callable[[], socket.socket]
    """Opens the connection: a socket, or anything with sendall, recv and settimeout."""
    responses: list[Response] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    client: Client | None = None
    probe: Response | None = None

    def run(self) -> None:
        case = self.case
        with self.connect() as sock:
            self.client = Client(sock)
            try:
                sock.sendall(case.send)
            except (BrokenPipeError, ConnectionResetError) as error:
                self.problems.append(f"sending the case failed: {error!r}")
            if self.read_responses():
                self.check_statuses()
                self.check_seen()
                self.check_answer()
                if case.closed:
                    self.check_refusals_say_close()
                    self.check_closed()
                else:
                    self.check_probe()
        if self.problems:
            pytest.fail(self.message(), pytrace=False)

    def read_responses(self) -> bool:
        """Read as many responses as the case expects; False if they never came."""
        client, wanted = self.client, len(self.case.statuses)
        to_head = self.case.send.lstrip(b"\r\n").startswith(b"HEAD ")
        deadline = time.monotonic() + TIMEOUT
        while len(self.responses) < wanted:
            try:
                self.responses.append(client.response(deadline, to_head=to_head))
            except ReadTimeout:
                self.problems.append(
                    f"timed out after {TIMEOUT:g} s waiting for response "
                    f"{len(self.responses) + 1} of {wanted}")
                return False
            except ServerClosed:
                how = "reset" if client.reset else "closed"
                self.problems.append(
                    f"the server {how} the connection after {len(self.responses)} "
                    f"response(s); expected {wanted}")
                return False
            except BadResponse as error:
                self.problems.append(f"response {len(self.responses) + 1}: {error}")
                return False
        return True

    def check_statuses(self) -> None:
        statuses = tuple(r.status for r in self.responses)
        if statuses != self.case.statuses:
            self.problems.append(f"statuses are {statuses}, expected {self.case.statuses}")

    def check_seen(self) -> None:
        if self.case.seen is None:
            return
        reports = [report for r in self.responses if (report := r.report()) is not None]
        if len(reports) != len(self.case.seen):
            self.problems.append(
                f"the application answered {len(reports)} request(s), expected "
                f"{len(self.case.seen)}: it saw {[r.get('path') for r in reports]}")
        for index, (want, report) in enumerate(zip(self.case.seen, reports), 1):
            self.problems.extend(f"request {index}: {problem}"
                                 for problem in mismatches(want, report))

    def check_answer(self) -> None:
        last = self.responses[-1]
        for name, member in self.case.answer_headers.items():
            if member.lower() not in last.members(name):
                self.problems.append(f"the last response's {name} is {last.values(name)}, "
                                     f"expected it to hold {member!r}")
        if self.case.answer_version and last.version != self.case.answer_version:
            self.problems.append(f"the last response's version is {last.version!r}, "
                                 f"expected {self.case.answer_version!r}")

    def check_refusals_say_close(self) -> None:
        for index, response in enumerate(self.responses, 1):
            if response.status >= 400 and "close" not in response.members("Connection"):
                self.problems.append(f"response {index} ({response.status}) refuses but "
                                     f"carries no Connection: close "
                                     f"(Connection: {response.values('Connection')})")

    def check_closed(self) -> None:
        closed = self.client.wait_close(time.monotonic() + TIMEOUT)
        if self.client.buffer:
            self.problems.append(f"the server sent more than the expected responses: "
                                 f"{self.extra()}")
        if not closed:
            self.problems.append(f"the server kept the connection open {TIMEOUT:g} s after "
                                 f"the last response; expected it to close")

    def extra(self) -> str:
        """What is left in the buffer, as responses where it parses as such."""
        client, described = self.client, []
        while client.buffer:
            rest = client.buffer
            try:  # a deadline already past: parse only what has arrived
                response = client.response(time.monotonic())
            except (ReadTimeout, ServerClosed, BadResponse):
                described.append(show(rest, 300))
                break
            report = response.report()
            described.append(f"{response.status} {response.reason}" + (
                f" answering {report['method']} {report['path']}" if report else ""))
        return "; ".join(described)

    def check_probe(self) -> None:
        client = self.client
        if client.eof:
            self.problems.append("the server closed the connection; expected it to stay open")
            return
        if client.buffer:
            self.problems.append(f"the server sent more than the expected responses: "
                                 f"{self.extra()}")
            return
        try:
            client.sock.sendall(PROBE)
            self.probe = client.response(time.monotonic() + TIMEOUT)
        except (BrokenPipeError, ConnectionResetError, ServerClosed):
            self.problems.append("the server closed the connection instead of answering "
                                 "the probe; expected it to stay open")
            return
        except ReadTimeout:
            self.problems.append(f"no answer to the probe within {TIMEOUT:g} s "
                                 f"(the server may still be reading the case's body)")
            return
        except BadResponse as error:
            self.problems.append(f"the answer to the probe: {error}")
            return
        report = self.probe.report()
        if report is not None and report.get("path") != "/probe":
            self.problems.append(
                f"the response read in the probe's place ({self.probe.status}) answers "
                f"{report.get('method')} {report.get('path')}, not GET /probe: the server sent "
                f"a response more than expected, or ran a request hidden in the case's bytes")
        elif self.probe.status != 200 or report is None:
            self.problems.append(
                f"the probe GET /probe was answered {self.probe.status} "
                f"{show(self.probe.body, 200)}: the server did not split the stream where "
                f"the case's bytes end")
        elif client.buffer:
            self.problems.append(f"more after the probe's answer: {self.extra()}")

    def message(self) -> str:
        case, client = self.case, self.client
        received = ", ".join(f"{r.status}" for r in self.responses) or "none"
        reports = [report for r in self.responses if (report := r.report()) is not None]
        lines = [
            f"{case.id}: {case.source}",
            f"  why: {case.why}",
            f"  sent: {show(case.send)}",
            f"  expected: {expectation(case)}",
            f"  received: status(es) {received}"
            + (" and then the connection closed" if client and client.eof else ""),
        ]
        for index, report in enumerate(reports, 1):
            lines.append(f"  the application saw ({index}): {json.dumps(report)[:400]}")
        lines.append("  problems:")
        lines.extend(f"    - {problem}" for problem in self.problems)
        if client is not None:
            lines.append(f"  bytes received: {show(client.received, 1200)}")
        return "\n".join(lines)
