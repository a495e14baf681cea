"""
HTTP/1.1 conformance cases for backtracweb's request parsing, written from
the text of RFC 9112 ("HTTP/1.1") and RFC 9110 ("HTTP Semantics").

Each L{Case} is the raw bytes a client sends on a new connection and what
must come back: the status of every response in order (interim 1xx
included), what the application saw of each request it answered (as
reported by tests/functional/apps/echoapp.py), and whether the server then
closes the connection or keeps it usable.  The runner is
tests/functional/test_conformance.py; it needs nothing here but the data.

Where the RFCs leave the server a choice (MAY, or "reject or repair"), the
case encodes the choice backtracweb makes, and says so in C{why}.  The
server is strict: what the grammar does not allow is refused with 400 and
the connection closed, never repaired, since a repair that another hop does
not make is how requests get smuggled (RFC 9112 §11.2).

Every request below is written out byte for byte; "t" is a short valid Host.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


class _Absent:
    """In C{seen}: the key must not be in what the application reports."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


@dataclass(frozen=True)
class Case:
    name: str
    """Short unique id (unique within the whole table), the pytest id after the group."""
    source: str
    """Where the rule is written, e.g. "RFC 9112 §6.3 (item 4)"."""
    send: bytes
    """The raw bytes the client sends, in one write (may hold several requests)."""
    statuses: tuple[int, ...]
    """Status codes of every response received, in order, interim 1xx included."""
    seen: tuple[dict, ...] | None = ()
    """
    For each request the application answered, in order, a subset of what
    the echo app reports (nested dicts are subsets too; L{ABSENT} means the
    key must be missing).  () means the application answered nothing; None
    means do not check.
    """
    closed: bool = False
    """
    True: the server closes the connection after the last response.  False:
    the connection stays usable (the runner sends a probe request on it).
    """
    limits: dict = field(default_factory=dict)
    """[limits] overrides for this case, e.g. {"max_request_line": "64"}."""
    why: str = ""
    """One line: what the rule protects against, and the server's choice where the RFC leaves one."""
    answer_headers: dict = field(default_factory=dict)
    """
    Header fields the last response of the case must carry: name → one
    member the field's comma-separated value must hold (case-insensitive).
    """
    answer_version: str = ""
    """If set, the HTTP-version the status line of the last response must show."""
    group: str = ""
    """The group of rules the case belongs to; set by L{_group}."""

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"


def _group(label: str, *cases: Case) -> tuple[Case, ...]:
    return tuple(replace(case, group=label) for case in cases)


# Limits for the cases of the "limits" group.  Each set is a daemon of its
# own; the sets are kept apart so that a key the server does not know yet
# only stops the cases that are about it.
BODY_LIMIT = {"max_body": "100"}
LINE_LIMIT = {"max_request_line": "256"}
FIELD_LIMIT = {"max_header_field": "256"}
HEAD_LIMITS = {"max_header_bytes": "1K", "max_headers": "10"}


FRAMING_CONTENT_LENGTH = _group(
    "framing-content-length",
    Case(
        "body-of-content-length",
        "RFC 9112 §6.3 (item 6)",
        b"POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        (200,),
        ({"method": "POST", "path": "/cl", "body": "hello", "content_length": "5"},),
        why="a valid Content-Length without Transfer-Encoding is the body's length in octets",
    ),
    Case(
        "content-length-zero",
        "RFC 9112 §6.2",
        b"POST /cl0 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        (200,),
        ({"path": "/cl0", "body": ""},),
        why="Content-Length: 0 is an empty body; the next bytes are the next request",
    ),
    Case(
        "leading-zeros-are-digits",
        "RFC 9112 §6.2 (Content-Length = 1*DIGIT)",
        b"POST /cl-zeros HTTP/1.1\r\nHost: t\r\nContent-Length: 005\r\n\r\nhello",
        (200,),
        ({"path": "/cl-zeros", "body": "hello"},),
        why="1*DIGIT allows leading zeros: 005 is five octets, not an error",
    ),
    Case(
        "no-length-means-no-body",
        "RFC 9112 §6.3 (item 7)",
        b"POST /nolen HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /nolen-next HTTP/1.1\r\nHost: t\r\n\r\n",
        (200, 200),
        ({"path": "/nolen", "body": ""}, {"path": "/nolen-next"}),
        why="a request with neither Content-Length nor Transfer-Encoding has no body; "
            "what follows is the next request",
    ),
    Case(
        "get-body-is-a-body",
        "RFC 9112 §6.3 (item 6); RFC 9110 §9.3.1",
        b"GET /getbody HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n"
        b"GET /inbody HTTP/1.0",
        (200,),
        ({"method": "GET", "path": "/getbody", "body": "GET /inbody HTTP/1.0"},),
        why="framing does not depend on the method: a GET's announced content is read "
            "as content, never parsed as a request",
    ),
    Case(
        "not-digits",
        "RFC 9112 §6.3 (item 5)",
        b"POST /cl-abc HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\nhello",
        (400,), closed=True,
        why="an invalid Content-Length makes the framing unrecoverable: 400, then close",
    ),
    Case(
        "empty",
        "RFC 9112 §6.2 (1*DIGIT); §6.3 (item 5)",
        b"POST /cl-empty HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n\r\nhello",
        (400,), closed=True,
        why="an empty Content-Length is not 1*DIGIT; reading it as 0 would run the body "
            "as a request",
    ),
    Case(
        "plus-sign",
        "RFC 9112 §6.2 (1*DIGIT); §6.3 (item 5)",
        b"POST /cl-plus HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello",
        (400,), closed=True,
        why="a sign is not a DIGIT: lenient integer parsers accept +5, a strict hop does not",
    ),
    Case(
        "negative",
        "RFC 9112 §6.2 (1*DIGIT); §6.3 (item 5)",
        b"POST /cl-neg HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\nhello",
        (400,), closed=True,
        why="a negative length has no meaning; never read it as 0 or as read-to-close",
    ),
    Case(
        "whitespace-inside",
        "RFC 9112 §6.2 (1*DIGIT); §6.3 (item 5)",
        b"POST /cl-ws HTTP/1.1\r\nHost: t\r\nContent-Length: 1 0\r\n\r\n0123456789",
        (400,), closed=True,
        why="1 0 could be read as 1, 10 or 0 by different hops; it is none of them",
    ),
    Case(
        "list-of-equal-values",
        "RFC 9110 §8.6; RFC 9112 §6.3 (item 5)",
        b"POST /cl-list HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
        (400,), closed=True,
        why="choice: RFC 9110 §8.6 lets a recipient reject a repeated value or fold it; "
            "this server rejects",
    ),
    Case(
        "two-equal-lines",
        "RFC 9110 §8.6; RFC 9112 §6.3 (item 5)",
        b"POST /cl-twice HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
        b"hello",
        (400,), closed=True,
        why="choice: two Content-Length lines, even equal, are rejected rather than folded",
    ),
    Case(
        "two-different-lines",
        "RFC 9112 §6.3 (item 5)",
        b"POST /cl-differ HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
        b"hello!",
        (400,), closed=True,
        why="conflicting lengths are the classic smuggling split: each hop picks another one",
    ),
)


