"""
The twistd plugin's options and service maker: C{twistd backtracweb -c FILE}.

Everything that can fail because of the file fails here, in
C{postOptions}, before twistd opens its log or forks: the problems are
printed after C{twistd backtracweb:} and twistd exits 1 (2 for a usage
error), without its usage text (see L{backtracweb.process.startup}).
"""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

from backtracweb import version_line
from backtracweb.config.settings import load_config
from backtracweb.errors import ConfigError, StartupError
from backtracweb.process.eventloop import ReactorMismatch, install_asyncio_reactor
from backtracweb.process.startup import exit_with, report_daemon_failures, report_startup_errors

EXIT_CONFIG = 1
"""twistd's exit status for a configuration file with problems."""
EXIT_USAGE = 2
"""twistd's exit status for a usage error (a missing -c, an unknown option)."""


class Options(usage.Options):
    """Command-line options of C{twistd backtracweb}."""

    synopsis = "-c FILE"
    longdesc = (
        "Serve a Django or other WSGI application, and static files, as described "
        "by one INI file. Check the file first with: backtracweb check -c FILE"
    )
    optParameters = [
        ["config", "c", None, "The INI file describing the site (required)."],
    ]

    def opt_version(self) -> None:
        """Print backtracweb's version (and Twisted's, Django's, Python's) and exit."""
        print(version_line())
        raise SystemExit(0)

    def parseOptions(self, options=None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            exit_with(f"{e} (twistd backtracweb --help lists the options)", EXIT_USAGE)

    def postOptions(self) -> None:
        path = self["config"]
        if not path:
            raise usage.UsageError("--config FILE is required: the INI file describing the site")
        try:
            self.loaded = load_config(path)
        except ConfigError as e:
            exit_with(str(e), EXIT_CONFIG)
        if self.loaded.app["interface"] == "asgi":
            # Now, before anything imports the reactor (which installs the default one).
            try:
                install_asyncio_reactor()
            except ReactorMismatch as e:
                exit_with(f"{self.loaded.path}: {e}", EXIT_CONFIG)


def makeService(options: Options) -> IService:
    """The service tree for a validated configuration; nothing starts yet."""
    from twisted.internet import reactor

    from backtracweb.process.tree import build_service
    from backtracweb.twisted_internals import twistd_unix_runner

    report_daemon_failures(twistd_unix_runner())
    report_startup_errors()
    try:
        return build_service(options.loaded, reactor)
    except ConfigError as e:
        raise StartupError(str(e)) from None
