"""
Unit tests for L{backtracweb.resource}: how L{SiteRoot} dispatches between
static directories and the WSGI application, what the application sees,
and what L{StaticDirectory} refuses to serve.

Requests are the site's own L{BacktracRequest}s, served by a real
L{BacktracSite} whose settings carry the static routes, parsed by its real
channel from bytes and written to a L{StringTransport}; the channel's
timeouts run on a L{Clock} and the WSGI resource on synchronous threading
fakes, so no reactor runs.  (L{twisted.web.test.requesthelper.DummyRequest}
is not used: importing that module imports L{twisted.trial.unittest}, which
installs the global reactor.)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import site_settings
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, capturedLogs
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from backtracweb.config import StaticMapping
from backtracweb.pool import WorkerPool
from backtracweb.request import BacktracRequest
from backtracweb.resource import SiteRoot, StaticDirectory, static_routes
from backtracweb.website import BacktracSite, SiteSettings
from backtracweb.wsgi import WSGIApplicationResource

# -- fakes and helpers ------------------------------------------------------------


class SynchronousThreadPool:
    """
    The part of L{WorkerPool} that L{WSGIApplicationResource} uses, calling
    the function at once in this thread (as in Twisted's C{test_wsgi}).
    """

    _log = Logger()

    def callInThread(self, f, *a, **kw):
        try:
            f(*a, **kw)
        except BaseException:
            self._log.failure("Callable passed to SynchronousThreadPool.callInThread failed")


class SynchronousReactorThreads:
    """The part of L{IReactorThreads} that L{WSGIApplicationResource} uses, run at once."""

    def callFromThread(self, f, *a, **kw):
        f(*a, **kw)


class PullingRequest(BacktracRequest):
    """
    The site's real request class, that drives a pull producer (which is how
    L{static.File} sends a file) synchronously until it unregisters, as
    L{DummyRequest} does; L{HTTPChannel} would drive it with the global
    cooperator, hence the global reactor.
    """

    def registerProducer(self, producer, streaming):
        assert not streaming, "only pull producers are expected here"
        self.producer = producer
        while self.producer is producer:
            producer.resumeProducing()

    def unregisterProducer(self):
        self.producer = None


@dataclass
class Response:
    code: int
    headers: dict[bytes, bytes]
    body: bytes


def settings(mappings=(), **overrides) -> SiteSettings:
    """Site settings routing C{mappings}, with roomy limits and the rest off."""
    values = dict(
        routes=static_routes(mappings),
        max_body=1024 * 1024,
        max_header_bytes=16 * 1024,
        max_headers=100,
        max_queue=100,
    )
    values.update(overrides)
    return site_settings(**values)


def make_site(root: SiteRoot, mappings=(), **overrides) -> BacktracSite:
    """The site serving C{root} with C{mappings}, using L{PullingRequest}."""
    site = BacktracSite(root, settings(mappings, **overrides), Clock())
    site.requestFactory = PullingRequest
    return site


def connect(site: Site) -> tuple[object, StringTransport]:
    """A connected HTTP channel of C{site}, and its transport."""
    channel = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 51000))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "192.0.2.7", 51000),
    )
    channel.makeConnection(transport)
    return channel, transport


def serve(
    site: Site,
    path: bytes,
    method: bytes = b"GET",
    headers: bytes = b"Host: example.com\r\n",
) -> Response:
    """
    Send one HTTP/1.0 request for C{path} to C{site} and parse the
    response the channel wrote.
    """
    channel, transport = connect(site)
    channel.dataReceived(method + b" " + path + b" HTTP/1.0\r\n" + headers + b"\r\n")
    assert transport.disconnecting, f"no complete response: {transport.value()!r}"
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    parsed = {}
    for line in lines:
        name, _, value = line.partition(b":")
        parsed[name.strip().lower()] = value.strip()
    return Response(int(status.split()[1]), parsed, body)


def bare_request() -> Request:
    """A request on a channel of a site, for calling C{getChild} directly."""
    channel = HTTPChannel()
    channel.site = Site(Resource(), reactor=Clock())
    channel.callLater = Clock().callLater
    channel.makeConnection(StringTransport())
    return Request(channel)


class RecordingApp(Resource):
    """
    Stands in for the application's resource: records the path split it
    was given and answers C{app}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[list[bytes], list[bytes]]] = []

    def render(self, request):
        self.seen.append((list(request.prepath), list(request.postpath)))
        return b"app"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def tree(tmp_path) -> Path:
    """
    Directories to serve, each file saying where it is:

        static/name.txt, static/media/name.txt, static/mediafoo/name.txt,
        static/sub/file.txt, media/name.txt, media/index.html,
        deep/name.txt, and secret.txt beside them (not served).
    """
    write(tmp_path / "static" / "name.txt", "static")
    write(tmp_path / "static" / "media" / "name.txt", "static/media")
    write(tmp_path / "static" / "mediafoo" / "name.txt", "static/mediafoo")
    write(tmp_path / "static" / "sub" / "file.txt", "static/sub/file")
    write(tmp_path / "media" / "name.txt", "media")
    write(tmp_path / "media" / "index.html", "media index")
    write(tmp_path / "deep" / "name.txt", "deep")
    write(tmp_path / "secret.txt", "secret")
    return tmp_path


