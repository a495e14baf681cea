"""
The checks of a request head that llhttp leaves to its user: the request
target's form, Host, the version, the transfer codings, Connection and
Expect.  Pure functions of bytes, so that each rule is tested from the
RFC's text alone; each refusal names the rule it enforces.
"""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple

from backtracweb.http.errors import Refused

TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
"""RFC 9110 5.6.2: a method, a field name, a transfer coding."""

# RFC 3986 3.2.2 and 3.2.3: an IP literal, or a reg-name of unreserved
# characters, sub-delims and percent-escapes (possibly empty), then an
# optional port of digits.
_AUTHORITY = re.compile(
    rb"(\[[0-9A-Fa-f:.]+\]|(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::([0-9]*))?\Z"
)
# RFC 9112 3.2.2: scheme "://" authority path-abempty [ "?" query ].
_ABSOLUTE_FORM = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)\Z", re.S)

HTTP_11 = b"HTTP/1.1"
HTTP_10 = b"HTTP/1.0"


class Target(NamedTuple):
    """A request target, split as the server uses it."""

    path: bytes
    """Percent-encoded, beginning with C{/}; C{*} for a server-wide OPTIONS."""
    query: bytes
    """After the C{?}, as sent (not decoded); empty if none."""
    authority: bytes | None
    """An absolute-form target's C{host[:port]}, which replaces Host; else None."""


_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")


def sendable_field(name: bytes, value: bytes) -> bool:
    """
    Whether a response header field can go on the wire as given: its name
    a token, its value without control characters (RFC 9110 5.1, 5.5).
    """
    return TOKEN.match(name) is not None and _FIELD_VALUE.match(value) is not None


def parse_target(method: bytes, target: bytes) -> Target:
    """
    Split C{target} (RFC 9112 3.2): origin-form (C{/path?query}),
    absolute-form (C{http://host/path}) or asterisk-form (C{*}).

    @raise Refused: 400 for any other form, a fragment, userinfo or a
        scheme other than http and https; 501 for CONNECT, which only a
        proxy serves.
    """
    if method == b"CONNECT":
        raise Refused(501, "CONNECT is for proxies, and this server is not one")
    if target[:1] == b"/":
        if b"#" in target:
            raise Refused(400, "the request target has a fragment (#...), which a client "
                               "never sends (RFC 9112 3.2)")
        path, _, query = target.partition(b"?")
        return Target(path, query, None)
    if target == b"*":
        if method != b"OPTIONS":
            raise Refused(400, "the request target * is only for OPTIONS (RFC 9112 3.2.4)")
        return Target(target, b"", None)
    absolute = _ABSOLUTE_FORM.match(target)
    if absolute is None:
        raise Refused(400, "the request target is not a path, an absolute URI or * "
                           "(RFC 9112 3.2)")
    scheme, authority, rest = absolute.groups()
    if scheme.lower() not in (b"http", b"https"):
        raise Refused(400, "the request target is an absolute URI whose scheme is not "
                           "http or https")
    if b"@" in authority:
        raise Refused(400, "the request target's authority has userinfo (user@), which "
                           "RFC 9110 4.2.4 says to treat as an error")
    if not authority or split_host(authority) is None:
        raise Refused(400, "the request target's authority is not a valid host[:port]")
    if b"#" in rest:
        raise Refused(400, "the request target has a fragment (#...), which a client "
                           "never sends (RFC 9112 3.2)")
    path, _, query = rest.partition(b"?")
    return Target(path or b"/", query, authority)


def split_host(value: bytes) -> tuple[bytes, bytes] | None:
    """
    C{(host, port)} of a Host field value or an authority (the port may be
    empty), or None if it is not one (RFC 9110 7.2, RFC 3986 3.2.2).
    """
    known = _hosts.get(value)
    if known is not None:
        return known
    match = _AUTHORITY.match(value)
    if match is None:
        return None
    split = match.group(1), match.group(2) or b""
    if len(_hosts) < _HOSTS_KEPT:
        _hosts[value] = split
    return split


# Valid Host values seen, split: a site is asked for a few names, again and
# again.  Bounded, so that a client inventing names cannot grow it.
_hosts: dict[bytes, tuple[bytes, bytes]] = {}
_HOSTS_KEPT = 256


