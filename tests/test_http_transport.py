"""
Unit tests for L{backtracweb.http.transport}: the private parts of
Twisted's transports the engine relies on.  Each test fails if Twisted
renames or changes what it reads or sets, on a real TCP connection over
a socket pair (with a L{MemoryReactor}: nothing runs but what the test
calls).
"""

from __future__ import annotations

import inspect
import socket
from types import SimpleNamespace

import pytest
from twisted.internet import ssl, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from backtracweb.http.transport import (
    is_plain_socket, resume_when_writable, unsent_bytes, write_through,
)


@pytest.fixture
def connection():
    """A Twisted TCP connection on one end of a socket pair, and the other end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    port = SimpleNamespace(_realPortNumber=1)
    transport = tcp.Server(ours, Protocol(), ("127.0.0.1", 1), port, 1, MemoryReactor())
    yield transport, theirs
    theirs.close()
    ours.close()


class Producer:
    """A streaming producer that records being resumed."""

    def __init__(self) -> None:
        self.resumed = 0

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


def test_plain_sockets(connection):
    """A TCP (or unix) connection is a plain socket; a test transport or TLS is not."""
    transport, _ = connection
    assert is_plain_socket(transport)
    assert not is_plain_socket(StringTransport())
    transport.TLS = True
    assert not is_plain_socket(transport)


def test_unsent_bytes_of_a_connection(connection):
    """
    Bytes written and not yet sent are counted, wherever Twisted keeps
    them (C{dataBuffer} past C{offset}, C{_tempDataBuffer}); none once sent.
    """
    transport, theirs = connection
    assert unsent_bytes(transport) == 0
    transport.write(b"a" * 100)
    transport.writeSequence([b"b" * 10, b"c" * 5])
    assert unsent_bytes(transport) == 115
    transport.doWrite()
    assert unsent_bytes(transport) == 0
    assert theirs.recv(1000) == b"a" * 100 + b"b" * 10 + b"c" * 5


def test_unsent_bytes_of_a_full_socket(connection):
    """What the kernel would not take stays counted, to the byte."""
    transport, theirs = connection
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    transport.write(b"x" * 4_000_000)
    transport.doWrite()
    unsent = unsent_bytes(transport)
    assert 0 < unsent < 4_000_000
    received = 0
    theirs.setblocking(False)
    try:
        while block := theirs.recv(1 << 20):
            received += len(block)
    except BlockingIOError:
        pass
    assert received + unsent == 4_000_000


# Twisted's certificate helpers still call pyOpenSSL APIs it deprecated.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_unsent_bytes_of_tls():
    """
    A TLS connection counts the cleartext it holds back too: small writes
    waiting to be sent together (C{_aggregator}), then what waits for the
    handshake (C{_appSendBuffer}).
    """
    certificate = ssl.KeyPair.generate(size=2048).selfSignedCert(1, CN="test")
    clock = Clock()
    wrapped = ServerFactory.forProtocol(Protocol)
    if "clock" in inspect.signature(TLSMemoryBIOFactory).parameters:
        factory = TLSMemoryBIOFactory(certificate.options(), False, wrapped, clock)
    else:  # Twisted before the aggregator (the declared minimum, 23.8)
        factory = TLSMemoryBIOFactory(certificate.options(), False, wrapped)
    tls = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    tls.makeConnection(StringTransport())
    tls.write(b"z" * 42)
    assert unsent_bytes(tls) == 42  # aggregated
    clock.advance(0)
    assert unsent_bytes(tls) == 42  # waiting for the handshake
    assert tls._appSendBuffer


def test_resume_when_writable(connection):
    """
    After L{resume_when_writable}, the connection's next write event (its
    buffer being empty) resumes its streaming producer: C{producerPaused}
    is what L{FileDescriptor.doWrite} checks.
    """
    transport, _ = connection
    producer = Producer()
    transport.registerProducer(producer, True)
    transport.doWrite()
    assert producer.resumed == 0
    resume_when_writable(transport)
    assert transport in transport.reactor.getWriters()
    transport.doWrite()
    assert producer.resumed == 1
    transport.doWrite()
    assert producer.resumed == 1


def test_write_through_sends_at_once(connection):
    """
    With nothing waiting in its buffer, what the socket takes is sent at
    once: the reactor is not asked to watch for writability.
    """
    transport, theirs = connection
    write_through(transport, b"hello")
    assert theirs.recv(100) == b"hello"
    assert transport not in transport.reactor.getWriters()
    assert unsent_bytes(transport) == 0


def test_write_through_keeps_the_order(connection):
    """Behind bytes still buffered, the write is buffered too: the order never changes."""
    transport, theirs = connection
    transport.write(b"first ")
    write_through(transport, b"second")
    assert unsent_bytes(transport) == len(b"first second")
    transport.doWrite()
    assert theirs.recv(100) == b"first second"


def test_write_through_buffers_what_the_socket_refuses(connection):
    """What a full socket does not take waits in the transport's buffer, as with write."""
    transport, theirs = connection
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 16_000
    write_through(transport, data)
    unsent = unsent_bytes(transport)
    assert 0 < unsent < len(data)
    assert transport in transport.reactor.getWriters()
    received = b""
    theirs.setblocking(False)
    while len(received) < len(data):
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            transport.doWrite()
    assert received == data
