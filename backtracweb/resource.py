"""
The web root: the status page, then static mappings, then the WSGI
application for every other path.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable, NamedTuple

from twisted.logger import Logger
from twisted.web import http, static
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import Request

from backtracweb import sendfile
from backtracweb.config import StaticMapping
from backtracweb.pool import WorkerPool
from backtracweb.status import render_status

_NOT_READY = b"The application is not loaded yet.\n"
_OVERLOADED = b"The server is busy; please retry shortly.\n"
RETRY_AFTER = b"5"
_WARN_EVERY = 10.0  # seconds between two overload warnings


SMALL_FILE = 64 * 1024
"""Files up to this size are sent in one write, without a producer."""
BLOCK_SIZE = 512 * 1024
"""Larger files are read in blocks of this size (Twisted's default is 64 KiB)."""


SMALL_FILES_BYTES = 8 * 1024 * 1024
"""How much of its small files a static mapping keeps in memory, at most."""
SETTLED = 2.0
"""Seconds since its last change before a file is kept in memory."""


class SmallFiles:
    """
    The small files a static mapping has sent whole, kept in memory with
    the headers Twisted's static file resource gave them, so that sending
    one again costs a C{stat} instead of that resource's work: a child
    resource for each path segment, the content type worked out, the file
    opened and read (about 35 µs of a 100 µs request for a 10 KB file).

    A file is sent from memory only while C{stat} finds it as it was when
    read (inode, size, modification and change times, so a chmod or a
    rename over it counts); otherwise, and for anything but a plain GET
    (HEAD, ranges), the request takes the ordinary way.  The first request
    for a file always does, so whatever it decides (404, 403, a redirect,
    an index page) decides what is remembered.  A file changed in the last
    L{SETTLED} seconds is not kept: the kernel stamps times from a clock
    that ticks every few milliseconds, and a second write in the tick of
    the first, of the same size, would leave C{stat} unchanged.
    """

    def __init__(self, max_bytes: int = SMALL_FILES_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.size = 0
        self._files: dict[tuple[bytes, ...], _SmallFile] = {}

    def answer(self, request: Request, segments: tuple[bytes, ...]) -> bytes | None:
        """The body for C{request} if the file at C{segments} is remembered and unchanged, else None."""
        known = self._files.get(segments)
        if known is None or request.method != b"GET" or request.getHeader(b"range") is not None:
            return None
        try:
            now = os.stat(known.path)
        except OSError:
            return None
        if _identity(now) != known.identity:
            return None
        # The headers static.File sets, in its order.
        request.setHeader(b"accept-ranges", b"bytes")
        if request.setLastModified(now.st_mtime) is http.CACHED:
            return b""
        request.setHeader(b"content-length", b"%d" % len(known.data))
        for name, value in known.headers:
            request.setHeader(name, value)
        return known.data

    def remember(self, request: Request, path: str, identity: _Identity, data: bytes) -> None:
        """Keep C{data}, the whole file at C{path}, just sent in answer to C{request}."""
        if (request.method != b"GET" or request.code != http.OK or len(data) != identity.size
                or request.getHeader(b"range") is not None or len(data) > self.max_bytes
                or self.clock() - max(identity.mtime_ns, identity.ctime_ns) / 1e9 < SETTLED):
            return
        segments = tuple(request.prepath)
        old = self._files.pop(segments, None)
        if old is not None:
            self.size -= len(old.data)
        while self.size + len(data) > self.max_bytes:  # the oldest go first
            self.size -= len(self._files.pop(next(iter(self._files))).data)
        headers = tuple((name, values[0]) for name in (b"content-type", b"content-encoding")
                        if (values := request.responseHeaders.getRawHeaders(name)))
        self._files[segments] = _SmallFile(path, identity, headers, data)
        self.size += len(data)


class _Identity(NamedTuple):
    """What changes when a file's content, metadata or name binding may have."""

    ino: int
    dev: int
    size: int
    mtime_ns: int
    ctime_ns: int


class _SmallFile(NamedTuple):
    path: str
    identity: _Identity
    headers: tuple[tuple[bytes, bytes], ...]
    data: bytes


def _identity(st: os.stat_result) -> _Identity:
    return _Identity(st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _WholeFile:
    """A producer in name only: sends a small file at once and finishes."""

    def __init__(self, request: Request, file, path: str, small_files: SmallFiles | None) -> None:
        self.request, self.file = request, file
        self.path, self.small_files = path, small_files

    def start(self) -> None:
        try:
            identity = _identity(os.fstat(self.file.fileno()))
            data = self.file.read()
        finally:
            self.file.close()
        self.request.write(data)
        self.request.finish()
        if self.small_files is not None:
            self.small_files.remember(self.request, self.path, identity, data)


class StaticDirectory(static.File):
    """
    Twisted's static file resource without directory listings: a mapping
    publishes files, not the names of everything beside them.  A path
    segment with a NUL byte is simply not found.

    Sending is cheaper than Twisted's: a small file goes out in one write
    instead of through a producer and its cooperator, and from memory once
    sent (L{SmallFiles}); a larger file, or a
    large single range of one, goes from the file to the socket with
    sendfile where the connection allows it (L{backtracweb.sendfile}), and
    otherwise (TLS) in bigger blocks than Twisted's, so that a 1 MB file
    takes two reactor turns instead of sixteen.  Ranges, HEAD and
    conditional requests are Twisted's, unchanged: Twisted sets the status
    and headers, and only the body is sent differently.
    """

    small_files: SmallFiles | None = None
    """The mapping's small files in memory, shared by every resource under it."""

    def directoryListing(self) -> IResource:
        return self.childNotFound

    def createSimilarFile(self, path: str) -> StaticDirectory:
        child = super().createSimilarFile(path)
        child.small_files = self.small_files
        return child

    def makeProducer(self, request: Request, fileForReading):
        producer = super().makeProducer(request, fileForReading)
        if isinstance(producer, static.NoRangeStaticProducer):
            offset, count = 0, self.getFileSize()
            if count <= SMALL_FILE:
                return _WholeFile(request, fileForReading, self.path, self.small_files)
        elif isinstance(producer, static.SingleRangeStaticProducer):
            offset, count = producer.offset, producer.size
        else:  # several ranges: parts with their own headers, left to Twisted
            count = 0
        if count > SMALL_FILE and sendfile.usable(request, count):
            return sendfile.SendfileProducer(request, fileForReading, offset, count)
        producer.bufferSize = BLOCK_SIZE
        return producer

    def getChild(self, path: bytes, request: Request) -> IResource:
        # A NUL cannot name a file; FilePath would raise on it (a 500).
        if b"\x00" in path:
            return self.childNotFound
        return super().getChild(path, request)


Route = tuple[list[bytes], StaticDirectory]


def static_routes(mappings: Iterable[StaticMapping]) -> tuple[Route, ...]:
    """The mappings as routes for L{SiteRoot}, longest prefix first."""
    routes = [([s.encode("utf-8") for s in m.segments], _root_directory(m.directory))
              for m in mappings]
    return tuple(sorted(routes, key=lambda route: len(route[0]), reverse=True))


def _root_directory(path: str) -> StaticDirectory:
    directory = StaticDirectory(path)
    directory.small_files = SmallFiles()
    return directory


class SiteRoot(Resource):
    """
    Routes each request: the status page if it is enabled and asked for,
    else the static directory with the longest matching prefix, else the
    WSGI application.

    Prefixes match whole path segments, so C{/staticfoo} is not under
    C{/static}.  The application sees C{SCRIPT_NAME} empty and the whole
    path in C{PATH_INFO}, because this resource is a leaf: nothing has been
    consumed from the path when it hands the request on.  The routes and
    limits come from the site's current settings, so a reload applies to
    the next request.

    @ivar app: the resource for the WSGI application; set when the
        application has been loaded, which happens after twistd forks.
    @ivar pool: the application's thread pool, watched for overload.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.app: IResource | None = None
        self.pool: WorkerPool | None = None
        self._last_warning = float("-inf")

    def render(self, request: Request) -> bytes | int:
        settings = request.site.settings
        if settings.status_path is not None and request.path == settings.status_path:
            return render_status(request, self.pool)
        path = request.postpath
        for segments, directory in settings.routes:
            if path[: len(segments)] == segments:
                body = directory.small_files.answer(request, tuple(path))
                if body is not None:
                    request.prepath.extend(path)
                    del path[:]
                    return body
                request.prepath.extend(segments)
                del path[: len(segments)]
                return getChildForRequest(directory, request).render(request)
        if self.app is None:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain")
            return _NOT_READY
        if self._overloaded(settings.max_queue, request):
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain")
            request.setHeader(b"retry-after", RETRY_AFTER)
            return _OVERLOADED
        return self.app.render(request)

    def _overloaded(self, max_queue: int, request: Request) -> bool:
        """
        Whether the request would wait beyond C{[limits] max_queue}: every
        thread is busy and the queue is full.
        """
        pool, app = self.pool, self.app
        if pool is None:
            return False
        # The resource's own count: cheaper than the pool's, on every request.
        if app.in_flight < pool.max + max_queue:
            return False
        busy, queued = pool.busy, pool.queued
        request.site.stats.refused_overload += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            self._log.warn(
                "overloaded: {busy} threads busy and {queued} requests waiting; answering 503. "
                "Raise [threadpool] max (now {max}) if the application can take more at once, "
                "or [limits] max_queue (now {max_queue}) to let more wait.",
                busy=busy, queued=queued, max=pool.max, max_queue=max_queue,
            )
        return True