FRAMING_TRANSFER_ENCODING = _group(
    "framing-transfer-encoding",
    Case(
        "chunked-frames-the-body",
        "RFC 9112 §6.3 (item 4); §7.1.3",
        b"POST /te HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        (200,),
        ({"path": "/te", "body": "hello", "content_length": "5"},),
        why="chunked as the final coding frames the body; the application gets it decoded "
            "with CONTENT_LENGTH set to the decoded length (the server buffers it)",
    ),
    Case(
        "coding-name-case-insensitive",
        "RFC 9112 §7 (transfer-coding names are case-insensitive)",
        b"POST /te-case HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ChUnKeD\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        (200,),
        ({"path": "/te-case", "body": "hello"},),
        why="ChUnKeD is chunked; a hop that compares case-sensitively frames differently",
    ),
    Case(
        "coding-surrounded-by-ows",
        "RFC 9112 §5.1 (OWS around a field value is not part of it)",
        b"POST /te-ows HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:   chunked  \r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        (200,),
        ({"path": "/te-ows", "body": "hello"},),
        why="spaces around the value are stripped before the coding is read (llhttp refuses "
            "a horizontal tab there, with 400: stricter than the RFC, and safe)",
    ),
    Case(
        "identity-smuggling",
        "RFC 9112 §6.3 (item 4); §11.2",
        b"POST /c5 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n"
        b"GET /SMUGGLED HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="bug report (1): a final coding other than chunked leaves the length unknown; "
            "ignoring TE would run the smuggled GET",
    ),
    Case(
        "identity-with-content-length",
        "RFC 9112 §6.1; §6.3 (items 3 and 4)",
        b"POST /c5b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n"
        b"hello",
        (400,), closed=True,
        why="bug report (1): TE overrides Content-Length, and identity is not chunked; "
            "a hop that honours the Content-Length instead frames differently",
    ),
    Case(
        "final-coding-gzip",
        "RFC 9112 §6.3 (item 4)",
        b"POST /te-gzip HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        (400,), closed=True,
        why="a request whose final coding is not chunked cannot be delimited: 400 and close",
    ),
    Case(
        "final-coding-unknown-lookalike",
        "RFC 9112 §6.3 (item 4)",
        b"POST /te-x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="xchunked is not chunked: a substring match must not frame the body",
    ),
    Case(
        "chunked-not-final",
        "RFC 9112 §6.1; §6.3 (item 4)",
        b"POST /te-notlast HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="chunked must be the final coding of a request; present but not last is 400",
    ),
    Case(
        "chunked-twice-in-a-list",
        "RFC 9112 §6.1 (chunked MUST NOT be applied more than once)",
        b"POST /te-twice HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="a body chunked twice would need decoding twice; hops that decode once disagree",
    ),
    Case(
        "chunked-twice-in-two-lines",
        "RFC 9112 §6.1; RFC 9110 §5.2 (field lines combine into one list)",
        b"POST /te-lines HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="two Transfer-Encoding lines are one list, chunked, chunked: applied twice",
    ),
    Case(
        "unknown-coding-before-chunked",
        "RFC 9112 §6.1 (SHOULD respond 501 to a transfer coding it does not understand)",
        b"POST /te-501 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        (501,), closed=True,
        why="framing is sound but the server does not decode gzip: 501, and close since "
            "the body is left unread",
    ),
    Case(
        "second-line-decides-the-final-coding",
        "RFC 9110 §5.2; RFC 9112 §6.1",
        b"POST /te-order HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        (501,), closed=True,
        why="the lines combine to identity, chunked: reading only the first line would see "
            "identity; identity is no registered transfer coding, so unknown: 501",
    ),
    Case(
        "with-content-length",
        "RFC 9112 §6.1 (MAY reject; MUST close either way); §6.3 (item 3)",
        b"POST /te-cl HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="choice: both framings in one request is a smuggling attempt; reject rather than "
            "follow TE alone",
    ),
    Case(
        "in-http10",
        "RFC 9112 §6.1 (HTTP/1.0 message with Transfer-Encoding: framing is faulty)",
        b"POST /te10 HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="HTTP/1.0 has no transfer codings: a 1.0 hop sends the chunks as a read-to-close "
            "body; choice: reject",
    ),
)


