"""
The service twistd runs: the thread pool and the web server, with the
signals an admin expects.

  SIGHUP   reload the configuration file (what can change without a restart)
  SIGUSR1  reopen the access log and twistd's log file (for logrotate)
  SIGTERM  drain: stop accepting, let requests in flight finish for up to
           [server] graceful_timeout seconds, then exit; a second SIGTERM
           (or SIGINT) cuts the drain short
"""

from __future__ import annotations

import os
import signal
import stat
import time
from typing import Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.logfile import BaseLogFile

from backtracweb import version_line
from backtracweb.app.accesslog import open_append
from backtracweb.app.pool import ThreadPoolService
from backtracweb.app.website import SiteSettings
from backtracweb.config import environment
from backtracweb.config.settings import (
    ENV_SECTION, RESTART_KEYS, RESTART_SECTIONS, Config, load_config,
)
from backtracweb.errors import ConfigError
from backtracweb.process.cpu import set_scheduling
from backtracweb.process.server import WebService
from backtracweb.process.tls import UnusableCertificate
from backtracweb.twisted_internals import twistd_log_file


class DaemonService(MultiService):
    """
    The signal handling shared by the top services twistd runs (one
    process serving, or a supervisor of worker processes): SIGHUP calls
    C{reload}, SIGUSR1 C{reopen_logs}, SIGTERM and SIGINT C{stop}, each
    from the reactor loop.
    """

    _log = Logger()
    stop_signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, reactor) -> None:
        super().__init__()
        self._reactor = reactor
        self._previous_handlers: dict[int, object] = {}
        self._twistd_log: BaseLogFile | None = None
        self._twistd_log_mode = 0o644
        self._stopping = False

    announce = True
    """Whether starting logs the version and the file (not in each worker of a supervisor)."""

    def startService(self) -> None:
        if self.announce:
            self._log.info("{version}, configured by {path}", version=version_line(),
                           path=self.config.path)
        super().startService()
        # SIGHUP and SIGUSR1 at once: until then SIGHUP would kill the daemon.
        # SIGTERM and SIGINT once reactor.run() has installed its own
        # handlers, which ours then replace.
        self.install_signal_handlers(signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN,
                                     signal.SIGTTOU)
        self._reactor.callWhenRunning(self.install_signal_handlers, *self.stop_signals)

    def install_signal_handlers(self, *signums: int) -> None:
        """Take over the given signals (SIGHUP, SIGUSR1, SIGTERM, SIGINT)."""
        actions = {
            signal.SIGHUP: self.reload,
            signal.SIGUSR1: self.reopen_logs,
            signal.SIGTERM: self.stop,
            signal.SIGINT: self.stop,
            signal.SIGTTIN: self.add_worker,
            signal.SIGTTOU: self.remove_worker,
        }
        if signal.SIGUSR1 in signums:
            self._twistd_log = twistd_log_file(signal.getsignal(signal.SIGUSR1))
            if self._twistd_log is not None:
                # Its mode now (0644 under the admin's umask), for a new file
                # after logrotate: the daemon's umask would make it 0600.
                self._twistd_log_mode = stat.S_IMODE(os.stat(self._twistd_log.path).st_mode)
        for signum in signums:
            if self._stopping:
                return
            previous = signal.signal(signum, self._handler(actions[signum]))
            self._previous_handlers.setdefault(signum, previous)

    def _handler(self, action: Callable[[str], None]):
        def handle(signum: int, frame: object) -> None:
            # Signal handlers interrupt the reactor; act from the reactor loop.
            self._reactor.callFromThread(action, signal.Signals(signum).name)

        return handle

    def restore_signal_handlers(self) -> None:
        """Give the signals back to whoever had them (for tests and embedding)."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def stop(self, signame: str = "stop request") -> None:
        """Drain and exit; when already draining, cut the drain short."""
        if not self._stopping:
            self._stopping = True
            self._log.info("received {signal}: stopping", signal=signame)
            self._reactor.stop()
        else:
            self._log.warn("received {signal} while stopping: cutting requests in flight short",
                           signal=signame)
            self.cut_short()

    def cut_short(self) -> None:
        """Stop waiting for requests in flight."""
        raise NotImplementedError

    def add_worker(self, signame: str = "add request") -> None:
        """One worker process more: only a supervisor has them."""
        self._one_process(signame)

    def remove_worker(self, signame: str = "remove request") -> None:
        """One worker process fewer: only a supervisor has them."""
        self._one_process(signame)

    def _one_process(self, signame: str) -> None:
        # (Their default action would stop the daemon as if it read a terminal.)
        self._log.warn("received {signal}: this server is one process ([server] workers = 1); "
                       "with workers = 2 or more, SIGTTIN and SIGTTOU add and remove workers",
                       signal=signame)

    def reload(self, signame: str = "reload request") -> None:
        """Apply the configuration file again, as far as possible without a restart."""
        raise NotImplementedError

    def reopen_logs(self, signame: str = "reopen request") -> None:
        """Reopen the log files at their paths (after logrotate moved them)."""
        raise NotImplementedError

    def reopen_twistd_log(self, signame: str) -> bool:
        """
        Reopen twistd's log file, if there is one; false if it cannot be
        reopened (the old file stays in use).
        """
        # LogFile.reopen closes the file before opening it again: if the
        # daemon (after --uid) may not open the path, every later line would
        # be lost.  Try the path first; keep the old file if that fails.
        log_file = self._twistd_log
        if log_file is None:
            return True
        try:
            os.close(open_append(log_file.path, 0o644, self._twistd_log_mode))
        except OSError as e:
            self._log.error(
                "received {signal}: cannot reopen twistd's log file {path} (running as uid "
                "{uid}): {error}; still writing to the old file",
                signal=signame, path=log_file.path, uid=os.getuid(), error=e.strerror,
            )
            return False
        log_file.reopen()
        return True


class BacktracService(DaemonService):
    """
    The top of the service tree: a L{ThreadPoolService} named
    C{threadpool} and a L{WebService} named C{web}, started in that order
    and stopped in the reverse one, each waiting for the other: requests
    drain before their threads are joined.

    @ivar config: the configuration in force (the last one loaded).
    """

    def __init__(
        self,
        config: Config,
        pool: ThreadPoolService,
        web: WebService,
        make_settings: Callable[[Config], SiteSettings],
        reactor,
    ) -> None:
        super().__init__(reactor)
        self.setName("backtracweb")
        self.config = config
        self._started_config = config
        self._make_settings = make_settings
        pool.setName("threadpool")
        pool.setServiceParent(self)
        web.setName("web")
        web.setServiceParent(self)

    def startService(self) -> None:
        # Before the pool starts its threads: they inherit the policy.
        set_scheduling(self.config["server"]["cpu_scheduling"])
        super().startService()

    @property
    def pool(self) -> ThreadPoolService:
        return self.getServiceNamed("threadpool")

    @property
    def web(self) -> WebService:
        return self.getServiceNamed("web")

    def stopService(self) -> Deferred[None]:
        # Our signal handlers stay: a second SIGTERM must cut the drain
        # short, and SIGHUP's default action would kill the daemon mid-drain.
        self._stopping = True
        Service.stopService(self)
        deadline = self._reactor.seconds() + self.web.site.settings.server.graceful_timeout

        def stop_pool(_: object) -> Deferred[None]:
            # Threads still running application code after the drain's
            # deadline are not waited for: graceful_timeout bounds the exit.
            self.pool.stop_timeout = max(deadline - self._reactor.seconds(), 0.5)
            return self.pool.stopService()

        stopped = maybeDeferred(self.web.stopService)
        stopped.addBoth(stop_pool)
        stopped.addBoth(lambda _: self.web.site.settings.access_log.close())
        return stopped

    def cut_short(self) -> None:
        self.web.site.cut_short()

    def reopen_logs(self, signame: str = "reopen request") -> None:
        """Reopen the access log and twistd's log file at their paths."""
        reopened = self.reopen_twistd_log(signame)
        try:
            self.web.site.settings.access_log.reopen()
        except OSError as e:
            self._log.error("received {signal}: cannot reopen the access log, still writing "
                            "to the old file: {error}", signal=signame, error=e)
        else:
            if reopened:
                self._log.info("received {signal}: log files reopened", signal=signame)

    # -- reloading ---------------------------------------------------------------

    def reload(self, signame: str = "reload request") -> None:
        """
        Read the configuration file again and apply what can change while
        running: pool size, static mappings, logs, proxies, limits, status
        page, graceful timeout.  The listening addresses and the
        application need a restart and stay as they are.  An invalid file
        changes nothing.
        """
        path = self.config.path
        if self._stopping:
            self._log.info("received {signal} while stopping: not reloading", signal=signame)
            return
        self._log.info("received {signal}: reloading {path}", signal=signame, path=path)
        try:
            new = load_config(path, running=self._started_config)
        except ConfigError as e:
            self._not_reloaded(e)
            return
        self.apply(new)

    def apply(self, new: Config) -> None:
        """
        Serve with C{new} from now on, as far as it can change without a
        restart; if it cannot be applied (the access log cannot be
        opened), nothing changes.
        """
        try:
            settings = self._make_settings(new)
        except ConfigError as e:
            self._not_reloaded(e)
            return

        for section, key, old, value in _differences(self._started_config, new):
            if section in RESTART_SECTIONS or (section, key) in RESTART_KEYS:
                self._log.warn(
                    "reload: [{section}] {key} changed from {old} to {new}; this takes a "
                    "restart, so the running server keeps {old}",
                    section=section, key=key, old=_show(old), new=_show(value),
                )
        changes = [
            f"[{section}] {key} {_show(old)} -> {_show(value)}"
            for section, key, old, value in _differences(self.config, new)
            if section not in RESTART_SECTIONS and (section, key) not in RESTART_KEYS
        ]

        # Everything that could fail has been done; now swap it all in.
        site = self.web.site
        old_settings = site.settings
        self.pool.pool.adjustPoolsize(new.min_threads, new.max_threads)
        site.settings = settings
        old_settings.access_log.close()
        self.config = new
        self._renew_certificates()
        self._log.info("reload: done; changed: {changes}",
                       changes=", ".join(changes) or "nothing")

    def _renew_certificates(self) -> None:
        """Serve new TLS connections with the certificate files as they are now."""
        for listener in self.web:
            tls = getattr(listener, "tls", None)
            if tls is None:
                continue
            try:
                message = tls.renew()
            except UnusableCertificate as e:
                self._log.error("reload: {message}", message=e)
                continue
            if message is not None:
                self._log.info("reload: {message}", message=message)

    def _not_reloaded(self, error: ConfigError) -> None:
        not_reloaded(self._log, error, self.config)


