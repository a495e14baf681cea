"""The demo's pages: one templated page with a stylesheet, one plain text."""

import platform

import django
import twisted
from django.http import HttpResponse
from django.shortcuts import render


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
