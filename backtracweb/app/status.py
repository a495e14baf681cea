"""
The status page: what the server is doing, for load balancers and
monitoring, answered on the reactor thread so it works when the
application's threads are all busy.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from backtracweb.app.pool import ThreadPool
from backtracweb.http.request import Request

_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
_log = Logger(namespace="backtracweb.app.status")


def snapshot(site, pool: ThreadPool | None) -> dict:
    """The numbers of this process's C{site} and C{pool}, as a plain dict."""
    settings, numbers = site.settings, site.numbers()
    return {
        "status": numbers["status"],
        "pid": os.getpid(),
        "uptime_seconds": round(time.time() - numbers["started"], 3),
        "config_file": settings.config_file,
        "config_loaded_at": iso_time(settings.loaded_at),
        "pool": pool.numbers() if pool is not None else dict.fromkeys(_POOL_KEYS, 0),
        **{key: numbers[key] for key in _SITE_KEYS},
        "rss_bytes": rss_bytes(),
    }


_POOL_KEYS = ("min", "max", "threads", "busy", "queued")
_SITE_KEYS = ("connections", "requests_in_flight", "websockets", "requests", "responses",
              "refused_overload", "bytes_sent")


def server_snapshot(supervisor: dict, workers: list[dict]) -> dict:
    """
    The whole server's numbers: the supervisor's own (C{status}, C{pid},
    C{uptime_seconds}, C{config_file}, C{config_loaded_at}), the sums of
    its workers' counts, and every worker's L{snapshot} under C{workers}
    (with its C{index} and C{restarts}, as the supervisor adds them).
    """
    answered = [w for w in workers if "requests" in w]
    total = dict(supervisor)
    total["pool"] = {key: sum(w["pool"][key] for w in answered) for key in _POOL_KEYS}
    total["connections"] = {key: sum(w["connections"][key] for w in answered)
                            for key in ("open", "busy")}
    for key in ("requests_in_flight", "websockets", "requests", "refused_overload", "bytes_sent",
                "rss_bytes"):
        total[key] = sum(w[key] for w in answered)
    total["responses"] = {cls: sum(w["responses"][cls] for w in answered)
                          for cls in (f"{n}xx" for n in range(1, 6))}
    total["workers"] = workers
    return total


def rss_bytes() -> int:
    """This process's resident memory, in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def iso_time(timestamp: float) -> str:
    """A time as the status page shows it (UTC, ISO 8601)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def prometheus(data: dict) -> str:
    """
    The snapshot in Prometheus' text exposition format; for a server of
    several workers, one series a worker, labelled C{worker}.
    """
    lines = []
    workers = data.get("workers")
    parts = ([(f'worker="{w["index"]}"', w) for w in workers if "requests" in w]
             if workers is not None else [("", data)])

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, object]]) -> None:
        lines.append(f"# HELP backtracweb_{name} {help_text}")
        lines.append(f"# TYPE backtracweb_{name} {kind}")
        lines.extend(f"backtracweb_{name}{{{labels}}} {value}" if labels else
                     f"backtracweb_{name} {value}" for labels, value in samples)

    def per_part(name: str, kind: str, help_text: str, value) -> None:
        metric(name, kind, help_text, [(labels, value(part)) for labels, part in parts])

    metric("up", "gauge", "1 while serving, 0 while draining.",
           [("", int(data["status"] == "serving"))])
    metric("uptime_seconds", "gauge", "Seconds since the server started.",
           [("", data["uptime_seconds"])])
    if workers is not None:
        metric("workers", "gauge", "Worker processes serving.",
               [("", sum(1 for w in workers if w.get("state") == "serving"))])
        metric("worker_restarts_total", "counter", "Times a worker was started again.",
               [(f'worker="{w["index"]}"', w["restarts"]) for w in workers])
    for key, help_text in (("min", "Configured minimum threads."),
                           ("max", "Configured maximum threads."),
                           ("threads", "Threads running."),
                           ("busy", "Threads running a request."),
                           ("queued", "Requests waiting for a thread.")):
        per_part(f"pool_{key}", "gauge", help_text, lambda part: part["pool"][key])
    per_part("connections_open", "gauge", "Open client connections.",
             lambda part: part["connections"]["open"])
    per_part("requests_in_flight", "gauge", "Requests being answered (WSGI or ASGI).",
             lambda part: part["requests_in_flight"])
    per_part("websockets_open", "gauge", "Open WebSockets.", lambda part: part["websockets"])
    per_part("requests_total", "counter", "Requests answered.", lambda part: part["requests"])
    metric("responses_total", "counter", "Responses by status class.",
           [(",".join(filter(None, (labels, f'class="{k}"'))), v)
            for labels, part in parts for k, v in part["responses"].items()])
    per_part("refused_overload_total", "counter", "Requests refused with 503 for lack of threads.",
             lambda part: part["refused_overload"])
    per_part("sent_bytes_total", "counter", "Response body bytes sent.",
             lambda part: part["bytes_sent"])
    per_part("resident_memory_bytes", "gauge", "Resident memory of the serving process.",
             lambda part: part["rss_bytes"])
    lines.append(f'backtracweb_config_info{{file="{_label(data["config_file"])}",'
                 f'loaded_at="{_label(data["config_loaded_at"])}"}} 1')
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def wants_prometheus(request: Request) -> bool:
    """C{?format=prometheus}, or an Accept header preferring text/plain over JSON."""
    if parse_qs(request.query.decode("latin-1")).get("format") == ["prometheus"]:
        return True
    accept = (request.header(b"accept") or b"").lower()
    return b"text/plain" in accept and b"application/json" not in accept


class StatusPage:
    """
    The status page of one process's site and thread pool (C{pool}), or,
    in a worker of several, of the whole server: C{whole_server} asks the
    supervisor for every worker's numbers.
    """

    def __init__(self, pool: ThreadPool | None,
                 whole_server: Callable[[], Deferred[dict]] | None = None) -> None:
        self.pool = pool
        self.whole_server = whole_server

    def render(self, request: Request) -> None:
        """Answer C{request}: 403 unless its client is allowed, 503 while draining."""
        site = request.channel.site
        client = request.client or request.peer
        headers = request.response_headers = [(b"Cache-Control", b"no-store")]
        if client not in site.settings.status_allow:
            request.code = 403
            headers.append((b"Content-Type", b"text/plain"))
            request.respond(b"Forbidden: this address may not read the status page "
                            b"([status] allow).\n")
            return
        if self.whole_server is None:
            _respond(request, snapshot(site, self.pool))
            return

        def unanswered(failure) -> None:
            # The supervisor is gone or slow: this worker's numbers are better than nothing.
            _log.warn("status page: the supervisor did not answer ({error}); showing this "
                      "worker only", error=failure.getErrorMessage())
            _respond(request, snapshot(site, self.pool))

        self.whole_server().addCallbacks(lambda data: _respond(request, data), unanswered)


def _respond(request: Request, data: dict) -> None:
    if data["status"] != "serving":
        request.code = 503
    if wants_prometheus(request):
        request.response_headers.append((b"Content-Type", _PROMETHEUS))
        request.respond(prometheus(data).encode("utf-8"))
        return
    request.response_headers.append((b"Content-Type", b"application/json"))
    request.respond(json.dumps(data, indent=2).encode("utf-8") + b"\n")
