"""
Unit tests for L{backtracweb.app.resource}: how L{SiteRoot} routes a request
to the status page, a static directory or the WSGI application, and what
the application sees of the path.  (What a static directory answers is
tests/test_static.py's.)

Requests are parsed by the site's real channel from bytes and answered
into a L{StringTransport}; no reactor runs (see tests/helpers.py).  The
application is a L{Recorder}, or the real WSGI container running its
application at once in this thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Client, FakeReactor, Recorder, fetch, make_site, parse_responses, site_settings
from twisted.logger import capturedLogs

from backtracweb.app.application import Application
from backtracweb.app.pool import ThreadPool
from backtracweb.app.proxy import Addresses
from backtracweb.app.resource import SiteRoot, static_routes
from backtracweb.app.static import StaticDirectory
from backtracweb.app.wsgi import WSGIContainer
from backtracweb.config.settings import StaticMapping


class InlinePool:
    """Runs the application at once, in this thread."""

    def callInThread(self, function) -> None:
        function()


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


def make_root(tree: Path, order: str = "short-first", **settings):
    """A site mapping three prefixes, with a L{Recorder} as the application behind them."""
    app = Recorder()
    return make_site(SiteRoot(app), routes=static_routes(mappings(tree, order)), **settings), app


def app_paths(app: Recorder) -> list[bytes]:
    """The paths (as sent) of the requests the application was given."""
    return [request.path for request in app.requests]


# -- dispatch ---------------------------------------------------------------------


class TestDispatch:
    def test_prefix_serves_its_directory(self, tree):
        """A path under a prefix is served from the mapped directory."""
        site, app = make_root(tree)
        response = fetch(site, b"/static/name.txt")
        assert (response.status, response.body) == (200, b"static")
        assert app.requests == []

    @pytest.mark.parametrize("order", ["short-first", "long-first"])
    def test_longest_prefix_wins(self, tree, order):
        """
        Under nested prefixes the longer one serves, whatever the order
        of the mappings, even though the shorter prefix's directory has a
        file at the same path.
        """
        site, app = make_root(tree, order)
        response = fetch(site, b"/static/media/name.txt")
        assert (response.status, response.body) == (200, b"media")
        assert fetch(site, b"/static/name.txt").body == b"static"
        assert app.requests == []

    def test_prefix_matches_whole_segments(self, tree):
        """
        C{/staticfoo} is not under C{/static}: it goes to the application
        with its path untouched; and C{/static/mediafoo} is under
        C{/static}, not C{/static/media}.
        """
        site, app = make_root(tree)
        assert fetch(site, b"/staticfoo/name.txt").body == b"ok:/staticfoo/name.txt"
        assert app_paths(app) == [b"/staticfoo/name.txt"]
        response = fetch(site, b"/static/mediafoo/name.txt")
        assert (response.status, response.body) == (200, b"static/mediafoo")

    def test_multi_segment_prefix(self, tree):
        """
        A prefix of several segments matches only when all of them do;
        a partial match goes to the application.
        """
        site, app = make_root(tree)
        assert fetch(site, b"/a/b/c/name.txt").body == b"deep"
        assert fetch(site, b"/a/b/name.txt").body == b"ok:/a/b/name.txt"
        assert fetch(site, b"/a/b/cd/name.txt").body == b"ok:/a/b/cd/name.txt"
        assert app_paths(app) == [b"/a/b/name.txt", b"/a/b/cd/name.txt"]

    def test_exact_prefix_with_slash(self, tree):
        """
        The prefix itself, with a trailing slash, is the mapped directory:
        its index file is served.
        """
        site, app = make_root(tree)
        response = fetch(site, b"/static/media/")
        assert (response.status, response.body) == (200, b"media index")
        assert app.requests == []

    def test_exact_prefix_without_slash(self, tree):
        """
        The prefix itself, without a trailing slash, is the mapped
        directory, which redirects to the same path with a slash.
        """
        site, app = make_root(tree)
        response = fetch(site, b"/static/media")
        assert response.status == 302
        assert response.header(b"location") == b"/static/media/"
        assert app.requests == []

    @pytest.mark.parametrize("path, body", [
        (b"/st%61tic/name.txt", b"static"),
        (b"/%73%74%61%74%69%63/name.txt", b"static"),
        (b"/static/medi%61/name.txt", b"media"),
        (b"/st%61tic/medi%61/name.txt", b"media"),
        (b"/a/%62/c/name.txt", b"deep"),
        (b"/static/n%61me.txt", b"static"),
    ])
    def test_prefix_matched_percent_decoded(self, tree, path, body):
        """
        Prefixes are compared with the path's segments percent-decoded, as
        the application would see them: an encoded letter is that letter.
        """
        site, app = make_root(tree)
        response = fetch(site, path)
        assert (response.status, response.body) == (200, body)
        assert app.requests == []

    @pytest.mark.parametrize("path", [
        b"/static%2Fname.txt",         # an encoded slash is no segment boundary
        b"/static%2fmedia/name.txt",
        b"/a%2Fb%2Fc/name.txt",
        b"/STATIC/name.txt",           # segments match case and all
        b"/st%41tic/name.txt",
        b"/static%00/name.txt",
    ])
    def test_not_a_prefix_once_decoded(self, tree, path):
        """A path whose decoded segments are not a prefix's goes to the application, as sent."""
        site, app = make_root(tree)
        assert fetch(site, path).body == b"ok:" + path
        assert app_paths(app) == [path]

    @pytest.mark.parametrize("path", [
        b"/",
        b"/index.html",
        b"/media/name.txt",
        b"/x/static/name.txt",
        b"/static.txt",
        b"/a/b",
    ])
    def test_application_fallback(self, tree, path):
        """A path under no prefix goes to the application, with nothing consumed from it."""
        site, app = make_root(tree)
        response = fetch(site, path + b"?q=1")
        assert (response.status, response.body) == (200, b"ok:" + path + b"?q=1")
        [request] = app.requests
        assert (request.path, request.query) == (path, b"q=1")

    def test_no_mappings(self):
        """Without mappings everything goes to the application."""
        app = Recorder()
        site = make_site(SiteRoot(app))
        assert fetch(site, b"/static/name.txt").body == b"ok:/static/name.txt"
        assert app_paths(app) == [b"/static/name.txt"]

    def test_application_not_loaded(self, tree):
        """
        Before the application is loaded, its paths answer 503 with an
        explanation, while static files are already served.
        """
        imported = []
        application = Application(lambda: imported.append(1), ThreadPool(1, 1), FakeReactor())
        site = make_site(SiteRoot(application),
                         routes=static_routes(mappings(tree, "short-first")))
        response = fetch(site, b"/anything")
        assert imported == []  # the application is imported when the server starts
        assert (response.status, response.body) == (503, b"The application is not loaded yet.\n")
        assert response.header(b"retry-after") is None
        assert fetch(site, b"/static/name.txt").body == b"static"

    @pytest.mark.parametrize("allowed, status", [(True, 200), (False, 403)])
    def test_status_page_before_static(self, tree, allowed, status):
        """The status page's path is the status page's, even under a static prefix."""
        write(tree / "static" / "status", "a file")
        site, app = make_root(tree, status_path=b"/static/status",
                              status_allow=Addresses(["198.51.100.4"] if allowed else []))
        response = fetch(site, b"/static/status")
        assert response.status == status
        assert response.header(b"cache-control") == b"no-store"
        assert response.body != b"a file"
        assert app.requests == []
        # Only that path: the rest of the prefix is the directory's.
        assert fetch(site, b"/static/st%61tus").body == b"a file"
        assert fetch(site, b"/static/name.txt").body == b"static"