def mappings(tree: Path, order: str = "short-first") -> list[StaticMapping]:
    result = [
        StaticMapping("/static", str(tree / "static")),
        StaticMapping("/static/media", str(tree / "media")),
        StaticMapping("/a/b/c", str(tree / "deep")),
    ]
    if order == "long-first":
        result.reverse()
    return result


def make_root(tree: Path, order: str = "short-first") -> tuple[BacktracSite, RecordingApp]:
    """A site mapping three prefixes, with a recording application behind them."""
    root = SiteRoot()
    app = RecordingApp()
    root.app = app
    return make_site(root, mappings(tree, order)), app


# -- dispatch ---------------------------------------------------------------------


class TestDispatch:
    def test_prefix_serves_its_directory(self, tree):
        """A path under a prefix is served from the mapped directory."""
        site, app = make_root(tree)
        response = serve(site, b"/static/name.txt")
        assert (response.code, response.body) == (200, b"static")
        assert app.seen == []

    @pytest.mark.parametrize("order", ["short-first", "long-first"])
    def test_longest_prefix_wins(self, tree, order):
        """
        Under nested prefixes the longer one serves, whatever the order
        of the mappings, even though the shorter prefix's directory has a
        file at the same path.
        """
        site, app = make_root(tree, order)
        response = serve(site, b"/static/media/name.txt")
        assert (response.code, response.body) == (200, b"media")
        assert serve(site, b"/static/name.txt").body == b"static"
        assert app.seen == []

    def test_prefix_matches_whole_segments(self, tree):
        """
        C{/staticfoo} is not under C{/static}: it goes to the application
        with its path untouched; and C{/static/mediafoo} is under
        C{/static}, not C{/static/media}.
        """
        site, app = make_root(tree)
        assert serve(site, b"/staticfoo/name.txt").body == b"app"
        assert app.seen == [([], [b"staticfoo", b"name.txt"])]
        response = serve(site, b"/static/mediafoo/name.txt")
        assert (response.code, response.body) == (200, b"static/mediafoo")

    def test_multi_segment_prefix(self, tree):
        """
        A prefix of several segments matches only when all of them do;
        a partial match goes to the application.
        """
        site, app = make_root(tree)
        assert serve(site, b"/a/b/c/name.txt").body == b"deep"
        assert serve(site, b"/a/b/name.txt").body == b"app"
        assert serve(site, b"/a/b/cd/name.txt").body == b"app"
        assert app.seen == [([], [b"a", b"b", b"name.txt"]), ([], [b"a", b"b", b"cd", b"name.txt"])]

    def test_exact_prefix_with_slash(self, tree):
        """
        The prefix itself, with a trailing slash, is the mapped directory:
        its index file is served.
        """
        site, app = make_root(tree)
        response = serve(site, b"/static/media/")
        assert (response.code, response.body) == (200, b"media index")
        assert app.seen == []

    def test_exact_prefix_without_slash(self, tree):
        """
        The prefix itself, without a trailing slash, is the mapped
        directory, which redirects to the same path with a slash.
        """
        site, app = make_root(tree)
        response = serve(site, b"/static/media")
        assert response.code == 302
        assert response.headers[b"location"] == b"/static/media/"
        assert app.seen == []

    @pytest.mark.parametrize(
        "path, postpath",
        [
            (b"/", [b""]),
            (b"/index.html", [b"index.html"]),
            (b"/media/name.txt", [b"media", b"name.txt"]),
            (b"/x/static/name.txt", [b"x", b"static", b"name.txt"]),
        ],
    )
    def test_application_fallback(self, tree, path, postpath):
        """
        A path under no prefix goes to the application, with nothing
        consumed from it.
        """
        site, app = make_root(tree)
        response = serve(site, path)
        assert (response.code, response.body) == (200, b"app")
        assert app.seen == [([], postpath)]

    def test_no_mappings(self):
        """Without mappings everything goes to the application."""
        root = SiteRoot()
        app = RecordingApp()
        root.app = app
        site = make_site(root)
        assert serve(site, b"/static/name.txt").body == b"app"
        assert app.seen == [([], [b"static", b"name.txt"])]

    def test_application_not_loaded(self, tree):
        """
        Before the application is loaded, its paths answer 503 with an
        explanation, while static files are already served.
        """
        site, _ = make_root(tree)
        site.resource.app = None
        response = serve(site, b"/anything")
        assert (response.code, response.body) == (503, b"The application is not loaded yet.\n")
        assert serve(site, b"/static/name.txt").body == b"static"

    def test_is_leaf(self, tree):
        """
        L{SiteRoot} is a leaf, so the site hands it the whole path and it
        dispatches itself.
        """
        site, _ = make_root(tree)
        assert site.resource.isLeaf


