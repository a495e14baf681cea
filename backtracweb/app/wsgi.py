"""
The WSGI container: runs the application in the thread pool and hands its
response to the reactor.

Twisted's own WSGI container blocks the pool thread on the
reactor for every chunk it writes (C{blockingCallFromThread}), then hops to
the reactor once more to finish: at least three thread switches for the
smallest response, each costing a GIL hand-off.  Here a response the
application produces at once (the common case: Django's C{HttpResponse} is
one chunk) crosses to the reactor in a single non-blocking call that sends
headers, body and end together.  Streaming responses cross chunk by chunk
without blocking, with real back-pressure from the transport.  Files the
application returns through C{wsgi.file_wrapper} are sent by the reactor
itself, without a thread hop per block, and with sendfile where the
connection allows it (L{backtracweb.app.sendfile}).

A request whose client went away before a thread was free to run it is
dropped without calling the application; one whose client stops reading
a streamed response for C{[limits] send_timeout} is cut off, and its
thread freed (its iterator is closed).
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.python.failure import Failure

from backtracweb.app import sendfile
from backtracweb.app.sendfile import send_part
from backtracweb.http.request import Request

_log = Logger(namespace="backtracweb.app.wsgi")

SMALL_FILE = 64 * 1024
"""Wrapped files up to this size are read by the pool thread and sent at once."""

# Chunks of a streaming response that may wait for the reactor at once.
_IN_FLIGHT = 4
_STATUS = re.compile(r"[1-5][0-9][0-9] [\x20-\x7e\x80-\xff]*\Z")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")
_SERVER_ERROR = b"Internal Server Error\n"
# Header names checked already: applications send the same few.  Bounded.
_TOKENS: set[str] = set()
_TOKENS_KEPT = 256


class FileWrapper:
    """
    PEP 3333's optional C{wsgi.file_wrapper}: marks a file the server may
    send by its own means.  Iterating it reads blocks, for any server.
    """

    def __init__(self, filelike: Any, block_size: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.block_size = block_size
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while True:
            block = read(self.block_size)
            if not block:
                return
            yield block


class _ErrorStream:
    """C{wsgi.errors}: what the application writes there goes to twistd's log."""

    def write(self, text: str) -> None:
        if text.strip():
            _log.error("{text}", text=text.rstrip("\n"))

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


_ERRORS = _ErrorStream()


