"""
Zero-copy file responses: the body goes from the file to the socket with
C{os.sendfile}, never through Python.

Twisted sends a file by reading it into bytes and writing them to the
transport, which copies them again into its buffer and then into the
socket: for large files that copying is most of the cost.  Twisted has no
sendfile of its own, so here a producer takes over the writing for the
length of the body, on the transport's own terms:

  1. The head goes out the ordinary way, through C{Request.write}, so
     Twisted decides every header and the connection's persistence.
  2. The producer registers with the request as a push producer; the HTTP
     channel, which is the transport's own producer, relays the transport's
     calls to it.  It then asks the transport to resume its producer when
     its buffer is empty and the socket writable: C{producerPaused} set and
     C{startWriting}, which is what L{FileDescriptor.doWrite} checks before
     it calls C{resumeProducing}.
  3. Each C{resumeProducing} is one non-blocking C{sendfile} of the body,
     from the file's own offset; whatever the socket did not take waits for
     the next writability the same way.  Nothing else writes to the
     transport meanwhile: the channel handles one request at a time and
     holds back pipelined ones until this one is finished.
  4. At the end of the body the producer unregisters and finishes the
     request, and the transport carries on with the connection as if it had
     sent the bytes itself (keep-alive, the next pipelined request, close).

So the transport stays the only selectable for its socket: there is no
second writer to race with it, the reactor is never blocked (C{EAGAIN}
means "wait for writability"), and a lost connection reaches the producer
as Twisted's C{stopProducing}, which closes the file.  Only a plain socket
transport qualifies (TCP, or a unix socket): with TLS the bytes must be
encrypted in the process, and the caller keeps Twisted's producer.
"""

from __future__ import annotations

import errno
import os
from typing import BinaryIO, Callable

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.logger import Logger
from twisted.web.http import NO_BODY_CODES
from twisted.web.server import Request
from zope.interface import implementer

SEND_LIMIT = 4 * 1024 * 1024
"""
Bytes one C{sendfile} call may send, so that a fast client on a large file
does not keep the reactor from other connections; the kernel stops earlier
when the socket buffer is full.
"""
_SENDFILE: Callable[[int, int, int, int], int] | None = getattr(os, "sendfile", None)
_CLIENT_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT})
_log = Logger(namespace="backtracweb.sendfile")


def declared_length(request: Request) -> int | None:
    """
    The body length the response headers promise: its one C{Content-Length},
    or None when there is none, several, a malformed one, or a
    C{Transfer-Encoding} that frames the body some other way.
    """
    headers = request.responseHeaders
    if headers.hasHeader(b"transfer-encoding"):
        return None
    values = headers.getRawHeaders(b"content-length")
    if values is None or len(values) != 1:
        return None
    value = values[0].strip()
    return int(value) if value.isdigit() else None


def usable(request: Request, count: int) -> bool:
    """
    Whether L{SendfileProducer} can send the next C{count} bytes of a file
    as the body of C{request}, whose status and headers are set and not yet
    written: the headers promise exactly C{count} bytes (no chunking), the
    response has a body, and the connection is a plain socket whose
    producer is the request's channel (the relay the producer relies on).
    """
    if _SENDFILE is None or count <= 0 or request.startedWriting or request.finished:
        return False
    if request.method == b"HEAD" or request.code in NO_BODY_CODES:
        return False
    if declared_length(request) != count:
        return False
    channel = request.channel
    transport = getattr(channel, "transport", None)
    return (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and not ISSLTransport.providedBy(transport)
        and bool(transport.connected)
        and not transport.disconnecting
        and transport.producer is channel
        and bool(transport.streamingProducer)
    )


@implementer(IPushProducer)
class SendfileProducer:
    """
    Sends C{count} bytes of C{file} from C{offset} as the body of a
    response, with C{os.sendfile} (see the module's docstring for how it
    shares the transport).  Check L{usable} first.  The producer owns
    C{file} and closes it when the body is sent or the connection is lost.

    Like Twisted's file producers, it is created, then started.
    """

    def __init__(self, request: Request, file: BinaryIO, offset: int, count: int) -> None:
        self.request = request
        self.file: BinaryIO | None = file
        self.offset = offset
        self.remaining = count
        self._transport = request.channel.transport

    def start(self) -> None:
        """Write the head, then wait for the transport to hand over the socket."""
        request = self.request
        request.registerProducer(self, True)
        # The producer is also stopped through the request: a channel that
        # had let go of the transport would not relay stopProducing.
        request.notifyFinish().addBoth(self._request_over)
        request.write(b"")
        self._wait()

    def _wait(self) -> None:
        """
        Be resumed once the transport's buffer is empty and its socket
        writable: C{doWrite} resumes a paused producer after its last byte.
        """
        transport = self._transport
        transport.producerPaused = True
        transport.startWriting()

    # IPushProducer, through the channel

    def resumeProducing(self) -> None:
        """The socket is ours until this returns: send what it takes."""
        if self.file is None:
            return
        try:
            sent = _SENDFILE(self._transport.fileno(), self.file.fileno(), self.offset,
                             min(self.remaining, SEND_LIMIT))
        except BlockingIOError:
            self._wait()
            return
        except OSError as e:
            if e.errno in _CLIENT_GONE:
                # Close at once, as the transport does when its own send fails.
                self._close()
                self._transport.abortConnection()
            else:
                self._cut_short(f"sending the file failed ({e})")
            return
        if sent == 0:
            self._cut_short(f"the file ended {self.remaining} bytes short of its Content-Length")
            return
        self.offset += sent
        self.remaining -= sent
        self.request.sentLength += sent
        if self.remaining:
            self._wait()
            return
        self._close()
        self.request.unregisterProducer()
        self.request.finish()

    def pauseProducing(self) -> None:
        # Nothing to pause: bytes are sent only when the transport resumes us.
        pass

    def stopProducing(self) -> None:
        """The connection is lost: close the file; the request is over."""
        self._close()

    # -- ending ----------------------------------------------------------------------

    def _request_over(self, result: object) -> None:
        self._close()  # only once the request is finished or its connection lost

    def _cut_short(self, why: str) -> None:
        """
        End a response whose promised length cannot be kept: close the
        connection once the bytes already sent are delivered, so the client
        sees a body shorter than its Content-Length, never a wrong one.
        """
        _log.warn("{path}: {why}; closing the connection",
                  path=self.request.uri.decode("latin-1"), why=why)
        self._close()
        self.request.loseConnection()

    def _close(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            file.close()
