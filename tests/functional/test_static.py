"""
What HTTP clients see of the [static] mappings of a daemonized twistd
backtracweb: files, their headers, ranges and conditional requests, no
directory listings, containment in the mapped directory, and routing by
whole path segments with the longest prefix winning (everything else goes
to the WSGI test app, which answers "testapp <PATH_INFO>").

All tests read from one module-scoped daemon.  Layout, under etc/:

  public/secret.txt        beside the /static directory: must never be served
  secret.txt               one level further up: must never be served
  public/static/           mapped at /static (files, sub/, withindex/, media/)
  media/                   mapped at /static/media (nested, longer prefix)
  ab/                      mapped at /a/b (a prefix of two segments)
"""

from __future__ import annotations

import hashlib
import shutil
from urllib.parse import quote

import pytest
from conftest import APPS, Daemon, exchange, free_port, parse, site_ini, split_head

TEXT = b"0123456789abcdefghij\n"
BIG = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2**15))  # 1 MiB
SECRETS = (b"TOPSECRET-beside-static", b"TOPSECRET-config-dir")

FILES = {
    "public/secret.txt": SECRETS[0] + b"\n",
    "secret.txt": SECRETS[1] + b"\n",
    "public/static/a.txt": TEXT,
    "public/static/a.css": b"body { color: red }\n",
    "public/static/a.js": b"var x = 1;\n",
    "public/static/a.png": b"\x89PNG\r\n\x1a\n" + bytes(64),
    "public/static/a.html": b"<p>page</p>\n",
    "public/static/big.bin": BIG,
    "public/static/sub/listed-name-1.txt": b"one",
    "public/static/sub/listed-name-2.txt": b"two",
    "public/static/withindex/index.html": b"<p>the index</p>\n",
    "public/static/withindex/other.txt": b"other",
    "public/static/media/which.txt": b"the media subdirectory of /static",
    "media/which.txt": b"the /static/media mapping",
    "ab/f.txt": b"file under /a/b",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Daemon:
    """The static daemon, built once for the module; everything it serves is read-only."""
    root = tmp_path_factory.mktemp("static")
    etc, run = root / "etc", root / "run"
    run.mkdir()
    shutil.copytree(APPS, etc / "apps")
    for name, content in FILES.items():
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_bytes(content)
    port = free_port()
    config = etc / "backtrac.ini"
    config.write_text(site_ini(f"port = {port}", threads=(1, 4), static={
        "/static": "public/static", "/static/media": "media", "/a/b": "ab"}))
    daemon = Daemon(config, run, port)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.kill()


# -- raw HTTP helpers ---------------------------------------------------------


def raw_request(daemon: Daemon, method: str, target: bytes, headers: bytes = b"") -> bytes:
    """One request with a target sent byte for byte (no client normalisation)."""
    return exchange(daemon, method.encode() + b" " + target + b" HTTP/1.1\r\n"
                    b"Host: 127.0.0.1\r\nConnection: close\r\n" + headers + b"\r\n")




# -- files and their headers ----------------------------------------------------


@pytest.mark.parametrize(
    "name, types",
    [
        ("a.css", {"text/css"}),
        ("a.js", {"text/javascript", "application/javascript"}),
        ("a.png", {"image/png"}),
        ("a.html", {"text/html"}),
        ("a.txt", {"text/plain"}),
    ],
)
def test_content_type_by_extension(site, name, types):
    """A static file is served whole, with the Content-Type of its extension."""
    response, body = site.get(f"/static/{name}")
    assert response.status == 200
    assert response.getheader("Content-Type") in types
    assert body == FILES[f"public/static/{name}"]


def test_head_has_headers_and_no_body(site):
    """HEAD of a static file has its Content-Length and type, and no body bytes."""
    head, rest = split_head(raw_request(site, "HEAD", b"/static/a.txt"))
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Length: %d\r\n" % len(TEXT) in head + b"\r\n"
    assert b"\r\nContent-Type: text/plain" in head
    assert rest == b""


def test_large_file_arrives_complete(site):
    """A 1 MiB file arrives complete: its length and sha256 match."""
    response, body = site.get("/static/big.bin", timeout=30)
    assert response.status == 200
    assert response.getheader("Content-Length") == str(len(BIG))
    assert (len(body), hashlib.sha256(body).hexdigest()) == (
        len(BIG), hashlib.sha256(BIG).hexdigest())


@pytest.mark.parametrize(
    "ranges, content_range, part",
    [
        ("bytes=0-9", "bytes 0-9/21", TEXT[0:10]),
        ("bytes=-5", "bytes 16-20/21", TEXT[-5:]),
        ("bytes=15-", "bytes 15-20/21", TEXT[15:]),
    ],
)
def test_range_gives_206_with_exactly_those_bytes(site, ranges, content_range, part):
    """A satisfiable byte range (first bytes, suffix, open-ended) is a 206 of exactly those bytes."""
    response, body = site.get("/static/a.txt", headers={"Range": ranges})
    assert response.status == 206
    assert response.getheader("Content-Range") == content_range
    assert response.getheader("Content-Length") == str(len(part))
    assert body == part


def test_unsatisfiable_range_is_416(site):
    """A range wholly past the end is 416 naming the real length, with no content."""
    response, body = site.get("/static/a.txt", headers={"Range": "bytes=100-200"})
    assert response.status == 416
    assert response.getheader("Content-Range") == f"bytes */{len(TEXT)}"
    assert body == b""


def test_if_modified_since_last_modified_is_304_without_body(site):
    """
    The Last-Modified a GET returns, sent back as If-Modified-Since, gives
    304 with no body; an older date gives the file again.
    """
    response, _ = site.get("/static/a.txt")
    last_modified = response.getheader("Last-Modified")
    assert last_modified and last_modified.endswith(" GMT")

    head, rest = split_head(raw_request(
        site, "GET", b"/static/a.txt", b"If-Modified-Since: " + last_modified.encode() + b"\r\n"))
    assert head.startswith(b"HTTP/1.1 304 ")
    assert rest == b""

    response, body = site.get(
        "/static/a.txt", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert (response.status, body) == (200, TEXT)


def test_missing_file_is_404_not_the_app(site):
    """A missing file under a static prefix is Twisted's 404; the app is not asked."""
    response, body = site.get("/static/no-such-file.txt")
    assert response.status == 404
    assert not body.startswith(b"testapp")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_on_a_static_file_are_refused(site, method):
    """
    Any method but GET and HEAD on a static file is 405 allowing only GET
    and HEAD (RFC 9110 15.5.6); none of them reaches the app or returns the
    file.
    """
    response, body = site.request(method, "/static/a.txt", body=b"data")
    assert response.status == 405
    assert set(response.getheader("Allow").replace(" ", "").split(",")) == {"GET", "HEAD"}
    assert not body.startswith(b"testapp")
    assert TEXT not in body


# -- directories -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/static/", "/static/sub/"])
def test_directory_with_slash_is_404_without_listing(site, path):
    """A directory without an index, asked with a trailing slash, is 404: no listing."""
    response, body = site.get(path)
    assert response.status == 404
    assert b"listed-name" not in body and b"a.txt" not in body


@pytest.mark.parametrize("path", ["/static", "/static/sub", "/static/media", "/a/b"])
def test_directory_without_slash_redirects_without_listing(site, path):
    """
    A directory asked without its trailing slash (the bare prefix included)
    is a 302 to the slash form, served by the static mapping, not the app, naming no
    file.
    """
    response, body = site.get(path)
    assert response.status == 302
    assert response.getheader("Location") == path + "/"
    assert not body.startswith(b"testapp")
    assert b"listed-name" not in body and b"a.txt" not in body and b"f.txt" not in body


def test_directory_with_index_html_serves_it(site):
    """
    A directory holding index.html serves that file at its slash form (200,
    text/html), while the other files in it stay unlisted; the no-slash
    form redirects there.
    """
    response, body = site.get("/static/withindex/")
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/html"
    assert body == FILES["public/static/withindex/index.html"]
    assert b"other.txt" not in body

    response, _ = site.get("/static/withindex")
    assert (response.status, response.getheader("Location")) == (302, "/static/withindex/")


# -- containment -----------------------------------------------------------------


TRAVERSALS = [
    b"/static/../secret.txt",
    b"/static/../../secret.txt",
    b"/static/%2e%2e/secret.txt",
    b"/static/%2E%2E/secret.txt",
    b"/static/%2e%2e/%2e%2e/secret.txt",
    b"/static/.%2e/secret.txt",
    b"/static/sub/%2e%2e/%2e%2e/secret.txt",
    b"/static/..%2fsecret.txt",
    b"/static/..%2Fsecret.txt",
    b"/static/..%2f..%2fsecret.txt",
    b"/static/sub/..%2F..%2F..%2Fsecret.txt",
    b"/static/%252e%252e/secret.txt",
    b"/static/media/../secret.txt",
    b"/static/media/..%2f..%2fsecret.txt",
    b"/a/b/../../secret.txt",
    b"/a/b/..%2fsecret.txt",
    b"/static/..\\secret.txt",
    b"/static/..%5csecret.txt",
    b"/static/..%5c..%5csecret.txt",
    b"/static/{absolute}",
    b"/static/{absolute-encoded}",
    b"/static//etc/passwd",
    b"/static/%2fetc%2fpasswd",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode() for t in TRAVERSALS])
def test_traversal_never_leaves_the_static_root(site, target):
    """
    Dot-dot segments, percent-encoded dots, encoded slashes, backslashes,
    double encoding and absolute paths under a static prefix are answered
    404 or 400, and no file outside the mapped directory is served.
    """
    absolute = str(site.config.parent / "public" / "secret.txt").encode()
    target = target.replace(b"{absolute}", absolute).replace(
        b"{absolute-encoded}", quote(absolute, safe="").encode())
    data = raw_request(site, "GET", target)
    assert not any(secret in data for secret in SECRETS)
    assert data.startswith((b"HTTP/1.1 404 ", b"HTTP/1.1 400 "))


def test_nul_byte_never_serves_a_file_and_server_keeps_serving(site):
    """
    A NUL (%00) in a static path serves nothing: no file content, no
    traceback in the response, and the server keeps serving afterwards.
    (Its status is checked by the test below.)
    """
    for target in (b"/static/a.txt%00", b"/static/%00", b"/static/..%00/secret.txt",
                   b"/static/%00/../../secret.txt"):
        data = raw_request(site, "GET", target)
        response, body = parse(data)
        assert response.status != 200
        assert TEXT not in body and not any(s in body for s in SECRETS)
        assert b"Traceback" not in body and b"null byte" not in body
    response, body = site.get("/static/a.txt")
    assert (response.status, body) == (200, TEXT)


@pytest.mark.parametrize("target", [b"/static/a.txt%00", b"/static/%00"])
def test_nul_byte_in_static_path_is_404(site, target):
    """A path with a NUL names no file, so the answer is 404 (or 400), not a server error."""
    response, _ = parse(raw_request(site, "GET", target))
    assert response.status in (400, 404)


# -- routing by prefix -------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/staticfoo", "/static.css", "/staticfoo/a.txt", "/a", "/a/bc/f.txt", "/b/f.txt",
             "/static%2Fa.txt"])
