"""
Unit tests for L{backtracweb.process.cpu}'s scheduling policy: set on the calling
thread, inherited by the threads it starts, and never fatal.
"""

from __future__ import annotations

import os
import threading

import pytest
from twisted.logger import LogLevel, capturedLogs, formatEvent

from backtracweb.process.cpu import set_scheduling


def policy_of_a_new_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
    thread.start()
    thread.join()
    return seen[0]


@pytest.mark.parametrize("policy, constant", [("batch", os.SCHED_BATCH),
                                              ("normal", os.SCHED_OTHER)])
def test_the_policy_applies_to_this_thread_and_the_threads_it_starts(policy, constant):
    other = os.SCHED_OTHER if constant == os.SCHED_BATCH else os.SCHED_BATCH
    os.sched_setscheduler(0, other, os.sched_param(0))
    set_scheduling(policy)
    assert os.sched_getscheduler(0) == constant
    assert policy_of_a_new_thread() == constant


def test_a_refusal_is_a_warning_and_the_server_runs_on(monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with capturedLogs() as events:
        set_scheduling("batch")
    assert [(e["log_level"], formatEvent(e)) for e in events] == [
        (LogLevel.warn, "cannot set [server] cpu_scheduling = batch ([Errno 1] Operation not "
                        "permitted); running under the kernel's default policy")
    ]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
