"""
The control channel between the supervisor and each worker process: AMP
(L{twisted.protocols.amp}) over a socketpair the worker inherits.

One conversation, typed both ways, in place of three framings (the
configuration pickled into the environment, reloads pickled onto standard
input, log events framed on standard output):

  supervisor -> worker   L{Start} (answered once the worker serves, or
                         with L{CannotStart}), L{Reload}, L{ReopenLogs},
                         L{Heartbeat}, L{Stats}
  worker -> supervisor   L{LogEvents}, L{AccessLines}, L{ServerStats}

A worker whose channel closes has lost its supervisor and drains; a
supervisor whose channel to a worker closes knows the worker is gone.
"""

from __future__ import annotations

import json
import pickle
import signal
import socket
from typing import Any

from twisted.internet.protocol import Factory
from twisted.protocols import amp

CONTROL_FD = 3
"""The descriptor of a worker's end of the control channel."""

ASGI_FLAG = "--asgi"
"""The argument that has a worker run Twisted's asyncio reactor (for an ASGI application)."""

EXIT_STARTUP_FAILED = 3
"""A worker's exit status when it could not start (it said why)."""

STACKS_SIGNAL = signal.SIGUSR2
"""
Makes a worker write every thread's stack to its standard error (with
L{faulthandler}, which needs neither the event loop nor the interpreter
lock): what a stuck worker was doing, for the log, before it is killed.
"""


class Chunked(amp.Argument):
    """
    Bytes of any length, sent as as many AMP values as they take: an AMP
    value holds at most 64 KB, and a configuration with many static
    mappings, a log event with a long traceback or a burst of access lines
    can be larger.  The value under the argument's own name is the number
    of chunks, which follow as C{name.0}, C{name.1}...
    """

    def toBox(self, name: bytes, strings, objects, proto) -> None:
        value = objects.pop(name.decode("ascii"), None)
        if value is None and self.optional:
            return
        data = self.encode(value)
        size = amp.MAX_VALUE_LENGTH
        chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        strings[name] = str(len(chunks)).encode("ascii")
        for number, chunk in enumerate(chunks):
            strings[b"%s.%d" % (name, number)] = chunk

    def fromBox(self, name: bytes, strings, objects, proto) -> None:
        if self.optional and name not in strings:
            objects[name.decode("ascii")] = None
            return
        count = int(strings.pop(name))
        data = b"".join(strings.pop(b"%s.%d" % (name, number)) for number in range(count))
        objects[name.decode("ascii")] = self.decode(data)

    def encode(self, value: Any) -> bytes:
        return value

    def decode(self, data: bytes) -> Any:
        return data


class JSON(Chunked):
    """A value JSON can carry (the log events, the access lines, the statistics)."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class Pickled(Chunked):
    """
    A Python object (a L{backtracweb.config.settings.Config}), pickled: both ends
    are the same installed package, started by the same supervisor, and a
    configuration holds objects JSON cannot (the app loader).
    """

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)


class Channel(amp.AMP):
    """
    AMP, without the two lines it logs at each connection and loss: with
    a channel per worker, they would fill the log with every restart and
    tell nothing the supervisor does not say better.
    """

    def makeConnection(self, transport) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


class _ThisChannel(Factory):
    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def buildProtocol(self, addr) -> Channel:
        return self.channel


def adopt(reactor, fd: int, channel: Channel) -> None:
    """
    Speak on the connected unix socket C{fd} through C{channel}; the
    reactor keeps a duplicate of C{fd}, which the caller closes.
    """
    reactor.adoptStreamConnection(fd, socket.AF_UNIX, _ThisChannel(channel))


class CannotStart(Exception):
    """The worker could not start; the message says why (it has logged it too)."""


class Start(amp.Command):
    """
    Serve: the configuration the daemon started with (application,
    sockets), the one in force now if a reload changed it, the listening sockets
    as (descriptor, endpoint) pairs, and the load board's descriptor and
    this worker's seat on it.  Answered once the worker serves.
    """

    arguments = [
        (b"index", amp.Integer()),
        (b"seat", amp.Integer()),
        (b"started", Pickled()),
        (b"current", Pickled(optional=True)),
        (b"sockets", JSON()),
        (b"board", amp.Integer()),
        (b"board_size", amp.Integer()),
    ]
    response = [(b"pid", amp.Integer())]
    errors = {CannotStart: b"CANNOT_START"}


class Reload(amp.Command):
    """Apply a configuration the supervisor has checked (SIGHUP)."""

    arguments = [(b"config", Pickled())]
    response: list = []


class ReopenLogs(amp.Command):
    """Reopen the access log at its path (SIGUSR1, after logrotate)."""

    arguments: list = []
    response: list = []


class Heartbeat(amp.Command):
    """
    Answered by the worker's reactor thread: a worker that does not answer
    for C{[server] worker_timeout} seconds is stuck and gets replaced.  The
    answer says how many requests it has served and its resident memory,
    for C{max_requests} and C{max_memory}.
    """

    arguments: list = []
    response = [(b"requests", amp.Integer()), (b"rss", amp.Integer())]


class Stats(amp.Command):
    """This worker's numbers for the status page (L{backtracweb.app.status.snapshot})."""

    arguments: list = []
    response = [(b"stats", JSON())]


class ServerStats(amp.Command):
    """
    Asked by the worker that serves the status page: the whole server's
    numbers, every worker's L{Stats} and the supervisor's own.
    """

    arguments: list = []
    response = [(b"stats", JSON())]


class LogEvents(amp.Command):
    """The worker's log events, as L{twisted.logger.eventAsJSON} text, for twistd's log."""

    arguments = [(b"events", JSON())]
    requiresAnswer = False


class AccessLines(amp.Command):
    """
    Access-log lines for twistd's log (C{[log] access_log = -}): plain
    lines, sent in batches, since encoding each as a log event costs more
    than serving a small request.
    """

    arguments = [(b"lines", JSON())]
    requiresAnswer = False
