"""
What the engine needs of Twisted's transports beyond their interfaces.

Each function reads or sets private attributes of Twisted's
L{FileDescriptor} (the base of its TCP and unix connections) or of its TLS
protocol: they are kept here, each with the reason, and
C{tests/test_http_transport.py} fails if Twisted changes them.
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport


def is_plain_socket(transport: object) -> bool:
    """
    Whether C{transport} is a TCP or unix connection whose socket may be
    written to directly (with C{sendfile}): no TLS between.
    """
    return (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and not ISSLTransport.providedBy(transport)
    )


def resume_when_writable(transport: tcp.Connection) -> None:
    """
    Have C{transport} call its producer's C{resumeProducing} once its buffer
    is empty and its socket writable.

    L{FileDescriptor.doWrite} resumes a streaming producer only if it
    believes it paused it (C{producerPaused}, private), after writing out
    its buffer; a producer that writes to the socket itself (sendfile) sets
    it and asks for a write event.
    """
    transport.producerPaused = True
    transport.startWriting()


def unsent_bytes(transport: object) -> int:
    """
    How many bytes written to C{transport} it has not yet handed to the
    kernel, for an access log that records what a client took.

    A TCP or unix connection keeps them in C{dataBuffer} from C{offset} on
    and in C{_tempDataBuffer} (C{_tempDataLen} bytes).  A TLS connection
    keeps small writes to send together in its C{_aggregator}'s C{_buffer},
    what it could not yet encrypt in C{_appSendBuffer}, and its encrypted
    bytes in the connection below.  Anything else: 0.
    """
    below = getattr(transport, "transport", None)
    pending = 0
    app_buffer = getattr(transport, "_appSendBuffer", None)
    if app_buffer is not None and below is not None:
        small_writes = getattr(getattr(transport, "_aggregator", None), "_buffer", ())
        pending = sum(map(len, app_buffer)) + sum(map(len, small_writes))
        transport = below
    if isinstance(transport, tcp.Connection):
        pending += len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    return pending


def write_through(transport: tcp.Connection, data: bytes) -> None:
    """
    Write C{data} to C{transport}, a plain socket (L{is_plain_socket}),
    sending at once what the socket takes when nothing is waiting before it.

    Twisted's C{write} only buffers, and asks the reactor to watch the
    socket for writability (one C{epoll_ctl}), then to stop (another) once
    the next iteration has sent the bytes: for a small response in one
    write, twice the system calls and a reactor iteration it need not
    wait for.  What the socket does not take goes through C{write} as
    usual, after the bytes that did, so the order of bytes never changes.
    C{writeSomeData} is the public step C{doWrite} sends with; the empty
    buffer is read from C{FileDescriptor}'s private attributes.
    """
    if (transport.connected and not transport.disconnecting and not transport._writeDisconnected
            and not transport._tempDataLen and len(transport.dataBuffer) == transport.offset):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)
