"""
Turn a validated L{Config} into the service tree twistd runs.

Building the tree starts nothing: no thread, no socket, no import of the
application.  twistd binds the port in C{privilegedStartService} and starts
the pool and loads the application in C{startService}, after it forks.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

from backtracweb.apps import load_application
from backtracweb.config import Config
from backtracweb.pool import ThreadPoolService, make_pool
from backtracweb.resource import SiteRoot
from backtracweb.server import TrackingSite, WebService


def build_service(config: Config, reactor) -> MultiService:
    """
    A L{MultiService} named C{backtracweb} holding the thread pool service
    (C{threadpool}) and the web server (C{web}), in the order they start.
    """
    top = MultiService()
    top.setName("backtracweb")

    pool = make_pool(config.min_threads, config.max_threads)
    pool_service = ThreadPoolService(pool, reactor)
    pool_service.setName("threadpool")
    pool_service.setServiceParent(top)

    if ":" in config.interface:
        endpoint = TCP6ServerEndpoint(reactor, config.port, interface=config.interface)
        address = f"[{config.interface}]:{config.port}"
    else:
        endpoint = TCP4ServerEndpoint(reactor, config.port, interface=config.interface)
        address = f"{config.interface}:{config.port}"

    def load_app():
        return load_application(config.app_loader, config.app)

    site = TrackingSite(SiteRoot(config.static), reactor=reactor)
    web = WebService(endpoint, address, site, load_app, pool, reactor)
    web.setName("web")
    web.setServiceParent(top)
    return top