class WSGIContainer:
    """
    Serves every request it is given with a WSGI application run in
    C{pool}.  The application sees C{SCRIPT_NAME} empty and the whole
    decoded path as C{PATH_INFO}.
    """

    def __init__(self, reactor, pool, application: Callable, multiprocess: bool = False) -> None:
        self._reactor = reactor
        self._pool = pool
        self.application = application
        """The WSGI application."""
        self.multiprocess = multiprocess
        """C{wsgi.multiprocess}: whether other processes serve the same site."""
        self.running: dict[int, tuple[float, Request]] = {}
        """The requests the application is running: (start, request) by thread id."""
        self._started = 0  # counted on the reactor thread
        self._done = 0  # counted by the pool threads, under the lock
        self._done_lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Requests handed to the pool and not yet done: running or waiting."""
        return self._started - self._done

    def request_done(self) -> None:
        """A request handed to the pool is done (called by the thread that ran it)."""
        with self._done_lock:
            self._done += 1

    def handle(self, request: Request) -> None:
        self._started += 1
        _Response(self._reactor, self, request).start(self._pool)


def make_environ(request: Request, multiprocess: bool = False) -> dict[str, Any]:
    """
    The WSGI environ for a request.  Called in the pool thread: the
    reactor no longer changes what is read here.
    """
    path = request.path
    if b"%" in path:
        path = unquote_to_bytes(path)
    environ = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "SCRIPT_NAME": "",
        "PATH_INFO": path.decode("latin-1"),
        "QUERY_STRING": request.query.decode("latin-1"),
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": "",
        "SERVER_NAME": request.server_name,
        "SERVER_PORT": str(request.server_port),
        "SERVER_PROTOCOL": request.version.decode("latin-1"),
        "REMOTE_ADDR": request.client,
        "REMOTE_PORT": str(request.client_port),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if request.secure else "http",
        "wsgi.input": request.input,
        "wsgi.input_terminated": True,
        "wsgi.errors": _ERRORS,
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    for name, value in request.headers:
        key = _CGI_NAMES.get(name)
        if key is None:
            key = _cgi_name(name)
            if len(_CGI_NAMES) < _CGI_NAMES_KEPT:
                _CGI_NAMES[name] = key
        text = value.decode("latin-1")
        if key not in environ:
            environ[key] = text
        elif key in _CGI_CONTENT:
            if not environ[key]:  # one value: the first
                environ[key] = text
        else:  # repeated: joined, as RFC 9110 5.3 allows
            environ[key] += "," + text
    if request.host:
        # An absolute-form target's authority, or a trusted proxy's host.
        environ["HTTP_HOST"] = request.host.decode("latin-1")
    if request.content_length is not None:
        # The body's length, also for a chunked body, kept whole before the
        # application runs (frameworks read no body without it).
        environ["CONTENT_LENGTH"] = str(request.content_length)
    return environ


# CGI: Content-Type and Content-Length have no HTTP_ key, and one value.
_CGI_CONTENT = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})
# Header name -> environ key, remembered for the first names seen (the
# ones clients send); bounded, so that a client inventing names cannot
# grow it without end.
_CGI_NAMES: dict[bytes, str] = {}
_CGI_NAMES_KEPT = 512


def _cgi_name(name: bytes) -> str:
    """C{HTTP_X_FOO} for C{X-Foo}, but C{CONTENT_TYPE} and C{CONTENT_LENGTH}."""
    key = name.decode("latin-1").upper().replace("-", "_")
    return key if key in _CGI_CONTENT else "HTTP_" + key


class _Response:
    """
    One request's trip through the application.  Everything prefixed
    C{_in_reactor} runs on the reactor thread; the rest in the pool thread.
    """

    def __init__(self, reactor, container: WSGIContainer, request: Request) -> None:
        self._reactor = reactor
        self._container = container
        self.request = request
        self._status: str | None = None
        self._headers: list[tuple[str, str]] = []
        self._headers_sent = False  # pool-thread side: the headers have been handed over
        self._gone = False  # the client went away, or the response was cut
        # Flow control for streaming responses, made by the pool thread before
        # its first chunk: most responses are sent in one trip and never
        # need them (two locks and a condition each, per request).
        self._writable: threading.Event | None = None
        self._slots: threading.BoundedSemaphore | None = None
        request.on_connection_lost = self._cut

    def _cut(self) -> None:
        """No more of the response is wanted: the client left, or it failed."""
        self._gone = True
        if self._writable is not None:
            self._writable.set()  # a paused pool thread must notice

    def start(self, pool) -> None:
        pool.callInThread(self.run)

    # -- the pool thread ---------------------------------------------------------

    def start_response(self, status: str, headers: list, exc_info=None):
        """The WSGI C{start_response} callable."""
        if exc_info is not None:
            try:
                if self._headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._status is not None:
            raise RuntimeError("start_response called twice without exc_info")
        if not (isinstance(status, str) and _STATUS.match(status)):
            raise TypeError(f"status must be a str like '200 OK', not {status!r}")
        for header in headers:
            if not (isinstance(header, tuple) and len(header) == 2
                    and isinstance(header[0], str) and isinstance(header[1], str)):
                raise TypeError(f"a header must be a (str, str) tuple, not {header!r}")
            # What cannot go on the wire fails here, in the application's
            # thread, as a 500, not later on the reactor.  (Printable ASCII,
            # what nearly every value is, is checked without the pattern.)
            name, value = header
            if not (name in _TOKENS or _TOKEN.match(name)) or not (
                    value.isascii() and value.isprintable() or _VALUE.match(value)):
                raise ValueError(f"header {header!r} cannot be sent: names are tokens, values "
                                 "latin-1 text without control characters (encode others)")
            if len(_TOKENS) < _TOKENS_KEPT:
                _TOKENS.add(name)
        self._status, self._headers = status, list(headers)
        return self._write

    def _write(self, data: bytes) -> None:
        """The legacy C{write} callable start_response returns."""
        self._send(data, finish=False)

    def run(self) -> None:
        container = self._container
        if self._gone:  # the client left while the request waited for a thread
            container.request_done()
            return
        result = None
        me = threading.get_ident()
        container.running[me] = (time.monotonic(), self.request)
        try:
            result = container.application(
                make_environ(self.request, container.multiprocess), self.start_response)
            if isinstance(result, FileWrapper) and self._send_file(result):
                return
            if isinstance(result, (list, tuple)) or getattr(result, "streaming", None) is False:
                # Complete already (Django marks such responses streaming =
                # False): one trip to the reactor for the whole response.
                self._send(b"".join(result), finish=True)
                return
            chunks = iter(result)
            while not self._gone:  # no chunk is asked for once the client left
                try:
                    chunk = next(chunks)
                except StopIteration:
                    self._send(b"", finish=True)
                    break
                if chunk:
                    self._send(chunk, finish=False)
        except BaseException:
            failure = Failure()
            self._reactor.callFromThread(self._in_reactor_fail, failure, self._headers_sent)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    _log.failure("WSGI application error while closing the response")
            del container.running[me]
            container.request_done()

    def _send(self, data: bytes, finish: bool) -> None:
        """Hand data (and the headers, the first time) to the reactor."""
        if self._status is None:
            raise RuntimeError("the application sent a body before calling start_response")
        if not isinstance(data, bytes):
            raise TypeError(f"the response body must be bytes, not {type(data).__name__}")
        headers = None
        if not self._headers_sent:
            headers, self._headers_sent = (self._status, self._headers), True
        if not finish:
            # Back-pressure: wait while the transport is full, and keep
            # only a few chunks queued for the reactor.
            if self._writable is None:
                self._slots = threading.BoundedSemaphore(_IN_FLIGHT)
                self._writable = threading.Event()
                self._writable.set()
            self._writable.wait()
            if self._gone:
                return
            self._slots.acquire()
        self._reactor.callFromThread(self._in_reactor_send, headers, data, finish)

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """
        Let the reactor send a regular file the application wrapped; False
        if it is not one (then it is iterated like any response).
        """
        try:
            fileno = wrapper.filelike.fileno()
            info = os.fstat(fileno)
            position = wrapper.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return False
        if not stat.S_ISREG(info.st_mode) or self._status is None or self._headers_sent:
            return False
        remaining = info.st_size - position
        if self.request.method == b"HEAD":
            # No body will be sent: the file is not even read, but its
            # length is said, as a GET's response would say it.
            if not any(name.lower() == "content-length" for name, _ in self._headers):
                self._headers.append(("Content-Length", str(remaining)))
            self._send(b"", finish=True)
            return True
        if remaining <= SMALL_FILE:
            # Cheaper read here and sent in the response's one trip.
            self._send(wrapper.filelike.read(), finish=True)
            return True
        # A descriptor of our own: the application closes its file when its
        # response is closed, here in its own thread, as it expects.  The
        # two share a position, which the file senders never use (they read
        # and send at offsets).
        try:
            own = os.fdopen(os.dup(fileno), "rb")
        except OSError:
            return False
        self._headers_sent = True
        self._reactor.callFromThread(self._in_reactor_send_file,
                                     (self._status, self._headers), own, position, remaining)
        return True

    # -- the reactor thread -------------------------------------------------------

    def _in_reactor_headers(self, headers: tuple[str, list]) -> None:
        status, header_list = headers
        code, _, reason = status.partition(" ")
        request = self.request
        request.code, request.reason = int(code[:3]), reason.encode("latin-1")
        # (The request replaces the application's Server and Date.)
        request.response_headers = [(name.encode("latin-1"), value.encode("latin-1"))
                                    for name, value in header_list]

    def _in_reactor_send(self, headers, data: bytes, finish: bool) -> None:
        if not finish:
            self._slots.release()
        if self._gone:
            return
        request = self.request
        if headers is not None:
            self._in_reactor_headers(headers)
            if not finish:
                request.register_producer(self)
        if finish:
            if request.producer is self:
                request.unregister_producer()
            # A response sent whole gets its length (sparing the client
            # the chunked encoding), in one write with its head.
            request.respond(data)
        else:
            request.write(data)

    def _in_reactor_send_file(self, headers, file, offset: int, remaining: int) -> None:
        if self._gone:
            file.close()
            return
        self._in_reactor_headers(headers)
        request = self.request
        length = sendfile.declared_length(request)
        # What the application declared (PEP 3333: never more), else the
        # rest of the file; sent from the file to the socket where the
        # connection allows.  A file shorter than that is sent, then the
        # connection closed: the client must not wait for the rest.
        send_part(request, file, offset, remaining if length is None else length)

    def _in_reactor_fail(self, failure: Failure, headers_sent: bool) -> None:
        _log.failure("WSGI application error", failure=failure)
        if self._gone:
            return
        self._cut()
        request = self.request
        if headers_sent or request.started_writing:
            request.close_connection()
        else:
            request.code, request.reason = 500, None
            request.response_headers = [(b"Content-Type", b"text/plain")]
            request.respond(_SERVER_ERROR)

    # IPushProducer: the transport's flow control, relayed to the pool thread.

    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._writable.set()

    def stopProducing(self) -> None:
        self._cut()
