"""
The application's thread pool, as a service that starts after twistd forks.

A thread pool started before twistd daemonizes loses its threads in the
fork while still believing it has them: the daemon accepts connections and
then hangs on every request.  L{ThreadPoolService} therefore creates no
thread until C{startService}, which twistd calls in the daemon.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
from typing import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

STOP_TIMEOUT = 10.0
"""Seconds to wait for busy threads when stopping before exiting without them."""

_STOP = object()
"""Queued to a thread to make it exit."""


class ThreadPool:
    """
    The threads that run the WSGI application: C{min} kept running, more
    started on demand up to C{max}.  No thread runs before L{start}.

    Twisted's L{ThreadPool} passes each task through a team, a coordinator
    and a per-thread worker, each with locks of its own, and wraps it in
    Twisted's logging context; on a tiny Django view that costs about 15%
    of backtracweb's CPU time per request (bench/, CPU/req).  This pool
    keeps one queue, C{queue.SimpleQueue} (in C), whose C{put} hands a task
    straight to a waiting thread.  Its threads are daemon threads: a thread
    stuck in application code must not keep the process alive once the
    stop timeout has passed.
    """

    _log = Logger()

    def __init__(self, min_threads: int, max_threads: int, name: str = "backtracweb") -> None:
        self.min = min_threads
        self.max = max_threads
        self.name = name
        self.started = False
        self.threads: list[threading.Thread] = []
        self._working: set[threading.Thread] = set()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._names = itertools.count(1)

    @property
    def busy(self) -> int:
        """Threads running a task."""
        return len(self._working)

    @property
    def queued(self) -> int:
        """Tasks waiting for a thread."""
        return self._queue.qsize()

    def numbers(self) -> dict[str, int]:
        """Its size and load, for the status page."""
        return {"min": self.min, "max": self.max, "threads": len(self.threads),
                "busy": len(self._working), "queued": self._queue.qsize()}

    def callInThread(self, function: Callable[[], object]) -> None:
        """Run C{function} in a thread of the pool, as soon as one is free."""
        self._queue.put(function)
        # A thread more if no idle one is left for this task (a racy count,
        # which at worst starts a thread a task later or one too many).
        threads = len(self.threads)
        if self.started and threads < self.max and self._queue.qsize() > threads - len(self._working):
            self._start_thread()

    def start(self) -> None:
        self.started = True
        wanted = min(self.max, max(self.min, self._queue.qsize()))
        while len(self.threads) < wanted:
            self._start_thread()

    def stop(self) -> None:
        """Let the threads finish their tasks and exit; wait for them."""
        self.started = False
        threads = list(self.threads)
        for _ in threads:
            self._queue.put(_STOP)
        for thread in threads:
            thread.join()

    def adjustPoolsize(self, min_threads: int, max_threads: int) -> None:
        """New bounds, applied at once: threads are started or told to exit."""
        self.min, self.max = min_threads, max_threads
        if not self.started:
            return
        while len(self.threads) < self.min:
            self._start_thread()
        for _ in range(len(self.threads) - self.max):
            self._queue.put(_STOP)  # after the tasks already queued

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self.name}-{next(self._names)}",
                                  daemon=True)
        self.threads.append(thread)
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        get, working = self._queue.get, self._working
        try:
            while (task := get()) is not _STOP:
                working.add(me)
                try:
                    task()
                except BaseException:
                    self._log.failure("a task in the application's thread pool failed")
                finally:
                    working.discard(me)
        finally:
            self.threads.remove(me)


class ReactorCalls:
    """
    C{callFromThread} for the pool's threads, waking the reactor once for
    all the calls made while it was busy.

    Twisted's C{callFromThread} writes to the reactor's waker pipe for
    every call, and the reactor reads it back in an event of its own: two
    system calls and a trip through the reactor per response.  Here only
    the first call since the reactor last ran the queue wakes it; under
    load, responses finishing while the reactor is busy cost no wake-up.
    Calls run in the order they were made, as with Twisted's.
    """

    _log = Logger()

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._calls: collections.deque = collections.deque()
        self._scheduled = False

    def callFromThread(self, function: Callable[..., object], *args: object) -> None:
        """Run C{function(*args)} on the reactor thread, soon."""
        self._calls.append((function, args))
        # Read after the append: if a run is scheduled and has not yet
        # begun, it will find this call; if not, schedule one (two threads
        # may both do so: the second run finds the queue empty).
        if not self._scheduled:
            self._scheduled = True
            self._reactor.callFromThread(self._run)

    def _run(self) -> None:
        self._scheduled = False  # before taking the calls: one made from now on wakes us again
        calls = self._calls
        while calls:
            function, args = calls.popleft()
            try:
                function(*args)
            except Exception:
                self._log.failure("a call from the application's thread pool failed")


def make_pool(min_threads: int, max_threads: int) -> ThreadPool:
    """A thread pool for the WSGI application; no thread runs until it starts."""
    return ThreadPool(min_threads, max_threads)


class ThreadPoolService(Service):
    """
    Runs a L{ThreadPool} while the service runs.

    Stopping joins the threads in a thread of its own: a WSGI thread that
    is writing a response waits for the reactor, so joining it on the
    reactor thread would deadlock.
    """

    _log = Logger()

    def __init__(self, pool: ThreadPool, reactor, stop_timeout: float = STOP_TIMEOUT,
                 used: bool = True) -> None:
        self.pool = pool
        self._reactor = reactor
        self.stop_timeout = stop_timeout
        self.used = used
        """Whether the application runs in the pool (not an ASGI one): if not, no thread starts."""

    def startService(self) -> None:
        super().startService()
        if not self.used:
            self._log.info("thread pool not started: the ASGI application runs on the event "
                           "loop ([threadpool] applies to WSGI)")
            return
        self.pool.start()
        self._log.info(
            "thread pool started: min {min}, max {max}", min=self.pool.min, max=self.pool.max
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if not self.used:
            return succeed(None)  # no thread to join
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
        busy = self.pool.busy
        self._log.warn(
            "{busy} thread(s) still busy after {timeout:.1f} seconds; stopping without them",
            busy=busy,
            timeout=timeout,
        )
