"""
The floor: the least work a pure-Python HTTP server does per request.  A
yardstick for the benchmark, not a server: do not use it for anything else.

    PYTHONPATH=bench/site DJANGO_SETTINGS_MODULE=benchsite.settings \
        bench/.venv/bin/python bench/servers/floor.py --port 8000

One thread and one selectors loop.  The head of a request is cut out of the
connection's buffer with one split on CRLF CRLF and into lines with another;
the WSGI application is called inline, in the loop's thread, and its whole
response is buffered, then sent.  That is the cost no Python server can
avoid: reading the bytes, building the environ, calling the application,
writing the bytes.  The in-process ceiling (bench/inprocess.py) leaves out
even that, so no server reaches it; a server's ratio to this floor instead
separates what any Python server costs from what the server's own machinery
(threads, a protocol stack, checks) adds.

What it leaves out, on purpose, because a real server must do it and the
floor must stay the least work:

- no checks on the request beyond what is needed to frame it: no limits on
  header names or values, no obsolete line folding, no absolute-form
  targets, headers with underscores passed on like the others;
- no request bodies: anything but GET or HEAD, or a request announcing a
  body, is answered 501 and the connection closed;
- no threads, so a slow view stalls every connection (the harness does not
  give it /io), and no streaming: a response is held whole in memory;
- no timeouts, no graceful shutdown: SIGTERM closes everything and exits.

It binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import selectors
import signal
import socket
import sys
import time
import traceback
from email.utils import formatdate
from urllib.parse import unquote_to_bytes

HOST = "127.0.0.1"
RECV_SIZE = 65536
MAX_HEAD = 65536  # a head still incomplete at this size is refused (431): bounds the buffer

# Headers that PEP 3333 puts in the environ without the HTTP_ prefix.
UNPREFIXED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})
# The response headers the loop has to look at; the others pass through.
WATCHED = frozenset({"content-length", "connection", "date"})
# Statuses that carry no body, and so get no Content-Length added.
NO_BODY = frozenset({"204", "304"})


def refusal(status: str) -> bytes:
    """A complete response with a short text body, sent before closing."""
    body = status.encode("latin-1") + b"\n"
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode("latin-1") + body


BAD_REQUEST = refusal("400 Bad Request")
TOO_LARGE = refusal("431 Request Header Fields Too Large")
NOT_IMPLEMENTED = refusal("501 Not Implemented")
SERVER_ERROR = refusal("500 Internal Server Error")


class Clock:
    """The Date header's value, formatted once a second rather than per request."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._text = formatdate(now, usegmt=True)
        return self._text


class Stop(BaseException):
    """
    Raised by the SIGTERM handler out of select(): leave the loop now.  A
    BaseException, so that no C{except Exception} on the way (the
    application's, ours) swallows it.
    """


