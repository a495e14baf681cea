"""
Listening sockets shared by worker processes (C{[server] workers}): bound
once by the supervisor, inherited by every worker, which take turns
accepting on them.

The kernel wakes every worker for each new connection, and the first to
run takes it.  Left at that, one worker often takes a whole burst (a load
balancer or a benchmark opening its keep-alive connections at once) and
keeps it for as long as the connections live, while the others idle.  So
the workers publish how many connections each has on a L{LoadBoard}, and a
worker leaves a new connection to a less loaded one, as nginx's workers
do: for a moment only, then it takes the connection if nobody did.
"""

from __future__ import annotations

import mmap
import os
import socket
from typing import Callable

from twisted.application.service import Service
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ServerFactory

from backtracweb.app.website import BacktracSite
from backtracweb.config.spec import endpoint_files, with_endpoint_files
from backtracweb.errors import StartupError
from backtracweb.process.server import ListeningService, accept_pending
from backtracweb.process.tls import RenewableContext
from backtracweb.twisted_internals import (
    adopt_listening_port, keep_listening_elsewhere, ssl_context_factory,
)


class SharedSocketService(ListeningService):
    """
    In a supervisor: binds like L{ListeningService} (before twistd drops
    privileges) but never accepts; its worker processes inherit the
    socket and accept on it.
    """

    def __init__(self, description: str, reactor) -> None:
        factory = ServerFactory()
        factory.noisy = False  # it never starts a protocol: nothing to say
        super().__init__(description, factory, reactor)
        self.files: dict[str, int] = {}
        """The files the endpoint reads, by parameter name: memfds to hand on."""

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        # The workers start after twistd has dropped privileges (--uid), and
        # an ssl: endpoint reads its key when parsed: a key only root may
        # read is read now, and the workers get copies (see worker_endpoint).
        self.files = copy_endpoint_files(self.description)
        # Nothing has been accepted yet: the reactor is not running.  The
        # workers accept on the socket while they drain: closing our copy
        # must not shut it down.
        self.port.stopReading()
        keep_listening_elsewhere(self.port)

    def stopService(self) -> Deferred[None] | None:
        # Close our copy only: the workers accept what is queued, and the
        # socket stays open until the last of them closes theirs.
        Service.stopService(self)
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def fileno(self) -> int:
        """The listening socket, for the workers to inherit."""
        return self.port.fileno()

    def worker_endpoint(self, inherited: dict[str, int]) -> str:
        """
        The endpoint for a worker that inherits L{files} as the descriptors
        given by parameter name: it reads them as its own.
        """
        return with_endpoint_files(
            self.description, {name: f"{_OWN_FD}{fd}" for name, fd in inherited.items()})


# How a process names a file it has open as descriptor N.
_OWN_FD = "/proc/self/fd/"


def copy_endpoint_files(description: str) -> dict[str, int]:
    """
    The files an endpoint reads (a TLS key and certificates) copied into
    memfds, by parameter name.

    @raise StartupError: one cannot be read.
    """
    copies = {}
    for name, path in endpoint_files(description).items():
        try:
            with open(path, "rb") as file:
                content = file.read()
        except OSError as e:
            for fd in copies.values():
                os.close(fd)
            raise StartupError(f"{description}: cannot read {name} {path}: {e.strerror}") from None
        copies[name] = os.memfd_create(f"backtracweb-{name}")
        os.write(copies[name], content)
    return copies


class InheritedSocketService(Service):
    """
    In a worker process: accepts on a listening socket inherited from the
    supervisor as file descriptor C{fd}, bound to C{description}, taking
    turns with the other workers through its C{seat} on the load board.
    """

    def __init__(self, fd: int, description: str, site: BacktracSite, reactor,
                 seat: Seat | None = None, configured: str | None = None) -> None:
        self.fd = fd
        self.description = description
        self.configured = configured or description
        """The endpoint as configured, naming the files a reload reads again."""
        self._site = site
        self._reactor = reactor
        self._seat = seat
        self.port = None
        """The port accepting on the inherited socket, once adopted."""
        self.tls: RenewableContext | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        with socket.socket(fileno=os.dup(self.fd)) as inherited:
            family = inherited.family
        factory = self._site
        if self.description.startswith("ssl:"):
            # The adopted socket is plain TCP; TLS is layered on top as the
            # ssl: endpoint would have done it, with the context it builds.
            from twisted.protocols.tls import TLSMemoryBIOFactory  # needs pyOpenSSL

            endpoint = serverFromString(self._reactor, self.description)
            self.tls = RenewableContext(self.configured, ssl_context_factory(endpoint),
                                        self._reactor)
            factory = TLSMemoryBIOFactory(self.tls, False, self._site)
            for path in endpoint_files(self.description).values():
                if path.startswith(_OWN_FD):  # read: the copy is not needed any more
                    os.close(int(path[len(_OWN_FD):]))
        self.port = _adopt(self._reactor, self.fd, family, factory, self._seat)
        os.close(self.fd)  # the port holds a duplicate

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is None:
            return None
        # Take what is queued before letting go (see ListeningService).  The
        # socket is not shut down, which would stop the other workers too,
        # but closed now rather than when Twisted gets to it a reactor turn
        # later: if this worker is the last to hold it, a connection queued
        # in between would be reset.
        accept_pending(self.port)
        stopped = self.port.stopListening()
        self.port.socket.close()
        return stopped