def not_reloaded(log: Logger, error: ConfigError, config: Config) -> None:
    """Log why a reload failed, and that C{config} stays in force."""
    for problem in error.problems:
        log.error("reload: {problem}", problem=problem)
    log.error(
        "reload: {count} problem(s) in the configuration; nothing changed, still serving "
        "with {path} as loaded at {when}",
        count=len(error.problems), path=config.path, when=_when(config.loaded_at),
    )


def _show(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, tuple):
        return ", ".join(value) or "(empty)"
    return str(value)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _differences(old: Config, new: Config):
    """
    (section, key, old value, new value) for every value that differs
    (None where a key is absent), secrets masked: they go to the log.
    """
    for section, values in new.values.items():
        previous = old.values.get(section, {})
        for key in (*values, *(k for k in previous if k not in values)):
            before, after = previous.get(key), values.get(key)
            if before != after:
                if section == ENV_SECTION:
                    before, after = (None if value is None else environment.shown(key, value)
                                     for value in (before, after))
                yield section, key, before, after
    old_static = {m.prefix: m.directory for m in old.static}
    new_static = {m.prefix: m.directory for m in new.static}
    for prefix in sorted(old_static.keys() | new_static.keys()):
        if old_static.get(prefix) != new_static.get(prefix):
            yield "static", prefix, old_static.get(prefix), new_static.get(prefix)
