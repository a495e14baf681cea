"""
The worker thread pool, as a service that starts after twistd forks.

A L{ThreadPool} started before twistd daemonizes loses its threads in the
fork while still believing it has them: the daemon accepts connections and
then hangs on every request.  L{ThreadPoolService} therefore creates no
thread until C{startService}, which twistd calls in the daemon.
"""

from __future__ import annotations

import threading
from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

STOP_TIMEOUT = 10.0
"""Seconds to wait for busy workers when stopping before exiting without them."""


def make_pool(min_threads: int, max_threads: int) -> ThreadPool:
    """
    A thread pool for the WSGI application; no thread runs until it starts.

    Its threads are daemon threads: a worker stuck in application code must
    not keep the process alive once the stop timeout has passed.
    """
    pool = ThreadPool(min_threads, max_threads, name="backtracweb")
    pool.threadFactory = partial(threading.Thread, daemon=True)
    return pool


class ThreadPoolService(Service):
    """
    Runs a L{ThreadPool} while the service runs.

    Stopping joins the workers in a thread of its own: a WSGI worker that
    is writing a response waits for the reactor, so joining it on the
    reactor thread would deadlock.
    """

    _log = Logger()

    def __init__(self, pool: ThreadPool, reactor, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.pool = pool
        self._reactor = reactor
        self.stop_timeout = stop_timeout

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        self._log.info(
            "thread pool started: min {min}, max {max}", min=self.pool.min, max=self.pool.max
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stopped: Deferred[None] = Deferred()

        def fire() -> None:
            if not stopped.called:
                stopped.callback(None)

        def join() -> None:
            self.pool.stop()
            self._reactor.callFromThread(fire)

        threading.Thread(target=join, name="backtracweb-pool-stop", daemon=True).start()
        return stopped.addTimeout(self.stop_timeout, self._reactor, onTimeoutCancel=self._gave_up)

    def _gave_up(self, result: object, timeout: float) -> None:
        busy = len(self.pool.working)
        self._log.warn(
            "{busy} worker thread(s) still busy after {timeout:.1f} seconds; stopping without them",
            busy=busy,
            timeout=timeout,
        )
