"""
The web root: static mappings first, the WSGI application for the rest.
"""

from __future__ import annotations

from typing import Iterable

from twisted.web import static
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import Request

from backtracweb.config import StaticMapping

_NOT_READY = b"The application is not loaded yet.\n"


class StaticDirectory(static.File):
    """
    Twisted's static file resource without directory listings: a mapping
    publishes files, not the names of everything beside them.  A path
    segment with a NUL byte is simply not found.
    """

    def directoryListing(self) -> IResource:
        return self.childNotFound

    def getChild(self, path: bytes, request: Request) -> IResource:
        # A NUL cannot name a file; FilePath would raise on it (a 500).
        if b"\x00" in path:
            return self.childNotFound
        return super().getChild(path, request)


class SiteRoot(Resource):
    """
    Routes each request to the static directory with the longest matching
    prefix, or else to the WSGI application.

    Prefixes match whole path segments, so C{/staticfoo} is not under
    C{/static}.  The application sees C{SCRIPT_NAME} empty and the whole
    path in C{PATH_INFO}, because this resource is a leaf: nothing has been
    consumed from the path when it hands the request on.

    @ivar app: the resource for the WSGI application; set when the
        application has been loaded, which happens after twistd forks.
    """

    isLeaf = True

    def __init__(self, mappings: Iterable[StaticMapping]) -> None:
        super().__init__()
        self.app: IResource | None = None
        routes = [
            ([s.encode("utf-8") for s in m.segments], StaticDirectory(m.directory))
            for m in mappings
        ]
        # Longest first, so nested prefixes win over their parents.
        self._routes = sorted(routes, key=lambda route: len(route[0]), reverse=True)

    def render(self, request: Request) -> bytes | int:
        path = request.postpath
        for segments, directory in self._routes:
            if path[: len(segments)] == segments:
                request.prepath.extend(segments)
                del path[: len(segments)]
                return getChildForRequest(directory, request).render(request)
        if self.app is None:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain")
            return _NOT_READY
        return self.app.render(request)