class LoadBoard:
    """
    How many connections each worker has open, in memory that the
    supervisor and its workers share (a memfd the workers inherit): one
    count a seat, numbered from 1.  Each worker writes its own count;
    reads of the others' need no lock, since a count a moment old is as
    good as a current one for choosing.  An empty seat reads as
    L{EMPTY}, so that nobody leaves a connection to it.
    """

    _SLOT = 8  # one signed 64-bit count per seat
    EMPTY = 2**62

    def __init__(self, fd: int, seats: int) -> None:
        self.fd = fd
        self.seats = seats
        self._map = mmap.mmap(fd, self._SLOT * seats)
        self.counts = memoryview(self._map).cast("q")

    @classmethod
    def create(cls, seats: int) -> LoadBoard:
        fd = os.memfd_create("backtracweb-load")
        os.ftruncate(fd, cls._SLOT * seats)
        board = cls(fd, seats)
        for seat in range(1, seats + 1):
            board.retire(seat)  # until a worker sits there
        return board

    def set(self, seat: int, count: int) -> None:
        """The worker at C{seat} has C{count} connections."""
        self.counts[seat - 1] = count

    def retire(self, seat: int) -> None:
        """The worker at C{seat} is gone or leaving: nobody should leave a connection to it."""
        self.counts[seat - 1] = self.EMPTY

    def seat(self, seat: int) -> Seat:
        """The place of the worker at C{seat}, from which it takes its turns."""
        return Seat(self, seat)


class Seat:
    """One worker's place on the L{LoadBoard}: its count, and its turn to accept."""

    def __init__(self, board: LoadBoard, index: int) -> None:
        self._board, self._index = board, index
        self._watchers: list[Callable[[], None]] = []

    def may_accept(self) -> bool:
        """Whether no other worker has fewer connections than this one."""
        counts = self._board.counts
        mine = counts[self._index - 1]
        return all(mine <= count for count in counts)

    def set(self, count: int) -> None:
        """This worker has C{count} connections now; tell who asked to know."""
        self._board.set(self._index, count)
        if self._watchers:
            watchers, self._watchers = self._watchers, []
            for watcher in watchers:
                watcher()

    def on_next_change(self, watcher: Callable[[], None]) -> None:
        """Call C{watcher} the next time this worker's count changes."""
        self._watchers.append(watcher)


LEAVE_FOR = 0.002
"""Seconds a worker leaves a new connection to a less loaded one before taking it."""


class _TakeTurnsAccepting:
    """
    A listening port shared by workers: it accepts one connection each
    time the reactor finds it readable, and none while its C{seat} says a
    less loaded worker should: for L{LEAVE_FOR} seconds at most, then it
    takes the connection if it is still waiting; sooner if this worker's
    own connections close and it is the least loaded again.

    Twisted's ports accept as many pending connections as they can (up to
    100 and growing), which suits one process and starves the others here.
    The early return matters when connections are short (a proxy without
    keep-alive): the counts keep moving, and a worker sitting out a fixed
    time while the other does the same would leave new connections to
    nobody.
    """

    numberAccepts = property(lambda self: 1, lambda self, value: None)
    seat: Seat | None = None
    _leaving = None  # the call that ends the wait, while leaving connections to others

    def doRead(self) -> None:
        if self.seat is not None and not self.seat.may_accept():
            self.stopReading()
            self._leaving = self.reactor.callLater(LEAVE_FOR, self._look_again)
            self.seat.on_next_change(self._count_changed)
            return
        super().doRead()

    def _count_changed(self) -> None:
        if self._leaving is None:
            return
        if not self.seat.may_accept():
            self.seat.on_next_change(self._count_changed)
            return
        self._leaving.cancel()
        self._leaving = None
        if self.connected and not self.disconnecting:
            self.startReading()  # the reactor says when a connection waits

    def _look_again(self) -> None:
        self._leaving = None
        if self.connected and not self.disconnecting:
            self.startReading()
            super().doRead()  # the connection left for another, if still there


class _SharedTCPPort(_TakeTurnsAccepting, tcp.Port):
    pass


class _SharedUNIXPort(_TakeTurnsAccepting, unix.Port):
    pass


def _adopt(reactor, fd: int, family: int, factory, seat: Seat | None = None) -> tcp.Port:
    """C{reactor.adoptStreamPort}, with ports that take turns accepting."""
    port_class = _SharedUNIXPort if family == socket.AF_UNIX else _SharedTCPPort
    port = adopt_listening_port(port_class, reactor, fd, family, factory)
    port.seat = seat
    port.startListening()
    return port
