"""
Unit tests for L{backtracweb.app.accesslog}: the line formats, escaping of
what clients send, the three destinations (a file, twistd's log, off),
reopening for logrotate, and the lines the site writes for real requests.

No reactor runs: site requests are parsed by a real channel from bytes
(see tests/helpers.py).
"""

from __future__ import annotations

import calendar
import errno
import fcntl
import os
import re
import stat
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
from helpers import Client, changed, make_site
from twisted.logger import LogLevel, capturedLogs, formatEvent

from backtracweb.app import accesslog, website
from backtracweb.app.accesslog import AccessLog, Entry
from backtracweb.app.website import BacktracSite
from backtracweb.config.logformat import COMBINED, FIELDS, template_errors
from backtracweb.http import channel as channel_module

STARTED = calendar.timegm((2026, 11, 25, 18, 40, 0)) + 0.125
"""25 Nov 2026 18:40:00.125 UTC."""

ENTRY = Entry(
    client="203.0.113.5",
    started=STARTED,
    duration=0.0123,
    method=b"GET",
    path=b"/shop/cart?id=7&x=%20",
    protocol=b"HTTP/1.1",
    host=b"www.example.com",
    status=200,
    sent=5120,
    referrer=b"https://www.example.com/shop/",
    user_agent=b"Mozilla/5.0 (X11; Linux x86_64)",
)

COMBINED_LINE = (
    '203.0.113.5 - - [25/Nov/2026:18:40:00 +0000] "GET /shop/cart?id=7&x=%20 HTTP/1.1" 200 5120 '
    '"https://www.example.com/shop/" "Mozilla/5.0 (X11; Linux x86_64)"'
)

COMBINED_PATTERN = re.compile(
    r'^(\S+) - - \[([^]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$'
)
"""The combined format as log tools parse it: quoted fields may hold escaped quotes."""


def formatted(entry: Entry, template: str = "combined") -> str:
    """The line C{entry} becomes in a log with C{template}."""
    return AccessLog("-", template).format(entry)


# -- formats -----------------------------------------------------------------------


class TestFormats:
    def test_combined(self):
        """C{combined} is Apache's and nginx's combined format, exactly."""
        assert formatted(ENTRY) == COMBINED_LINE
        assert AccessLog("-").template == COMBINED

    def test_combined_missing_values(self):
        """No body sent, no Referer and no User-Agent are each written C{-}."""
        entry = replace(ENTRY, sent=0, referrer=None, user_agent=None, status=304)
        assert formatted(entry) == (
            '203.0.113.5 - - [25/Nov/2026:18:40:00 +0000] "GET /shop/cart?id=7&x=%20 HTTP/1.1" '
            '304 - "-" "-"'
        )

    def test_every_field(self):
        """A template may use every field; each renders as documented."""
        template = "|".join(f"{{{name}}}" for name in FIELDS)
        assert formatted(ENTRY, template) == (
            "203.0.113.5|25/Nov/2026:18:40:00 +0000|2026-11-25T18:40:00.125Z|GET|"
            "/shop/cart?id=7&x=%20|HTTP/1.1|www.example.com|200|5120|12.3|"
            "https://www.example.com/shop/|Mozilla/5.0 (X11; Linux x86_64)"
        )

    def test_field_list(self):
        """The documented fields are exactly these."""
        assert list(FIELDS) == [
            "client", "time", "iso_time", "method", "path", "protocol", "host", "status",
            "bytes", "duration_ms", "referrer", "user_agent",
        ]

    def test_missing_host(self):
        """A request without a Host header logs C{-} for C{{host}}."""
        assert formatted(replace(ENTRY, host=None), "{host} {status}") == "- 200"

    def test_literal_braces_and_text(self):
        """Doubled braces are literal braces; other text is kept as written."""
        assert formatted(ENTRY, "{{x}} ip={client} took {duration_ms}ms") == (
            "{x} ip=203.0.113.5 took 12.3ms"
        )


