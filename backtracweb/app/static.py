"""
Static files: the C{[static]} mappings, served on the reactor thread.

Each mapping publishes the files under one directory: the right
Content-Type (Python's table, with Twisted's additions), C{HEAD},
conditional requests (C{Last-Modified} and C{If-Modified-Since}, an
C{ETag} and C{If-None-Match}) answered 304, byte ranges (206, several as
C{multipart/byteranges}, C{If-Range}; 416 when none can be served),
index files for a directory, and a redirect to add the slash to a
directory's URL.  Never a listing of a directory, and never a file outside
it: a path segment that is C{.} or C{..}, holds an encoded slash or a NUL,
or is empty in the middle names nothing.

Sending costs as little as it can: a small file goes out in one write,
from memory once sent (L{SmallFiles}); a larger one from the file to the
socket with C{sendfile}, or, where it cannot (TLS), read in large blocks
as the client takes them (L{backtracweb.app.sendfile}).
"""

from __future__ import annotations

import mimetypes
import os
import stat
import time
from email.utils import parsedate_to_datetime
from typing import BinaryIO, Callable, NamedTuple
from urllib.parse import unquote_to_bytes

from backtracweb.app.sendfile import SMALL_FILE, send_part
from backtracweb.http.request import Request

SMALL_FILES_BYTES = 8 * 1024 * 1024
"""How much of its small files a static mapping keeps in memory, at most."""
SETTLED = 2.0
"""Seconds since its last change before a file is kept in memory."""
MAX_RANGES = 16
"""More ranges than this in one request are answered with the whole file."""
INDEX_NAMES = (b"index", b"index.html", b"index.htm")
"""Files that answer for their directory, in this order."""
DEFAULT_TYPE = b"application/octet-stream"
"""The type of a file whose extension says nothing: never run as a page in a browser."""

# Python's table (the system's mime.types first), with the additions Twisted
# made for its static files, which backtracweb served before.
mimetypes.init()
_TYPES = dict(mimetypes.types_map)
_TYPES.update({
    ".conf": "text/plain", ".diff": "text/plain", ".flac": "audio/x-flac",
    ".java": "text/plain", ".oz": "text/x-oz", ".swf": "application/x-shockwave-flash",
    ".wml": "text/vnd.wap.wml", ".xul": "application/vnd.mozilla.xul+xml",
    ".patch": "text/plain",
})
_ENCODINGS = {".gz": b"gzip", ".bz2": b"bzip2"}
_NOT_FOUND = b"Not Found: no such file.\n"
_FORBIDDEN = b"Forbidden: the file cannot be read.\n"


def content_type(name: bytes) -> list[tuple[bytes, bytes]]:
    """The Content-Type (and Content-Encoding, for C{.gz} and C{.bz2}) of a file named C{name}."""
    base, ext = os.path.splitext(os.fsdecode(name))
    ext = ext.lower()
    headers = []
    encoding = _ENCODINGS.get(ext)
    if encoding is not None:
        ext = os.path.splitext(base)[1].lower()
    kind = _TYPES.get(ext)
    headers.append((b"Content-Type", kind.encode("ascii") if kind else DEFAULT_TYPE))
    if encoding is not None:
        headers.append((b"Content-Encoding", encoding))
    return headers


class _Identity(NamedTuple):
    """What changes when a file's content, metadata or name binding may have."""

    ino: int
    dev: int
    size: int
    mtime_ns: int
    ctime_ns: int