# -- what the WSGI application sees -----------------------------------------------


def wsgi_root(tree: Path) -> tuple[BacktracSite, list[dict]]:
    """A root with C{/static} mapped and a WSGI application recording its environ."""
    environs: list[dict] = []

    def application(environ, start_response):
        environs.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"wsgi"]

    root = SiteRoot()
    root.app = WSGIApplicationResource(
        SynchronousReactorThreads(), SynchronousThreadPool(), application
    )
    return make_site(root, [StaticMapping("/static", str(tree / "static"))]), environs


class TestWSGIEnvironment:
    @pytest.mark.parametrize(
        "path, path_info",
        [
            (b"/", "/"),
            (b"/a/b", "/a/b"),
            (b"/a/b/", "/a/b/"),
            (b"/a%20b", "/a b"),
            (b"/media/site.css", "/media/site.css"),
            (b"/staticfoo/site.css", "/staticfoo/site.css"),
        ],
    )
    def test_whole_path(self, tree, path, path_info):
        """
        The application sees an empty C{SCRIPT_NAME} and the whole decoded
        path in C{PATH_INFO}, including paths that look static but are not
        mapped.
        """
        site, environs = wsgi_root(tree)
        response = serve(site, path)
        assert (response.code, response.body) == (200, b"wsgi")
        [environ] = environs
        assert environ["SCRIPT_NAME"] == ""
        assert environ["PATH_INFO"] == path_info
        assert environ["QUERY_STRING"] == ""

    def test_query_string_raw(self, tree):
        """C{QUERY_STRING} is passed as received, still percent-encoded."""
        site, environs = wsgi_root(tree)
        serve(site, b"/search?q=a%20b&next=%2Fhome&flag")
        [environ] = environs
        assert environ["PATH_INFO"] == "/search"
        assert environ["QUERY_STRING"] == "q=a%20b&next=%2Fhome&flag"
        assert environ["REQUEST_METHOD"] == "GET"

    def test_absolute_form_target(self, tree):
        """
        An absolute-form target
        (C{GET http://host/path}) gives the application the path, the query
        and the target's host, as an origin-form target would.
        """
        site, environs = wsgi_root(tree)
        response = serve(
            site, b"http://example.com/a%20b?x=1", headers=b"Host: other\r\n"
        )
        assert (response.code, response.body) == (200, b"wsgi")
        [environ] = environs
        assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/a b")
        assert environ["QUERY_STRING"] == "x=1"
        assert environ["HTTP_HOST"] == "example.com"

    def test_absolute_form_target_without_path(self, tree):
        """
        An absolute-form target with a query and no path
        (C{GET http://example.com?x=1}, valid per RFC 9112/3986) means the
        path C{/} with query C{x=1} on host C{example.com}.
        """
        site, environs = wsgi_root(tree)
        serve(site, b"http://example.com?x=1", headers=b"Host: other\r\n")
        [environ] = environs
        assert (environ["PATH_INFO"], environ["QUERY_STRING"], environ["HTTP_HOST"]) == (
            "/",
            "x=1",
            "example.com",
        )

    def test_underscore_headers_dropped(self, tree):
        """
        A header spelled with an
        underscore cannot pose as its dashed twin in the environ.
        """
        site, environs = wsgi_root(tree)
        serve(
            site,
            b"/",
            headers=b"Host: example.com\r\nX_Forwarded_For: 203.0.113.66\r\n"
            b"X-Forwarded-For: 198.51.100.1\r\n",
        )
        [environ] = environs
        assert environ["HTTP_X_FORWARDED_FOR"] == "198.51.100.1"

    def test_mapped_path_skips_application(self, tree):
        """A mapped path never reaches the application."""
        site, environs = wsgi_root(tree)
        assert serve(site, b"/static/name.txt").body == b"static"
        assert environs == []


