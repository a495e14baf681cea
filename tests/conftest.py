"""
Shared by every test: none may import Twisted's global reactor.  Unit tests
use fakes and memory reactors; the end-to-end tests run twistd in a process
of its own.  A test that imported the reactor would make the others depend
on its state.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import signal
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


SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
"""The signals a started service handles."""


@pytest.fixture
def saved_signal_handlers():
    """Put back the process's signal handlers, which starting a service replaces."""
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    yield saved
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def isolated_imports(tmp_path):
    """
    Restore C{sys.path}, the path importer cache and every module imported
    from C{tmp_path} once the test is over.
    """
    saved_path = list(sys.path)
    before = set(sys.modules)
    importlib.invalidate_caches()
    yield
    sys.path[:] = saved_path
    root = str(tmp_path)
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        location = getattr(module, "__file__", None) or ""
        locations = list(getattr(module, "__path__", []) or [])
        if location.startswith(root) or any(str(p).startswith(root) for p in locations):
            del sys.modules[name]
    for key in [k for k in sys.path_importer_cache if str(k).startswith(root)]:
        del sys.path_importer_cache[key]
    importlib.invalidate_caches()


@pytest.fixture
def loop():
    """
    An asyncio event loop the test turns (with L{helpers.settle}), as the
    asyncio reactor would, for ASGI applications' tasks; what a test left
    waiting is cancelled with it.
    """
    from helpers import settle

    loop = asyncio.new_event_loop()
    yield loop
    for task in asyncio.all_tasks(loop):
        task.cancel()
    settle(loop)
    loop.close()