class TestTemplateErrors:
    def test_valid(self):
        """Templates of known fields, with literal braces, are valid."""
        assert template_errors(COMBINED) is None
        assert template_errors("{client} {{literal}} {status:>3}") is None
        assert template_errors("no fields at all") is None

    @pytest.mark.parametrize("template, field", [
        ("{client} {agent}", "agent"),
        ("{}", ""),
        ("{0}", "0"),
        ("{client.host}", "client.host"),
        ("{status[0]}", "status[0]"),
    ])
    def test_unknown_field(self, template, field):
        """An unknown field is named, with the list of known ones."""
        assert template_errors(template) == (
            f"unknown field {{{field}}}; known fields: client, time, iso_time, method, path, "
            "protocol, host, status, bytes, duration_ms, referrer, user_agent"
        )

    @pytest.mark.parametrize("template, problem", [
        ("{client", "expected '}' before end of string"),
        ("client}", "Single '}' encountered in format string"),
        ("{ {client}", "unexpected '{' in field name"),
    ])
    def test_malformed(self, template, problem):
        """A template Python cannot parse says why and how to write braces."""
        assert template_errors(template) == (
            f"not a valid template ({problem}); write fields as {{name}} and braces as {{{{ }}}}"
        )

    @pytest.mark.parametrize("template", ["{status:d}", "{bytes:,}", "{status!z}"])
    def test_template_that_cannot_format(self, template):
        """
        A template is only valid if it can format a line: one whose format
        spec or conversion fails on the (string) field values is refused.
        """
        assert template_errors(template) is not None

    def test_accepted_template_cannot_break_requests(self, tmp_path):
        """
        Whatever template validation accepts, writing a line does not raise
        (an exception there would surface in the middle of finishing a
        response).
        """
        for template in ("{status:>5}", "{client!r}", "{client:.3}"):
            assert template_errors(template) is None
            log = AccessLog(str(tmp_path / "access.log"), template).open()
            log.write(ENTRY)
            log.close()
        assert (tmp_path / "access.log").read_text() == "  200\n'203.0.113.5'\n203\n"


# -- escaping -----------------------------------------------------------------------


class TestEscaping:
    @pytest.mark.parametrize(
        "raw, logged",
        [
            (b'/a"b', '/a\\"b'),
            (b"/a\\b", "/a\\\\b"),
            (b"/a\nb", "/a\\x0ab"),
            (b"/a\rb", "/a\\x0db"),
            (b"/a\tb", "/a\\x09b"),
            (b"/a\x00b", "/a\\x00b"),
            (b"/a\x1b[31mb", "/a\\x1b[31mb"),
            (b"/a\x7fb", "/a\\x7fb"),
            (b"/plain-path_~.%22", "/plain-path_~.%22"),
        ],
    )
    def test_path(self, raw, logged):
        """
        Quotes and backslashes are backslash-escaped, control characters
        written as C{\\xHH}; plain printable ASCII is left alone.
        """
        assert formatted(replace(ENTRY, path=raw), "{path}") == logged

    def test_referrer_and_user_agent(self):
        """The Referer and User-Agent are escaped the same way."""
        entry = replace(ENTRY, referrer=b'x"\\y', user_agent=b"a\r\nb")
        assert formatted(entry, "{referrer} {user_agent}") == 'x\\"\\\\y a\\x0d\\x0ab'

    @pytest.mark.parametrize(
        "raw, logged",
        [
            (b"/caf\xc3\xa9", "/caf\\xc3\\xa9"),
            (b'/caf\xc3\xa9"', '/caf\\xc3\\xa9\\"'),
            (b"/\xa0", "/\\xa0"),
            (b"/\xff", "/\\xff"),
        ],
    )
    def test_non_ascii_bytes(self, raw, logged):
        """A non-ASCII byte is written as C{\\xHH} of that very byte, so the line is ASCII."""
        assert formatted(replace(ENTRY, path=raw), "{path}") == logged

    def test_non_ascii_never_splits_a_line(self, tmp_path):
        """
        Whatever bytes a client sends, including C1 controls such as NEL
        (0x85), the file gets exactly one line per request.
        """
        path = tmp_path / "access.log"
        log = AccessLog(str(path)).open()
        log.write(replace(ENTRY, path=bytes(range(256)), user_agent=b"\x85\x0b\x0c\x1c\x1d\x1e"))
        log.close()
        data = path.read_bytes()
        assert data.count(b"\n") == 1 and data.endswith(b"\n")
        assert len(data.decode("utf-8").splitlines()) == 1

    def test_forged_fields_stay_in_their_quotes(self):
        """
        A User-Agent or path crafted to close its quotes and append fake
        fields, or a fake second line, is parsed back as one field.
        """
        entry = replace(
            ENTRY,
            path=b'/x HTTP/1.1" 200 1 "-" "-"\n127.0.0.1 - - [x] "GET /admin',
            user_agent=b'curl" 500 0 "forged',
        )
        line = formatted(entry)
        assert "\n" not in line
        match = COMBINED_PATTERN.match(line)
        assert match is not None
        assert match.group(4) == "200"  # the real status, not a forged one
        assert match.group(5) == "5120"
        assert match.group(7) == 'curl\\" 500 0 \\"forged'

    def test_host_escaped(self):
        """The Host header is escaped too."""
        assert formatted(replace(ENTRY, host=b'a"b\n'), "{host}") == 'a\\"b\\x0a'


