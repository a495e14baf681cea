"""
Shared by every test: none may import Twisted's global reactor.  Unit tests
use fakes and memory reactors; the end-to-end tests run twistd in a process
of its own.  A test that imported the reactor would make the others depend
on its state.
"""

from __future__ import annotations

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
def keep_scheduling_policy():
    """Undo a test's change of this thread's scheduling policy (starting a service makes one)."""
    before = os.sched_getscheduler(0)
    yield
    if os.sched_getscheduler(0) != before:
        os.sched_setscheduler(0, before, os.sched_param(0))
