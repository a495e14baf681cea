"""
Files as the content of responses: L{send_part} sends part of a file, with
C{os.sendfile} where the connection allows (the content goes from the file
to the socket, never through Python), else read in large blocks as the
client takes them (L{FileSender}: TLS).

Twisted sends bytes by copying them into its transport's buffer and then
into the socket: for large files that copying is most of the cost.
Twisted has no sendfile of its own, so here a producer takes over the
writing for the length of the content, on the transport's own terms:

  1. The head goes out the ordinary way (C{Request.write}), so the
     request decides every header and the connection's fate.
  2. The producer registers with the request; the channel, which is the
     transport's producer, relays the transport's calls to it.  It then
     asks to be resumed once the transport's buffer is empty and its
     socket writable (L{HTTPChannel.wait_until_writable}).
  3. Each C{resumeProducing} is one non-blocking C{sendfile} from the
     file's own offset; whatever the socket did not take waits for the
     next writability the same way.  Nothing else writes to the transport
     meanwhile: the channel answers one request at a time.
  4. At the end the producer unregisters and finishes the request, and
     the transport carries on with the connection as if it had sent the
     bytes itself.

So the transport stays the only selectable for its socket, the reactor is
never blocked (C{EAGAIN} means "wait for writability"), a client that
stops reading is cut off by the channel's C{send_timeout}, and a lost
connection reaches the producer as C{stopProducing}, which closes the
file.  Only a plain socket qualifies (TCP, or a unix socket): with TLS the
bytes must be encrypted in the process.
"""

from __future__ import annotations

import errno
import os
from typing import BinaryIO, Callable

from twisted.logger import Logger

from backtracweb.http.request import NO_CONTENT_CODES, Request
from backtracweb.twisted_internals import is_plain_socket, unsent_bytes

SMALL_FILE = 64 * 1024
"""Parts up to this size are read whole and sent with the head, in one write."""
BLOCK_SIZE = 512 * 1024
"""Where sendfile cannot be used, larger parts are read in blocks of this size."""
SEND_LIMIT = 4 * 1024 * 1024
"""
Bytes one C{sendfile} call may send, so that a fast client on a large file
does not keep the reactor from other connections; the kernel stops earlier
when the socket buffer is full.
"""
_SENDFILE: Callable[[int, int, int, int], int] | None = getattr(os, "sendfile", None)
_CLIENT_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT})
_log = Logger(namespace="backtracweb.app.sendfile")


def declared_length(request: Request) -> int | None:
    """
    The content length the response headers promise: its one valid
    C{Content-Length}, or None when there is none, several, or a malformed one.
    """
    values = [v for n, v in request.response_headers if n.lower() == b"content-length"]
    if len(values) != 1:
        return None
    value = values[0].strip(b" \t")  # as the head reads it
    return int(value) if value.isdigit() else None


def usable(request: Request, count: int) -> bool:
    """
    Whether L{SendfileProducer} can send the next C{count} bytes of a file
    as the content of C{request}'s response, whose status and headers are
    set and not yet written: the headers promise exactly C{count} bytes,
    the response has content, and the connection is a plain socket.
    """
    if _SENDFILE is None or count <= 0 or request.started_writing or request.finished:
        return False
    if request.method == b"HEAD" or request.code in NO_CONTENT_CODES or request.lost:
        return False
    if declared_length(request) != count:
        return False
    transport = request.channel.transport
    return (is_plain_socket(transport) and bool(transport.connected)
            and not transport.disconnecting)


def send_part(request: Request, file: BinaryIO, offset: int, count: int) -> None:
    """
    Send C{count} bytes of C{file} from C{offset} as the whole content of
    C{request}'s response, which then finishes; the file is closed then.
    """
    if declared_length(request) is None:
        request.response_headers.append((b"Content-Length", b"%d" % count))
    if count <= SMALL_FILE:
        with file:
            request.respond(os.pread(file.fileno(), count, offset))
        return
    if usable(request, count):
        SendfileProducer(request, file, offset, count).start()
    else:
        FileSender(request, file, offset, count).start()


