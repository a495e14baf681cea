"""
TLS certificates renewed while the server runs: SIGHUP reloads them.

An C{ssl:} endpoint reads its key and certificates once, when parsed.
L{RenewableContext} stands between the listening port and that context:
each new connection takes the context in force, connections already open
keep theirs, and a reload swaps in a context built from the files as they
are now, or keeps the old one and says why the new files cannot serve
(a certbot hook that wrote half a chain must not take the site down).
"""

from __future__ import annotations

import hashlib

from twisted.internet.endpoints import serverFromString

from backtracweb.config.spec import endpoint_files
from backtracweb.twisted_internals import ssl_context_factory, use_ssl_context_factory


class UnusableCertificate(Exception):
    """New certificate files that cannot serve: the message says which and why."""


class RenewableContext:
    """
    An old-style TLS context factory (C{getContext}) for the listening
    port of the C{ssl:} endpoint C{description}, whose files it reads
    again on L{renew}.

    @param options: the context factory the endpoint built when parsed.
    """

    def __init__(self, description: str, options, reactor) -> None:
        self.description = description
        self.options = options
        self._reactor = reactor
        self._files = self._fingerprint()

    def getContext(self):
        return self.options.getContext()

    def _fingerprint(self) -> str | None:
        """A digest of the files as they are now, or None if one cannot be read."""
        digest = hashlib.sha256()
        try:
            for name, path in sorted(endpoint_files(self.description).items()):
                with open(path, "rb") as file:
                    digest.update(name.encode() + b"\0" + file.read() + b"\0")
        except OSError:
            return None
        return digest.hexdigest()

    def renew(self) -> str | None:
        """
        Serve new connections with the files as they are now, if they
        changed: a message for the log saying so, or None if they did not.

        @raise UnusableCertificate: the files cannot serve; the old
            context stays in force.
        """
        address = ":".join(self.description.split(":")[:2])  # ssl:PORT; the files follow
        files = self._fingerprint()
        if files is not None and files == self._files:
            return None
        try:
            options = ssl_context_factory(serverFromString(self._reactor, self.description))
            options.getContext()  # builds it: a key that does not match fails here
        except Exception as e:  # OSError, OpenSSL's errors, a bad PEM: all kept out
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise UnusableCertificate(
                f"TLS on {address}: cannot use the files now at "
                f"{', '.join(endpoint_files(self.description).values())} ({reason}); "
                "still serving the certificate loaded before") from None
        self.options, self._files = options, files
        return f"TLS on {address}: new certificate and key loaded for new connections"


def make_renewable(endpoint, description: str, reactor) -> RenewableContext:
    """Have the C{ssl:} C{endpoint} listen with a L{RenewableContext}; return it."""
    renewable = RenewableContext(description, ssl_context_factory(endpoint), reactor)
    use_ssl_context_factory(endpoint, renewable)
    return renewable
