"""
The request class of backtracweb's site: Twisted's, with the request
target and headers checked before any resource sees them.
"""

from __future__ import annotations

import re

from twisted.logger import Logger
from twisted.web import server

# scheme://authority, then the path and query (RFC 9112 3.2.2).
_ABSOLUTE_FORM = re.compile(rb"^[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)(.*)$", re.S)
_BAD_TARGET = b"Bad request target: expected a path beginning with /.\n"


class BacktracRequest(server.Request):
    """
    A L{server.Request} that

      - accepts absolute-form targets (C{GET http://host/path}), which
        RFC 9112 requires servers to accept and Twisted takes for a path;
      - answers 400 for any other target that is not a path or C{*};
      - drops headers whose names contain an underscore: WSGI spells
        C{X-Forwarded-For} and C{X_Forwarded_For} alike, so a client could
        use the second to spoof the first as a proxy would send it.
    """

    _log = Logger()
    _bad_target = False

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        absolute = _ABSOLUTE_FORM.match(path)
        if absolute:
            authority, path = absolute.group(1), absolute.group(2) or b"/"
            if not path.startswith(b"/"):
                path = b"/" + path
            if authority:
                self.requestHeaders.setRawHeaders(b"host", [authority])
        elif not path.startswith(b"/") and path != b"*":
            self._bad_target = True
            path = b"/"
        for name, _ in list(self.requestHeaders.getAllRawHeaders()):
            if b"_" in name:
                self.requestHeaders.removeHeader(name)
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if self._bad_target:
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"text/plain")
            self.setHeader(b"connection", b"close")
            self.write(_BAD_TARGET)
            self.finish()
            return
        super().process()
