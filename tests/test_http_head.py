"""
Unit tests for L{backtracweb.http.head}: the checks of a request head that
llhttp leaves to the server, each a table of values from the RFC's grammar
and what they mean or why they are refused.
"""

from __future__ import annotations

import pytest

from backtracweb.http import head
from backtracweb.http.errors import Refused
from backtracweb.http.head import HTTP_10, HTTP_11, Target


def refused(call, *args) -> tuple[int, str]:
    """The status and reason C{call(*args)} refuses with."""
    with pytest.raises(Refused) as caught:
        call(*args)
    return caught.value.status, caught.value.why


@pytest.mark.parametrize("method, target, expected", [
    (b"GET", b"/", Target(b"/", b"", None)),
    (b"GET", b"/a/b%20c?x=1&y=%2F", Target(b"/a/b%20c", b"x=1&y=%2F", None)),
    (b"GET", b"/?", Target(b"/", b"", None)),
    (b"GET", b"/a?b?c", Target(b"/a", b"b?c", None)),
    (b"OPTIONS", b"*", Target(b"*", b"", None)),
    (b"GET", b"http://abs.example/x?q", Target(b"/x", b"q", b"abs.example")),
    (b"GET", b"HTTPS://abs.example:8443", Target(b"/", b"", b"abs.example:8443")),
    (b"GET", b"http://abs.example?q=1", Target(b"/", b"q=1", b"abs.example")),
    (b"GET", b"http://[2001:db8::1]:80/", Target(b"/", b"", b"[2001:db8::1]:80")),
], ids=["root", "path-and-query", "empty-query", "question-in-query", "asterisk",
        "absolute", "absolute-https-no-path", "absolute-query-no-path", "absolute-ipv6"])
def test_targets(method, target, expected):
    """Origin-form, asterisk-form and absolute-form targets, split (RFC 9112 3.2)."""
    assert head.parse_target(method, target) == expected


@pytest.mark.parametrize("method, target, status, reason", [
    (b"GET", b"/p#frag", 400, "fragment"),
    (b"GET", b"/p?q=1#frag", 400, "fragment"),
    (b"GET", b"http://abs.example/p#f", 400, "fragment"),
    (b"GET", b"*", 400, "only for OPTIONS"),
    (b"GET", b"p", 400, "not a path, an absolute URI or *"),
    (b"GET", b"host:443", 400, "not a path, an absolute URI or *"),
    (b"GET", b"ftp://abs.example/x", 400, "scheme is not http or https"),
    (b"GET", b"http://u:p@abs.example/x", 400, "userinfo"),
    (b"GET", b"http:///x", 400, "not a valid host"),
    (b"GET", b"http://a b/x", 400, "not a valid host"),
    (b"CONNECT", b"abs.example:443", 501, "proxies"),
    (b"CONNECT", b"/", 501, "proxies"),
], ids=["fragment", "fragment-after-query", "fragment-absolute", "asterisk-get", "relative",
        "authority-form", "other-scheme", "userinfo", "empty-authority", "space-in-authority",
        "connect", "connect-with-path"])
def test_targets_refused(method, target, status, reason):
    """Targets no origin server takes are refused, each saying why."""
    code, why = refused(head.parse_target, method, target)
    assert code == status and reason in why


@pytest.mark.parametrize("value, expected", [
    (b"example.com", (b"example.com", b"")),
    (b"example.com:8080", (b"example.com", b"8080")),
    (b"example.com:", (b"example.com", b"")),
    (b"127.0.0.1:80", (b"127.0.0.1", b"80")),
    (b"[::1]:8443", (b"[::1]", b"8443")),
    (b"[2001:db8::1]", (b"[2001:db8::1]", b"")),
    (b"xn--bcher-kva.example", (b"xn--bcher-kva.example", b"")),
    (b"a%20b", (b"a%20b", b"")),
    (b"", (b"", b"")),
    (b"a b", None),
    (b"user@evil.example", None),
    (b"a/b", None),
    (b"[::1", None),
    (b"t:abc", None),
    (b"a\x00b", None),
    (b"%zz", None),
], ids=lambda v: repr(v))
def test_split_host(value, expected):
    """Host values by RFC 3986's grammar: host and port, or None for what it does not allow."""
    assert head.split_host(value) == expected


@pytest.mark.parametrize("values, version, authority, expected", [
    ([b"t"], HTTP_11, None, b"t"),
    ([b""], HTTP_11, None, b""),
    ([], HTTP_10, None, b""),
    ([b"t"], HTTP_11, b"abs.example", b"abs.example"),
    ([b"t:1"], HTTP_10, None, b"t:1"),
])
def test_request_host(values, version, authority, expected):
    """The authority a request is for: the target's if absolute, else Host's."""
    assert head.request_host(values, version, authority) == expected


