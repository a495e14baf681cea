"""The daemon's life: start daemonized, serve the demo Django site, stop on SIGTERM."""

from __future__ import annotations

import os

from conftest import thread_policies


def test_daemon_serves_django_page_and_static_file_then_stops_on_sigterm(demo_daemon):
    """
    A daemonized twistd (no -n), started from another directory, serves the
    demo's Django page and its stylesheet; SIGTERM stops it and removes the
    pidfile.  With min threads > 0 this hangs if the pool started before
    the fork.
    """
    demo_daemon.start()
    response, body = demo_daemon.get("/")
    assert response.status == 200
    assert b"It works: Django under backtracweb" in body
    assert b'href="/static/site.css"' in body

    response, body = demo_daemon.get("/static/site.css")
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/css"
    assert b"Served by backtracweb" in body
    # [server] cpu_scheduling = batch, the default: every thread, the
    # reactor's and the pool's.
    assert len(os.listdir(f"/proc/{demo_daemon.pid}/task")) >= 3
    assert thread_policies(demo_daemon.pid) == {os.SCHED_BATCH}

    demo_daemon.stop()
    assert not demo_daemon.pidfile.exists()
    log = demo_daemon.log()
    assert "Traceback" not in log
    assert "thread pool started: min 2, max 4" in log


def test_cpu_scheduling_normal_keeps_the_kernels_default_policy(wsgi_daemon):
    """[server] cpu_scheduling = normal: no thread of the daemon is SCHED_BATCH."""
    daemon = wsgi_daemon(server="cpu_scheduling = normal\n")
    daemon.start()
    response, _ = daemon.get("/")
    assert response.status == 200
    assert thread_policies(daemon.pid) == {os.SCHED_OTHER}
    daemon.stop()