CHUNKED = _group(
    "chunked",
    Case(
        "several-chunks-joined",
        "RFC 9112 §7.1; §7.1.3",
        b"POST /ch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        (200,),
        ({"path": "/ch", "body": "abcde", "content_length": "5"},),
        why="the body is the chunks' data in order, its length their sum",
    ),
    Case(
        "hex-size-either-case",
        "RFC 9112 §7.1 (chunk-size = 1*HEXDIG); RFC 5234 §2.3 (case-insensitive)",
        b"POST /ch-hex HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"A\r\n0123456789\r\nb\r\nabcdefghijk\r\n0\r\n\r\n",
        (200,),
        ({"path": "/ch-hex", "body": "0123456789abcdefghijk", "content_length": "21"},),
        why="chunk sizes are hexadecimal, A and a alike; decimal parsing would misframe",
    ),
    Case(
        "size-with-leading-zeros",
        "RFC 9112 §7.1 (1*HEXDIG; last-chunk = 1*(\"0\"))",
        b"POST /ch-zeros HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0005\r\nhello\r\n000\r\n\r\n",
        (200,),
        ({"path": "/ch-zeros", "body": "hello"},),
        why="0005 is five and 000 is the last chunk: zeros in front change nothing",
    ),
    Case(
        "empty-body",
        "RFC 9112 §7.1 (chunked-body = *chunk last-chunk ...)",
        b"POST /ch-empty HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        (200,),
        ({"path": "/ch-empty", "body": "", "content_length": "0"},),
        why="a chunked body may be only its last chunk: empty, not missing",
    ),
    Case(
        "crlf-inside-chunk-data",
        "RFC 9112 §7.1 (chunk-data = 1*OCTET, as many as chunk-size)",
        b"POST /ch-crlf HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"7\r\nab\r\ncde\r\n0\r\n\r\n",
        (200,),
        ({"path": "/ch-crlf", "body": "ab\r\ncde"},),
        why="the size delimits the data, not line ends: a CRLF inside a chunk is data",
    ),
    Case(
        "extensions-ignored",
        "RFC 9112 §7.1.1 (a recipient MUST ignore unrecognized chunk extensions)",
        b"POST /ch-ext HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n0;last\r\n\r\n",
        (200,),
        ({"path": "/ch-ext", "body": "hello"},),
        why="chunk extensions, with or without a value, are accepted and dropped",
    ),
    Case(
        "extension-quoted-value",
        "RFC 9112 §7.1.1 (chunk-ext-val = token / quoted-string)",
        b"POST /ch-quoted HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;note=\"a;b=c\"\r\nhello\r\n0\r\n\r\n",
        (200,),
        ({"path": "/ch-quoted", "body": "hello"},),
        why="a quoted extension value may hold ; and =; it still ends at the CRLF",
    ),
    Case(
        "trailer-not-shown",
        "RFC 9112 §7.1.2 (MAY retain or discard trailer fields); RFC 9110 §6.5.1",
        b"POST /ch-trailer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
        (200,),
        ({"path": "/ch-trailer", "body": "hello", "headers": {"HTTP_X_TRAILER": ABSENT}},),
        why="choice: trailer fields are read and discarded, never merged with the header "
            "fields the application sees",
    ),
    Case(
        "trailer-content-length-refused",
        "RFC 9110 §6.5.1 (a sender MUST NOT send a trailer field its definition does not allow)",
        b"POST /ch-trailer-cl HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nContent-Length: 999\r\n\r\n",
        (400,), closed=True,
        why="choice: a Content-Length in the trailer (framing, never allowed there) is refused "
            "(llhttp), so it can never replace the decoded length",
    ),
    Case(
        "size-line-bare-lf",
        "RFC 9112 §7.1 (chunk = chunk-size [ chunk-ext ] CRLF ...)",
        b"POST /ch-lf HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="bug report (5): a chunk-size line ended by a bare LF; hops that accept and hops "
            "that reject it frame differently",
    ),
    Case(
        "data-bare-lf",
        "RFC 9112 §7.1 (chunk-data CRLF)",
        b"POST /ch-data-lf HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\n0\r\n\r\n",
        (400,), closed=True,
        why="chunk data must be followed by CRLF; a bare LF is not accepted in its place",
    ),
    Case(
        "data-longer-than-size",
        "RFC 9112 §7.1 (chunk-data CRLF)",
        b"POST /ch-long HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="after chunk-size octets CRLF must follow; anything else means the sizes lie",
    ),
    Case(
        "size-overflow",
        "RFC 9112 §7.1 (recipients MUST anticipate large numerals and prevent overflow)",
        b"POST /ch-big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1" + b"0" * 40 + b"\r\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="bug report (5): a size that overflows an integer may wrap to a small one; "
            "it is refused, not truncated",
    ),
    Case(
        "size-not-hex",
        "RFC 9112 §7.1 (chunk-size = 1*HEXDIG)",
        b"POST /ch-0x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0x5\r\nhello\r\n0\r\n\r\n",
        (400,), closed=True,
        why="0x5 is not 1*HEXDIG; a parser reading only the leading 0 would see the end",
    ),
)


