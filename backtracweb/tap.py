"""
The twistd plugin's options and service maker: C{twistd backtracweb -c FILE}.

Everything that can fail because of the file fails here, in
C{postOptions}, where twistd prints a L{usage.UsageError} without a
traceback and exits non-zero, before it forks.
"""

from __future__ import annotations

import sys

from twisted.application.service import IService
from twisted.python import usage

from backtracweb.config import load_config
from backtracweb.errors import CANNOT_START, ConfigError, StartupError


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

    def postOptions(self) -> None:
        path = self["config"]
        if not path:
            raise usage.UsageError("--config FILE is required: the INI file describing the site")
        try:
            self.loaded = load_config(path)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    """The service tree for a validated configuration; nothing starts yet."""
    from twisted.internet import reactor

    from backtracweb.loader import build_service

    _report_startup_errors_cleanly()
    try:
        return build_service(options.loaded, reactor)
    except ConfigError as e:
        raise StartupError(str(e)) from None



def _report_startup_errors_cleanly() -> None:
    """
    Make a L{StartupError} that escapes twistd end the process with its
    message, not a traceback.

    twistd lets exceptions from C{startService} propagate out of the
    process (relaying their first 100 bytes to the terminal when it has
    forked); the service has logged the whole message already (see
    L{backtracweb.server.fatal}), and it goes to the terminal twistd was
    started from too (C{sys.stderr} may be redirected to the log).
    """
    previous = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if isinstance(value, StartupError):
            print(f"{CANNOT_START}{value}", file=sys.__stderr__)
        else:
            previous(kind, value, traceback)

    sys.excepthook = hook
