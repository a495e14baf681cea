"""
Unit tests for L{backtracweb.http.request}: how a response is framed on
the wire (Content-Length, chunked, until the close, none), what its head
says of the connection, and the Date header.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from helpers import Client, Recorder, make_site, parse_responses

from backtracweb.http import request as request_module


def test_the_date_is_formatted_once_a_second(monkeypatch):
    """The Server and Date lines are made at most once a second, and say the second."""
    now = [1_764_000_000.2]
    monkeypatch.setattr(request_module, "time", SimpleNamespace(
        time=lambda: now[0], strftime=time.strftime, gmtime=time.gmtime))
    monkeypatch.setattr(request_module, "_date_cache", (0, b""))
    first = request_module.http_date()
    assert first == b"Server: backtracweb\r\nDate: Mon, 24 Nov 2025 16:00:00 GMT\r\n"
    now[0] += 0.7
    assert request_module.http_date() is first
    now[0] += 0.2
    assert request_module.http_date() == first.replace(b"00 GMT", b"01 GMT")


def answered(answer, *, method: bytes = b"GET", version: bytes = b"HTTP/1.1",
             headers: bytes = b"") -> Client:
    """A client whose request the site answers by calling C{answer(request)}."""
    root = Recorder()
    root.handle = answer
    client = Client(make_site(root))
    client.send(method + b" / " + version + b"\r\nHost: x\r\n" + headers + b"\r\n")
    return client


def respond(code: int, headers: list, content: bytes):
    def answer(request) -> None:
        request.code = code
        request.response_headers = list(headers)
        request.respond(content)
    return answer


def stream(headers: list, parts: list):
    def answer(request) -> None:
        request.response_headers = list(headers)
        for part in parts:
            request.write(part)
        request.finish()
    return answer


# method, version, answer -> the framing lines of the head, the content as sent, open after
FRAMING = [
    ("complete", b"GET", b"HTTP/1.1", respond(200, [], b"hello"),
     [b"Content-Length: 5"], b"hello", True),
    ("complete-empty", b"GET", b"HTTP/1.1", respond(200, [], b""),
     [b"Content-Length: 0"], b"", True),
    ("declared-length-kept", b"GET", b"HTTP/1.1", respond(200, [(b"Content-Length", b"5")], b"hello"),
     [b"Content-Length: 5"], b"hello", True),
    ("never-more-than-declared", b"GET", b"HTTP/1.1",
     respond(200, [(b"Content-Length", b"3")], b"hello"), [b"Content-Length: 3"], b"hel", True),
    ("shorter-than-declared-closes", b"GET", b"HTTP/1.1",
     respond(200, [(b"Content-Length", b"9")], b"hello"),
     [b"Content-Length: 9", b"Connection: close"], b"hello", False),
    ("malformed-length-dropped", b"GET", b"HTTP/1.1",
     respond(200, [(b"Content-Length", b"5x")], b"hello"), [b"Content-Length: 5"], b"hello", True),
    ("streamed", b"GET", b"HTTP/1.1", stream([], [b"ab", b"", b"cd"]),
     [b"Transfer-Encoding: chunked"], b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n", True),
    ("streamed-declared", b"GET", b"HTTP/1.1", stream([(b"Content-Length", b"4")], [b"ab", b"cd"]),
     [b"Content-Length: 4"], b"abcd", True),
    ("streamed-http10", b"GET", b"HTTP/1.0", stream([], [b"ab", b"cd"]),
     [b"Connection: close"], b"abcd", False),
    ("http10-keep-alive", b"GET", b"HTTP/1.0", respond(200, [], b"hi"),
     [b"Content-Length: 2", b"Connection: close"], b"hi", False),
    ("head", b"HEAD", b"HTTP/1.1", respond(200, [], b"hello"), [], b"", True),
    ("head-declared", b"HEAD", b"HTTP/1.1", respond(200, [(b"Content-Length", b"5")], b"hello"),
     [b"Content-Length: 5"], b"", True),
    ("no-content", b"GET", b"HTTP/1.1", respond(204, [(b"Content-Length", b"5")], b"hello"),
     [], b"", True),
    ("not-modified", b"GET", b"HTTP/1.1", respond(304, [], b"hello"), [], b"", True),
    ("app-closes", b"GET", b"HTTP/1.1", respond(200, [(b"Connection", b"close")], b"x"),
     [b"Content-Length: 1", b"Connection: close"], b"x", False),
    ("hop-by-hop-dropped", b"GET", b"HTTP/1.1",
     respond(200, [(b"Transfer-Encoding", b"chunked"), (b"Keep-Alive", b"timeout=5")], b"x"),
     [b"Content-Length: 1"], b"x", True),
]


@pytest.mark.parametrize("method, version, answer, framing, sent, open_after",
                         [case[1:] for case in FRAMING], ids=[case[0] for case in FRAMING])
def test_framing(method, version, answer, framing, sent, open_after):
    """
    The head frames the content as the RFC says (RFC 9112 6.3, 9110 8.6):
    the length of what is complete, the declared length (never exceeded;
    the connection closed if it is not reached), chunked for HTTP/1.1
    streams, the close for HTTP/1.0 ones, nothing for HEAD, 204 and 304;
    and says whether the connection stays.
    """
    client = answered(answer, method=method, version=version)
    head, _, rest = client.output.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 ")
    assert lines[1:3] == [b"Server: backtracweb", lines[2]] and lines[2].startswith(b"Date: ")
    assert [line for line in lines[3:] if line.split(b":")[0] in (
        b"Content-Length", b"Transfer-Encoding", b"Connection", b"Keep-Alive")] == framing
    assert rest == sent
    assert client.closed is not open_after


def test_http10_keep_alive_said():
    """An HTTP/1.0 client that asked to keep the connection is told it is kept."""
    client = answered(respond(200, [], b"hi"), version=b"HTTP/1.0",
                      headers=b"Connection: keep-alive\r\n")
    [response] = parse_responses(client.output)
    assert response.header(b"connection") == b"keep-alive" and not client.closed


def test_headers_in_order_as_given():
    """Response headers go out in the order, and with the names, they were given."""
    client = answered(respond(201, [(b"X-B", b"2"), (b"x-a", b"1"), (b"X-B", b"3")], b""))
    head = client.output.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 201 Created"
    assert head[3:6] == [b"X-B: 2", b"x-a: 1", b"X-B: 3"]


def test_reason_phrase():
    """A reason phrase given is sent; else the standard one for the code, or Unknown."""
    def answer(request):
        request.code, request.reason = 200, b"Fine"
        request.respond(b"")
    assert answered(answer).output.startswith(b"HTTP/1.1 200 Fine\r\n")
    assert answered(respond(299, [], b"")).output.startswith(b"HTTP/1.1 299 Unknown\r\n")


def test_nothing_after_finish():
    """Writes after the response is finished are dropped."""
    def answer(request):
        request.respond(b"one")
        request.write(b"two")
        request.finish()
    client = answered(answer)
    assert client.output.endswith(b"\r\n\r\none")