# -- destinations ---------------------------------------------------------------------


def open_flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


class TestFile:
    def test_appends_lines(self, tmp_path):
        """
        A file is opened for appending: what it held is kept and each
        request adds one whole line.
        """
        path = tmp_path / "access.log"
        path.write_text("earlier line\n")
        log = AccessLog(str(path)).open()
        log.write(ENTRY)
        log.write(replace(ENTRY, status=404, sent=0))
        log.close()
        assert path.read_text().splitlines() == [
            "earlier line",
            COMBINED_LINE,
            COMBINED_LINE.replace(" 200 5120 ", " 404 - "),
        ]

    def test_open_flags_and_mode(self, tmp_path):
        """
        The file is created mode 0640 (less the umask), opened write-only
        with C{O_APPEND} and close-on-exec.
        """
        path = tmp_path / "access.log"
        umask = os.umask(0o022)
        try:
            log = AccessLog(str(path)).open()
        finally:
            os.umask(umask)
        try:
            flags = open_flags(log._fd)
            assert flags & os.O_APPEND
            assert flags & os.O_ACCMODE == os.O_WRONLY
            assert os.get_inheritable(log._fd) is False
            assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~0o022
        finally:
            log.close()

    def test_one_write_per_line(self, tmp_path, monkeypatch):
        """
        Each line is written with a single C{write} (so with C{O_APPEND}
        concurrent writers never interleave within a line).
        """
        writes: list[tuple[int, bytes]] = []
        real_os = accesslog.os

        def write(fd, data):
            writes.append((fd, data))
            return real_os.write(fd, data)

        monkeypatch.setattr(accesslog, "os", SimpleNamespace(**{
            name: getattr(real_os, name) for name in dir(real_os) if not name.startswith("__")
        } | {"write": write}))
        log = AccessLog(str(tmp_path / "access.log")).open()
        log.write(ENTRY)
        log.write(ENTRY)
        log.close()
        assert [data for _, data in writes] == [(COMBINED_LINE + "\n").encode()] * 2

    def test_two_writers_share_a_file(self, tmp_path):
        """Two logs appending to one file (two processes, say) keep each other's lines whole."""
        path = tmp_path / "access.log"
        first, second = AccessLog(str(path)).open(), AccessLog(str(path), "{status}").open()
        for _ in range(3):
            first.write(ENTRY)
            second.write(ENTRY)
        first.close()
        second.close()
        assert path.read_text().splitlines() == [COMBINED_LINE, "200"] * 3

    def test_open_failure_raises(self, tmp_path):
        """A file that cannot be opened is an L{OSError} from C{open}."""
        log = AccessLog(str(tmp_path / "missing" / "access.log"))
        with pytest.raises(FileNotFoundError):
            log.open()

    def test_reopen_after_rename(self, tmp_path):
        """
        After logrotate renamed the file, C{reopen} creates a new file at the
        path; later lines go there and the old file keeps its own lines.
        """
        path = tmp_path / "access.log"
        log = AccessLog(str(path)).open()
        log.write(ENTRY)
        os.rename(path, tmp_path / "access.log.1")
        log.write(replace(ENTRY, status=201))  # still the renamed file
        log.reopen()
        log.write(replace(ENTRY, status=202))
        log.close()
        assert [line.split('" ')[1][:3] for line in (tmp_path / "access.log.1").read_text().splitlines()] == [
            "200",
            "201",
        ]
        assert path.read_text() == COMBINED_LINE.replace(" 200 ", " 202 ") + "\n"

    @pytest.mark.parametrize("mode", [0o640, 0o644, 0o600])
    def test_reopen_keeps_the_mode(self, tmp_path, mode):
        """
        The file C{reopen} creates has the mode the old one had, whatever the
        umask (a daemon's is 077), but a file created meanwhile (logrotate's
        C{create}) keeps its own.
        """
        path = tmp_path / "access.log"
        log = AccessLog(str(path)).open()
        path.chmod(mode)
        os.rename(path, tmp_path / "access.log.1")
        previous = os.umask(0o077)
        try:
            log.reopen()
        finally:
            os.umask(previous)
        assert stat.S_IMODE(path.stat().st_mode) == mode
        os.rename(path, tmp_path / "access.log.2")
        path.touch(mode=0o604)
        path.chmod(0o604)
        log.reopen()
        log.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o604

    def test_reopen_closes_old_descriptor(self, tmp_path):
        """C{reopen} opens the new descriptor first, then closes the one it replaces."""
        log = AccessLog(str(tmp_path / "access.log")).open()
        old = log._fd
        log.reopen()
        try:
            assert log._fd != old
            assert open_flags(log._fd) & os.O_APPEND
            with pytest.raises(OSError) as caught:
                os.fstat(old)
            assert caught.value.errno == errno.EBADF
        finally:
            log.close()

    def test_reopen_failure_keeps_old_file(self, tmp_path):
        """
        When the path cannot be opened any more, C{reopen} raises and the
        log keeps writing to the file it had.
        """
        logs = tmp_path / "logs"
        logs.mkdir()
        log = AccessLog(str(logs / "access.log")).open()
        old = log._fd
        os.rename(logs, tmp_path / "moved")
        with pytest.raises(FileNotFoundError):
            log.reopen()
        assert log._fd == old
        log.write(ENTRY)
        log.close()
        assert (tmp_path / "moved" / "access.log").read_text() == COMBINED_LINE + "\n"

    def test_close(self, tmp_path):
        """
        C{close} closes the file; writing afterwards does nothing, and
        closing or reopening again is harmless.
        """
        path = tmp_path / "access.log"
        log = AccessLog(str(path)).open()
        fd = log._fd
        log.close()
        with pytest.raises(OSError) as caught:
            os.fstat(fd)
        assert caught.value.errno == errno.EBADF
        log.write(ENTRY)
        log.close()
        log.reopen()
        assert path.read_text() == ""


