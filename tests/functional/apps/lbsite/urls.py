"""The views of the lbsite test site (see the package's docstring)."""

import os
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import path


def whoami(request):
    return JsonResponse({
        "remote_addr": request.META["REMOTE_ADDR"],
        "scheme": request.scheme,
        "host": request.get_host(),
        "url": request.build_absolute_uri(),
        "forwarded": request.META.get("HTTP_FORWARDED"),
        "x_forwarded_for": request.META.get("HTTP_X_FORWARDED_FOR"),
        "pid": os.getpid(),
    })


def work(request):
    time.sleep(settings.WORK_SECONDS)
    return HttpResponse(b"done\n", content_type="text/plain")


urlpatterns = [
    path("whoami", whoami),
    path("work", work),
]
