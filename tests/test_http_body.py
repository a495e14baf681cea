"""
Unit tests for L{backtracweb.http.body}: a request body kept whole
(L{BodyBuffer}, in memory then in a temporary file) and one read as it
arrives (L{StreamingInput}), by a reader thread that waits for bytes
while the test plays the reactor feeding them.
"""

from __future__ import annotations

import io
import threading

import pytest

from backtracweb.http import body as body_module
from backtracweb.http.body import (
    EMPTY, HIGH_WATER, LOW_WATER, BodyBuffer, ClientDisconnected, StreamingInput,
)

WAIT = 10.0


class TestEmpty:
    def test_reads_nothing(self):
        """The input of a bodiless request is at its end, however it is read."""
        assert (EMPTY.read(), EMPTY.read(10), EMPTY.readline(), EMPTY.readlines(),
                list(EMPTY)) == (b"", b"", b"", [], [])


class TestBodyBuffer:
    def test_small_body_in_memory(self):
        """A body within the spool size is read back from memory, whole, from the start."""
        buffer = BodyBuffer()
        for part in (b"hello", b" ", b"world"):
            buffer.append(part)
        stream = buffer.input()
        assert isinstance(stream, io.BytesIO)
        assert (buffer.size, stream.read()) == (11, b"hello world")

    def test_large_body_spooled_to_a_file(self, monkeypatch):
        """Past the spool size the body goes to a temporary file, read back from the start."""
        monkeypatch.setattr(body_module, "SPOOL", 10)
        buffer = BodyBuffer()
        buffer.append(b"0123456789")
        assert buffer._file is None
        buffer.append(b"abc")
        buffer.append(b"def")
        stream = buffer.input()
        assert not isinstance(stream, io.BytesIO)
        assert (buffer.size, stream.read(), stream.readline()) == (16, b"0123456789abcdef", b"")
        buffer.discard()
        assert stream.closed

    def test_discard(self):
        """A discarded body keeps nothing."""
        buffer = BodyBuffer()
        buffer.append(b"x" * 100)
        buffer.discard()
        assert buffer.input().read() == b""


def reading(stream: StreamingInput, call, *args) -> tuple[threading.Thread, list]:
    """Run C{call(*args)} in a thread of its own; its result or error lands in the list."""
    results: list = []

    def run() -> None:
        try:
            results.append(call(*args))
        except ClientDisconnected as e:
            results.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def finished(thread: threading.Thread, results: list):
    thread.join(WAIT)
    assert not thread.is_alive(), "the reader is still waiting"
    return results[0]


class TestStreamingInput:
    def test_read_waits_for_the_end(self):
        """C{read()} returns the whole body once it has ended."""
        stream = StreamingInput()
        thread, results = reading(stream, stream.read)
        stream.feed(b"hello ")
        assert results == []
        stream.feed(b"world")
        stream.end()
        assert finished(thread, results) == b"hello world"
        assert stream.read() == b""

    def test_sized_reads(self):
        """C{read(n)} returns n bytes as soon as they are there, fewer only at the end."""
        stream = StreamingInput()
        stream.feed(b"abcdefg")
        assert (stream.read(3), stream.read(3)) == (b"abc", b"def")
        thread, results = reading(stream, stream.read, 3)
        stream.feed(b"h")
        stream.end()
        assert finished(thread, results) == b"gh"

    @pytest.mark.parametrize("size, expected", [(-1, b"one\n"), (2, b"on"), (None, b"one\n")])
    def test_readline(self, size, expected):
        """C{readline} stops after a newline, or at its size."""
        stream = StreamingInput()
        stream.feed(b"one\ntwo\n")
        assert stream.readline(size) == expected

    def test_lines_across_parts(self):
        """Lines split across parts are joined; iteration and readlines give every line."""
        stream = StreamingInput()
        thread, results = reading(stream, list, stream)
        for part in (b"fir", b"st\nsec", b"ond\n", b"last"):
            stream.feed(part)
        stream.end()
        assert finished(thread, results) == [b"first\n", b"second\n", b"last"]
        other = StreamingInput()
        other.feed(b"a\nb\nc\n")
        other.end()
        assert other.readlines(3) == [b"a\n", b"b\n"]  # as io.BytesIO: stop past the hint

    def test_first_read_hook_runs_once_before_waiting(self):
        """The first read calls C{on_first_read} (sending 100 Continue) once, in the reader."""
        calls = []
        stream = StreamingInput(on_first_read=lambda: calls.append(threading.current_thread()))
        thread, results = reading(stream, stream.read, 2)
        stream.feed(b"ab")
        assert finished(thread, results) == b"ab"
        assert calls == [thread]
        stream.feed(b"cd")
        stream.read(2)
        assert len(calls) == 1

    def test_no_hook_without_reading(self):
        """A body nobody reads never calls C{on_first_read}."""
        calls = []
        stream = StreamingInput(on_first_read=lambda: calls.append(1))
        stream.feed(b"abc")
        stream.end()
        assert calls == []

    def test_fail_wakes_the_reader(self):
        """A body that will not end raises L{ClientDisconnected} in the waiting reader."""
        stream = StreamingInput()
        thread, results = reading(stream, stream.read)
        stream.fail("the client went away")
        error = finished(thread, results)
        assert isinstance(error, ClientDisconnected) and isinstance(error, OSError)
        assert str(error) == "the client went away"

    def test_fail_after_some_bytes(self):
        """What arrived before the failure is read first; the next read raises."""
        stream = StreamingInput()
        stream.feed(b"part")
        stream.fail("gone")
        assert stream.read(10) == b"part"
        with pytest.raises(ClientDisconnected):
            stream.read(10)

    def test_fail_after_end_changes_nothing(self):
        """A body that has ended reads to its end whatever happens to the connection."""
        stream = StreamingInput()
        stream.feed(b"all")
        stream.end()
        stream.fail("gone")
        assert stream.read() == b"all"

    def test_back_pressure(self):
        """
        Feeding past L{HIGH_WATER} unread bytes says to hold the client
        back; the reader taking them below L{LOW_WATER} says to let it go,
        once.
        """
        drained = []
        stream = StreamingInput(on_drained=lambda: drained.append(1))
        assert stream.feed(b"x" * (HIGH_WATER - 1)) is False
        assert stream.feed(b"x") is True
        stream.read(HIGH_WATER - LOW_WATER)
        assert drained == []
        stream.read(1)
        assert drained == [1]
        stream.read(10)
        assert drained == [1]

    def test_read_all_while_held_back(self):
        """
        Reading the whole body takes what is there as it waits, so a client
        held back for a full buffer is let go and the body can end.
        """
        drained = threading.Event()
        stream = StreamingInput(on_drained=drained.set)
        assert stream.feed(b"a" * HIGH_WATER) is True
        thread, results = reading(stream, stream.read)
        assert drained.wait(WAIT)
        stream.feed(b"b")
        stream.end()
        assert finished(thread, results) == b"a" * HIGH_WATER + b"b"