def test_paths_not_under_a_prefix_go_to_the_app(site, path):
    """
    A prefix matches whole path segments: /staticfoo, /static.css, /a/bc
    and an encoded slash after static (one segment "static/a.txt") are
    the app's.
    """
    response, body = site.get(path)
    assert response.status == 200
    expected = path.replace("%2F", "/")
    assert body == b"testapp " + expected.encode()


def test_longest_prefix_wins(site):
    """
    /static/media is mapped to its own directory, which wins over
    /static's subdirectory of the same name.
    """
    response, body = site.get("/static/media/which.txt")
    assert (response.status, body) == (200, FILES["media/which.txt"])


def test_prefix_of_several_segments(site):
    """A two-segment prefix /a/b serves its directory's files."""
    response, body = site.get("/a/b/f.txt")
    assert (response.status, body) == (200, FILES["ab/f.txt"])


def test_query_string_does_not_affect_static_file(site):
    """A query string on a static path is ignored: the file is served."""
    response, body = site.get("/static/a.txt?v=123&x=%2F..")
    assert (response.status, body) == (200, TEXT)


def test_keep_alive_mixes_static_and_app(site):
    """One connection can fetch a static file, then an app page, then a file again."""
    conn = site.connection()
    try:
        answers = []
        for path in ("/static/a.txt", "/page", "/a/b/f.txt"):
            conn.request("GET", path)
            response = conn.getresponse()
            answers.append((response.status, response.read()))
    finally:
        conn.close()
    assert answers == [(200, TEXT), (200, b"testapp /page"), (200, FILES["ab/f.txt"])]


def test_absolute_form_request_target_is_routed_to_static(site):
    """
    RFC 9112 3.2.2: a server must accept GET http://host/static/a.txt
    and treat it like GET /static/a.txt, serving the file.
    """
    response, body = parse(raw_request(site, "GET", b"http://127.0.0.1/static/a.txt"))
    assert (response.status, body) == (200, TEXT)
