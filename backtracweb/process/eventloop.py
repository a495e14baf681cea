"""
The event loop of an ASGI application (C{[app] interface = asgi}):
Twisted's asyncio reactor, so that the reactor, the connections and the
application's coroutines share one thread and one loop.

It is installed while twistd parses its options, before it forks: making
the loop starts no thread (what would die in the fork), and the loop
first runs in the daemon.  The threads asyncio code may start (an
executor for C{sync_to_async}) start there too, when first used.
"""

from __future__ import annotations

import asyncio
import sys

REACTOR_MODULE = "twisted.internet.reactor"


class ReactorMismatch(Exception):
    """Another reactor than asyncio's was chosen (twistd -r) for an ASGI application."""


def install_asyncio_reactor() -> None:
    """
    Install Twisted's asyncio reactor on a new event loop, unless it is
    installed already.

    @raise ReactorMismatch: another reactor is installed, naming it.
    """
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    reactor = sys.modules.get(REACTOR_MODULE)
    if reactor is not None:
        if isinstance(reactor, AsyncioSelectorReactor):
            return
        module = type(reactor).__module__
        short = module.rpartition(".")[2].removesuffix("reactor") or module
        raise ReactorMismatch(
            f"[app] interface = asgi needs Twisted's asyncio reactor, but twistd runs its "
            f"{short} reactor (twistd -r {short}): leave -r out, or give -r asyncio")
    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