def request_host(values: list[bytes], version: bytes, authority: bytes | None) -> bytes:
    """
    The authority a request is for: an absolute-form target's, else its
    Host header's (empty for an HTTP/1.0 request without one).

    @raise Refused: 400 for an HTTP/1.1 request without Host, for several
        Host headers, or an invalid one (RFC 9112 3.2), even when an
        absolute-form target makes its value irrelevant.
    """
    if len(values) > 1:
        raise Refused(400, "the request has more than one Host header (RFC 9112 3.2)")
    if values:
        host = values[0]
        if split_host(host) is None:
            raise Refused(400, f"its Host header {_show(host)} is not a valid host[:port] "
                               "(RFC 9112 3.2)")
    elif version == HTTP_11:
        raise Refused(400, "an HTTP/1.1 request must have a Host header (RFC 9112 3.2)")
    else:
        host = b""
    return host if authority is None else authority


def http_version(major: int, minor: int) -> bytes:
    """
    The version a request is answered as: 1.0 as 1.0, 1.1 and later 1.x
    as 1.1 (RFC 9110 2.5: a higher minor version is understood as the
    highest this server speaks).

    @raise Refused: 505 for any other major version.
    """
    if major != 1:
        raise Refused(505, f"HTTP/{major}.{minor} is not supported; this server speaks HTTP/1.1 "
                           "and HTTP/1.0")
    return HTTP_10 if minor == 0 else HTTP_11


def is_chunked(values: list[bytes], version: bytes) -> bool:
    """
    Whether the Transfer-Encoding C{values} of a request frame its body as
    chunked, which is the only way they may (RFC 9112 6.1, 6.3).

    @raise Refused: 400 for Transfer-Encoding in an HTTP/1.0 request, for
        codings that do not end in chunked (the body's length cannot be
        known: a request smuggled behind it would be read as a request)
        and for chunked applied twice; 501 for another coding before the
        final chunked, which this server does not decode.
    """
    codings = [c.strip().lower() for value in values for c in value.split(b",")]
    codings = [c for c in codings if c]
    if version == HTTP_10:
        raise Refused(400, "an HTTP/1.0 request has a Transfer-Encoding, which HTTP/1.0 does "
                           "not define (RFC 9112 6.1)")
    if not codings or codings[-1] != b"chunked":
        raise Refused(400, "its Transfer-Encoding does not end in chunked, so the body's length "
                           "cannot be known (RFC 9112 6.3)")
    if codings.count(b"chunked") > 1:
        raise Refused(400, "its Transfer-Encoding applies chunked more than once (RFC 9112 7)")
    if len(codings) > 1:
        others = b", ".join(codings[:-1]).decode("latin-1")
        raise Refused(501, f"its Transfer-Encoding uses {others}, which this server does not "
                           "decode (RFC 9112 6.1)")
    return True


def connection_options(values: Iterable[bytes]) -> frozenset[bytes]:
    """The connection options of Connection header values, lower-cased (RFC 9110 7.6.1)."""
    return frozenset(option.strip().lower() for value in values for option in value.split(b","))


def keeps_alive(version: bytes, options: frozenset[bytes]) -> bool:
    """
    Whether the client wants the connection kept after the response
    (RFC 9112 9.3): HTTP/1.1 unless it says close, HTTP/1.0 only if it
    says keep-alive.
    """
    if b"close" in options:
        return False
    return version == HTTP_11 or b"keep-alive" in options


def expects_continue(values: list[bytes], version: bytes) -> bool:
    """
    Whether the client waits for 100 (Continue) before sending the body
    (RFC 9110 10.1.1).  An HTTP/1.0 request's Expect is ignored.

    @raise Refused: 417 for any expectation but 100-continue.
    """
    if version != HTTP_11:
        return False
    expectations = {e.strip().lower() for value in values for e in value.split(b",")} - {b""}
    if expectations - {b"100-continue"}:
        shown = b", ".join(values)
        raise Refused(417, f"its Expect header {_show(shown)} asks for something other than "
                           "100-continue (RFC 9110 10.1.1)")
    return bool(expectations)


def _show(value: bytes, limit: int = 80) -> str:
    """A client's bytes, quoted and cut short, for a log line."""
    text = repr(value[:limit])[1:]
    return text[:-1] + "...'" if len(value) > limit else text
