"""
The demo's pages: one templated page with a stylesheet, one plain text;
and an async side, for [app] interface = asgi (demo/backtrac-asgi.ini): an
async view, and server-sent events that tick until the client goes away.
"""

import asyncio
import logging
import platform

import django
import twisted
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render

log = logging.getLogger("demosite")


def index(request):
    return render(
        request,
        "index.html",
        {
            "python": platform.python_version(),
            "django": django.get_version(),
            "twisted": twisted.__version__,
            "remote_addr": request.META.get("REMOTE_ADDR"),
        },
    )


def hello(request):
    return HttpResponse("Hello from Django under backtracweb.\n", content_type="text/plain")


async def hello_async(request):
    await asyncio.sleep(0)  # an async view may await; under ASGI nothing blocks a thread
    return HttpResponse("Hello from an async Django view under backtracweb.\n",
                        content_type="text/plain")


async def ticks(request):
    """
    Server-sent events: a tick every C{?every=} seconds (1 by default), C{?count=}
    of them at most (10: served by WSGI, the whole stream is produced before
    it is sent).  Under ASGI each tick is sent as it is made, and a client
    that goes away cancels the stream, which is logged.
    """
    every = float(request.GET.get("every", "1"))
    count = int(request.GET.get("count", "10"))

    async def stream():
        sent = 0
        try:
            while sent < count:
                sent += 1
                yield f"data: tick {sent}\n\n"
                await asyncio.sleep(every)
        except asyncio.CancelledError:
            log.info("ticks: cancelled after %d tick(s): the client went away", sent)
            raise

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response
