"""A request the server answers itself, with an error status, and closes."""

from __future__ import annotations


class Refused(Exception):
    """
    A request the server will not pass on: answered with C{status} and the
    connection closed.  C{why} is for the admin reading twistd's log, and
    names the rule or the C{[limits]} key that refused it.
    """

    def __init__(self, status: int, why: str) -> None:
        super().__init__(status, why)
        self.status = status
        self.why = why

    def __str__(self) -> str:
        return f"{self.why} ({self.status})"
