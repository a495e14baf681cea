"""
A plain WSGI application for the end-to-end tests, one behaviour per path.

  /environ          the CGI/WSGI environ's string values, as JSON
  /echo             reads the whole body; JSON with its length and sha256
  /stream           ?chunks=N&size=BYTES&delay=SECONDS: a generator response
  /forever          streams a chunk every 0.1 s until the client goes away
  /error            raises before start_response: the server must answer 500
  /error-midstream  raises after the first chunk was sent
  /sleep            ?seconds=S: sleeps in the worker thread, then answers;
                    &marker=FILE creates FILE first
  /thread           the name of the worker thread that ran the request
  /pid              the process id of the process that ran the request
  /block-reactor    ?seconds=S: has the event loop's thread sleep S seconds
                    (a stuck C extension, as the supervisor sees it); answers
                    with the process id first
  anything else     200 text/plain "testapp <PATH_INFO>"
"""

import hashlib
import json
import os
import threading
import time
from urllib.parse import parse_qs


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response, payload, status="200 OK"):
    body = json.dumps(payload, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def block_the_event_loop(seconds):
    time.sleep(seconds)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = _query(environ)
    if path == "/environ":
        values = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))}
        values["wsgi.input.read"] = environ["wsgi.input"].read().decode("latin-1")
        return _json(start_response, values)
    if path == "/echo":
        digest, length = hashlib.sha256(), 0
        stream = environ["wsgi.input"]
        while True:
            block = stream.read(65536)
            if not block:
                break
            digest.update(block)
            length += len(block)
        return _json(start_response, {"length": length, "sha256": digest.hexdigest()})
    if path == "/stream":
        chunks, size = int(query.get("chunks", 10)), int(query.get("size", 1024))
        delay = float(query.get("delay", 0))

        def generate():
            for i in range(chunks):
                if delay:
                    time.sleep(delay)
                yield bytes([65 + i % 26]) * size

        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return generate()
    if path == "/forever":
        def forever():
            while True:
                yield b"tick\n"
                time.sleep(0.1)

        start_response("200 OK", [("Content-Type", "text/plain")])
        return forever()
    if path == "/error":
        raise RuntimeError("testapp: deliberate failure")
    if path == "/error-midstream":
        def broken():
            yield b"first chunk\n"
            raise RuntimeError("testapp: deliberate failure mid-stream")

        start_response("200 OK", [("Content-Type", "text/plain")])
        return broken()
    if path == "/sleep":
        if "marker" in query:  # lets a test know the request has reached the app
            open(query["marker"], "w").close()
        time.sleep(float(query.get("seconds", 1)))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept\n"]
    if path == "/thread":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [threading.current_thread().name.encode()]
    if path == "/pid":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    if path == "/block-reactor":
        from twisted.internet import reactor

        # A moment later: the response goes out first, through the event loop.
        reactor.callFromThread(reactor.callLater, 0.3, block_the_event_loop,
                               float(query.get("seconds", 60)))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    body = b"testapp " + path.encode("latin-1")  # PATH_INFO holds raw bytes as latin-1
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body]
