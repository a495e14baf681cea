"""The daemon's life: start daemonized, serve the demo Django site, stop on SIGTERM."""

from __future__ import annotations


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

    demo_daemon.stop()
    assert not demo_daemon.pidfile.exists()
    log = demo_daemon.log()
    assert "Traceback" not in log
    assert "thread pool started: min 2, max 4" in log