class _FileProducer:
    """
    Sends C{count} bytes of C{file} from C{offset} as the content of a
    response, then finishes it.  It owns the file, and closes it when the
    content is sent or the connection is lost (C{stopProducing}).
    """

    def __init__(self, request: Request, file: BinaryIO, offset: int, count: int) -> None:
        self.request = request
        self.file: BinaryIO | None = file
        self.offset = offset
        self.remaining = count

    def stopProducing(self) -> None:
        """The connection is lost: close the file; the request is over."""
        self._close()

    def _sent(self) -> None:
        """The whole part is sent."""
        self._close()
        self.request.unregister_producer()
        self.request.finish()

    def _cut_short(self, why: str) -> None:
        """
        End a response whose promised length cannot be kept: close the
        connection once the bytes already sent are delivered, so the client
        sees a body shorter than its Content-Length, never a wrong one.
        """
        _log.warn("{path}: {why}; closing the connection",
                  path=self.request.target.decode("latin-1"), why=why)
        self._close()
        self.request.unregister_producer()
        self.request.close_connection()

    def _close(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            file.close()


class SendfileProducer(_FileProducer):
    """
    Sends the part with C{os.sendfile} (see the module's docstring for how
    it shares the transport).  Check L{usable} first.
    """

    def start(self) -> None:
        """Write the head, then send what the socket takes, or wait for it."""
        request = self.request
        request.register_producer(self)
        request.write(b"")
        if unsent_bytes(request.channel.transport):
            request.channel.wait_until_writable()
        else:  # the head is in the socket already
            self.resumeProducing()

    def resumeProducing(self) -> None:
        """The socket is ours until this returns: send what it takes."""
        if self.file is None:
            return
        channel = self.request.channel
        try:
            sent = _SENDFILE(channel.transport.fileno(), self.file.fileno(), self.offset,
                             min(self.remaining, SEND_LIMIT))
        except BlockingIOError:
            channel.wait_until_writable()
            return
        except OSError as e:
            if e.errno in _CLIENT_GONE:
                # Close at once, as the transport does when its own send fails.
                self._close()
                channel.abort()
            else:
                self._cut_short(f"sending the file failed ({e})")
            return
        if sent == 0:
            self._cut_short(f"the file ended {self.remaining} bytes short of its Content-Length")
            return
        self.offset += sent
        self.remaining -= sent
        self.request.sent_directly(sent)
        if self.remaining:
            channel.wait_until_writable()
        else:
            self._sent()

    def pauseProducing(self) -> None:
        # Nothing to pause: bytes are sent only when the transport resumes us.
        pass


class FileSender(_FileProducer):
    """
    Sends the part through the transport, a block each time the client has
    taken the last: where sendfile cannot be used (TLS).
    """

    def __init__(self, request: Request, file: BinaryIO, offset: int, count: int,
                 block_size: int = BLOCK_SIZE) -> None:
        super().__init__(request, file, offset, count)
        self.block_size = block_size
        self._paused = False

    def start(self) -> None:
        self.request.register_producer(self)  # paused at once if the client is not reading
        if not self._paused:
            self._send()

    def resumeProducing(self) -> None:
        self._paused = False
        self._send()

    def pauseProducing(self) -> None:
        self._paused = True

    def _send(self) -> None:
        """Write blocks until the transport says to wait, or the part is sent."""
        while not self._paused and self.file is not None and self.remaining:
            try:
                block = os.pread(self.file.fileno(), min(self.block_size, self.remaining),
                                 self.offset)
            except OSError as e:
                self._cut_short(f"reading the file failed ({e})")
                return
            if not block:
                self._cut_short(f"the file ended {self.remaining} bytes short")
                return
            self.offset += len(block)
            self.remaining -= len(block)
            self.request.write(block)  # may pause this producer at once
        if self.file is not None and not self.remaining:
            self._sent()
