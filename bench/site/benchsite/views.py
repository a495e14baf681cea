"""
The benchmark views.

- /tiny: a few bytes of text; the server's own cost per request dominates.
- /tiny-async: the same response from an async view, for the ASGI servers
  (benchsite.asgi), where it runs on the event loop: no thread is involved.
- /page: a ~2 KB page rendered from a template with a loop and variables.
- /io: waits 50 ms (as for a database or an API) and answers a few bytes;
  throughput is bounded by the thread pool: at most pool size / 50 ms.
"""

import time

from django.http import HttpResponse
from django.shortcuts import render

ITEMS = [
    {"id": n, "name": f"Item number {n}", "price": f"{n * 3.25:.2f}", "stock": n % 7}
    for n in range(1, 21)
]


def tiny(request):
    return HttpResponse(b"Hello, world!\n", content_type="text/plain")


async def tiny_async(request):
    return HttpResponse(b"Hello, world!\n", content_type="text/plain")


def page(request):
    context = {
        "title": "Benchmark page",
        "user_name": "Ada",
        "items": ITEMS,
        "total": sum(item["stock"] for item in ITEMS),
    }
    return render(request, "page.html", context)


def io(request):
    time.sleep(0.05)
    return HttpResponse(b"waited 50 ms\n", content_type="text/plain")