HOST = _group(
    "host",
    Case(
        "missing-host-http11",
        "RFC 9112 §3.2 (MUST respond 400 to an HTTP/1.1 request without Host)",
        b"GET /nohost HTTP/1.1\r\n\r\n",
        (400,), closed=True,
        why="bug report (2): without Host the target URI cannot be built",
    ),
    Case(
        "two-host-lines",
        "RFC 9112 §3.2 (MUST respond 400 to more than one Host field line)",
        b"GET /twohosts HTTP/1.1\r\nHost: t\r\nHost: evil.example\r\n\r\n",
        (400,), closed=True,
        why="bug report (2): hops that pick the first and the last Host route differently",
    ),
    Case(
        "space-in-host",
        "RFC 9112 §3.2; RFC 9110 §7.2 (Host = uri-host [ \":\" port ])",
        b"GET /hostspace HTTP/1.1\r\nHost: a b\r\n\r\n",
        (400,), closed=True,
        why="bug report (2): a space is in no uri-host",
    ),
    Case(
        "userinfo-in-host",
        "RFC 9112 §3.2; RFC 9110 §7.2; RFC 3986 §3.2.2",
        b"GET /hostuser HTTP/1.1\r\nHost: user@evil.example\r\n\r\n",
        (400,), closed=True,
        why="bug report (2): @ is not allowed in a reg-name; userinfo in Host hides the real "
            "authority",
    ),
    Case(
        "slash-in-host",
        "RFC 9112 §3.2; RFC 3986 §3.2.2 (reg-name)",
        b"GET /hostslash HTTP/1.1\r\nHost: a/b\r\n\r\n",
        (400,), closed=True,
        why="a / in Host would let the Host value inject a path into URLs built from it",
    ),
    Case(
        "unclosed-ip-literal",
        "RFC 9112 §3.2; RFC 3986 §3.2.2 (IP-literal = \"[\" ... \"]\")",
        b"GET /hostv6 HTTP/1.1\r\nHost: [::1\r\n\r\n",
        (400,), closed=True,
        why="an IP literal without its closing bracket is no host",
    ),
    Case(
        "port-not-digits",
        "RFC 9112 §3.2; RFC 3986 §3.2.3 (port = *DIGIT)",
        b"GET /hostport HTTP/1.1\r\nHost: t:abc\r\n\r\n",
        (400,), closed=True,
        why="a port of letters is an invalid Host value",
    ),
    Case(
        "invalid-host-http10",
        "RFC 9112 §3.2 (400 to ANY request message with an invalid Host value)",
        b"GET /hostbad10 HTTP/1.0\r\nHost: a b\r\n\r\n",
        (400,), closed=True,
        why="Host is optional in HTTP/1.0 but, when sent, must still be valid",
    ),
    Case(
        "empty-host-accepted",
        "RFC 9110 §7.2; RFC 3986 §3.2.2 (reg-name = *( ... ) may be empty)",
        b"GET /emptyhost HTTP/1.1\r\nHost:\r\n\r\n",
        (200,),
        ({"path": "/emptyhost"},),
        why="an empty Host is a valid (empty) reg-name for an origin-form target; the "
            "server name then comes from the listening address",
    ),
    Case(
        "ip-literal-with-port",
        "RFC 9110 §7.2; RFC 3986 §3.2.2",
        b"GET /hostv6ok HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        (200,),
        ({"path": "/hostv6ok", "host": "[::1]:8080"},),
        why="an IPv6 literal in brackets, with a port, is a valid Host",
    ),
    Case(
        "host-port-split",
        "RFC 9110 §7.2; RFC 3875 §4.1.14-15",
        b"GET /hostport-ok HTTP/1.1\r\nHost: t:8080\r\n\r\n",
        (200,),
        ({"host": "t:8080", "server_name": "t"},),
        why="design: SERVER_NAME is the Host's host; SERVER_PORT stays the port the request "
            "came in on (RFC 3875 §4.1.15)",
    ),
    Case(
        "http10-without-host",
        "RFC 9112 §3.2 (the 400 rule is for HTTP/1.1 requests lacking Host)",
        b"GET /host10 HTTP/1.0\r\n\r\n",
        (200,),
        ({"path": "/host10", "host": None, "protocol": "HTTP/1.0"},), closed=True,
        why="HTTP/1.0 clients need not send Host; the request is served (then closed: 1.0)",
    ),
    Case(
        "absolute-form-replaces-host",
        "RFC 9112 §3.2.2 (origin server MUST ignore Host and use the target's authority)",
        b"GET http://abs.example/x HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,),
        ({"host": "abs.example", "server_name": "abs.example", "path": "/x"},),
        why="two different hosts in one request: the target's authority wins, everywhere",
    ),
    Case(
        "absolute-form-still-needs-host",
        "RFC 9112 §3.2 (400 to ANY HTTP/1.1 request lacking Host)",
        b"GET http://abs.example/nohost HTTP/1.1\r\n\r\n",
        (400,), closed=True,
        why="an absolute target does not excuse a missing Host field in HTTP/1.1",
    ),
    Case(
        "absolute-form-userinfo",
        "RFC 9110 §4.2.4 (SHOULD treat userinfo in an http(s) URI as an error)",
        b"GET http://u:p@abs.example/x HTTP/1.1\r\nHost: abs.example\r\n\r\n",
        (400,), closed=True,
        why="bug report (2): userinfo obscures the authority (phishing); refused",
    ),
)


