"""
The status page: what the server is doing, for load balancers and
monitoring, answered on the reactor thread so it works when the
application's threads are all busy.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs

from backtracweb.http.request import Request
from backtracweb.pool import WorkerPool

_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


def snapshot(request: Request, pool: WorkerPool | None) -> dict:
    """The numbers the status page shows, as a plain dict."""
    site = request.channel.site
    stats, settings = site.stats, site.settings
    now = time.time()
    busy_connections = sum(1 for c in site.connections if c.queue or c.receiving)
    return {
        "status": "draining" if site.draining else "serving",
        # With [server] workers, each process answers for itself.
        "pid": os.getpid(),
        "uptime_seconds": round(now - stats.started, 3),
        "config_file": settings.config_file,
        "config_loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(settings.loaded_at)),
        "pool": {
            "min": pool.min if pool else 0,
            "max": pool.max if pool else 0,
            "workers": len(pool.threads) if pool else 0,
            "busy": pool.busy if pool else 0,
            "queued": pool.queued if pool else 0,
        },
        "connections": {"open": len(site.connections), "busy": busy_connections},
        "requests": stats.requests,
        "responses": dict(stats.by_class),
        "refused_overload": stats.refused_overload,
        "bytes_sent": stats.bytes_sent,
    }


def prometheus(data: dict) -> str:
    """The snapshot in Prometheus' text exposition format."""
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, object]]) -> None:
        lines.append(f"# HELP backtracweb_{name} {help_text}")
        lines.append(f"# TYPE backtracweb_{name} {kind}")
        lines.extend(f"backtracweb_{name}{labels} {value}" for labels, value in samples)

    pool = data["pool"]
    metric("up", "gauge", "1 while serving, 0 while draining.",
           [("", int(data["status"] == "serving"))])
    metric("uptime_seconds", "gauge", "Seconds since the server started.",
           [("", data["uptime_seconds"])])
    for key, help_text in (("min", "Configured minimum threads."),
                           ("max", "Configured maximum threads."),
                           ("workers", "Threads running."),
                           ("busy", "Threads running a request."),
                           ("queued", "Requests waiting for a thread.")):
        metric(f"pool_{key}", "gauge", help_text, [("", pool[key])])
    metric("connections_open", "gauge", "Open client connections.",
           [("", data["connections"]["open"])])
    metric("requests_total", "counter", "Requests answered.", [("", data["requests"])])
    metric("responses_total", "counter", "Responses by status class.",
           [(f'{{class="{k}"}}', v) for k, v in data["responses"].items()])
    metric("refused_overload_total", "counter", "Requests refused with 503 for lack of threads.",
           [("", data["refused_overload"])])
    metric("sent_bytes_total", "counter", "Response body bytes sent.", [("", data["bytes_sent"])])
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


def render_status(request: Request, pool: WorkerPool | None) -> None:
    """Answer the status page: 403 unless allowed, 503 while draining."""
    site = request.channel.site
    client = request.client or request.peer
    headers = request.response_headers = [(b"Cache-Control", b"no-store")]
    if client not in site.settings.status_allow:
        request.code = 403
        headers.append((b"Content-Type", b"text/plain"))
        request.respond(b"Forbidden: this address may not read the status page ([status] allow).\n")
        return
    data = snapshot(request, pool)
    if site.draining:
        request.code = 503
    if wants_prometheus(request):
        headers.append((b"Content-Type", _PROMETHEUS))
        request.respond(prometheus(data).encode("utf-8"))
        return
    headers.append((b"Content-Type", b"application/json"))
    request.respond(json.dumps(data, indent=2).encode("utf-8") + b"\n")
