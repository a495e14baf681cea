"""
The C{backtracweb} command: C{backtracweb check -c FILE}, like C{nginx -t}.

It runs the same validation as the daemon, then imports the application,
and prints what would be served.  It exits 0 when all is well and 1 with
the problems otherwise, so packagers can run it before a (re)start.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import stat
import sys
from typing import Sequence, TextIO

from backtracweb import version_line
from backtracweb.config.apps import describe_application, interface_of, load_application
from backtracweb.config.settings import Config, load_config, summary
from backtracweb.config.spec import readable_endpoint, tcp_address
from backtracweb.errors import AppLoadError, ConfigError


def check(path: str, out: TextIO, err: TextIO, show_sources: bool = False) -> int:
    """Validate the file and import its application; return the exit code."""
    try:
        config = load_config(path)
        application = load_application(config.app_loader, config.app, config.environment)
    except (ConfigError, AppLoadError) as e:
        print(e, file=err)
        return 1
    print(version_line(), file=out)
    print(summary(config, with_sources=show_sources), file=out)
    print(f"application: {describe_application(application)} imported "
          f"({interface_of(application).upper()})", file=out)
    for warning in listen_warnings(config) + env_file_warnings(config) + \
            single_process_warnings(config) + asgi_warnings(config):
        print(f"warning: {warning}", file=out)
    return 0


WORKER_ONLY = ("start_timeout", "worker_timeout", "max_requests", "max_requests_jitter",
               "max_memory")
"""[server] keys the supervisor of several workers applies, and nothing else."""


def single_process_warnings(config: Config) -> list[str]:
    """Settings made in the file for worker processes, when there is one process."""
    if config["server"]["workers"] > 1:
        return []
    # An ASGI application's lifespan startup has start_timeout too.
    asgi = ("start_timeout",) if config.app["interface"] == "asgi" else ()
    return [f"[server] {key} is set but applies only with workers = 2 or more"
            for key in WORKER_ONLY if ("server", key) in config.sources and key not in asgi]


def asgi_warnings(config: Config) -> list[str]:
    """Settings made in the file that an ASGI application does not use."""
    if config.app["interface"] != "asgi":
        return []
    return [f"[threadpool] {key} is set but applies only with [app] interface = wsgi (an ASGI "
            "application runs on the event loop)"
            for key in ("min", "max") if ("threadpool", key) in config.sources]


def env_file_warnings(config: Config) -> list[str]:
    """The environment file, when every user may read the secrets in it."""
    path = config.app["env_file"]
    if path == "off":
        return []
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return []  # gone since it was read: nothing left to warn about
    if not mode & stat.S_IROTH:
        return []
    return [f"[app] env_file {path} is readable by every user (mode {mode:04o}): it holds "
            "the application's secrets; chmod o-r it"]


def listen_warnings(config: Config) -> list[str]:
    """
    The TCP addresses of the file that something already listens on: the
    daemon would fail there.  A warning, not a problem: the running server
    a reload is checked for holds them too.
    """
    warnings = []
    for description in config.listen:
        address = tcp_address(description)
        if address is None:
            continue
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As Twisted binds: SO_REUSEADDR, so a port in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    shown = readable_endpoint(description)
                    warnings.append(f"{shown} is in use: twistd backtracweb cannot listen on it "
                                    "until the process holding it (this server, if it runs) "
                                    "lets it go")
    return warnings


def parser() -> argparse.ArgumentParser:
    """The command-line parser; exposed for the tests and the docs."""
    top = argparse.ArgumentParser(
        prog="backtracweb",
        description="Run Django or any WSGI site under Twisted; start it with "
        "twistd backtracweb -c FILE.",
    )
    top.add_argument("--version", action="version", version=version_line())
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
