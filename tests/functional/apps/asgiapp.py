"""
A plain ASGI 3 application for the end-to-end tests, one behaviour per path.

  /scope            the request's scope (bytes as latin-1 text), as JSON
  /echo             the body received, its length and how many messages carried it
  /pid              the process id of the process that ran the request
  /ticks            ?every=SECONDS: "tick N" lines until the client goes away,
                    which is printed (with how the application learnt it) when it does
  /error            raises before the response starts: the server must answer 500
  anything else     200 text/plain "asgiapp <path>"

WebSocket: any path echoes each message; the message "close" has the
application close (4000); it prints the disconnect it is told of.

Lifespan: startup puts {"started": pid} in the state (shown by /scope);
it fails if the variable ASGIAPP_STARTUP is "fail" (with a message) or
"raise"; shutdown prints "asgiapp: lifespan shutdown".
"""

import asyncio
import json
import os
import sys
from urllib.parse import parse_qs


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    if scope["type"] == "websocket":
        await echo(receive, send)
        return
    path = scope["path"]
    if path == "/scope":
        shown = {key: _text(value) for key, value in scope.items()}
        await _answer(send, json.dumps(shown, sort_keys=True).encode(), b"application/json")
    elif path == "/echo":
        body, messages = b"", 0
        while True:
            message = await receive()
            messages += 1
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = {"length": len(body), "messages": messages, "body": body.decode("latin-1")}
        await _answer(send, json.dumps(answer).encode(), b"application/json")
    elif path == "/pid":
        await _answer(send, str(os.getpid()).encode())
    elif path == "/ticks":
        await ticks(scope, receive, send)
    elif path == "/error":
        raise RuntimeError("asgiapp: the /error path raises")
    else:
        await _answer(send, b"asgiapp " + path.encode())


async def ticks(scope, receive, send):
    every = float(parse_qs(scope["query_string"].decode()).get("every", ["1"])[0])
    await receive()  # the (empty) body
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    gone = asyncio.ensure_future(receive())
    count, why = 0, None
    while why is None:
        count += 1
        try:
            await send({"type": "http.response.body", "body": b"data: tick %d\n\n" % count,
                        "more_body": True})
        except OSError as e:  # the client went away while the tick was sent
            why = f"send raised {type(e).__name__}"
            break
        await asyncio.wait({gone}, timeout=every)
        if gone.done():
            why = gone.result()["type"]
    print(f"asgiapp: ticks: the client went away after {count} ticks ({why})",
          file=sys.stderr, flush=True)


async def echo(receive, send):
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print(f"asgiapp: websocket disconnect {message['code']}", file=sys.stderr, flush=True)
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000})
            continue
        await send({"type": "websocket.send",
                    **{k: v for k, v in message.items() if k in ("text", "bytes")}})


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            how = os.environ.get("ASGIAPP_STARTUP", "")
            if how == "raise":
                raise RuntimeError("asgiapp cannot start")
            if how == "fail":
                await send({"type": "lifespan.startup.failed", "message": "no database here"})
                return
            scope["state"]["started"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            print("asgiapp: lifespan shutdown", file=sys.stderr, flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _answer(send, body, content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


def _text(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    return value