class TestOff:
    def test_writes_nothing(self, tmp_path, monkeypatch):
        """C{off} opens nothing, writes nothing and logs nothing."""
        monkeypatch.chdir(tmp_path)
        with capturedLogs() as events:
            log = AccessLog("off").open()
            log.write(ENTRY)
            log.reopen()
            log.close()
        assert events == []
        assert log._fd is None
        assert list(tmp_path.iterdir()) == []


class TestTwistdLog:
    def test_lines_go_to_twisted_logger(self):
        """
        C{-} sends each line to twistd's log as one info event whose text is
        the line.
        """
        with capturedLogs() as events:
            log = AccessLog("-").open()
            log.write(ENTRY)
        assert [(e["log_level"], formatEvent(e), e["line"]) for e in events] == [
            (LogLevel.info, COMBINED_LINE, COMBINED_LINE)
        ]
        assert log._fd is None

    def test_namespace(self):
        """Access lines are logged in the C{backtracweb.access} namespace the module declares."""
        with capturedLogs() as events:
            AccessLog("-").open().write(ENTRY)
        assert [e["log_namespace"] for e in events] == ["backtracweb.access"]

    def test_braces_in_line_not_reinterpreted(self):
        """A path containing braces is logged literally, not as a format string."""
        with capturedLogs() as events:
            AccessLog("-", "{path}").open().write(replace(ENTRY, path=b"/{line}/{0}/{"))
        assert [formatEvent(e) for e in events] == ["/{line}/{0}/{"]

    def test_reopen_and_close(self):
        """C{reopen} is a no-op for twistd's log; after C{close} nothing is logged."""
        with capturedLogs() as events:
            log = AccessLog("-").open()
            log.reopen()
            log.close()
            log.write(ENTRY)
        assert events == []


# -- lines the site writes ------------------------------------------------------------


class Root:
    """Answers C{/slow} later (or never), anything else at once."""

    def __init__(self) -> None:
        self.pending: list = []

    def handle(self, request) -> None:
        if request.path == b"/slow":
            self.pending.append(request)
            return
        request.code = 201
        request.respond(b"created")


class FakeTime:
    """Stands in for the C{time} module where requests are timed."""

    gmtime, strftime = staticmethod(time.gmtime), staticmethod(time.strftime)

    def __init__(self) -> None:
        self.now = STARTED
        self.mono = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def fake_time(monkeypatch) -> FakeTime:
    fake = FakeTime()
    for module in (channel_module, website, accesslog):
        monkeypatch.setattr(module, "time", fake)
    return fake


def site_with_log(path, template="combined") -> tuple[BacktracSite, Root]:
    root = Root()
    return make_site(root, access_log=AccessLog(str(path), template).open()), root


