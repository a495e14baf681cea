"""
How a serving process uses its CPUs: which ones (C{[server] cpu_affinity},
for workers) and under which scheduling policy (C{[server] cpu_scheduling}).

Both are set on the main thread before the thread pool starts: threads
inherit them from the thread that creates them.
"""

from __future__ import annotations

import os

from twisted.logger import Logger

_log = Logger(namespace="backtracweb.process.cpu")

_POLICIES = {"batch": "SCHED_BATCH", "normal": "SCHED_OTHER"}


def pin_worker(index: int) -> int:
    """
    Keep worker C{index} (from 1) on one of the CPUs the process may use,
    taking them in turn; the CPU it gets.
    """
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[(index - 1) % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    return cpu


def set_scheduling(policy: str) -> None:
    """
    Run this thread, and the threads it starts from now on, under
    C{policy}: C{batch} (Linux's C{SCHED_BATCH}) or C{normal}
    (C{SCHED_OTHER}).

    Why batch: a request crosses from the reactor thread to a pool thread
    and back, and each crossing wakes a thread.  Under the normal policy
    the woken thread preempts the running one at once, only to find
    Python's global interpreter lock still held, and gives the CPU back:
    three context switches a request where one would do (about a tenth of
    the CPU time of a small request, bench/).  A batch thread that wakes
    waits for the running one to block.  Changing between these two
    policies needs no privilege; where it fails (not Linux, a sandbox
    forbidding it) the server runs on under the normal policy.
    """
    try:
        constant = getattr(os, _POLICIES[policy])
        if os.sched_getscheduler(0) != constant:
            os.sched_setscheduler(0, constant, os.sched_param(0))
    except (AttributeError, OSError) as e:
        _log.warn("cannot set [server] cpu_scheduling = {policy} ({error}); running under "
                  "the kernel's default policy", policy=policy, error=e)
