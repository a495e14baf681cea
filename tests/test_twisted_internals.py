"""
Unit tests for L{backtracweb.twisted_internals}: the private parts of
Twisted backtracweb relies on.  Each test fails if Twisted renames or
changes what is read, set or replaced, on Twisted's real objects: a TCP
connection over a socket pair, listening sockets, an ssl: endpoint,
twistd's log set-up and its runner (with a L{MemoryReactor}: nothing
runs but what the test calls).
"""

from __future__ import annotations

import inspect
import io
import os
import signal
import socket
from types import SimpleNamespace

import pytest
from certificates import self_signed_certificate
from twisted.internet import ssl, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import FileLogObserver, LogPublisher, textFileLogObserver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.logfile import LogFile

from backtracweb.twisted_internals import (
    adopt_listening_port, is_plain_socket, keep_listening_elsewhere, observer_file, only_observer,
    resume_when_writable, ssl_context_factory, twistd_log_file, twistd_unix_runner, unsent_bytes,
    use_ssl_context_factory, write_through,
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


# -- listening sockets shared by worker processes ------------------------------------------


class CountingFactory(ServerFactory):
    protocol = Protocol


class OurPort(tcp.Port):
    """A port class of our own, as a worker's."""


def listening_socket() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    return server


def test_a_listening_socket_is_adopted_with_our_port_class():
    server = listening_socket()
    try:
        port = adopt_listening_port(OurPort, MemoryReactor(), server.fileno(), socket.AF_INET,
                                    CountingFactory())
        assert type(port) is OurPort
        port.startListening()
        assert port.getHost().port == server.getsockname()[1]
        port.socket.close()
    finally:
        server.close()


@pytest.mark.parametrize("kept", [True, False])
def test_a_port_closed_elsewhere_leaves_the_socket_listening(kept):
    """
    Closing a port kept for others leaves the listening socket to the
    other holders (a worker still accepts); Twisted's default shuts it
    down for every process that holds it.
    """
    reactor = MemoryReactor()
    port = tcp.Port(0, CountingFactory(), interface="127.0.0.1", reactor=reactor)
    port.startListening()
    other = socket.socket(fileno=os.dup(port.fileno()))  # another process's copy
    try:
        if kept:
            keep_listening_elsewhere(port)
        port.connectionLost(None)  # what stopListening does a reactor turn later
        client = socket.socket()
        client.settimeout(5)
        try:
            if kept:
                client.connect(other.getsockname())  # queued for the other holder
            else:
                with pytest.raises(ConnectionRefusedError):
                    client.connect(other.getsockname())
        finally:
            client.close()
    finally:
        other.close()


# -- TLS endpoints --------------------------------------------------------------------------


def test_an_ssl_endpoints_context_factory_is_read_and_replaced(tmp_path):
    key, cert = self_signed_certificate(tmp_path)
    reactor = MemoryReactor()
    endpoint = serverFromString(reactor, f"ssl:8443:privateKey={key}:certKey={cert}")
    assert isinstance(endpoint, SSL4ServerEndpoint)
    built = ssl_context_factory(endpoint)
    assert built.getContext() is not None  # Twisted's CertificateOptions, from the files
    ours = ssl.CertificateOptions()
    use_ssl_context_factory(endpoint, ours)
    endpoint.listen(CountingFactory())
    assert reactor.sslServers[0][2] is ours


# -- twistd's log ---------------------------------------------------------------------------


@pytest.fixture
def twistds_sigusr1(tmp_path):
    """The SIGUSR1 handler twistd's daemon logger installs, and its log file's path."""
    from twisted.scripts._twistd_unix import UnixAppLogger

    path = tmp_path / "twistd.log"
    previous = signal.getsignal(signal.SIGUSR1)
    logger = UnixAppLogger({"logfile": str(path), "nodaemon": False, "syslog": False})
    observer = logger._getLogObserver()
    try:
        yield signal.getsignal(signal.SIGUSR1), path
    finally:
        signal.signal(signal.SIGUSR1, previous)
        observer._outFile.close()


def test_twistds_log_file_is_found_in_its_sigusr1_handler(twistds_sigusr1):
    handler, path = twistds_sigusr1
    log_file = twistd_log_file(handler)
    assert isinstance(log_file, LogFile)
    assert log_file.path == str(path)


@pytest.mark.parametrize(
    "handler",
    [None, signal.SIG_DFL, signal.SIG_IGN, print, lambda s, f: None],
    ids=["none", "default", "ignore", "builtin", "plain-function"],
)
def test_without_twistds_handler_there_is_no_log_file(handler):
    """With no such handler (C{-n}, C{--logfile -}), there is no log file."""
    assert twistd_log_file(handler) is None


def test_a_closure_without_a_log_file_has_none():
    """A closure over other values, or over a cell not yet set, has no log file."""
    value = "text"

    def over_text(s, f):
        return value

    def over_empty(s, f):
        return later  # noqa: F821 - bound after this function is made

    assert twistd_log_file(over_text) is None
    assert twistd_log_file(over_empty) is None
    later = None  # noqa: F841


def test_the_one_observer_of_a_publisher_and_its_file():
    out = io.StringIO()
    observer = textFileLogObserver(out)
    assert isinstance(observer, FileLogObserver)
    assert observer_file(observer) is out
    assert only_observer(LogPublisher(observer)) is observer
    assert only_observer(LogPublisher(observer, observer_file)) is None
    assert only_observer(LogPublisher()) is None


# -- twistd's status pipe -----------------------------------------------------------------


def test_twistds_status_pipe_methods_are_there():
    """
    The two methods of twistd's runner that are replaced still exist,
    taking what they took (Twisted's own, whether or not another test had
    them wrapped).
    """
    runner = twistd_unix_runner()
    assert runner.__module__ == "twisted.scripts._twistd_unix"
    twisteds = inspect.unwrap(runner._formatChildException)
    assert twisteds.__module__ == "twisted.scripts._twistd_unix"
    assert list(inspect.signature(twisteds).parameters) == ["self", "exception"]
    twisteds = inspect.unwrap(runner._waitForStart)
    assert twisteds.__module__ == "twisted.scripts._twistd_unix"
    assert list(inspect.signature(twisteds).parameters) == ["self", "readPipe"]
