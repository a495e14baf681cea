"""
The C{backtracweb} command: C{backtracweb check -c FILE}, like C{nginx -t}.

It runs the same validation as the daemon, then imports the application,
and prints what would be served.  It exits 0 when all is well and 1 with
the problems otherwise, so packagers can run it before a (re)start.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence, TextIO

from backtracweb.apps import load_application
from backtracweb.config import load_config, summary
from backtracweb.errors import AppLoadError, ConfigError


def check(path: str, out: TextIO, err: TextIO, show_sources: bool = False) -> int:
    """Validate the file and import its application; return the exit code."""
    try:
        config = load_config(path)
        application = load_application(config.app_loader, config.app)
    except (ConfigError, AppLoadError) as e:
        print(e, file=err)
        return 1
    print(summary(config, with_sources=show_sources), file=out)
    print(f"application: {_describe(application)} imported", file=out)
    return 0


def _describe(application: object) -> str:
    name = getattr(application, "__qualname__", type(application).__qualname__)
    module = getattr(application, "__module__", type(application).__module__)
    return f"{module}.{name}"


def parser() -> argparse.ArgumentParser:
    """The command-line parser; exposed for the tests and the docs."""
    top = argparse.ArgumentParser(
        prog="backtracweb",
        description="Run Django or any WSGI site under Twisted; start it with "
        "twistd backtracweb -c FILE.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    checking = commands.add_parser(
        "check",
        help="validate a configuration file and import its application",
        description="Validate the INI file as twistd would, import the application "
        "and print what would be served. Exit status 0 when good, 1 otherwise.",
    )
    checking.add_argument("-c", "--config", required=True, metavar="FILE",
                          help="the INI file describing the site")
    checking.add_argument("--print", action="store_true", dest="show_sources",
                          help="print the effective configuration with the file that set "
                          "each value, or 'default'")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the C{backtracweb} console script."""
    arguments = parser().parse_args(argv)
    return check(arguments.config, sys.stdout, sys.stderr, arguments.show_sources)
