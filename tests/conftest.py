"""
Shared by every test: none may import Twisted's global reactor.  Unit tests
use fakes and memory reactors; the end-to-end tests run twistd in a process
of its own.  A test that imported the reactor would make the others depend
on its state.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest


@pytest.fixture(autouse=True)
def no_global_reactor():
    """Fail any test that imports the global reactor."""
    before = "twisted.internet.reactor" in sys.modules
    yield
    if not before:
        assert "twisted.internet.reactor" not in sys.modules, "the global reactor was imported"


@pytest.fixture(autouse=True)
def keep_process_state():
    """
    Undo what starting a service changes for the whole process: this
    thread's scheduling policy, and the objects frozen for the collector.
    """
    policy = os.sched_getscheduler(0)
    yield
    if os.sched_getscheduler(0) != policy:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    gc.unfreeze()
