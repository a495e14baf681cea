"""
Property-based tests of the HTTP engine (hypothesis): valid requests,
split into reads at random points, and mutated ones, fed to a real
channel in-process (see tests/helpers.py).

What must always hold: a valid request is handled exactly as written,
however its bytes arrive; no input makes the channel raise or log an
error; the application never sees more requests than the bytes held; and
no connection outlives C{idle_timeout} once its client stops sending.
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers import Client, FakeReactor, Recorder, make_site
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, capturedLogs

IDLE = 5.0
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@"
# Bodies hold no space or line end, so no body can read as a request of its own.
BODY = st.binary(max_size=300).map(lambda b: bytes(c for c in b if c > 0x20) or b"x")


@dataclass(frozen=True)
class Written:
    """One valid request, as the generator wrote it."""

    method: bytes
    path: bytes
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    chunks: tuple[int, ...] | None  # the chunk sizes, if sent chunked

    def wire(self) -> bytes:
        target = self.path + (b"?" + self.query if self.query else b"")
        lines = [self.method + b" " + target + b" HTTP/1.1", b"Host: fuzz.example"]
        lines += [name + b": " + value for name, value in self.headers]
        if self.chunks is None:
            if self.body:
                lines.append(b"Content-Length: %d" % len(self.body))
            return b"\r\n".join(lines) + b"\r\n\r\n" + self.body
        lines.append(b"Transfer-Encoding: chunked")
        body, rest = [], self.body
        for size in self.chunks:
            piece, rest = rest[:size], rest[size:]
            if piece:
                body.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        if rest:
            body.append(b"%x\r\n%s\r\n" % (len(rest), rest))
        return b"\r\n".join(lines) + b"\r\n\r\n" + b"".join(body) + b"0\r\n\r\n"


@st.composite
def requests(draw) -> Written:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]))
    segments = draw(st.lists(st.text(PCHAR, min_size=1, max_size=8), max_size=4))
    path = ("/" + "/".join(segments)).encode()
    query = draw(st.text(PCHAR + "/?", max_size=20)).encode()
    names = st.text(TOKEN.replace("_", ""), min_size=1, max_size=12).map(str.encode).filter(
        lambda n: n.lower() not in (b"host", b"content-length", b"transfer-encoding",
                                    b"connection", b"expect", b"upgrade"))
    values = st.text("abcdefghijklmnopqrstuvwxyz0123456789 ;=/,.-", max_size=30).map(
        lambda v: v.strip().encode())
    headers = tuple(draw(st.lists(st.tuples(names, values), max_size=5)))
    body = draw(BODY) if method in (b"POST", b"PUT", b"PATCH") else b""
    chunks = draw(st.none() | st.lists(st.integers(1, 64), max_size=6).map(tuple)) if body else None
    return Written(method, path, query, headers, body, chunks)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """C{data} cut at the given offsets (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def serve(reads: list[bytes]) -> tuple[Client, Recorder, FakeReactor, list]:
    """Feed the reads to a fresh connection; the client, root, clock and the log's events."""
    root, clock = Recorder(), FakeReactor()
    client = Client(make_site(root, clock, max_body=1 << 20, max_header_bytes=16 * 1024,
                              max_headers=100, idle_timeout=IDLE))
    with capturedLogs() as events:
        for data in reads:
            client.send(data)
        clock.advance(IDLE + 1)
    return client, root, clock, events


def no_errors(events) -> None:
    problems = [e for e in events
                if e.get("log_level") in (LogLevel.error, LogLevel.critical) or "log_failure" in e]
    assert problems == [], problems


@FUZZ
@given(requests(), st.lists(st.integers(0, 10_000), max_size=8))
def test_a_valid_request_is_handled_as_written(written, cuts):
    """However its bytes are split into reads, a valid request is handled once, as written."""
    client, root, _, events = serve(split(written.wire(), cuts))
    no_errors(events)
    [request] = root.requests
    assert (request.method, request.path, request.query) == (
        written.method, written.path, written.query)
    assert request.input.read() == written.body
    for name, value in written.headers:
        assert (name.lower(), value) in request.headers
    assert client.statuses() == [200]
    assert client.closed  # by the idle timeout, after the response


@FUZZ
@given(st.lists(requests(), min_size=2, max_size=5), st.lists(st.integers(0, 10_000), max_size=8))
def test_pipelined_requests_are_handled_in_order(written, cuts):
    """Several valid requests, split anywhere, are each handled once, in order."""
    data = b"".join(request.wire() for request in written)
    client, root, _, events = serve(split(data, cuts))
    no_errors(events)
    assert [(r.method, r.path, r.input.read()) for r in root.requests] == [
        (w.method, w.path, w.body) for w in written]
    assert client.statuses() == [200] * len(written)


@st.composite
def mutated(draw) -> bytes:
    """A valid request with a few bytes replaced, inserted, deleted or repeated."""
    data = bytearray(draw(requests()).wire())
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["replace", "insert", "delete", "repeat", "bare-lf"]))
        if how == "replace" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif how == "insert":
            data[where:where] = draw(st.sampled_from(
                [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"\x00", b"0", b"chunked", b"\r\n\r\n"]))
        elif how == "delete":
            del data[where:where + draw(st.integers(1, 8))]
        elif how == "repeat":
            data[where:where] = data[where:where + draw(st.integers(1, 30))]
        elif how == "bare-lf":
            index = data.find(b"\r\n", where)
            if index >= 0:
                del data[index]
    return bytes(data)


@FUZZ
@given(mutated(), st.lists(st.integers(0, 10_000), max_size=6))
def test_a_mutated_request_never_breaks_the_channel(data, cuts):
    """
    Whatever one request's bytes became: no exception and no error in the
    log, at most one request handled (the bytes held one), every response
    a complete one, and the connection closed by C{idle_timeout} at the
    latest once the client stops sending.
    """
    client, root, _, events = serve(split(data, cuts))
    no_errors(events)
    assert len(root.requests) <= 1
    statuses = client.statuses()
    assert len(statuses) <= 2
    assert all(100 <= status < 600 for status in statuses)
    assert client.closed
