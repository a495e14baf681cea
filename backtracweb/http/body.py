"""
A request body as the application reads it (C{wsgi.input}).

The reactor thread only frames a body (llhttp removes the chunked
encoding) and keeps its bytes: nothing decodes forms, so no body, however
large, costs the reactor more than copying it.  For a WSGI application a
body is normally kept whole before the application runs (in memory, then
in a temporary file past L{SPOOL}), so that a client uploading slowly
holds a connection but no thread.  A request that asks for C{100
Continue} is the exception: its application runs first and decides
whether the body is wanted, reading it from a L{StreamingInput} as it
arrives.  An ASGI application, which holds no thread while it waits,
gets every body as it arrives, from an L{ArrivingBody}.
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections import deque
from typing import BinaryIO, Callable, Iterator

SPOOL = 1024 * 1024
"""Bytes of a body kept in memory; beyond, the body is written to a temporary file."""
HIGH_WATER = 256 * 1024
"""Bytes a streaming body may hold unread before the client is asked to wait."""
LOW_WATER = 64 * 1024
"""Unread bytes below which a paused client may send again."""


class ClientDisconnected(OSError):
    """
    The body cannot be read to its end: the client went away, stopped
    sending, or sent more than the server accepts.  An C{OSError}, as
    frameworks expect of an input that fails (Django answers 400).
    """


class EmptyInput:
    """The input of a request without a body: always at its end, and shareable."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


EMPTY = EmptyInput()


class BodyBuffer:
    """
    Collects a body on the reactor thread: in memory up to L{SPOOL} bytes,
    then in an anonymous temporary file.
    """

    def __init__(self) -> None:
        self.size = 0
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None

    def append(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        if self.size > SPOOL:
            self._file = tempfile.TemporaryFile()
            self._file.writelines(self._chunks)
            self._chunks = []

    def input(self) -> BinaryIO:
        """The whole body, to be read from the start."""
        if self._file is None:
            return io.BytesIO(b"".join(self._chunks))
        self._file.seek(0)
        return self._file

    def discard(self) -> None:
        """Forget the body (its request will not run)."""
        self._chunks = []
        if self._file is not None:
            self._file.close()
            self._file = None


class StreamingInput:
    """
    The body of a request whose application runs while the body arrives:
    the reactor feeds it, a worker thread reads it, waiting for bytes.

    @param on_first_read: called once, in the reading thread, before the
        first read waits (sends C{100 Continue}).
    @param on_drained: called in the reading thread when the unread bytes
        fall below L{LOW_WATER} after L{feed} said they were too many (the
        reactor then reads from the client again).
    """

    def __init__(self, on_first_read: Callable[[], None] | None = None,
                 on_drained: Callable[[], None] | None = None) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._buffer = bytearray()
        self._ended = False
        self._error: ClientDisconnected | None = None
        self._on_first_read = on_first_read
        self._on_drained = on_drained
        self._held_back = False
        self.received = 0

    # -- the reactor thread ------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """Add body bytes; whether the reader is now far enough behind to pause the client."""
        with self._cond:
            self._buffer += data
            self.received += len(data)
            self._cond.notify_all()
            if len(self._buffer) >= HIGH_WATER:
                self._held_back = True
            return self._held_back

    def end(self) -> None:
        """The body is complete."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def fail(self, why: str) -> None:
        """The rest of the body will not come: reads past what arrived raise L{ClientDisconnected}."""
        with self._cond:
            if not self._ended:
                self._error = ClientDisconnected(why)
                self._cond.notify_all()

    @property
    def complete(self) -> bool:
        return self._ended

    # -- the reading thread --------------------------------------------------------

    def _take(self, size: int, line: bool = False) -> bytes:
        first, self._on_first_read = self._on_first_read, None
        if first is not None:
            first()
        out = bytearray()
        with self._cond:
            buffer = self._buffer
            while True:
                want = size - len(out) if size >= 0 else -1
                if line:
                    end = buffer.find(b"\n") + 1
                    if end and (want < 0 or end <= want):
                        want = end
                if 0 <= want <= len(buffer):
                    out += buffer[:want]
                    del buffer[:want]
                    break
                # Not enough yet: take what there is (so that a client held
                # back for a full buffer may send again), and wait for more.
                out += buffer
                buffer.clear()
                if self._held_back:
                    self._held_back = False
                    if self._on_drained is not None:
                        self._on_drained()
                if self._ended:
                    break
                if self._error is not None:
                    if out:
                        break  # what arrived first; the next read raises
                    raise self._error
                self._cond.wait()
            if self._held_back and len(buffer) < LOW_WATER:
                self._held_back = False
                if self._on_drained is not None:
                    self._on_drained()
        return bytes(out)

    def read(self, size: int | None = -1) -> bytes:
        return self._take(-1 if size is None else size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._take(-1 if size is None else size, line=True)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class ArrivingBody:
    """
    The body of a request whose application runs while the body arrives,
    read on the reactor thread itself (by an ASGI application's coroutine):
    what has arrived is L{take}n, and L{when_more} says when more has.

    The reactor side is L{StreamingInput}'s: L{feed}, L{end}, L{fail}.

    @param on_first_read: called once, at the first L{take} (sends C{100
        Continue}).
    @param on_drained: called when the unread bytes fall below L{LOW_WATER}
        after L{feed} said they were too many (the reactor then reads from
        the client again).
    @ivar error: why the rest will not come, once it will not.
    """

    def __init__(self, on_first_read: Callable[[], None] | None = None,
                 on_drained: Callable[[], None] | None = None) -> None:
        self._parts: deque[bytes] = deque()
        self._unread = 0
        self._ended = False
        self.error: str | None = None
        self._on_first_read = on_first_read
        self._on_drained = on_drained
        self._held_back = False
        self._waiter: Callable[[], None] | None = None
        self.received = 0

    # -- the reactor side --------------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """Add body bytes; whether the reader is now far enough behind to pause the client."""
        self._parts.append(data)
        self._unread += len(data)
        self.received += len(data)
        if self._unread >= HIGH_WATER:
            self._held_back = True
        self._wake()
        return self._held_back

    def end(self) -> None:
        """The body is complete."""
        self._ended = True
        self._wake()

    def fail(self, why: str) -> None:
        """The rest of the body will not come."""
        if not self._ended:
            self.error = why
            self._wake()

    @property
    def complete(self) -> bool:
        return self._ended

    # -- the reader ---------------------------------------------------------------------

    @property
    def exhausted(self) -> bool:
        """Whether all of it was taken: it is complete and nothing is left unread."""
        return self._ended and not self._unread

    def take(self, size: int) -> bytes:
        """Up to C{size} of the bytes arrived and not yet taken (none: C{b""})."""
        first, self._on_first_read = self._on_first_read, None
        if first is not None:
            first()
        parts, taken, out = self._parts, 0, []
        while parts and taken < size:
            part = parts.popleft()
            if taken + len(part) > size:
                parts.appendleft(part[size - taken:])
                part = part[: size - taken]
            out.append(part)
            taken += len(part)
        self._unread -= taken
        if self._held_back and self._unread < LOW_WATER:
            self._held_back = False
            if self._on_drained is not None:
                self._on_drained()
        return b"".join(out)

    def when_more(self, callback: Callable[[], None]) -> None:
        """Call C{callback} once, when more arrives, or the body ends or fails."""
        self._waiter = callback

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter()