REQUEST_LINE_AND_TARGET = _group(
    "request-line-and-target",
    Case(
        "fragment",
        "RFC 9112 §3.2.1 (origin-form = absolute-path [ \"?\" query ]); §3",
        b"GET /p#frag HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="bug report (3): a fragment is never sent; # in a target is an invalid request-line",
    ),
    Case(
        "fragment-after-query",
        "RFC 9112 §3.2.1; RFC 3986 §3.4-3.5 (# ends the query)",
        b"GET /p?q=1#frag HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="bug report (3): # is not a query character either; not stripped, refused",
    ),
    Case(
        "relative-target",
        "RFC 9112 §3.2 (request-target = origin-form / absolute-form / ...); §3",
        b"GET p HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="p is no form of request-target; SHOULD NOT autocorrect it to /p",
    ),
    Case(
        "authority-form-with-get",
        "RFC 9112 §3.2.3 (authority-form is only used for CONNECT)",
        b"GET t:443 HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="host:port as the target of a GET is no valid target for an origin server",
    ),
    Case(
        "other-scheme",
        "RFC 9112 §3.2.2; RFC 9110 §4.2 (http and https URI schemes)",
        b"GET ftp://abs.example/x HTTP/1.1\r\nHost: abs.example\r\n\r\n",
        (400,), closed=True,
        why="choice: an absolute target of a scheme this server does not serve is 400 "
            "(RFC 9110 §7.4 would also allow 421)",
    ),
    Case(
        "whitespace-in-target",
        "RFC 9112 §3.2 (no whitespace is allowed in the request-target); §3",
        b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="an unencoded space splits the line into four words; not guessed at",
    ),
    Case(
        "tab-in-target",
        "RFC 9112 §3 (MAY treat HTAB as SP: this server does not)",
        b"GET /a\tb HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="choice: no whitespace but single SP separates the request line's parts",
    ),
    Case(
        "control-in-target",
        "RFC 9112 §3.2; RFC 3986 §2 (allowed characters)",
        b"GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="control characters in a target reach logs and applications unescaped",
    ),
    Case(
        "obs-text-in-target",
        "RFC 9112 §3.2; RFC 3986 §2 (non-ASCII must be percent-encoded)",
        b"GET /caf\xe9 HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="octets above 0x7F are not URI characters: their meaning is ambiguous",
    ),
    Case(
        "percent-decoded-path",
        "RFC 3986 §2.1; RFC 3875 §4.1.5; PEP 3333",
        b"GET /a%20b HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,),
        ({"path": "/a b"},),
        why="PATH_INFO is the decoded path",
    ),
    Case(
        "encoded-slash-decoded",
        "RFC 3875 §4.1.5; PEP 3333 (no raw path in WSGI)",
        b"GET /a%2Fb HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,),
        ({"path": "/a/b"},),
        why="design: %2F is decoded into PATH_INFO like any escape (WSGI has no raw path)",
    ),
    Case(
        "query-not-decoded",
        "RFC 3875 §4.1.7 (QUERY_STRING is URL-encoded)",
        b"GET /q?a=%20&b=%2F+ HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,),
        ({"path": "/q", "query": "a=%20&b=%2F+"},),
        why="the application decodes the query itself: decoding twice would change it",
    ),
    Case(
        "asterisk-options",
        "RFC 9112 §3.2.4; RFC 9110 §9.3.7",
        b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,),
        (),
        why="OPTIONS * asks about the server, not a resource: the server answers it itself",
    ),
    Case(
        "asterisk-other-method",
        "RFC 9112 §3.2.4 (asterisk-form only for OPTIONS); §3 (an invalid request-line: 400)",
        b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="the asterisk-form with any method but OPTIONS is an invalid request line",
    ),
    Case(
        "connect-not-a-proxy",
        "RFC 9110 §9.3.6; §9.1 (SHOULD 501 for a method not implemented)",
        b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n",
        (501,), closed=True,
        why="this origin server opens no tunnels",
    ),
    Case(
        "unknown-method",
        "RFC 9110 §9.1 (SHOULD respond 501 to an unrecognized method)",
        b"FOO /m HTTP/1.1\r\nHost: t\r\n\r\n",
        (501,), closed=True,
        why="a method the server does not know is not passed to the application as GET",
    ),
    Case(
        "method-case-sensitive",
        "RFC 9110 §9.1 (the method token is case-sensitive)",
        b"get /m HTTP/1.1\r\nHost: t\r\n\r\n",
        (501,), closed=True,
        why="get is a valid token but not GET: an unknown method",
    ),
    Case(
        "method-not-a-token",
        "RFC 9112 §3.1 (method = token); RFC 9110 §5.6.2",
        b"GE(T /m HTTP/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="( is a delimiter, not a tchar: the request line is invalid",
    ),
    Case(
        "head-has-no-body",
        "RFC 9110 §9.3.2; RFC 9112 §6.3 (item 1)",
        b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,), None,
        why="the application's body is not sent in answer to HEAD (the probe would read it)",
    ),
)