# -- what the WSGI application sees -----------------------------------------------


def wsgi_root(tree: Path):
    """A site with C{/static} mapped and a WSGI application recording its environ."""
    environs: list[dict] = []

    def application(environ, start_response):
        environs.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"wsgi"]

    reactor = FakeReactor()
    root = SiteRoot(WSGIContainer(reactor, InlinePool(), application))
    routes = static_routes([StaticMapping("/static", str(tree / "static"))])
    return make_site(root, reactor, routes=routes), environs


class TestWSGIEnvironment:
    @pytest.mark.parametrize("path, path_info", [
        (b"/", "/"),
        (b"/a/b", "/a/b"),
        (b"/a/b/", "/a/b/"),
        (b"/a%20b", "/a b"),
        (b"/media/site.css", "/media/site.css"),
        (b"/staticfoo/site.css", "/staticfoo/site.css"),
        (b"/static%2Fsite.css", "/static/site.css"),
        (b"/caf%C3%A9", "/caf\xc3\xa9"),
    ])
    def test_whole_path(self, tree, path, path_info):
        """
        The application sees an empty C{SCRIPT_NAME} and the whole decoded
        path in C{PATH_INFO} (bytes as latin-1, PEP 3333), including paths
        that look static but are not mapped.
        """
        site, environs = wsgi_root(tree)
        response = fetch(site, path)
        assert (response.status, response.body) == (200, b"wsgi")
        [environ] = environs
        assert environ["SCRIPT_NAME"] == ""
        assert environ["PATH_INFO"] == path_info
        assert environ["QUERY_STRING"] == ""

    def test_query_string_raw(self, tree):
        """C{QUERY_STRING} is passed as received, still percent-encoded."""
        site, environs = wsgi_root(tree)
        fetch(site, b"/search?q=a%20b&next=%2Fhome&flag")
        [environ] = environs
        assert environ["PATH_INFO"] == "/search"
        assert environ["QUERY_STRING"] == "q=a%20b&next=%2Fhome&flag"
        assert environ["REQUEST_METHOD"] == "GET"

    def test_absolute_form_target(self, tree):
        """
        An absolute-form target (C{GET http://host/path}) gives the
        application the path, the query and the target's host, as an
        origin-form target would.
        """
        site, environs = wsgi_root(tree)
        client = Client(site).send(b"GET http://example.com/a%20b?x=1 HTTP/1.1\r\n"
                                   b"Host: other\r\n\r\n")
        site.reactor.run_pending()
        [response] = parse_responses(client.output)
        assert (response.status, response.body) == (200, b"wsgi")
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
        Client(site).send(b"GET http://example.com?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
        site.reactor.run_pending()
        [environ] = environs
        assert (environ["PATH_INFO"], environ["QUERY_STRING"], environ["HTTP_HOST"]) == (
            "/", "x=1", "example.com")

    def test_absolute_form_target_under_a_prefix(self, tree):
        """An absolute-form target's path is routed like any other: static, not the application."""
        site, environs = wsgi_root(tree)
        client = Client(site).send(b"GET http://example.com/static/name.txt HTTP/1.1\r\n"
                                   b"Host: other\r\n\r\n")
        [response] = parse_responses(client.output)
        assert (response.status, response.body) == (200, b"static")
        assert environs == []

    def test_underscore_headers_dropped(self, tree):
        """A header spelled with an underscore cannot pose as its dashed twin in the environ."""
        site, environs = wsgi_root(tree)
        fetch(site, b"/", b"X_Forwarded_For: 203.0.113.66", b"X-Forwarded-For: 198.51.100.1")
        [environ] = environs
        assert environ["HTTP_X_FORWARDED_FOR"] == "198.51.100.1"

    @pytest.mark.parametrize("path", [b"/static/name.txt", b"/st%61tic/name.txt",
                                      b"/static/missing.txt", b"/static/../secret.txt"])
    def test_mapped_path_skips_application(self, tree, path):
        """A mapped path never reaches the application, whether the file is there or not."""
        site, environs = wsgi_root(tree)
        assert fetch(site, path).status in (200, 404)
        assert environs == []


# -- routes from the site's settings ----------------------------------------------------------


class TestRoutes:
    @pytest.mark.parametrize("order", ["short-first", "long-first"])
    def test_static_routes(self, tree, order):
        """
        L{static_routes} turns mappings into (segments, directory) routes,
        longest prefix first whatever the mappings' order.
        """
        routes = static_routes(mappings(tree, order))
        assert [segments for segments, _ in routes][0] == [b"a", b"b", b"c"]
        assert sorted((segments, d.path) for segments, d in routes) == [
            ([b"a", b"b", b"c"], bytes(tree / "deep")),
            ([b"static"], bytes(tree / "static")),
            ([b"static", b"media"], bytes(tree / "media")),
        ]
        assert all(type(d) is StaticDirectory for _, d in routes)

    def test_non_ascii_prefix(self, tmp_path):
        """A prefix with non-ASCII characters matches its UTF-8, percent-encoded form."""
        write(tmp_path / "files" / "a.txt", "ä")
        app = Recorder()
        site = make_site(SiteRoot(app), routes=static_routes(
            [StaticMapping("/dokumente-ä", str(tmp_path / "files"))]))
        assert fetch(site, b"/dokumente-%C3%A4/a.txt").body == "ä".encode()
        assert fetch(site, b"/dokumente-%c3%a4/a.txt").body == "ä".encode()
        # Latin-1's ä is another byte: not the prefix.
        assert fetch(site, b"/dokumente-%E4/a.txt").body == b"ok:/dokumente-%E4/a.txt"
        assert app_paths(app) == [b"/dokumente-%E4/a.txt"]

    def test_reload_applies_to_next_request(self, tree):
        """
        The routes are read from the site's settings for each request, so
        settings swapped by a reload apply to the next request, on a
        connection already open too.
        """
        site, app = make_root(tree)
        client = Client(site).get(b"/static/name.txt")
        site.settings = site_settings(
            routes=static_routes([StaticMapping("/files", str(tree / "media"))]))
        client.get(b"/files/name.txt").get(b"/static/name.txt")
        assert [r.body for r in parse_responses(client.output)] == [
            b"static", b"media", b"ok:/static/name.txt"]
        assert app_paths(app) == [b"/static/name.txt"]

    def test_static_not_refused_when_overloaded(self, tree):
        """
        Static files need no thread, so they are served while the
        application has every place taken; application paths get 503 with
        Retry-After, and the application is not called.
        """
        reactor = FakeReactor()
        pool = ThreadPool(0, 1)  # never started: work waits in its queue
        calls = []

        def application(environ, start_response):  # pragma: no cover - never runs
            calls.append(environ)
            start_response("200 OK", [])
            return [b"wsgi"]

        root = SiteRoot(WSGIContainer(reactor, pool, application), pool)
        site = make_site(root, reactor, routes=static_routes(mappings(tree)), max_queue=0)
        waiting = Client(site).get(b"/waiting")
        assert (root.app.in_flight, waiting.output) == (1, b"")  # its one place is taken
        assert fetch(site, b"/static/name.txt").body == b"static"
        with capturedLogs() as events:
            response = fetch(site, b"/page")
        assert (response.status, response.header(b"retry-after")) == (503, b"5")
        assert response.body == b"The server is busy; please retry shortly.\n"
        assert root.app.in_flight == 1
        assert site.stats.refused_overload == 1
        assert [e["log_level"].name for e in events] == ["warn"]
        assert calls == []
