"""
Listening sockets shared by worker processes (L{backtracweb.process.shared}): the
files an ssl: endpoint reads, the load board, and the ports that take
turns accepting, without processes or a running reactor.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest.mock import patch

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import ServerFactory
from twisted.internet.testing import MemoryReactorClock

from backtracweb.errors import StartupError
from backtracweb.process.shared import LEAVE_FOR, LoadBoard, _SharedTCPPort, copy_endpoint_files


def test_the_files_an_endpoint_reads_are_copied_into_memory(tmp_path: Path):
    """What a shared ssl: socket does while privileged; other endpoints read no file."""
    key, cert = tmp_path / "k.pem", tmp_path / "c:1.pem"
    key.write_bytes(b"KEY")
    cert.write_bytes(b"CERT")
    escaped = str(cert).replace(":", "\\:")  # as Twisted's endpoint syntax wants it
    copies = copy_endpoint_files(f"ssl:0:privateKey={key}:certKey={escaped}")
    try:
        assert {name: os.pread(fd, 10, 0) for name, fd in copies.items()} == {
            "privateKey": b"KEY", "certKey": b"CERT"}
    finally:
        for fd in copies.values():
            os.close(fd)
    assert copy_endpoint_files(f"unix:{tmp_path}/s") == {}
    with pytest.raises(StartupError) as raised:
        copy_endpoint_files(f"ssl:0:privateKey={tmp_path}/gone.pem")
    assert str(raised.value) == (f"ssl:0:privateKey={tmp_path}/gone.pem: cannot read "
                                 f"privateKey {tmp_path}/gone.pem: No such file or directory")


def test_worker_ports_accept_one_connection_per_wakeup():
    """Twisted grows a port's accepts per wake-up; a shared port keeps it at one."""
    port = _SharedTCPPort(0, ServerFactory(), reactor=MemoryReactorClock())
    port.numberAccepts = 120
    assert port.numberAccepts == 1


def test_the_load_board_is_shared_through_its_descriptor():
    board = LoadBoard.create(3)
    seen = LoadBoard(os.dup(board.fd), 3)  # as a worker maps the inherited descriptor
    board.set(1, 4)
    board.set(2, 2)
    seen.seat(3).set(2)
    assert [seen.seat(n).may_accept() for n in (1, 2)] + [board.seat(3).may_accept()] == [
        False, True, True]
    board.retire(2)
    assert board.seat(3).may_accept() and not board.seat(2).may_accept()


def test_an_empty_seat_is_never_the_least_loaded():
    """Seats no worker has taken yet, or that one left, get no connection left to them."""
    board = LoadBoard.create(4)
    board.set(1, 1000)
    assert board.seat(1).may_accept()
    board.set(3, 0)
    assert not board.seat(1).may_accept()
    board.retire(3)
    assert board.seat(1).may_accept()


def test_a_seat_tells_once_of_the_next_change_of_its_count():
    board = LoadBoard.create(2)
    seat, told = board.seat(2), []
    seat.on_next_change(lambda: told.append(board.counts[1]))
    seat.set(3)
    seat.set(4)
    assert told == [3]


class TurnSeat:
    """A seat on the load board whose turn the test decides."""

    def __init__(self) -> None:
        self.turn = False
        self.watchers: list = []

    def may_accept(self) -> bool:
        return self.turn

    def on_next_change(self, watcher) -> None:
        self.watchers.append(watcher)

    def changed(self) -> None:
        watchers, self.watchers = self.watchers, []
        for watcher in watchers:
            watcher()


class CountingPort(_SharedTCPPort):
    """A shared port whose accepts are counted instead of made."""

    accepts = 0

    def __init__(self, reactor, seat) -> None:
        super().__init__(0, ServerFactory(), reactor=reactor)
        self.seat = seat
        self.connected, self.disconnecting = True, False

    def startReading(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False


def test_a_busier_worker_leaves_a_new_connection_to_another_for_a_moment():
    """
    Woken for a connection while another worker has fewer, a worker stops
    watching the socket; LEAVE_FOR seconds later it takes the connection
    after all (if it is still waiting: nobody else took it).
    """
    reactor = MemoryReactorClock()
    seat = TurnSeat()
    port = CountingPort(reactor, seat)
    taken = []
    with patch.object(tcp.Port, "doRead", lambda self: taken.append(reactor.seconds())):
        port.doRead()
        assert taken == [] and port.reading is False
        seat.changed()  # one of its connections closed: still not its turn
        assert port.reading is False and len(reactor.getDelayedCalls()) == 1
        reactor.advance(LEAVE_FOR)
        assert taken == [LEAVE_FOR] and port.reading is True
        seat.turn = True
        port.doRead()
        assert taken == [LEAVE_FOR, LEAVE_FOR]


def test_a_worker_whose_connections_close_watches_the_socket_again_at_once():
    """
    Leaving connections to another, a worker whose own connections close
    (short ones, from a proxy without keep-alive) is the least loaded again
    before LEAVE_FOR has passed: it watches the socket again at once.
    """
    reactor = MemoryReactorClock()
    seat = TurnSeat()
    port = CountingPort(reactor, seat)
    with patch.object(tcp.Port, "doRead", lambda self: None):
        port.doRead()
        assert port.reading is False
        seat.turn = True
        seat.changed()
        assert port.reading is True
        assert reactor.getDelayedCalls() == []  # the wait was called off