HEADER_SYNTAX = _group(
    "header-syntax",
    Case(
        "space-before-colon",
        "RFC 9112 §5.1 (MUST reject whitespace between field name and colon)",
        b"POST /ws HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello",
        (400,), closed=True,
        why="one hop reads Content-Length, another an unknown field: the split differs",
    ),
    Case(
        "obs-fold",
        "RFC 9112 §5.2 (MUST reject with 400 or replace obs-fold with SP)",
        b"GET /fold HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
        (400,), closed=True,
        why="choice: line folding is refused, not unfolded",
    ),
    Case(
        "whitespace-line-after-request-line",
        "RFC 9112 §2.2 (MUST reject, or ignore the line)",
        b"GET /wsl HTTP/1.1\r\n X-A: 1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="choice: a first field line starting with whitespace is rejected, not consumed",
    ),
    Case(
        "bare-lf-line-ends",
        "RFC 9112 §2.2 (a recipient MAY recognize a bare LF: this server does not)",
        b"GET /lf HTTP/1.1\nHost: t\n\n",
        (400,), closed=True,
        why="bug report (5): choice: only CRLF ends a line, so no two hops split differently",
    ),
    Case(
        "bare-lf-after-a-field",
        "RFC 9112 §2.2; §5",
        b"GET /lf2 HTTP/1.1\r\nHost: t\nX-A: 1\r\n\r\n",
        (400,), closed=True,
        why="a bare LF inside an otherwise CRLF head hides a field from one hop or another",
    ),
    Case(
        "bare-cr-in-value",
        "RFC 9112 §2.2 (bare CR: element invalid, or replaced by SP)",
        b"GET /cr HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n",
        (400,), closed=True,
        why="choice: a bare CR is refused rather than replaced",
    ),
    Case(
        "nul-in-value",
        "RFC 9110 §5.5 (CR, LF or NUL in a value: MUST reject or replace with SP)",
        b"GET /nul HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
        (400,), closed=True,
        why="choice: reject; NUL truncates values in C-string consumers",
    ),
    Case(
        "control-in-value",
        "RFC 9110 §5.5 (other CTLs are invalid; MAY be retained)",
        b"GET /ctl HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n",
        (400,), closed=True,
        why="choice: control characters in values are refused, not passed on",
    ),
    Case(
        "del-in-value",
        "RFC 9110 §5.5 (field-vchar = VCHAR / obs-text; DEL is a CTL)",
        b"GET /del HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n",
        (400,), closed=True,
        why="DEL is neither VCHAR nor obs-text",
    ),
    Case(
        "empty-field-name",
        "RFC 9110 §5.1 (field-name = token = 1*tchar)",
        b"GET /noname HTTP/1.1\r\nHost: t\r\n: x\r\n\r\n",
        (400,), closed=True,
        why="a field line needs a name",
    ),
    Case(
        "field-name-not-a-token",
        "RFC 9110 §5.1; §5.6.2 (tchar)",
        b"GET /badname HTTP/1.1\r\nHost: t\r\nX(A): v\r\n\r\n",
        (400,), closed=True,
        why="( is a delimiter, not part of a field name",
    ),
    Case(
        "line-without-colon",
        "RFC 9112 §5 (field-line = field-name \":\" OWS field-value OWS)",
        b"GET /nocolon HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n",
        (400,), closed=True,
        why="a line with no colon is no field line",
    ),
    Case(
        "value-ows-stripped",
        "RFC 9112 §5.1 (OWS before and after the value is excluded)",
        b"GET /ows HTTP/1.1\r\nHost: t\r\nX-A: \t  v \t \r\n\r\n",
        (200,),
        ({"headers": {"HTTP_X_A": "v"}},),
        why="leading and trailing spaces and tabs are not part of the value",
    ),
    Case(
        "inner-whitespace-kept",
        "RFC 9110 §5.5 (field-content may hold SP / HTAB between vchars)",
        b"GET /inner HTTP/1.1\r\nHost: t\r\nX-A: a  b\r\n\r\n",
        (200,),
        ({"headers": {"HTTP_X_A": "a  b"}},),
        why="only the ends of a value are trimmed; its inside is passed as sent",
    ),
    Case(
        "empty-value",
        "RFC 9110 §5.5 (field-value = *field-content)",
        b"GET /emptyval HTTP/1.1\r\nHost: t\r\nX-A:\r\n\r\n",
        (200,),
        ({"headers": {"HTTP_X_A": ""}},),
        why="a field may have an empty value; it is present, not dropped",
    ),
    Case(
        "repeated-field-joined",
        "RFC 9110 §5.2 (lines combine in order, separated by a comma); §5.3",
        b"GET /repeat HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
        (200,),
        ({"headers": {"HTTP_X_A": "1,2"}},),
        why="repeated lines reach the application as one value, in the order received",
    ),
    Case(
        "field-name-case-insensitive",
        "RFC 9110 §5.1 (field names are case-insensitive)",
        b"GET /case HTTP/1.1\r\nhOsT: t\r\nx-a: v\r\n\r\n",
        (200,),
        ({"host": "t", "headers": {"HTTP_X_A": "v"}},),
        why="hOsT is Host: it satisfies the Host requirement and is shown as HTTP_HOST",
    ),
    Case(
        "obs-text-in-value",
        "RFC 9110 §5.5 (field-vchar = VCHAR / obs-text; obs-text = %x80-FF); PEP 3333",
        b"GET /obstext HTTP/1.1\r\nHost: t\r\nX-A: caf\xe9\r\n\r\n",
        (200,),
        ({"headers": {"HTTP_X_A": "caf\u00e9"}},),
        why="octets 0x80-0xFF are allowed in values and reach the app as latin-1 characters",
    ),
    Case(
        "underscore-name-dropped",
        "README \"Behind a proxy\"; RFC 3875 §4.1.18 (- becomes _ in HTTP_* names)",
        b"GET /underscore HTTP/1.1\r\nHost: t\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n",
        (200,),
        ({"headers": {"HTTP_X_FORWARDED_FOR": ABSENT}},),
        why="design: X_Forwarded_For would pass for X-Forwarded-For in WSGI; it is dropped",
    ),
    Case(
        "empty-lines-before-request",
        "RFC 9112 §2.2 (SHOULD ignore at least one empty line before the request-line)",
        b"\r\n\r\nGET /lead HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,),
        ({"path": "/lead"},),
        why="stray CRLFs after a previous body (old clients) are skipped, not an error",
    ),
)