class Connection:
    """
    One client connection: the bytes received and not yet parsed, and the
    bytes of a response the socket would not take at once.

    While a response is pending the connection is watched for writing only,
    not reading: a client that pipelines faster than it reads is not
    buffered without bound.  Requests already received wait in the input
    buffer until the output has drained.
    """

    __slots__ = ("floor", "sock", "environ", "inbuf", "pending", "closing", "closed")

    def __init__(self, floor: Floor, sock: socket.socket, address: tuple) -> None:
        self.floor = floor
        self.sock = sock
        # What every request on this connection shares; each request copies
        # it (a dict copy is cheaper than building the keys again).
        self.environ = {
            "SCRIPT_NAME": "",
            "SERVER_NAME": floor.host,
            "SERVER_PORT": floor.port_text,
            "REMOTE_ADDR": address[0],
            "REMOTE_PORT": str(address[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        self.inbuf = b""
        self.pending: memoryview | None = None
        self.closing = False  # close once the pending output is written
        self.closed = False

    # -- events --------------------------------------------------------

    def readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ECONNRESET and the like: the client is gone
            self.close()
            return
        if not data:  # the client has closed its side; nothing was left to answer
            self.close()
            return
        self.inbuf = self.inbuf + data if self.inbuf else data
        self.answer()

    def writable(self) -> None:
        try:
            sent = self.sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EPIPE, ECONNRESET: the client is gone
            self.close()
            return
        self.pending = self.pending[sent:]
        if self.pending:
            return
        self.pending = None
        if self.closing:
            self.close()
            return
        self.floor.selector.modify(self.sock, selectors.EVENT_READ, self)
        # Requests pipelined behind the ones just answered are already in the
        # buffer; no readable event will come for them.
        self.answer()

    # -- requests ------------------------------------------------------

    def answer(self) -> None:
        """Answer every complete request in the buffer, then send the answers at once."""
        out: list[bytes] = []
        buf = self.inbuf
        while True:
            head, found, rest = buf.partition(b"\r\n\r\n")
            if not found:
                if len(buf) > MAX_HEAD:
                    out.append(TOO_LARGE)
                    self.closing = True
                break
            buf = rest
            if not self.respond(head, out):
                self.closing = True
                break
        # After a response that closes the connection, what follows is dropped.
        self.inbuf = b"" if self.closing else buf
        if out:
            self.send(out[0] if len(out) == 1 else b"".join(out))
        elif self.closing:
            self.close()

    def respond(self, head: bytes, out: list[bytes]) -> bool:
        """
        Append the response to one request (its head without the final
        CRLF CRLF) to C{out}; return whether the connection stays open.
        """
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            out.append(BAD_REQUEST)
            return False
        environ = self.environ.copy()
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                out.append(BAD_REQUEST)
                return False
            key = name.upper().replace("-", "_")
            if key not in UNPREFIXED:
                key = "HTTP_" + key
            value = value.strip()
            if key in environ:  # a repeated header: one value, as CGI does
                environ[key] += "," + value
            else:
                environ[key] = value
        if ((method != "GET" and method != "HEAD") or "HTTP_TRANSFER_ENCODING" in environ
                or environ.get("CONTENT_LENGTH", "0") != "0"):
            # No body support: the next request could not be found after one.
            out.append(NOT_IMPLEMENTED)
            return False

        path, _, query = target.partition("?")
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        environ["REQUEST_METHOD"] = method
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query
        environ["SERVER_PROTOCOL"] = version
        environ["wsgi.input"] = io.BytesIO(b"")

        connection = environ.get("HTTP_CONNECTION")
        tokens = [t.strip() for t in connection.lower().split(",")] if connection else ()
        keep = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens

        try:
            status, headers, body = self.call(environ)
            parts = ["HTTP/1.1 ", status, "\r\n"]
            length = date = said_close = False
            for name, value in headers:
                parts.append(f"{name}: {value}\r\n")
                lower = name.lower()
                if lower in WATCHED:
                    if lower == "content-length":
                        length = True
                    elif lower == "date":
                        date = True
                    elif "close" in value.lower():  # the application asks to close
                        keep = False
                        said_close = True
            if not length and status[:3] not in NO_BODY:
                parts.append(f"Content-Length: {len(body)}\r\n")
            if not date:
                parts.append(f"Date: {self.floor.clock.date()}\r\n")
            if not keep:
                if not said_close:
                    parts.append("Connection: close\r\n")
            elif version != "HTTP/1.1":
                parts.append("Connection: keep-alive\r\n")
            parts.append("\r\n")
            encoded = "".join(parts).encode("latin-1")
        except Exception:  # the application failed, or gave what HTTP cannot carry
            traceback.print_exc()
            out.append(SERVER_ERROR)
            return False
        out.append(encoded)
        if method != "HEAD":  # the application does not know to leave it out
            out.append(body)
        return keep

    def call(self, environ: dict) -> tuple[str, list, bytes]:
        """The application's status, headers and whole body for one request."""
        started: list = []
        written: list[bytes] = []

        def start_response(status, headers, exc_info=None):
            # Nothing is sent before the application returns, so a second call
            # with exc_info (an error page after all) simply replaces the first.
            if started and exc_info is None:
                raise AssertionError("start_response called twice without exc_info")
            started[:] = (status, headers)
            return written.append  # the legacy write() callable

        result = self.floor.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:  # Django's request_finished signal, among others
                close()
        if written:
            body = b"".join(written) + body
        if not started:
            raise RuntimeError("the application returned without calling start_response")
        return started[0], started[1], body

    # -- output --------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send what the socket takes now; keep the rest for when it is writable."""
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # EPIPE, ECONNRESET
            self.close()
            return
        if sent == len(data):
            if self.closing:
                self.close()
            return
        self.pending = memoryview(data)[sent:]  # a view: a 1 MB response is not copied again
        self.floor.selector.modify(self.sock, selectors.EVENT_WRITE, self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.floor.selector.unregister(self.sock)
        self.floor.connections.discard(self)
        self.sock.close()


class Floor:
    """The listening socket, the selector and the loop."""

    def __init__(self, app, port: int, host: str = HOST) -> None:
        self.app = app
        self.host = host
        self.clock = Clock()
        self.connections: set[Connection] = set()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The harness starts and stops servers on fresh ports in quick
        # succession; without this a port in TIME_WAIT could not be bound again.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(socket.SOMAXCONN)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.port_text = str(self.port)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)

    def accept(self) -> None:
        """Accept every connection waiting (wrk opens its ten at once)."""
        while True:
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: try again on the next event
                print(f"floor: accept failed: {e}", file=sys.stderr)
                return
            # Whether an accepted socket inherits non-blocking mode depends on
            # the platform; say it.  No Nagle delay on small responses.
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = Connection(self, sock, address)
            self.connections.add(connection)
            self.selector.register(sock, selectors.EVENT_READ, connection)

    def run(self) -> None:
        select, accept = self.selector.select, self.accept
        write = selectors.EVENT_WRITE
        while True:
            for key, events in select():
                connection = key.data
                if connection is None:
                    accept()
                elif connection.closed:  # closed earlier in this same batch
                    continue
                # A connection is watched for reading or for writing, never both.
                elif events & write:
                    connection.writable()
                else:
                    connection.readable()

    def close(self) -> None:
        for connection in list(self.connections):
            connection.close()
        self.selector.unregister(self.listener)
        self.listener.close()
        self.selector.close()


def load(spec: str):
    """The WSGI application named by C{module:attribute}."""
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "application")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The benchmark's floor: the least work a pure-Python server does per "
                    "request (one thread, the application called inline). A yardstick, not "
                    "a server. Binds 127.0.0.1.")
    parser.add_argument("--port", type=int, required=True, help="the port to listen on (0: any free one)")
    parser.add_argument("--app", default="benchsite.wsgi:application",
                        help="the WSGI application, module:attribute (default: %(default)s; "
                             "the module must be importable, e.g. PYTHONPATH=bench/site)")
    args = parser.parse_args(argv)

    def stop(signum, frame):
        raise Stop

    # SIGTERM is how the harness stops a server: interrupt select() at once.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    floor = None
    try:
        app = load(args.app)
        # As backtracweb does after loading the application: what exists now
        # lives as long as the process, so keep it out of the collector's
        # full passes (like for like).
        gc.collect()
        gc.freeze()
        floor = Floor(app, args.port)
        print(f"floor: serving {args.app} on http://{floor.host}:{floor.port}", file=sys.stderr,
              flush=True)
        floor.run()
    except Stop:
        pass
    finally:
        if floor is not None:
            floor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