# -- StaticDirectory --------------------------------------------------------------


class TestStaticDirectory:
    def test_file_served(self, tree):
        """A file is served with its content, length and type."""
        site, _ = make_root(tree)
        response = serve(site, b"/static/sub/file.txt")
        assert response.code == 200
        assert response.body == b"static/sub/file"
        assert response.headers[b"content-length"] == b"15"
        assert response.headers[b"content-type"] == b"text/plain"

    def test_head(self, tree):
        """A HEAD request for a file gets its headers and no body."""
        site, _ = make_root(tree)
        response = serve(site, b"/static/sub/file.txt", method=b"HEAD")
        assert (response.code, response.body) == (200, b"")
        assert response.headers[b"content-length"] == b"15"

    def test_post_not_allowed(self, tree):
        """
        Files only answer GET and HEAD: other methods get 405 and never
        reach the application, however the path was split.
        """
        site, app = make_root(tree)
        response = serve(site, b"/static/media/name.txt", method=b"POST")
        assert response.code == 405
        assert app.seen == []

    @pytest.mark.parametrize("path", [b"/static/", b"/static/sub/", b"/a/b/c/"])
    def test_no_directory_listing(self, tree, path):
        """
        A directory without an index file answers 404, not a listing of
        its files, at the prefix and in subdirectories.
        """
        site, app = make_root(tree)
        response = serve(site, path)
        assert response.code == 404
        assert b"name.txt" not in response.body and b"file.txt" not in response.body
        assert app.seen == []

    def test_listing_resource_is_not_found(self, tree):
        """
        The child for C{""} of a directory without an index is the
        not-found resource, and so is its C{directoryListing}.
        """
        directory = StaticDirectory(str(tree / "static"))
        request = bare_request()
        assert directory.directoryListing() is directory.childNotFound
        assert directory.getChild(b"", request) is directory.childNotFound

    def test_children_are_static_directories(self, tree):
        """Subdirectories are served by the same class, so they do not list either."""
        directory = StaticDirectory(str(tree / "static"))
        child = directory.getChild(b"sub", bare_request())
        assert type(child) is StaticDirectory
        assert child.path == str(tree / "static" / "sub")

    @pytest.mark.parametrize(
        "path",
        [
            b"/static/../secret.txt",
            b"/static/%2e%2e/secret.txt",
            b"/static/..%2Fsecret.txt",
            b"/static/sub/..%2F..%2Fsecret.txt",
            b"/static/sub%2Ffile.txt",
            b"/static/media/../../secret.txt",
        ],
    )
    def test_escapes_not_found(self, tree, path):
        """
        C{..} segments, plain or encoded, and encoded slashes are refused
        with 404 (L{FilePath} raises L{InsecurePath}), even when the
        encoded-slash path names a file that exists.
        """
        site, app = make_root(tree)
        response = serve(site, path)
        assert response.code == 404
        assert b"secret" not in response.body
        assert app.seen == []

    def test_nul_segment_not_found(self, tree):
        """A path segment with a NUL byte is not found (not a server error)."""
        site, app = make_root(tree)
        response = serve(site, b"/static/name.txt%00.html")
        assert response.code == 404
        assert app.seen == []

    @pytest.mark.parametrize("name", [b"..", b"../secret.txt", b"sub/file.txt", b"name.txt\x00"])
    def test_insecure_child(self, tree, name):
        """L{StaticDirectory.getChild} answers not-found for names that leave the directory."""
        directory = StaticDirectory(str(tree / "static"))
        assert directory.getChild(name, bare_request()) is directory.childNotFound


