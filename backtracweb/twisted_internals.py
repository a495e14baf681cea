"""
What backtracweb needs of Twisted beyond its public interfaces, in one
place: every private attribute or method of Twisted the package reads,
sets or replaces is used here and nowhere else, each with the reason and
with no public route to the same end.  C{tests/test_twisted_internals.py}
fails if Twisted changes one of them.

Below every layer of the package: any of them may import it, and it
imports nothing of backtracweb.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from typing import Callable

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.python.logfile import BaseLogFile

# -- transports: the HTTP engine and sendfile -------------------------------------------


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


# -- listening sockets shared by worker processes ------------------------------------------


def adopt_listening_port(port_class: type[tcp.Port], reactor, fd: int, family: int,
                         factory) -> tcp.Port:
    """
    A port of C{port_class} (a subclass of Twisted's TCP or unix C{Port})
    on the listening socket C{fd}, not yet listening.

    C{reactor.adoptStreamPort} is the public way, but it builds Twisted's
    own port class; a worker needs its subclass, which takes turns
    accepting with the other workers.  C{_fromListeningDescriptor} is the
    constructor C{adoptStreamPort} uses (TCP ports take the family, unix
    ports do not).
    """
    if family == socket.AF_UNIX:
        return port_class._fromListeningDescriptor(reactor, fd, factory)
    return port_class._fromListeningDescriptor(reactor, fd, family, factory)


def keep_listening_elsewhere(port: tcp.Port) -> None:
    """
    Have C{port}, once it stops listening, close its socket without
    shutting it down.

    Twisted shuts down a listening socket it made itself as it closes it
    (C{_shouldShutdown}), and a shut-down listening socket stops listening
    in every process sharing it: the workers could no longer accept what
    is queued as they drain.
    """
    port._shouldShutdown = False


# -- TLS endpoints ----------------------------------------------------------------------------


def ssl_context_factory(endpoint):
    """
    The TLS context factory an C{ssl:} endpoint built from its files.

    C{SSL4ServerEndpoint} keeps it as C{_sslContextFactory}, with no
    public way to reach it; building the endpoint ourselves would mean
    parsing the C{ssl:} description's options (key, chain, DH parameters,
    method) as Twisted does.
    """
    return endpoint._sslContextFactory


def use_ssl_context_factory(endpoint, context_factory) -> None:
    """Have the C{ssl:} C{endpoint} listen with C{context_factory} (see L{ssl_context_factory})."""
    endpoint._sslContextFactory = context_factory


# -- twistd's log --------------------------------------------------------------------------


def twistd_log_file(handler: object) -> BaseLogFile | None:
    """
    The log file twistd writes to, found in its SIGUSR1 C{handler}.

    twistd keeps its L{LogFile} to itself and, on SIGUSR1, I{rotates} it by
    renaming, which fights logrotate; the file object is only reachable
    through the closure of that handler, so we look there and reopen it
    instead.  With C{-n} or C{--logfile -} there is no such handler.
    """
    for cell in getattr(handler, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, BaseLogFile):
            return value
    return None


def only_observer(publisher) -> object | None:
    """
    The one observer of a log C{publisher}, if it has exactly one.

    C{LogPublisher} keeps its observers as C{_observers}; Twisted offers
    no public way to ask who receives events.
    """
    observers = getattr(publisher, "_observers", None)
    return observers[0] if observers and len(observers) == 1 else None


def observer_file(observer) -> object | None:
    """The file a C{FileLogObserver} writes to (C{_outFile}), if it says."""
    return getattr(observer, "_outFile", None)


# -- twistd's status pipe ----------------------------------------------------------------


def twistd_unix_runner() -> type:
    """
    twistd's C{UnixApplicationRunner}, whose status pipe
    L{report_through_status_pipe} speaks through; it lives in a private
    module (C{twisted.scripts._twistd_unix}).
    """
    from twisted.scripts._twistd_unix import UnixApplicationRunner

    return UnixApplicationRunner


def report_through_status_pipe(runner_class, message: Callable[[BaseException], bytes | None],
                               report: Callable[[bytes, object], str | None],
                               size: int) -> None:
    """
    Have twistd's daemon and parent speak of start-up failures in our words.

    C{runner_class} is twistd's C{UnixApplicationRunner}.  Its daemon
    writes what C{_formatChildException} makes of an exception (at most
    C{size} bytes) to the status pipe; its parent reads them in
    C{_waitForStart}, prints them, and exits.  Here the daemon sends
    C{message(exception)} when it is not None, and the parent prints
    C{report(data, its config)} when that is not None and exits 1; anything
    else goes the way twistd's own methods take it.  Replaced before the
    fork, so both processes have them; done once.
    """
    if getattr(runner_class, "_backtracweb_reports", False):
        return
    format_child_exception = runner_class._formatChildException
    wait_for_start = runner_class._waitForStart

    @functools.wraps(format_child_exception)
    def _formatChildException(self, exception):
        return message(exception) or format_child_exception(self, exception)

    @functools.wraps(wait_for_start)
    def _waitForStart(self, readPipe):
        data = os.read(readPipe, size)
        if data == b"0":
            return 0
        text = report(data, self.config)
        if text is None:
            # Not ours: twistd's own report, from the bytes it would have read.
            reader, writer = os.pipe()
            os.write(writer, data)
            os.close(writer)
            try:
                return wait_for_start(self, reader)
            finally:
                os.close(reader)
        sys.__stderr__.write(text)
        sys.__stderr__.flush()
        return 1

    runner_class._formatChildException = _formatChildException
    runner_class._waitForStart = _waitForStart
    runner_class._backtracweb_reports = True