CONNECTION_AND_PIPELINING = _group(
    "connection-and-pipelining",
    Case(
        "http11-persists",
        "RFC 9112 §9.3 (HTTP/1.1: the connection persists by default)",
        b"GET /persist HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,),
        ({"path": "/persist"},),
        why="without close, an HTTP/1.1 connection stays open for the next request",
    ),
    Case(
        "close",
        "RFC 9112 §9.6 (MUST close after the response; SHOULD send close)",
        b"GET /close HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        (200,),
        ({"path": "/close"},), closed=True,
        answer_headers={"connection": "close"},
        why="the client asked to close: the response says close, then the server closes",
    ),
    Case(
        "close-case-insensitive",
        "RFC 9110 §7.6.1 (connection options are case-insensitive)",
        b"GET /closecase HTTP/1.1\r\nHost: t\r\nConnection: CLOSE\r\n\r\n",
        (200,),
        ({"path": "/closecase"},), closed=True,
        answer_headers={"connection": "close"},
        why="CLOSE is close",
    ),
    Case(
        "close-in-a-list",
        "RFC 9110 §7.6.1 (Connection = #connection-option); RFC 9112 §9.6",
        b"GET /closelist HTTP/1.1\r\nHost: t\r\nConnection: foo,close\r\n\r\n",
        (200,),
        ({"path": "/closelist"},), closed=True,
        answer_headers={"connection": "close"},
        why="bug report (4): close is honoured anywhere in the list, not only alone",
    ),
    Case(
        "close-in-second-line",
        "RFC 9110 §7.6.1; §5.2 (field lines combine into one list)",
        b"GET /closetwo HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        (200,),
        ({"path": "/closetwo"},), closed=True,
        answer_headers={"connection": "close"},
        why="bug report (4): a second Connection line adds to the first; close wins",
    ),
    Case(
        "close-stops-the-pipeline",
        "RFC 9112 §9.6 (MUST NOT process any further requests on that connection)",
        b"GET /first HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        b"GET /after-close HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,),
        ({"path": "/first"},), closed=True,
        why="a request sent after close is never run, even if already received",
    ),
    Case(
        "http10-closes-by-default",
        "RFC 9112 §9.3 (HTTP/1.0 without keep-alive: close after the response)",
        b"GET /c10 HTTP/1.0\r\n\r\n",
        (200,),
        ({"path": "/c10", "protocol": "HTTP/1.0"},), closed=True,
        why="an HTTP/1.0 client without keep-alive waits for the close",
    ),
    Case(
        "http10-keep-alive",
        "RFC 9112 §9.3; Appendix C.2.2 (the HTTP/1.0 keep-alive mechanism)",
        b"GET /k10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        (200,),
        ({"path": "/k10", "protocol": "HTTP/1.0"},),
        answer_headers={"connection": "keep-alive"},
        why="bug report (4): choice: honour 1.0 keep-alive; the response says keep-alive",
    ),
    Case(
        "three-gets-in-order",
        "RFC 9112 §9.3.2 (MUST send responses in the order the requests were received)",
        b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /p2 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /p3 HTTP/1.1\r\nHost: t\r\n\r\n",
        (200, 200, 200),
        ({"path": "/p1"}, {"path": "/p2"}, {"path": "/p3"}),
        why="pipelined requests are each answered once, in order",
    ),
    Case(
        "body-then-next-request",
        "RFC 9112 §9.3.2; §6.3 (item 6)",
        b"POST /pb HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /pb-next HTTP/1.1\r\nHost: t\r\n\r\n",
        (200, 200),
        ({"path": "/pb", "body": "abc"}, {"path": "/pb-next"}),
        why="the next request begins exactly where the announced body ends",
    ),
    Case(
        "chunked-then-next-request",
        "RFC 9112 §9.3.2; §7.1",
        b"POST /pc HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\nGET /pc-next HTTP/1.1\r\nHost: t\r\n\r\n",
        (200, 200),
        ({"path": "/pc", "body": "abc"}, {"path": "/pc-next"}),
        why="the next request begins right after the chunked body's final CRLF",
    ),
    Case(
        "good-then-bad",
        "RFC 9112 §9.3.2; §3.2",
        b"GET /good HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /bad HTTP/1.1\r\n\r\n",
        (200, 400),
        ({"path": "/good"},), closed=True,
        why="a bad request behind a good one: the good one is answered first, then 400, close",
    ),
)


EXPECT_100_CONTINUE = _group(
    "expect-100-continue",
    Case(
        "continue-then-final",
        "RFC 9110 §10.1.1; §15.2.1",
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        (100, 200),
        ({"path": "/e", "body": "hello"},),
        why="design: 100 Continue is sent when the application first reads the body (the "
            "MAY-omit for content already received is not used), then the final response",
    ),
    Case(
        "expectation-case-insensitive",
        "RFC 9110 §10.1.1 (the Expect field value is case-insensitive)",
        b"POST /ecase HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n"
        b"hello",
        (100, 200),
        ({"path": "/ecase", "body": "hello"},),
        why="100-Continue is 100-continue",
    ),
    Case(
        "no-continue-when-body-not-read",
        "RFC 9110 §10.1.1 (a final status may be sent instead of 100)",
        b"POST /nobody-e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        b"hello",
        (200,),
        ({"path": "/nobody-e", "body": None},),
        why="design: a view that never reads the body gets no 100 sent for it; the body, "
            "all received, is discarded and the connection kept",
    ),
    Case(
        "unknown-expectation",
        "RFC 9110 §10.1.1 (MAY respond 417 to an expectation other than 100-continue)",
        b"POST /e417 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: foo\r\n\r\nhello",
        (417,), closed=True,
        why="choice: an expectation the server cannot meet is refused with 417",
    ),
    Case(
        "ignored-in-http10",
        "RFC 9110 §10.1.1 (MUST ignore a 100-continue expectation in an HTTP/1.0 request)",
        b"POST /e10 HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        (200,),
        ({"path": "/e10", "body": "hello"},), closed=True,
        why="an HTTP/1.0 client does not understand 1xx responses",
    ),
    Case(
        "too-large-no-continue",
        "RFC 9110 §10.1.1 (send the final status at once if the headers decide it); §15.5.14",
        b"POST /ebig HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n",
        (413,), closed=True, limits=BODY_LIMIT,
        why="a body over max_body is refused before any 100 invites the client to send it",
    ),
)