@pytest.mark.parametrize("values, version, authority, reason", [
    ([], HTTP_11, None, "must have a Host"),
    ([], HTTP_11, b"abs.example", "must have a Host"),
    ([b"t", b"t"], HTTP_11, None, "more than one Host"),
    ([b"a", b"b"], HTTP_10, None, "more than one Host"),
    ([b"a b"], HTTP_11, None, "not a valid host"),
    ([b"a b"], HTTP_11, b"abs.example", "not a valid host"),
    ([b"user@evil"], HTTP_10, None, "not a valid host"),
])
def test_request_host_refused(values, version, authority, reason):
    """A missing (HTTP/1.1), repeated or invalid Host is a 400 (RFC 9112 3.2)."""
    assert refused(head.request_host, values, version, authority)[0] == 400
    assert reason in refused(head.request_host, values, version, authority)[1]


@pytest.mark.parametrize("major, minor, expected", [
    (1, 0, HTTP_10), (1, 1, HTTP_11), (1, 2, HTTP_11), (1, 9, HTTP_11),
])
def test_versions(major, minor, expected):
    """1.0 is answered as 1.0; 1.1 and any later 1.x as 1.1 (RFC 9110 2.5)."""
    assert head.http_version(major, minor) == expected


@pytest.mark.parametrize("major, minor", [(0, 9), (2, 0), (3, 0), (9, 9)])
def test_other_versions_refused(major, minor):
    """Any other major version is 505, naming the version."""
    assert refused(head.http_version, major, minor) == (
        505, f"HTTP/{major}.{minor} is not supported; this server speaks HTTP/1.1 and HTTP/1.0")


@pytest.mark.parametrize("values", [[b"chunked"], [b"CHUNKED"], [b" chunked "], [b"chunked, "]])
def test_chunked(values):
    """chunked, in any case and with whitespace around, frames the body."""
    assert head.is_chunked(values, HTTP_11) is True


@pytest.mark.parametrize("values, version, status, reason", [
    ([b"identity"], HTTP_11, 400, "does not end in chunked"),
    ([b"gzip"], HTTP_11, 400, "does not end in chunked"),
    ([b"chunked, gzip"], HTTP_11, 400, "does not end in chunked"),
    ([b"chunked", b"identity"], HTTP_11, 400, "does not end in chunked"),
    ([b""], HTTP_11, 400, "does not end in chunked"),
    ([b"xchunked"], HTTP_11, 400, "does not end in chunked"),
    ([b"chunked;a=b"], HTTP_11, 400, "does not end in chunked"),
    ([b"chunked, chunked"], HTTP_11, 400, "more than once"),
    ([b"chunked", b"chunked"], HTTP_11, 400, "more than once"),
    ([b"gzip, chunked"], HTTP_11, 501, "uses gzip"),
    ([b"identity", b"chunked"], HTTP_11, 501, "uses identity"),
    ([b"chunked"], HTTP_10, 400, "HTTP/1.0"),
], ids=["identity", "gzip", "chunked-not-last", "second-line-last", "empty", "xchunked",
        "chunked-with-parameter", "twice-in-one", "twice-in-two", "unknown-before",
        "identity-before", "http10"])
def test_transfer_codings_refused(values, version, status, reason):
    """
    Codings that leave the body's length unknown are 400 (the smuggling
    hole, RFC 9112 6.3); a coding the server does not decode before chunked
    is 501 (RFC 9112 6.1).
    """
    code, why = refused(head.is_chunked, values, version)
    assert code == status and reason in why


@pytest.mark.parametrize("version, values, keeps", [
    (HTTP_11, [], True),
    (HTTP_11, [b"keep-alive"], True),
    (HTTP_11, [b"close"], False),
    (HTTP_11, [b"Close"], False),
    (HTTP_11, [b"foo,close"], False),
    (HTTP_11, [b"foo , CLOSE ,bar"], False),
    (HTTP_11, [b"keep-alive", b"close"], False),
    (HTTP_10, [], False),
    (HTTP_10, [b"keep-alive"], True),
    (HTTP_10, [b"Keep-Alive"], True),
    (HTTP_10, [b"keep-alive, close"], False),
    (HTTP_11, [b"upgrade"], True),
])
def test_keeps_alive(version, values, keeps):
    """close anywhere in any Connection field ends the connection; HTTP/1.0 needs keep-alive."""
    assert head.keeps_alive(version, head.connection_options(values)) is keeps


@pytest.mark.parametrize("values, version, expects", [
    ([b"100-continue"], HTTP_11, True),
    ([b"100-Continue"], HTTP_11, True),
    ([b" 100-continue "], HTTP_11, True),
    ([b""], HTTP_11, False),
    ([b"100-continue"], HTTP_10, False),
    ([b"foo"], HTTP_10, False),
])
def test_expects_continue(values, version, expects):
    """100-continue (in any case) is honoured on HTTP/1.1 and ignored on HTTP/1.0."""
    assert head.expects_continue(values, version) is expects


@pytest.mark.parametrize("values", [[b"foo"], [b"100-continue, foo"], [b"100-continue", b"x"]])
def test_other_expectations_refused(values):
    """Any other expectation is 417 (RFC 9110 10.1.1)."""
    assert refused(head.expects_continue, values, HTTP_11)[0] == 417
