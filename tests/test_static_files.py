"""
Unit tests for L{backtracweb.app.static}: what a C{[static]} mapping answers
(types, HEAD, methods, errors, directories and their index files, paths
that try to leave the directory, symlinks), conditional requests, byte
ranges, large files sent block by block with back-pressure
(L{FileSender}), and the small files kept in memory (L{SmallFiles}).

Requests are parsed by the site's real channel and routed by the real
L{SiteRoot} to a mapping of C{/static}; responses are written to a
L{StringTransport}, which is not a socket, so sendfile is never used here
(tests/test_sendfile.py has it).  No reactor runs (see tests/helpers.py).
"""

from __future__ import annotations

import builtins
import os
import tempfile
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from helpers import (
    Client, Filling, Recorder, fetch, make_site, parse_responses, requests_done, site_settings,
)
from twisted.logger import capturedLogs, formatEvent

from backtracweb.app import static
from backtracweb.app.resource import SiteRoot, static_routes
from backtracweb.app.sendfile import BLOCK_SIZE, FileSender, send_part
from backtracweb.app.static import MAX_RANGES, SETTLED, SmallFiles, StaticDirectory
from backtracweb.config.settings import StaticMapping
from backtracweb.http.channel import CLIENT_GONE

DATA = b"".join(b"%03d," % i for i in range(50))
"""A small file's content: 200 bytes, each range of it different from the others."""
SIZE = len(DATA)
BIG = b"".join(i.to_bytes(4, "big") for i in range((3 * BLOCK_SIZE + 1000) // 4))
"""A large file's content: over three blocks, every word different."""
NOT_FOUND = b"Not Found: no such file.\n"
FORBIDDEN = b"Forbidden: the file cannot be read.\n"


def modes_bind_us() -> bool:
    """
    Whether a mode 000 file is unreadable to this process: not when it
    may override file modes (root, with CAP_DAC_OVERRIDE).
    """
    if os.geteuid() != 0:
        return True
    with tempfile.NamedTemporaryFile() as probe:
        os.chmod(probe.name, 0)
        try:
            builtins.open(probe.name, "rb").close()
        except PermissionError:
            return True
    return False


# -- the site ----------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path) -> Path:
    """
    The directory mapped at C{/static}: data.txt (L{DATA}), big.bin
    (L{BIG}), sub/file.txt, an empty directory; secret.txt beside it.
    """
    directory = tmp_path / "static"
    (directory / "sub").mkdir(parents=True)
    (directory / "empty").mkdir()
    (directory / "data.txt").write_bytes(DATA)
    (directory / "big.bin").write_bytes(BIG)
    (directory / "sub" / "file.txt").write_bytes(b"sub/file")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    return directory


class Served:
    """A site with C{/static} mapped to a directory; a L{Recorder} is the application."""

    def __init__(self, directory: Path) -> None:
        self.app = Recorder()
        root = SiteRoot(self.app)
        self.site = make_site(root, routes=static_routes(
            [StaticMapping("/static", str(directory))]))

    @property
    def directory(self) -> StaticDirectory:
        [(_, directory)] = self.site.settings.routes
        return directory

    def get(self, target: bytes, *headers: bytes, method: bytes = b"GET"):
        return fetch(self.site, target, *headers, method=method)


@pytest.fixture
def served(files) -> Served:
    return Served(files)


@pytest.fixture
def opened(monkeypatch) -> list[bytes]:
    """The paths static.py opens, in order (its C{open} is the builtin, recorded)."""
    paths = []

    def recording(path, *args, **kwargs):
        paths.append(path)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(static, "open", recording, raising=False)
    return paths


def http_date(when: float) -> bytes:
    return formatdate(when, usegmt=True).encode("ascii")


def validators(path: Path) -> tuple[bytes, bytes]:
    """The Last-Modified and ETag the file at C{path} is served with."""
    st = path.stat()
    return http_date(st.st_mtime), b'"%x-%x"' % (st.st_mtime_ns, st.st_size)


def without_date(response) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in response.headers if name.lower() != b"date"]


# -- files -------------------------------------------------------------------------------


class TestFiles:
    def test_whole_file(self, served, files):
        """A file is served whole, with its length, type and validators, and byte ranges offered."""
        response = served.get(b"/static/data.txt")
        last_modified, etag = validators(files / "data.txt")
        assert (response.status, response.body) == (200, DATA)
        assert response.header(b"content-length") == b"%d" % SIZE
        assert response.header(b"content-type") == b"text/plain"
        assert response.header(b"content-encoding") is None
        assert response.header(b"accept-ranges") == b"bytes"
        assert (response.header(b"last-modified"), response.header(b"etag")) == (
            last_modified, etag)
        assert served.app.requests == []

    @pytest.mark.parametrize("name, kind, encoding", [
        ("a.txt", b"text/plain", None),
        ("a.TXT", b"text/plain", None),
        ("a.html", b"text/html", None),
        ("a.css", b"text/css", None),
        ("a.png", b"image/png", None),
        ("a.json", b"application/json", None),
        ("a.patch", b"text/plain", None),  # Twisted's additions, which it served before
        ("a.flac", b"audio/x-flac", None),
        ("a.txt.gz", b"text/plain", b"gzip"),
        ("a.tar.gz", b"application/x-tar", b"gzip"),
        ("a.svg.bz2", b"image/svg+xml", b"bzip2"),
        ("a.gz", b"application/octet-stream", b"gzip"),
        ("a.xyzzy", b"application/octet-stream", None),
        ("README", b"application/octet-stream", None),
        (".profile", b"application/octet-stream", None),
    ])
    def test_content_type(self, served, files, name, kind, encoding):
        """
        The type comes from the extension; C{.gz} and C{.bz2} are a
        Content-Encoding of the type beneath; an unknown extension is
        C{application/octet-stream}, never run as a page.
        """
        (files / name).write_bytes(b"content")
        for method in (b"GET", b"HEAD"):
            response = served.get(b"/static/" + name.encode(), method=method)
            assert response.status == 200
            assert response.header(b"content-type") == kind
            assert response.header(b"content-encoding") == encoding

    @pytest.mark.parametrize("name, size", [("data.txt", SIZE), ("big.bin", len(BIG))])
    def test_head(self, served, opened, name, size):
        """
        HEAD: the head GET would have (its length too) and no body; the
        file is opened, as for GET, only to know it can be read.
        """
        target = b"/static/" + name.encode()
        client = Client(served.site).get(target, method=b"HEAD")
        assert client.output.endswith(b"\r\n\r\n") and client.output.count(b"\r\n\r\n") == 1
        [head] = parse_responses(client.output, [b"HEAD"])
        assert head.status == 200
        assert head.header(b"content-length") == b"%d" % size
        assert [os.path.basename(path) for path in opened] == [name.encode()]
        get = served.get(target)
        assert without_date(head) == without_date(get)
        assert len(get.body) == size

    @pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"])
    @pytest.mark.parametrize("target", [b"/static/data.txt", b"/static/missing.txt",
                                        b"/static/sub", b"/static/../secret.txt"])
    def test_other_methods_not_allowed(self, served, method, target):
        """Files are read with GET or HEAD: anything else is 405 with Allow, not the application."""
        response = served.get(target, b"Content-Length: 0", method=method)
        assert response.status == 405
        assert response.header(b"allow") == b"GET, HEAD"
        assert response.body == b"Method Not Allowed: static files are read with GET or HEAD.\n"
        assert served.app.requests == []

    @pytest.mark.parametrize("target", [
        b"/static/missing.txt",
        b"/static/sub/missing.txt",
        b"/static/missing/",
        b"/static/missing/file.txt",
        b"/static/data.txt/more",   # a file is not a directory
        b"/static/fifo",            # not a regular file
    ])
    def test_not_found(self, served, files, target):
        """What names no regular file is 404 (not the application's)."""
        os.mkfifo(files / "fifo")
        for method in (b"GET", b"HEAD"):
            response = served.get(target, method=method)
            assert response.status == 404
        assert served.get(target).body == NOT_FOUND
        assert served.app.requests == []

    def test_file_with_a_trailing_slash_not_found(self, served):
        """
        A file's path with a slash after it names nothing (the kernel says
        ENOTDIR; Twisted's static.File, nginx and Apache answer 404): the
        slash is a directory's, and a page served there would resolve its
        relative links against the wrong base.
        """
        assert served.get(b"/static/data.txt").status == 200
        response = served.get(b"/static/data.txt/")
        assert (response.status, response.body) == (404, NOT_FOUND)

    @pytest.mark.parametrize("name, method, conditional", [
        ("data.txt", b"GET", False),
        ("big.bin", b"GET", False),
        ("data.txt", b"HEAD", False),
        ("data.txt", b"GET", True),
    ], ids=["small", "large", "HEAD", "If-None-Match"])
    def test_unreadable_file_forbidden(self, served, files, monkeypatch, name, method,
                                       conditional):
        """
        A file that cannot be opened (here open() fails as it does for a
        mode 000 file, also when the tests run as root) is 403; HEAD
        answers as GET would (RFC 9110 9.3.2), and a precondition is not
        evaluated for a request that would not succeed without it (RFC
        9110 13.2.1), as Twisted's static.File did (it opened the file first).
        """
        def refusing(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", path)

        headers = [b"If-None-Match: *"] if conditional else []
        monkeypatch.setattr(static, "open", refusing, raising=False)
        response = served.get(b"/static/" + name.encode(), *headers, method=method)
        assert response.status == 403
        if method == b"GET":
            assert response.body == FORBIDDEN

    @pytest.mark.skipif(not modes_bind_us(), reason="this process reads files whatever their mode")
    @pytest.mark.parametrize("locked, target", [
        ("data.txt", b"/static/data.txt"),
        ("sub", b"/static/sub/file.txt"),   # a directory that cannot be searched
    ])
    def test_mode_000_forbidden(self, served, files, locked, target):
        """A file or directory the server's user may not read is 403."""
        path = files / locked
        path.chmod(0)
        try:
            response = served.get(target)
        finally:
            path.chmod(0o755)
        assert (response.status, response.body) == (403, FORBIDDEN)

    @pytest.mark.parametrize("link, target, body", [
        ("link.txt", "data.txt", DATA),
        ("linked", "sub", None),
        ("outside.txt", "../secret.txt", b"secret"),
    ])
    def test_symlinks_followed(self, served, files, link, target, body):
        """
        Symlinks in the directory are followed, to files and directories,
        wherever they point: whoever put them there chose what they
        publish (as Twisted's static.File did).
        """
        (files / link).symlink_to(target)
        path = b"/static/" + link.encode() + (b"/file.txt" if body is None else b"")
        response = served.get(path)
        assert (response.status, response.body) == (200, body or b"sub/file")

    def test_dangling_symlink_not_found(self, served, files):
        (files / "dangling.txt").symlink_to("nowhere.txt")
        assert served.get(b"/static/dangling.txt").status == 404

    def test_empty_file(self, served, files):
        (files / "empty.txt").write_bytes(b"")
        response = served.get(b"/static/empty.txt")
        assert (response.status, response.body, response.header(b"content-length")) == (
            200, b"", b"0")


# -- directories -------------------------------------------------------------------------


class TestDirectories:
    @pytest.mark.parametrize("target, location", [
        (b"/static/sub", b"/static/sub/"),
        (b"/static/sub?x=1&next=%2Fhome", b"/static/sub/?x=1&next=%2Fhome"),
        (b"/static", b"/static/"),
        (b"/static?x=1", b"/static/?x=1"),
        (b"/static/s%75b", b"/static/s%75b/"),   # the path as the client sent it
        (b"/st%61tic/empty", b"/st%61tic/empty/"),
    ])
    def test_slash_added(self, served, target, location):
        """A directory's path without its slash is redirected (302) to the path with it."""
        for method in (b"GET", b"HEAD"):
            response = served.get(target, method=method)
            assert (response.status, response.header(b"location")) == (302, location)
        assert served.app.requests == []

    @pytest.mark.parametrize("names, body", [
        ({"index.html": "html"}, b"html"),
        ({"index": "bare"}, b"bare"),
        ({"index.htm": "htm"}, b"htm"),
        ({"index.htm": "htm", "index.html": "html"}, b"html"),
        ({"index": "bare", "index.html": "html", "index.htm": "htm"}, b"bare"),
        ({"index.html/": None, "index.htm": "htm"}, b"htm"),   # a directory is no index
        ({"default.html": "x", "listing.txt": "y", "dir/": None}, None),
    ])
    def test_index(self, served, files, names, body):
        """
        A directory's path with its slash serves its index file: C{index},
        C{index.html}, C{index.htm}, the first there; without one, 404,
        never a listing.
        """
        for name, text in names.items():
            if text is None:
                (files / "site" / name).mkdir(parents=True)
            else:
                (files / "site").mkdir(exist_ok=True)
                (files / "site" / name).write_text(text)
        response = served.get(b"/static/site/")
        if body is None:
            assert (response.status, response.body) == (404, NOT_FOUND)
        else:
            assert (response.status, response.body) == (200, body)

    @pytest.mark.parametrize("target", [b"/static/", b"/static/sub/", b"/static/empty/"])
    def test_no_listing(self, served, target):
        response = served.get(target)
        assert (response.status, response.body) == (404, NOT_FOUND)
        assert served.app.requests == []

    def test_index_has_its_type_and_validators(self, served, files):
        (files / "sub" / "index.html").write_text("<p>")
        response = served.get(b"/static/sub/")
        assert response.header(b"content-type") == b"text/html"
        assert (response.header(b"last-modified"), response.header(b"etag")) == validators(
            files / "sub" / "index.html")


# -- paths that would leave the directory -----------------------------------------------


class TestTraversal:
    @pytest.mark.parametrize("target", [
        b"/static/../secret.txt",
        b"/static/sub/../../secret.txt",
        b"/static/..",
        b"/static/sub/..",
        b"/static/./data.txt",                    # `.` names nothing, even inside
        b"/static/sub/./file.txt",
        b"/static/%2e%2e/secret.txt",
        b"/static/%2E%2E/secret.txt",
        b"/static/.%2e/secret.txt",
        b"/static/%2e/data.txt",
        b"/static/..%2Fsecret.txt",
        b"/static/sub%2Ffile.txt",                # an encoded slash, naming a file that exists
        b"/static/sub%2f..%2f..%2fsecret.txt",
        b"/static/data.txt%00.html",
        b"/static/%00",
        b"/static//data.txt",                     # an empty segment in the middle
        b"/static/sub//file.txt",
        b"/static/%252e%252e/secret.txt",         # decoded once: a name like any other
        b"/static/%252e%252e%252fsecret.txt",
    ])
    def test_never_leaves_the_directory(self, served, target):
        """Every spelling of C{..}, C{.}, a slash, a NUL or an empty segment names nothing: 404."""
        response = served.get(target)
        assert (response.status, response.body) == (404, NOT_FOUND)
        assert served.app.requests == []

    def test_decoded_once(self, served, files):
        """C{%252e%252e} is the name C{%2e%2e}: a file by that name inside is served."""
        (files / "%2e%2e").mkdir()
        (files / "%2e%2e" / "x.txt").write_text("inside")
        assert served.get(b"/static/%252e%252e/x.txt").body == b"inside"

    @pytest.mark.parametrize("segments, names", [
        ([b"a", b"b"], [b"a", b"b"]),
        ([b"a", b""], [b"a"]),          # a directory's slash
        ([b""], []),
        ([], []),
        ([b"%61", b"b%20c"], [b"a", b"b c"]),
        ([b"%2561"], [b"%61"]),
        ([b"..."], [b"..."]),
        ([b".a"], [b".a"]),
        ([b".."], None),
        ([b"."], None),
        ([b"a", b"%2e%2E"], None),
        ([b"%2e"], None),
        ([b"a%2fb"], None),
        ([b"a%2Fb"], None),
        ([b"a%00"], None),
        ([b"", b"a"], None),
        ([b"a", b"", b"b"], None),
    ])
    def test_names(self, segments, names):
        """The rules, segment by segment: the names under the directory, or None."""
        assert static._names(segments) == names


# -- conditional requests ------------------------------------------------------------------


def conditional_cases():
    """(name, header lines given the file's Last-Modified and ETag, status)."""
    hour = 3600
    return [
        ("IMS equal", lambda lm, et, t: [b"If-Modified-Since: " + lm], 304),
        ("IMS later", lambda lm, et, t: [b"If-Modified-Since: " + http_date(t + hour)], 304),
        ("IMS earlier", lambda lm, et, t: [b"If-Modified-Since: " + http_date(t - hour)], 200),
        ("IMS not a date", lambda lm, et, t: [b"If-Modified-Since: yesterday"], 200),
        ("INM equal", lambda lm, et, t: [b"If-None-Match: " + et], 304),
        ("INM weak", lambda lm, et, t: [b"If-None-Match: W/" + et], 304),
        ("INM star", lambda lm, et, t: [b"If-None-Match: *"], 304),
        ("INM in a list", lambda lm, et, t: [b'If-None-Match: "other", ' + et], 304),
        ("INM other", lambda lm, et, t: [b'If-None-Match: "other"'], 200),
        ("INM unquoted", lambda lm, et, t: [b"If-None-Match: " + et.strip(b'"')], 200),
        ("INM wins over IMS (200)", lambda lm, et, t: [
            b'If-None-Match: "other"', b"If-Modified-Since: " + lm], 200),
        ("INM wins over IMS (304)", lambda lm, et, t: [
            b"If-None-Match: " + et, b"If-Modified-Since: " + http_date(t - hour)], 304),
    ]


class TestConditional:
    @pytest.mark.parametrize("name, headers, status", conditional_cases(),
                             ids=[case[0] for case in conditional_cases()])
    @pytest.mark.parametrize("method", [b"GET", b"HEAD"])
    def test_conditional(self, served, files, name, headers, status, method):
        """
        Last-Modified with If-Modified-Since, the ETag with If-None-Match
        (weak or strong, or C{*}), which decides alone when present: the
        client's copy is current (304) or not (the file).
        """
        last_modified, etag = validators(files / "data.txt")
        lines = headers(last_modified, etag, (files / "data.txt").stat().st_mtime)
        client = Client(served.site).get(b"/static/data.txt", *lines, method=method)
        [response] = parse_responses(client.output, [method])
        assert response.status == status
        assert response.header(b"etag") == etag
        assert response.header(b"last-modified") == last_modified
        if status == 304:
            assert client.output.endswith(b"\r\n\r\n")  # no body
            assert response.header(b"content-type") is None
            assert response.header(b"content-length") is None
        else:
            assert response.body == (DATA if method == b"GET" else b"")

    def test_a_change_makes_a_new_etag(self, served, files):
        _, old = validators(files / "data.txt")
        (files / "data.txt").write_bytes(DATA + b"more")
        response = served.get(b"/static/data.txt", b"If-None-Match: " + old)
        assert (response.status, response.body) == (200, DATA + b"more")
        assert response.header(b"etag") != old

    def test_large_file_not_modified(self, served, files, opened):
        _, etag = validators(files / "big.bin")
        client = Client(served.site).get(b"/static/big.bin", b"If-None-Match: " + etag)
        assert parse_responses(client.output)[0].status == 304
        assert client.output.endswith(b"\r\n\r\n")
        assert [os.path.basename(path) for path in opened] == [b"big.bin"]  # readable, not read


# -- byte ranges ---------------------------------------------------------------------------


def multipart(response) -> list[tuple[bytes, bytes, bytes]]:
    """The parts of a multipart/byteranges body: (Content-Type, Content-Range, bytes)."""
    kind = response.header(b"content-type")
    assert kind.startswith(b"multipart/byteranges; boundary=")
    boundary = kind.partition(b"boundary=")[2]
    assert response.header(b"content-length") == b"%d" % len(response.body)
    first, *parts, last = response.body.split(b"\r\n--" + boundary)
    assert (first, last) == (b"", b"--\r\n")
    found = []
    for part in parts:
        assert part.startswith(b"\r\n")
        head, _, data = part[2:].partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
        assert fields.keys() == {b"Content-Type", b"Content-Range"}
        found.append((fields[b"Content-Type"], fields[b"Content-Range"], data))
    return found


class TestRanges:
    @pytest.mark.parametrize("value, first, last", [
        (b"bytes=0-4", 0, 4),
        (b"bytes=-5", SIZE - 5, SIZE - 1),
        (b"bytes=5-", 5, SIZE - 1),
        (b"bytes=190-1000", 190, SIZE - 1),    # the end clamped to the file's
        (b"bytes=-1000", 0, SIZE - 1),          # the last 1000 of 200: all
        (b"bytes=199-199", 199, 199),
        (b"bytes=0-0", 0, 0),
        (b"Bytes=0-4", 0, 4),
        (b"bytes= 0-4 ", 0, 4),
        (b"bytes=0-4,300-400", 0, 4),           # the unsatisfiable one left out
    ])
    def test_single_range(self, served, value, first, last):
        """One satisfiable range: 206 with exactly those bytes and where they are."""
        response = served.get(b"/static/data.txt", b"Range: " + value)
        assert response.status == 206
        assert response.header(b"content-range") == b"bytes %d-%d/%d" % (first, last, SIZE)
        assert response.header(b"content-length") == b"%d" % (last - first + 1)
        assert response.header(b"content-type") == b"text/plain"
        assert response.body == DATA[first:last + 1]

    @pytest.mark.parametrize("value", [b"bytes=200-", b"bytes=500-600", b"bytes=-0",
                                       b"bytes=200-300,400-"])
    def test_unsatisfiable(self, served, value):
        """No range starts inside the file: 416 saying its size, without a body."""
        response = served.get(b"/static/data.txt", b"Range: " + value)
        assert response.status == 416
        assert response.header(b"content-range") == b"bytes */%d" % SIZE
        assert (response.header(b"content-length"), response.body) == (b"0", b"")

    @pytest.mark.parametrize("value", [
        b"bytes=abc", b"bytes=5-3", b"bytes=", b"bytes=-", b"bytes=--5", b"bytes=1-2-3",
        b"bytes=0x10-", b"bytes=0-4,x", b"items=0-4", b"bytes 0-4", b"0-4",
    ])
    def test_invalid_ignored(self, served, value):
        """A Range that is not a valid byte range is ignored (RFC 9110 14.2): the whole file."""
        response = served.get(b"/static/data.txt", b"Range: " + value)
        assert (response.status, response.body) == (200, DATA)
        assert response.header(b"content-range") is None

    @pytest.mark.parametrize("value, ranges", [
        (b"bytes=0-4,10-14", [(0, 4), (10, 14)]),
        (b"bytes=-5,0-0", [(SIZE - 5, SIZE - 1), (0, 0)]),
        (b"bytes=0-9,190-", [(0, 9), (190, SIZE - 1)]),
        (b"bytes=" + b",".join(b"%d-%d" % (i * 10, i * 10) for i in range(MAX_RANGES)),
         [(i * 10, i * 10) for i in range(MAX_RANGES)]),
    ])
    def test_several_ranges(self, served, value, ranges):
        """Several ranges: 206 multipart/byteranges, one part per range, in the order asked."""
        response = served.get(b"/static/data.txt", b"Range: " + value)
        assert response.status == 206
        assert response.header(b"content-range") is None
        assert multipart(response) == [
            (b"text/plain", b"bytes %d-%d/%d" % (first, last, SIZE), DATA[first:last + 1])
            for first, last in ranges]

    @pytest.mark.parametrize("value", [
        b"bytes=" + b",".join(b"%d-%d" % (i * 10, i * 10) for i in range(MAX_RANGES + 1)),
        b"bytes=0-150,100-199",
        b"bytes=0-,0-",
        b"bytes=-150,0-100",
    ])
    def test_many_or_overlapping_ranges_whole(self, served, value):
        """More than MAX_RANGES ranges, or more bytes than the file: the whole file, 200."""
        response = served.get(b"/static/data.txt", b"Range: " + value)
        assert (response.status, response.body) == (200, DATA)

    @pytest.mark.parametrize("if_range, status", [
        ("etag", 206),
        ("last-modified", 206),
        ("other etag", 200),
        ("weak etag", 200),      # If-Range compares strongly (RFC 9110 13.1.5)
        ("earlier date", 200),
        ("garbage", 200),
    ])
    def test_if_range(self, served, files, if_range, status):
        """If-Range: the range if the client's part is of this version of the file, else all."""
        last_modified, etag = validators(files / "data.txt")
        value = {"etag": etag, "last-modified": last_modified, "other etag": b'"other"',
                 "weak etag": b"W/" + etag, "garbage": b"whatever",
                 "earlier date": http_date((files / "data.txt").stat().st_mtime - 1)}[if_range]
        response = served.get(b"/static/data.txt", b"Range: bytes=0-4", b"If-Range: " + value)
        assert response.status == status
        assert response.body == (DATA[:5] if status == 206 else DATA)

    def test_head_ignores_range(self, served):
        client = Client(served.site).get(b"/static/data.txt", b"Range: bytes=0-4", method=b"HEAD")
        [response] = parse_responses(client.output, [b"HEAD"])
        assert response.status == 200
        assert response.header(b"content-range") is None
        assert response.header(b"content-length") == b"%d" % SIZE
        assert client.output.endswith(b"\r\n\r\n")

    def test_not_modified_before_range(self, served, files):
        _, etag = validators(files / "data.txt")
        response = served.get(b"/static/data.txt", b"Range: bytes=0-4", b"If-None-Match: " + etag)
        assert (response.status, response.body) == (304, b"")

    @pytest.mark.parametrize("value", [b"bytes=0-", b"bytes=-5", b"bytes=0-0"])
    def test_empty_file(self, served, files, value):
        """
        Nothing of an empty file can be a range: 416 (or the empty file,
        200), never a 206 with an impossible Content-Range such as
        C{bytes 0--1/0}.
        """
        (files / "empty.txt").write_bytes(b"")
        response = served.get(b"/static/empty.txt", b"Range: " + value)
        assert response.status in (200, 416), response.header(b"content-range")
        if response.status == 416:
            assert response.header(b"content-range") == b"bytes */0"

    @pytest.mark.parametrize("value, first, last", [
        (b"bytes=100000-", 100000, len(BIG) - 1),
        (b"bytes=-700000", len(BIG) - 700000, len(BIG) - 1),
        (b"bytes=10-19", 10, 19),
    ])
    def test_large_file(self, served, value, first, last):
        """A range of a large file is read from its offset, block by block if large."""
        response = served.get(b"/static/big.bin", b"Range: " + value)
        assert response.status == 206
        assert response.header(b"content-range") == b"bytes %d-%d/%d" % (first, last, len(BIG))
        assert response.body == BIG[first:last + 1]

    def test_large_file_several_ranges(self, served):
        response = served.get(b"/static/big.bin", b"Range: bytes=0-99,1000000-1000099")
        assert [part[2] for part in multipart(response)] == [
            BIG[:100], BIG[1000000:1000100]]


# -- large files, block by block ---------------------------------------------------------------


def body_so_far(client: Client) -> bytes:
    return client.output.partition(b"\r\n\r\n")[2]


class TestFileSender:
    def test_large_file_in_blocks(self, served, opened):
        """
        A file over SMALL_FILE goes out a block at a time (no sendfile on
        this transport): one block per time the transport is ready, none
        while it is full; the file is closed and the request done once
        the client has taken the last.
        """
        client = Client(served.site)
        filling = Filling(client)
        done = requests_done(served.site)
        client.get(b"/static/big.bin")
        assert body_so_far(client) == BIG[:BLOCK_SIZE]
        resumes = 0
        while not done:
            assert body_so_far(client) == BIG[:min(len(BIG), (resumes + 1) * BLOCK_SIZE)]
            client.channel.resumeProducing()
            resumes += 1
            assert resumes <= len(BIG) // BLOCK_SIZE + 1
        [response] = parse_responses(client.output)
        assert (response.status, response.body) == (200, BIG)
        assert response.header(b"content-length") == b"%d" % len(BIG)
        # The head, then each block, in a write of its own.
        assert filling.writes[1:] == [BLOCK_SIZE] * (len(BIG) // BLOCK_SIZE) + [
            len(BIG) % BLOCK_SIZE]
        assert [(r.code, r.sent) for r in done] == [(200, len(BIG))]
        assert opened == [bytes(served.directory.path) + b"/big.bin"]
        assert not client.closed

    def test_paused_and_resumed_by_the_channel(self, served):
        """Nothing more is sent while the channel is paused; the rest follows on resume."""
        client = Client(served.site)
        Filling(client)
        client.get(b"/static/big.bin")
        sent = len(client.output)
        for _ in range(3):
            client.channel.pauseProducing()
        assert len(client.output) == sent
        client.channel.resumeProducing()
        assert len(client.output) == sent + BLOCK_SIZE

    def test_started_while_paused(self, served, files):
        """
        A response's producer registered while the channel is paused is
        paused (L{Request.register_producer}): a FileSender started then
        sends nothing until the channel is resumed.
        """
        client = Client(served.site)
        client.get(b"/slow")
        [request] = served.app.pending
        client.channel.pauseProducing()
        request.response_headers = [(b"Content-Type", b"application/octet-stream")]
        send_part(request, open(files / "big.bin", "rb"), 0, len(BIG))
        assert len(body_so_far(client)) == 0
        client.channel.resumeProducing()
        assert body_so_far(client) == BIG

    def test_client_gone(self, served, opened, monkeypatch):
        """A client gone mid-file: the file is closed, the request logged as cut short (499)."""
        files_opened = []
        recording = static.open

        def keeping(path, *args):
            files_opened.append(recording(path, *args))
            return files_opened[-1]

        monkeypatch.setattr(static, "open", keeping, raising=False)
        client = Client(served.site)
        Filling(client)
        done = requests_done(served.site)
        client.get(b"/static/big.bin")
        client.channel.resumeProducing()
        client.lost()
        [file] = files_opened
        assert file.closed
        assert [(r.code, r.sent) for r in done] == [(CLIENT_GONE, 2 * BLOCK_SIZE)]

    def test_file_shorter_than_promised(self, served, files, monkeypatch):
        """
        A file cut short after its size was read: what it still has is
        sent, then the connection is closed (the client sees a short
        body, never a wrong one), and the reason is logged.
        """
        def truncating(path, *args):
            file = builtins.open(path, *args)
            os.truncate(path, BLOCK_SIZE + 10)
            return file

        monkeypatch.setattr(static, "open", truncating, raising=False)
        client = Client(served.site)
        with capturedLogs() as events:
            client.get(b"/static/big.bin")
        head, _, body = client.output.partition(b"\r\n\r\n")
        assert b"Content-Length: %d" % len(BIG) in head
        assert body == BIG[:BLOCK_SIZE + 10]
        assert client.closed
        assert [formatEvent(e) for e in events] == [
            f"/static/big.bin: the file ended {len(BIG) - BLOCK_SIZE - 10} bytes short; "
            "closing the connection"]

    def test_block_size(self, served, files):
        """A FileSender's blocks are its block_size, from its offset, up to its count."""
        client = Client(served.site)
        writes = Filling(client).writes
        client.get(b"/slow")
        [request] = served.app.pending
        request.response_headers = [(b"Content-Length", b"2500")]
        FileSender(request, open(files / "big.bin", "rb"), 100, 2500, block_size=1000).start()
        while not request.finished:
            client.channel.resumeProducing()
        head = client.output.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        assert body_so_far(client) == BIG[100:2600]
        assert writes == [len(head) + 1000, 1000, 500]


# -- small files in memory ---------------------------------------------------------------------


def settle(served: Served) -> SmallFiles:
    """
    The mapping's small files, with their clock a minute ahead: the files
    the test just wrote count as settled, so they are kept once sent.
    """
    small_files = served.directory.small_files
    small_files.clock = lambda: time.time() + 60
    return small_files


def after_the_next_tick(path: Path) -> None:
    """Wait (busily, a few ms) until the kernel's file clock has passed C{path}'s change time."""
    scratch = path.with_name(path.name + ".tick")
    deadline = time.monotonic() + 5
    while True:
        scratch.touch()
        if scratch.stat().st_ctime_ns > path.stat().st_ctime_ns:
            break
        assert time.monotonic() < deadline, "the file clock did not move"
    scratch.unlink()


class TestSmallFiles:
    def test_sent_again_from_memory_exactly_as_the_first_time(self, served, files, opened):
        settle(served)
        first = served.get(b"/static/sub/file.txt")
        again = [served.get(b"/static/sub/file.txt") for _ in range(3)]
        assert opened == [bytes(files / "sub" / "file.txt")]
        assert (first.status, first.body) == (200, b"sub/file")
        assert {name.lower() for name, _ in first.headers} >= {
            b"content-type", b"last-modified", b"etag", b"accept-ranges", b"content-length"}
        assert [without_date(r) for r in again] == [without_date(first)] * 3
        assert [r.body for r in again] == [b"sub/file"] * 3

    def test_an_index_page_is_remembered_under_its_directory(self, served, files, opened):
        settle(served)
        (files / "sub" / "index.html").write_text("sub index")
        assert [served.get(b"/static/sub/").body for _ in range(2)] == [b"sub index"] * 2
        assert opened == [bytes(files / "sub" / "index.html")]

    @pytest.mark.parametrize("change", ["content", "same size, new time", "mode", "replaced"])
    def test_a_changed_file_is_read_again(self, served, files, opened, change):
        settle(served)
        path = files / "data.txt"
        served.get(b"/static/data.txt")
        st = path.stat()
        expected = DATA
        if change == "content":
            expected = b"changed!"
            path.write_bytes(expected)
        elif change == "same size, new time":
            expected = DATA.upper().replace(b",", b";")
            path.write_bytes(expected)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        elif change == "mode":
            after_the_next_tick(path)  # else the change time may not move
            path.chmod(0o600)
        else:  # a new file renamed over it, with the old one's times
            expected = DATA.replace(b",", b";")
            replacement = files / "new.txt"
            replacement.write_bytes(expected)
            os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
            replacement.rename(path)
        assert served.get(b"/static/data.txt").body == expected
        assert len(opened) == 2

    def test_a_deleted_file_is_not_found(self, served, files, opened):
        settle(served)
        served.get(b"/static/data.txt")
        (files / "data.txt").unlink()
        assert served.get(b"/static/data.txt").status == 404

    def test_conditional_requests_from_memory(self, served, opened):
        """If-Modified-Since is answered as for a file read: 304 with no body, or the file."""
        settle(served)
        last_modified = served.get(b"/static/data.txt").header(b"last-modified")
        fresh = served.get(b"/static/data.txt", b"If-Modified-Since: " + last_modified)
        stale = served.get(b"/static/data.txt",
                           b"If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT")
        assert (fresh.status, fresh.body) == (304, b"")
        assert (stale.status, stale.body) == (200, DATA)
        assert len(opened) == 1

    def test_ranges_and_head_take_the_ordinary_way(self, served, opened):
        """A range reads the file again; HEAD reads nothing."""
        settle(served)
        served.get(b"/static/data.txt")
        part = served.get(b"/static/data.txt", b"Range: bytes=1-2")
        head = served.get(b"/static/data.txt", method=b"HEAD")
        assert (part.status, part.body, part.header(b"content-range")) == (
            206, DATA[1:3], b"bytes 1-2/%d" % SIZE)
        assert (head.status, head.body, head.header(b"content-length")) == (
            200, b"", b"%d" % SIZE)
        assert len(opened) == 2

    def test_memory_is_bounded_and_the_oldest_go_first(self, served, files, opened):
        small_files = settle(served)
        small_files.max_bytes = 30  # two of the 15-byte files below
        for name in ("a", "b", "c"):
            (files / f"{name}.txt").write_text(name * 15)
        for name in ("a", "b", "c", "c", "b", "a"):
            assert served.get(f"/static/{name}.txt".encode()).body == name.encode() * 15
        assert small_files.size == 30
        assert [Path(os.fsdecode(p)).name for p in opened] == ["a.txt", "b.txt", "c.txt", "a.txt"]

    @pytest.mark.parametrize("age, reads", [(SETTLED - 0.1, 2), (SETTLED + 0.1, 1)])
    def test_a_file_changed_moments_ago_is_not_kept(self, served, files, opened, age, reads):
        """
        Changed in the last SETTLED seconds, a file is read each time: a
        second write of the same size in the kernel's clock tick would
        not show.
        """
        st = (files / "data.txt").stat()
        changed = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
        served.directory.small_files.clock = lambda: changed + age
        for _ in range(2):
            assert served.get(b"/static/data.txt").body == DATA
        assert len(opened) == reads

    def test_large_files_not_kept(self, served, opened):
        settle(served)
        for _ in range(2):
            assert served.get(b"/static/big.bin").body == BIG
        assert len(opened) == 2
        assert served.directory.small_files.size == 0

    def test_a_reload_starts_with_none(self, served, files, opened):
        """Routes made again (as a reload makes them) remember nothing yet."""
        settle(served)
        served.get(b"/static/data.txt")
        served.get(b"/static/data.txt")
        old = served.directory.small_files
        served.site.settings = site_settings(routes=static_routes(
            [StaticMapping("/static", str(files))]))
        assert served.directory.small_files is not old
        settle(served)
        assert served.get(b"/static/data.txt").body == DATA
        assert len(opened) == 2

    @pytest.mark.parametrize("data, size, kept", [
        (b"x" * 10, 10, True),
        (b"x" * 10, 11, False),   # read while it changed: not what stat saw
        (b"x" * 101, 101, False),  # over max_bytes
    ])
    def test_remember(self, data, size, kept):
        small_files = SmallFiles(max_bytes=100, clock=lambda: 1000.0)
        identity = static._Identity(1, 2, size, 0, 0)
        small_files.remember(b"/f", identity, data)
        assert small_files.get(b"/f", identity) == (data if kept else None)
        assert small_files.size == (len(data) if kept else 0)
        assert small_files.get(b"/f", identity._replace(ctime_ns=1)) is None

    def test_remember_again_replaces(self):
        small_files = SmallFiles(max_bytes=100, clock=lambda: 1000.0)
        first = static._Identity(1, 2, 10, 0, 0)
        second = first._replace(size=20, mtime_ns=1)
        small_files.remember(b"/f", first, b"a" * 10)
        small_files.remember(b"/f", second, b"b" * 20)
        assert (small_files.get(b"/f", first), small_files.get(b"/f", second)) == (None, b"b" * 20)
        assert small_files.size == 20


def test_static_directory_path():
    """A mapping keeps its directory as bytes, and small files of its own."""
    a, b = StaticDirectory("/srv/files"), StaticDirectory("/srv/files")
    assert a.path == b"/srv/files"
    assert isinstance(a.small_files, SmallFiles) and a.small_files is not b.small_files