# -- small files in memory ---------------------------------------------------------------


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The paths static.File opens to send, in order."""
    paths = []
    real = StaticDirectory.openForReading

    def recording(self):
        paths.append(self.path)
        return real(self)

    monkeypatch.setattr(StaticDirectory, "openForReading", recording)
    return paths


def settled_root(tree: Path) -> tuple[BacktracSite, RecordingApp]:
    """
    L{make_root}, with the small files' clock a minute ahead: the files the
    test just wrote count as settled, so they are kept once sent.
    """
    site, app = make_root(tree)
    for _, directory in site.settings.routes:
        directory.small_files.clock = lambda: time.time() + 60
    return site, app


def after_the_next_tick(path: Path) -> None:
    """Wait until the kernel's file clock has moved past C{path}'s change time."""
    scratch = path.with_name(path.name + ".tick")
    deadline = time.monotonic() + 5
    while True:
        scratch.touch()
        if scratch.stat().st_ctime_ns > path.stat().st_ctime_ns:
            break
        assert time.monotonic() < deadline, "the file clock did not move"
    scratch.unlink()


def without_date(response: Response) -> Response:
    return Response(response.code, {k: v for k, v in response.headers.items() if k != b"date"},
                    response.body)


class TestSmallFiles:
    def test_sent_again_from_memory_exactly_as_the_first_time(self, tree, opened):
        site, app = settled_root(tree)
        first = serve(site, b"/static/sub/file.txt")
        again = [serve(site, b"/static/sub/file.txt") for _ in range(3)]
        assert opened == [str(tree / "static" / "sub" / "file.txt")]
        assert first.code == 200 and first.body == b"static/sub/file"
        assert {k for k in first.headers} >= {b"content-type", b"last-modified", b"accept-ranges"}
        assert [without_date(r) for r in again] == [without_date(first)] * 3
        assert app.seen == []

    def test_an_index_page_is_remembered_under_its_directory(self, tree, opened):
        site, _ = settled_root(tree)
        answers = [serve(site, b"/static/media/").body for _ in range(2)]
        assert answers == [b"media index"] * 2
        assert opened == [str(tree / "media" / "index.html")]

    @pytest.mark.parametrize("change", ["content", "same size, new time", "mode", "replaced"])
    def test_a_changed_file_is_read_again(self, tree, opened, change):
        site, _ = settled_root(tree)
        path = tree / "static" / "name.txt"
        serve(site, b"/static/name.txt")
        stat = path.stat()
        expected = b"static"
        if change == "content":
            path.write_text("changed!")
            expected = b"changed!"
        elif change == "same size, new time":
            path.write_text("STATIC")
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
            expected = b"STATIC"
        elif change == "mode":
            after_the_next_tick(path)  # else the change time may not move
            path.chmod(0o600)
        else:  # a new file renamed over it, with the old one's times
            replacement = tree / "static" / "new.txt"
            replacement.write_text("STATIC")
            os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            replacement.rename(path)
            expected = b"STATIC"
        assert serve(site, b"/static/name.txt").body == expected
        assert len(opened) == 2

    def test_a_deleted_file_is_not_found(self, tree, opened):
        site, _ = settled_root(tree)
        serve(site, b"/static/name.txt")
        (tree / "static" / "name.txt").unlink()
        assert serve(site, b"/static/name.txt").code == 404

    def test_conditional_requests_from_memory(self, tree, opened):
        """If-Modified-Since is answered as static.File answers it: 304 with no body, or the file."""
        site, _ = settled_root(tree)
        last_modified = serve(site, b"/static/name.txt").headers[b"last-modified"]
        fresh = serve(site, b"/static/name.txt", headers=b"Host: example.com\r\n"
                      b"If-Modified-Since: " + last_modified + b"\r\n")
        stale = serve(site, b"/static/name.txt", headers=b"Host: example.com\r\n"
                      b"If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT\r\n")
        assert (fresh.code, fresh.body) == (304, b"")
        assert (stale.code, stale.body) == (200, b"static")
        assert len(opened) == 1

    def test_ranges_and_head_take_the_ordinary_way(self, tree, opened):
        site, _ = settled_root(tree)
        serve(site, b"/static/name.txt")
        part = serve(site, b"/static/name.txt", headers=b"Host: example.com\r\nRange: bytes=1-2\r\n")
        head = serve(site, b"/static/name.txt", method=b"HEAD")
        assert (part.code, part.body, part.headers[b"content-range"]) == (206, b"ta", b"bytes 1-2/6")
        assert (head.code, head.body, head.headers[b"content-length"]) == (200, b"", b"6")
        assert len(opened) == 3

    def test_memory_is_bounded_and_the_oldest_go_first(self, tree, opened):
        site, _ = settled_root(tree)
        [small_files] = {directory.small_files for _, directory in site.settings.routes
                         if directory.path == str(tree / "static")}
        small_files.max_bytes = 30  # two of the 15-byte files below
        for name in ("a", "b", "c"):
            write(tree / "static" / f"{name}.txt", name * 15)
        for name in ("a", "b", "c", "c", "b", "a"):
            assert serve(site, f"/static/{name}.txt".encode()).body == name.encode() * 15
        assert small_files.size <= 30
        assert [Path(p).name for p in opened] == ["a.txt", "b.txt", "c.txt", "a.txt"]

    def test_a_file_changed_moments_ago_is_not_kept(self, tree, opened):
        """
        Written in the last two seconds, a file is read each time: a second
        write of the same size in the kernel's clock tick would not show.
        """
        site, _ = make_root(tree)  # the real clock: the tree was just written
        for _ in range(2):
            assert serve(site, b"/static/name.txt").body == b"static"
        assert len(opened) == 2

    def test_a_reload_starts_with_none(self, tree):
        """Routes made again (as a reload makes them) remember nothing yet."""
        old = static_routes(mappings(tree))
        new = static_routes(mappings(tree))
        assert {id(d.small_files) for _, d in old}.isdisjoint({id(d.small_files) for _, d in new})


# -- routes from the site's settings ----------------------------------------------------------


class TestRoutes:
    def test_site_root_starts_empty(self):
        """A new L{SiteRoot} has no application and no pool yet."""
        root = SiteRoot()
        assert (root.app, root.pool) == (None, None)

    def test_static_routes(self, tree):
        """
        L{static_routes} turns mappings into (segments, directory) routes,
        longest prefix first whatever the mappings' order.
        """
        for order in ("short-first", "long-first"):
            routes = static_routes(mappings(tree, order))
            assert [segments for segments, _ in routes][0] == [b"a", b"b", b"c"]
            assert sorted((segments, d.path) for segments, d in routes) == [
                ([b"a", b"b", b"c"], str(tree / "deep")),
                ([b"static"], str(tree / "static")),
                ([b"static", b"media"], str(tree / "media")),
            ]
            assert all(type(d) is StaticDirectory for _, d in routes)

    def test_non_ascii_prefix(self, tmp_path):
        """A prefix with non-ASCII characters matches its UTF-8, percent-encoded form."""
        write(tmp_path / "files" / "a.txt", "ä")
        root = SiteRoot()
        root.app = RecordingApp()
        site = make_site(root, [StaticMapping("/dokumente-ä", str(tmp_path / "files"))])
        assert serve(site, b"/dokumente-%C3%A4/a.txt").body == "ä".encode()

    def test_reload_applies_to_next_request(self, tree):
        """
        The routes are read from the site's settings for each request, so
        settings swapped by a reload apply to the next request.
        """
        site, app = make_root(tree)
        assert serve(site, b"/static/name.txt").body == b"static"
        site.settings = settings([StaticMapping("/files", str(tree / "media"))])
        assert serve(site, b"/files/name.txt").body == b"media"
        assert serve(site, b"/static/name.txt").body == b"app"
        assert app.seen == [([], [b"static", b"name.txt"])]

    def test_static_not_refused_when_overloaded(self, tree):
        """
        Static files need no thread, so they are served while the
        application has every place taken; application paths get 503 with
        Retry-After, and the application is not called.
        """
        site, _ = make_root(tree)
        site.settings = settings(mappings(tree), max_queue=0)
        pool = WorkerPool(0, 1)  # never started: work waits in its queue
        calls = []

        def application(environ, start_response):  # pragma: no cover - never runs
            calls.append(environ)
            start_response("200 OK", [])
            return [b"wsgi"]

        app = WSGIApplicationResource(SynchronousReactorThreads(), pool, application)
        site.resource.app, site.resource.pool = app, pool
        channel, transport = connect(site)
        channel.dataReceived(b"GET /waiting HTTP/1.0\r\nHost: example.com\r\n\r\n")
        assert (app.in_flight, transport.value()) == (1, b"")  # its one place is taken
        assert serve(site, b"/static/name.txt").body == b"static"
        with capturedLogs():
            response = serve(site, b"/page")
        assert (response.code, response.headers[b"retry-after"]) == (503, b"5")
        assert app.in_flight == 1
        assert site.stats.refused_overload == 1
        assert calls == []