class TestSiteLines:
    def test_request_logged(self, tmp_path, fake_time):
        """
        A finished request is written as one combined line with the client,
        the arrival time, the request line, status, body bytes and headers;
        the site's counters count it.
        """
        path = tmp_path / "access.log"
        site, _ = site_with_log(path)
        Client(site).send(
            b"GET /a%20b?q=1 HTTP/1.1\r\nHost: example.com\r\nReferer: http://r/\r\n"
            b"User-Agent: test/1\r\n\r\n"
        )
        site.settings.access_log.close()
        assert path.read_text() == (
            '198.51.100.4 - - [25/Nov/2026:18:40:00 +0000] "GET /a%20b?q=1 HTTP/1.1" 201 7 '
            '"http://r/" "test/1"\n'
        )
        assert (site.stats.requests, site.stats.by_class["2xx"], site.stats.bytes_sent) == (1, 1, 7)

    def test_duration(self, tmp_path, fake_time):
        """C{{duration_ms}} runs from the request's arrival to its last byte."""
        path = tmp_path / "access.log"
        site, root = site_with_log(path, "{method} {path} {status} {duration_ms}")
        Client(site).send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        fake_time.mono += 1.5
        [request] = root.pending
        request.write(b"done")
        request.finish()
        site.settings.access_log.close()
        assert path.read_text() == "GET /slow 200 1500.0\n"

    @pytest.mark.parametrize("data, lines, counted", [
        (b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", "GET /slow 499 -\n", (1, 1)),
        (b"GET /half HTTP/1.1\r\nHost: x\r\n", "", (0, 0)),
    ], ids=["abandoned", "head-incomplete"])
    def test_connection_lost_before_the_response(self, tmp_path, fake_time, data, lines, counted):
        """
        A request whose client went away before the response is logged
        once, with status 499 and no body bytes, and counted as a 4xx; a
        connection lost while its request head was arriving logs nothing.
        """
        path = tmp_path / "access.log"
        site, _ = site_with_log(path, "{method} {path} {status} {bytes}")
        Client(site).send(data).lost()
        site.settings.access_log.close()
        assert path.read_text() == lines
        assert (site.stats.requests, site.stats.by_class["4xx"]) == counted

    @pytest.mark.parametrize("data, line", [
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nUser-Agent: up/1\r\nContent-Length: 5000\r\n\r\n",
         "POST /upload HTTP/1.1 413 x up/1"),
        (b"GET /a HTTP/1.1\r\nHost: x\r\nBad header line\r\n\r\n", "GET /a HTTP/1.1 400 - -"),
        (b"GET /a /b HTTP/1.1\r\nHost: x\r\n\r\n", "GET /a - 400 - -"),
        (b"GARBAGE\r\n\r\n", "- - - 400 - -"),
        (b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
         "GET /a HTTP/1.1 400 x -"),
    ], ids=["413", "bad-header", "bad-request-line", "garbage", "bad-chunk"])
    def test_refused_request_logged_once(self, tmp_path, fake_time, data, line):
        """
        A request refused as it arrived is logged once, with what of it had
        arrived, the status and the bytes of the refusal's body, and counted.
        """
        path = tmp_path / "access.log"
        site, _ = site_with_log(path, "{method} {path} {protocol} {status} {host} {user_agent} "
                                      "{bytes}")
        site.settings = changed(site.settings, max_body=100)
        client = Client(site)
        with capturedLogs():
            client.send(data).lost()
        site.settings.access_log.close()
        body_bytes = len(client.output.partition(b"\r\n\r\n")[2])
        assert path.read_text() == f"{line} {body_bytes}\n"
        assert (site.stats.requests, site.stats.by_class["4xx"]) == (1, 1)

    def test_refusal_after_a_request_logs_not_the_previous_request_line(self, tmp_path, fake_time):
        """On a kept-alive connection, a malformed second request is not logged as the first."""
        path = tmp_path / "access.log"
        site, _ = site_with_log(path, "{method} {path} {status}")
        client = Client(site)
        with capturedLogs():
            client.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            client.send(b"GARBAGE\r\n\r\n")
        site.settings.access_log.close()
        assert path.read_text() == "GET /first 201\n- - 400\n"

    def test_site_writes_to_current_settings(self, tmp_path, fake_time):
        """
        The site writes through its current settings' log, so a reload that
        swaps the settings moves later lines to the new log at once.
        """
        first, second = tmp_path / "one.log", tmp_path / "two.log"
        site, _ = site_with_log(first, "{path}")
        client = Client(site)
        client.send(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
        old = site.settings.access_log
        site.settings = replace(site.settings, access_log=AccessLog(str(second), "{path}").open())
        old.close()
        client.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        site.settings.access_log.close()
        assert (first.read_text(), second.read_text()) == ("/before\n", "/after\n")