LIMITS = _group(
    "limits",
    Case(
        "request-line-too-long",
        "RFC 9112 §3 (MUST respond 414 to a target longer than it wishes to parse); "
        "RFC 9110 §15.5.15",
        b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        (414,), closed=True, limits=LINE_LIMIT,
        why="a request line over max_request_line (256) is refused without buffering more",
    ),
    Case(
        "request-line-within-limit",
        "RFC 9112 §3 (RECOMMENDED to support at least 8000 octets: limit is configurable)",
        b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        (200,),
        ({"path": "/" + "a" * 200},), limits=LINE_LIMIT,
        why="a request line under max_request_line (256) is served",
    ),
    Case(
        "header-field-too-long",
        "RFC 9110 §5.4 (MUST respond with a 4xx); RFC 6585 §5 (431)",
        b"GET /bigfield HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 300 + b"\r\n\r\n",
        (431,), closed=True, limits=FIELD_LIMIT,
        why="one field over max_header_field (256) is 431, not a dropped connection",
    ),
    Case(
        "header-field-within-limit",
        "RFC 9110 §5.4",
        b"GET /okfield HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 200 + b"\r\n\r\n",
        (200,),
        ({"path": "/okfield", "headers": {"HTTP_X_BIG": "a" * 200}},), limits=FIELD_LIMIT,
        why="a field under max_header_field (256) is served whole",
    ),
    Case(
        "head-too-large",
        "RFC 9110 §5.4 (a set of fields larger than it wishes to process); RFC 6585 §5",
        b"GET /bighead HTTP/1.1\r\nHost: t\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 150) for i in range(8)) + b"\r\n",
        (431,), closed=True, limits=HEAD_LIMITS,
        why="a head over max_header_bytes (1K), each field short, is 431",
    ),
    Case(
        "too-many-fields",
        "RFC 9110 §5.4; RFC 6585 §5",
        b"GET /manyfields HTTP/1.1\r\nHost: t\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(11)) + b"\r\n",
        (431,), closed=True, limits=HEAD_LIMITS,
        why="12 field lines over max_headers (10) is 431",
    ),
    Case(
        "fields-at-the-limit",
        "RFC 9110 §5.4",
        b"GET /tenfields HTTP/1.1\r\nHost: t\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(9)) + b"\r\n",
        (200,),
        ({"path": "/tenfields", "headers": {"HTTP_X_H8": "v"}},), limits=HEAD_LIMITS,
        why="exactly max_headers (10) field lines are served: the limit is inclusive",
    ),
    Case(
        "content-length-over-max-body",
        "RFC 9110 §15.5.14 (413 Content Too Large)",
        b"POST /bigbody HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n",
        (413,), closed=True, limits=BODY_LIMIT,
        why="an announced body over max_body (100) is refused as soon as the head is read, "
            "without waiting for the body",
    ),
    Case(
        "content-length-at-max-body",
        "RFC 9110 §15.5.14",
        b"POST /maxbody HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"m" * 100,
        (200,),
        ({"path": "/maxbody", "body": "m" * 100},), limits=BODY_LIMIT,
        why="a body of exactly max_body is accepted: the limit is the largest allowed",
    ),
    Case(
        "chunked-over-max-body",
        "RFC 9110 §15.5.14; RFC 9112 §7.1",
        b"POST /bigchunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"3c\r\n" + b"c" * 60 + b"\r\n") * 2 + b"0\r\n\r\n",
        (413,), closed=True, limits=BODY_LIMIT,
        why="chunks adding up past max_body (100) are refused; the application sees nothing",
    ),
)


VERSION = _group(
    "version",
    Case(
        "http10",
        "RFC 9112 §2.3; RFC 9110 §2.5",
        b"GET /v10 HTTP/1.0\r\n\r\n",
        (200,),
        ({"path": "/v10", "protocol": "HTTP/1.0"},), closed=True,
        why="HTTP/1.0 is served, and the application sees HTTP/1.0",
    ),
    Case(
        "higher-minor",
        "RFC 9110 §2.5 (process as the highest minor version implemented); RFC 9112 §2.3",
        b"GET /v12 HTTP/1.2\r\nHost: t\r\n\r\n",
        (200,),
        ({"path": "/v12", "protocol": "HTTP/1.1"},),
        answer_version="HTTP/1.1",
        why="bug report (4): HTTP/1.2 is served as HTTP/1.1, and says so in its status line",
    ),
    Case(
        "http2-major",
        "RFC 9110 §15.6.6 (505 HTTP Version Not Supported)",
        b"GET /v20 HTTP/2.0\r\nHost: t\r\n\r\n",
        (505,), closed=True,
        why="a major version this server does not implement is 505",
    ),
    Case(
        "http3-major",
        "RFC 9110 §15.6.6",
        b"GET /v30 HTTP/3.0\r\nHost: t\r\n\r\n",
        (505,), closed=True,
        why="HTTP/3.0 is no HTTP/1.x message whatever it looks like",
    ),
    Case(
        "http09-major",
        "RFC 9110 §15.6.6; RFC 9112 §2.3",
        b"GET /v09 HTTP/0.9\r\nHost: t\r\n\r\n",
        (505,), closed=True,
        why="major version 0 is not supported",
    ),
    Case(
        "http-name-lower-case",
        "RFC 9112 §2.3 (HTTP-name = %s\"HTTP\", case-sensitive)",
        b"GET /vlower http/1.1\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="http is not HTTP: the request line is invalid",
    ),
    Case(
        "two-digit-minor",
        "RFC 9112 §2.3 (HTTP-version = HTTP-name \"/\" DIGIT \".\" DIGIT)",
        b"GET /v101 HTTP/1.01\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="one digit each side of the dot: 1.01 is not a version, not 1.1",
    ),
    Case(
        "garbage-version",
        "RFC 9112 §2.3; §3",
        b"GET /vx HTTP/1.x\r\nHost: t\r\n\r\n",
        (400,), closed=True,
        why="a version that is not DIGIT.DIGIT is an invalid request line",
    ),
    Case(
        "missing-version",
        "RFC 9112 §3 (request-line = method SP request-target SP HTTP-version)",
        b"GET /v09simple\r\nHost: t\r\n\r\n",
        (505,), closed=True,
        why="no HTTP/0.9 simple requests: llhttp reads a request line without a version as "
            "HTTP/0.9, which is answered as any version but 1.x is (505)",
    ),
)


CASES: tuple[Case, ...] = (
    FRAMING_CONTENT_LENGTH + FRAMING_TRANSFER_ENCODING + CHUNKED + HOST
    + REQUEST_LINE_AND_TARGET + HEADER_SYNTAX + CONNECTION_AND_PIPELINING
    + EXPECT_100_CONTINUE + LIMITS + VERSION
)
"""Every case, grouped; the runner runs them all."""

GROUPS = (
    "framing-content-length", "framing-transfer-encoding", "chunked", "host",
    "request-line-and-target", "header-syntax", "connection-and-pipelining",
    "expect-100-continue", "limits", "version",
)

assert len({case.name for case in CASES}) == len({case.id for case in CASES}) == len(CASES), \
    "case names must be unique"
assert {case.group for case in CASES} == set(GROUPS)
