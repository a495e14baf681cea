"""
Turn a validated L{Config} into the service tree twistd runs.

Building the tree starts nothing: no thread, no socket, no import of the
application.  twistd binds the ports in C{privilegedStartService}, and
starts the pool and loads the application in C{startService}, after it
forks.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred

from backtracweb.app.accesslog import AccessLog
from backtracweb.app.application import Application
from backtracweb.app.pool import ThreadPoolService, make_pool
from backtracweb.app.proxy import Addresses, TrustedProxies
from backtracweb.app.resource import SiteRoot, static_routes
from backtracweb.app.status import StatusPage
from backtracweb.app.website import BacktracSite, SiteSettings
from backtracweb.config.apps import load_application
from backtracweb.config.settings import Config
from backtracweb.errors import ConfigError, StartupError
from backtracweb.process.server import ListeningService, WebService
from backtracweb.process.service import BacktracService
from backtracweb.process.shared import SharedSocketService
from backtracweb.process.supervisor import Supervisor


def make_site_settings(config: Config) -> SiteSettings:
    """
    The reloadable part of a configuration, ready to serve with; this
    opens the access log file.

    @raise ConfigError: the access log cannot be opened.
    """
    log, status = config["log"], config["status"]
    try:
        access_log = AccessLog(log["access_log"], log["access_format"]).open()
    except OSError as e:
        source = config.sources.get(("log", "access_log"), config.path)
        raise ConfigError(
            [f"{source}: [log] access_log = {log['access_log']!r}: cannot open it for "
             f"appending: {e.strerror}"]
        ) from None
    return SiteSettings(
        routes=static_routes(config.static),
        access_log=access_log,
        proxies=TrustedProxies(config["proxy"]["trusted"]),
        limits=config.reloadable("limits"),
        server=config.reloadable("server"),
        status_path=None if status["path"] == "off" else status["path"].encode("utf-8"),
        status_allow=Addresses(status["allow"]),
        config_file=config.path,
        loaded_at=config.loaded_at,
    )


def build_service(config: Config, reactor) -> BacktracService | Supervisor:
    """
    The service twistd runs: with one worker, a L{BacktracService} serving
    the site itself; with more, a L{Supervisor} of worker processes.

    @raise ConfigError: the access log cannot be opened.
    """
    if config["server"]["workers"] > 1:
        try:
            listeners = [SharedSocketService(d, reactor) for d in config.listen]
        except StartupError as e:
            raise StartupError(f"{config.path}: {e}") from None
        return Supervisor(config, listeners, reactor)
    return build_site_service(
        config, lambda site: [ListeningService(d, site, reactor) for d in config.listen], reactor
    )


def build_site_service(
    config: Config,
    make_listeners: Callable[[BacktracSite], list],
    reactor,
    service_class: type[BacktracService] = BacktracService,
    whole_server: Callable[[], Deferred[dict]] | None = None,
) -> BacktracService:
    """
    A L{BacktracService} holding the thread pool service (C{threadpool})
    and the web server (C{web}), in the order they start, serving on the
    listeners C{make_listeners} gives for the site.  In a worker process
    of several, C{whole_server} asks the supervisor for the numbers of
    every worker, for the status page.

    @raise ConfigError: the access log cannot be opened.
    """
    pool = make_pool(config.min_threads, config.max_threads)

    def load_app():
        return load_application(config.app_loader, config.app, config.environment)

    wsgi = config.app["interface"] == "wsgi"
    application = Application(load_app, pool, reactor, multiprocess=whole_server is not None,
                              interface=config.app["interface"],
                              start_timeout=config["server"]["start_timeout"])
    # An ASGI application needs no thread: the pool's queue does not bound it.
    root = SiteRoot(application, pool if wsgi else None, StatusPage(pool, whole_server))
    # An ASGI application reads bodies as they arrive (a WSGI one gets them whole first).
    site = BacktracSite(root, make_site_settings(config), reactor, async_bodies=not wsgi)
    try:
        web = WebService(make_listeners(site), site, application, reactor)
    except StartupError as e:
        raise StartupError(f"{config.path}: {e}") from None
    return service_class(
        config, ThreadPoolService(pool, reactor, used=wsgi), web, make_site_settings, reactor
    )
