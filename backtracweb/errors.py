"""
The errors backtracweb reports to people.

Each carries a message written for an admin; the edges (twistd's option
parsing, C{backtracweb check}, the daemon's start-up) print the message and
exit non-zero.  A traceback means a bug in backtracweb itself.
"""

from __future__ import annotations

CANNOT_START = "backtracweb cannot start: "
"""How a fatal start-up error begins, in the log and on the terminal."""


class StartupError(Exception):
    """
    The daemon cannot start, for a reason the admin can fix.

    Raised from C{startService}, after twistd has forked: twistd relays the
    first line to the terminal and exits non-zero.
    """


class AppLoadError(StartupError):
    """The WSGI application could not be imported or is not usable."""


class ConfigError(Exception):
    """
    The configuration file is unusable; every problem found is listed.

    @ivar problems: one line per problem, each naming the file, section,
        key, value and what was expected.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems in the configuration:\n" + "\n".join(
            f"  {problem}" for problem in self.problems
        )