def _identity(st: os.stat_result) -> _Identity:
    return _Identity(st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _SmallFile(NamedTuple):
    identity: _Identity
    data: bytes


class SmallFiles:
    """
    The small files a static mapping has sent whole, kept in memory, so
    that sending one again costs the C{stat} every request makes anyway,
    not an open, a read and a close.

    A file is sent from memory only while C{stat} finds it as it was when
    read (inode, size, modification and change times, so a chmod or a
    rename over it counts).  A file changed in the last L{SETTLED} seconds
    is not kept: the kernel stamps times from a clock that ticks every few
    milliseconds, and a second write in the tick of the first, of the same
    size, would leave C{stat} unchanged.  The oldest files make room.
    """

    def __init__(self, max_bytes: int = SMALL_FILES_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.size = 0
        self._files: dict[bytes, _SmallFile] = {}

    def get(self, path: bytes, identity: _Identity) -> bytes | None:
        """The content of the file at C{path}, if kept and still C{identity}."""
        known = self._files.get(path)
        if known is None or known.identity != identity:
            return None
        return known.data

    def remember(self, path: bytes, identity: _Identity, data: bytes) -> None:
        """Keep C{data}, the whole file at C{path} as it was when C{identity}."""
        if (len(data) != identity.size or len(data) > self.max_bytes
                or self.clock() - max(identity.mtime_ns, identity.ctime_ns) / 1e9 < SETTLED):
            return
        old = self._files.pop(path, None)
        if old is not None:
            self.size -= len(old.data)
        while self.size + len(data) > self.max_bytes:  # the oldest go first
            self.size -= len(self._files.pop(next(iter(self._files))).data)
        self._files[path] = _SmallFile(identity, data)
        self.size += len(data)


class StaticDirectory:
    """One C{[static]} mapping: the files under C{path}."""

    def __init__(self, path: str, small_files: SmallFiles | None = None) -> None:
        self.path = os.fsencode(path)
        self.small_files = small_files if small_files is not None else SmallFiles()

    def serve(self, request: Request, segments: list[bytes]) -> None:
        """Answer C{request} for the file at C{segments} (percent-encoded) under the directory."""
        if request.method not in (b"GET", b"HEAD"):
            request.code = 405
            request.response_headers = [(b"Allow", b"GET, HEAD"),
                                        (b"Content-Type", b"text/plain")]
            request.respond(b"Method Not Allowed: static files are read with GET or HEAD.\n")
            return
        names = _names(segments)
        if names is None:
            _not_found(request)
            return
        path = os.path.join(self.path, *names) if names else self.path
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            _not_found(request)
            return
        except OSError:
            _forbidden(request)
            return
        if stat.S_ISDIR(st.st_mode):
            if not request.path.endswith(b"/"):
                # The slash makes the directory's relative links work.
                location = request.path + b"/" + (b"?" + request.query if request.query else b"")
                request.code = 302
                request.response_headers = [(b"Location", location),
                                            (b"Content-Type", b"text/plain")]
                request.respond(b"Found: " + location + b"\n")
                return
            path, st = _index(path)
            if path is None:
                _not_found(request)  # never a listing
                return
        elif not stat.S_ISREG(st.st_mode) or request.path.endswith(b"/"):
            _not_found(request)  # (a file's name with a slash names a directory)
            return
        self._send(request, path, st)

    def _send(self, request: Request, path: bytes, st: os.stat_result) -> None:
        size = st.st_size
        # Whether it can be read is known before anything is answered (a
        # HEAD or a 304 answers as the GET would: RFC 9110 9.3.2, 13.2.1).
        file = None
        data = self.small_files.get(path, _identity(st)) if size <= SMALL_FILE else None
        if data is None:
            try:
                file = open(path, "rb")
            except OSError:
                _forbidden(request)
                return
        etag = b'"%x-%x"' % (st.st_mtime_ns, size)
        last_modified = _http_date(st.st_mtime)
        headers = content_type(path)
        headers += ((b"Accept-Ranges", b"bytes"), (b"Last-Modified", last_modified),
                    (b"ETag", etag))
        request.response_headers = headers
        ranges = None
        if _not_modified(request, etag, int(st.st_mtime)):
            request.code = 304
            request.response_headers = headers[-2:]
        elif request.method == b"HEAD":
            headers.append((b"Content-Length", b"%d" % size))
        else:
            ranges = _ranges(request, size, etag, last_modified)
            if ranges == []:
                request.code = 416
                request.response_headers = [(b"Content-Range", b"bytes */%d" % size),
                                            (b"Content-Length", b"0")]
        if request.code != 200 or request.method == b"HEAD":
            if file is not None:
                file.close()
            request.finish()
            return
        if ranges is None:
            if data is not None:
                request.respond(data)
            elif size <= SMALL_FILE:
                with file:
                    read = _identity(os.fstat(file.fileno()))
                    data = file.read()
                self.small_files.remember(path, read, data)
                request.respond(data)
            else:
                send_part(request, file, 0, size)
            return
        if file is None:  # a small file from memory, but ranges of it are read afresh
            try:
                file = open(path, "rb")
            except OSError:
                _forbidden(request)
                return
        if len(ranges) == 1:
            (first, last), = ranges
            request.code = 206
            headers.append((b"Content-Range", b"bytes %d-%d/%d" % (first, last, size)))
            send_part(request, file, first, last - first + 1)
        else:
            _send_parts(request, file, ranges, size, headers)


def _send_parts(request: Request, file: BinaryIO, ranges: list[tuple[int, int]], size: int,
                headers: list[tuple[bytes, bytes]]) -> None:
    """Several ranges: a C{multipart/byteranges} body (RFC 9110 14.6), read at once."""
    kind = headers[0][1]
    boundary = os.urandom(12).hex().encode("ascii")
    parts = []
    with file:
        for first, last in ranges:
            parts.append(b"\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
                         % (boundary, kind, first, last, size))
            parts.append(os.pread(file.fileno(), last - first + 1, first))
    parts.append(b"\r\n--%s--\r\n" % boundary)
    request.code = 206
    headers[0] = (b"Content-Type", b"multipart/byteranges; boundary=" + boundary)
    request.respond(b"".join(parts))


# -- the rules ---------------------------------------------------------------------------


def _names(segments: list[bytes]) -> list[bytes] | None:
    """
    The file names a request path's segments (after the prefix) stand
    for, percent-decoded, or None if they cannot name a file under the
    directory: C{.}, C{..}, a slash or NUL once decoded, an empty segment
    but at the end (a directory's slash).
    """
    names = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if b"%" in segment:
            segment = unquote_to_bytes(segment)
        if segment in (b".", b"..") or b"/" in segment or b"\x00" in segment:
            return None
        if not segment:
            if i != last:
                return None
            continue
        names.append(segment)
    return names


def _index(directory: bytes) -> tuple[bytes | None, os.stat_result | None]:
    """The index file that answers for C{directory}, if any."""
    for name in INDEX_NAMES:
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            return path, st
    return None, None


def _not_found(request: Request) -> None:
    request.code = 404
    request.response_headers = [(b"Content-Type", b"text/plain")]
    request.respond(_NOT_FOUND)


def _forbidden(request: Request) -> None:
    request.code = 403
    request.response_headers = [(b"Content-Type", b"text/plain")]
    request.respond(_FORBIDDEN)


def _http_date(when: float) -> bytes:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(when)).encode("ascii")


def _parse_date(value: bytes) -> int | None:
    """An HTTP date as seconds since the epoch, or None if it is not one."""
    try:
        return int(parsedate_to_datetime(value.decode("latin-1")).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _etags(value: bytes) -> list[bytes]:
    """The entity tags of an If-None-Match or If-Match value, weakness dropped."""
    return [tag.strip().removeprefix(b"W/") for tag in value.split(b",")]


def _not_modified(request: Request, etag: bytes, mtime: int) -> bool:
    """
    Whether the client's copy is current (RFC 9110 13.1.2, 13.1.3):
    If-None-Match decides when present, else If-Modified-Since.
    """
    none_match = request.header(b"if-none-match")
    if none_match is not None:
        tags = _etags(none_match)
        return b"*" in tags or etag in tags
    since = request.header(b"if-modified-since")
    if since is None:
        return False
    date = _parse_date(since)
    return date is not None and mtime <= date


def _ranges(request: Request, size: int, etag: bytes,
            last_modified: bytes) -> list[tuple[int, int]] | None:
    """
    The byte ranges to send, first and last positions included (RFC 9110
    14.1.2, 14.2); None for the whole file (no Range, one that is not
    understood, an If-Range that no longer matches, or too many ranges),
    an empty list when none can be satisfied (416).
    """
    value = request.header(b"range")
    if value is None or request.method != b"GET":
        return None
    if_range = request.header(b"if-range")
    if if_range is not None and if_range.strip() not in (etag, last_modified):
        return None  # the client's part is of another version: all of this one
    unit, _, specs = value.partition(b"=")
    if unit.strip().lower() != b"bytes":
        return None
    ranges = []
    for spec in specs.split(b","):
        first, dash, last = spec.strip().partition(b"-")
        if (not dash or not (first or last) or (first and not first.isdigit())
                or (last and not last.isdigit())):
            return None  # not a byte range: ignored, as RFC 9110 14.2 allows
        if not first:  # the last N bytes
            count = int(last)
            if count == 0 or size == 0:
                continue  # none to send: not satisfiable
            ranges.append((max(size - count, 0), size - 1))
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if last and int(last) < start:
                return None
            if start < size:
                ranges.append((start, end))
    if len(ranges) > MAX_RANGES or sum(b - a + 1 for a, b in ranges) > size:
        return None  # many or overlapping ranges: cheaper whole (RFC 9110 14.2)
    return ranges
