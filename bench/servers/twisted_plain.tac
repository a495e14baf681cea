"""
Twisted's own web server, as `twistd web --wsgi` / `twistd web --path` build
it (a plain twisted.web.server.Site over WSGIResource or static.File), with
the two things those commands cannot set: the thread pool size and the
access log.  bench/harness.py runs it as

    BENCH_PORT=P BENCH_ROOT=wsgi BENCH_THREADS=10 BENCH_ACCESS_LOG=off \
        PYTHONPATH=bench/site twistd --pidfile F --logfile L -y bench/servers/twisted_plain.tac

BENCH_ROOT=static serves BENCH_STATIC with static.File instead.
"""

import os

from twisted.application import service, strports
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.web import server, static, wsgi

PORT = int(os.environ["BENCH_PORT"])
ROOT = os.environ.get("BENCH_ROOT", "wsgi")
THREADS = int(os.environ.get("BENCH_THREADS", "10"))
ACCESS_LOG = os.environ.get("BENCH_ACCESS_LOG", "on")


class QuietSite(server.Site):
    """A Site that writes no access log line."""

    def log(self, request):
        pass


if ROOT == "wsgi":
    # Imported before twistd forks, exactly as `twistd web --wsgi` does; the
    # pool starts with the reactor, after the fork.
    from benchsite.wsgi import application as wsgi_application

    pool = ThreadPool(THREADS, THREADS, name="bench-wsgi")
    reactor.callWhenRunning(pool.start)
    reactor.addSystemEventTrigger("after", "shutdown", pool.stop)
    root = wsgi.WSGIResource(reactor, pool, wsgi_application)
elif ROOT == "static":
    root = static.File(os.environ["BENCH_STATIC"])
else:
    raise SystemExit(f"BENCH_ROOT must be wsgi or static, not {ROOT!r}")

site = (server.Site if ACCESS_LOG == "on" else QuietSite)(root)
application = service.Application("bench-twisted")
strports.service(f"tcp:{PORT}:interface=127.0.0.1", site).setServiceParent(application)
