"""
The environment variables the application is given: C{[env]} and the file
named by C{[app] env_file}, as gunicorn's C{raw_env} and uWSGI's C{env}
give them, so C{SECRET_KEY} and friends need no wrapper script.

The file is read when the configuration is loaded: by twistd before it
forks and drops privileges (C{--uid}), so it may be readable by root only.
The variables are set in C{os.environ} just before the application is
imported (L{backtracweb.config.apps.load_application}), in the daemon, after the
fork.  Nothing here is ever printed unmasked (L{shown}).
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
"""What a variable's name may be: a C identifier, as a shell and systemd take it."""

REFUSED = {
    "DJANGO_SETTINGS_MODULE": "set it as [app] DJANGO_SETTINGS_MODULE, which the django "
                              "loader sets in the environment",
    "PYTHONPATH": "use [app] pythonpath: Python reads the variable only when it starts",
}
"""Names that would be ignored or fight another key, with what to do instead."""

SECRET = re.compile(r"SECRET|PASS|TOKEN|KEY|CREDENTIAL|PRIVATE|AUTH|SALT", re.IGNORECASE)
"""Names whose values C{backtracweb check} and the logs never show."""
MASK = "********"


def name_problem(name: str) -> str | None:
    """Why C{name} cannot be a variable set for the application, or None."""
    if not NAME.match(name):
        return (f"{name!r} is not a valid variable name: expected letters, digits and _, "
                "not starting with a digit")
    if name in REFUSED:
        return f"{name} cannot be set here: {REFUSED[name]}"
    return None


def shown(name: str, value: str) -> str:
    """C{value} as it may be printed: masked when C{name} looks like a secret's."""
    return MASK if SECRET.search(name) else value


class EnvFileError(Exception):
    """The environment file cannot be read or has lines that are not variables."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_env_file(path: str) -> dict[str, str]:
    """
    The variables of a systemd-style environment file: C{NAME=value} lines;
    blank lines and lines starting with C{#} or C{;} are ignored; a value in
    single quotes is taken as written, in double quotes a backslash escapes
    the next character; unquoted, it ends at the end of the line, with
    surrounding spaces dropped.

    @raise EnvFileError: the file cannot be read (naming why), or one
        problem per line that is not a variable (naming the line).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise EnvFileError([f"cannot read {path}: {e.strerror}"]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise EnvFileError([f"{path} is not UTF-8 text (bad byte at offset {e.start})"]) from None
    variables: dict[str, str] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        try:
            name, value = _variable(stripped)
        except ValueError as e:
            problems.append(f"{path}, line {number}: {e}")
            continue
        if name in variables:
            problems.append(f"{path}, line {number}: {name} is already set on an earlier line")
        variables[name] = value
    if problems:
        raise EnvFileError(problems)
    return variables


def _variable(line: str) -> tuple[str, str]:
    """(name, value) of one C{NAME=value} line; ValueError saying what is wrong."""
    name, equals, rest = line.partition("=")
    name = name.strip()
    if not equals:
        # The line itself is not quoted: it may be a secret pasted alone.
        raise ValueError("expected NAME=value, a blank line or a # comment")
    if name.startswith("export "):
        raise ValueError("expected NAME=value without export (a systemd environment file "
                         "is not a shell script)")
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    rest = rest.strip()
    if not rest or rest[0] not in "'\"":
        return name, rest
    quote, value, escaped = rest[0], [], False
    for index, char in enumerate(rest[1:], start=1):
        if escaped:
            value.append(char)
            escaped = False
        elif char == "\\" and quote == '"':
            escaped = True
        elif char == quote:
            if rest[index + 1:].strip():
                raise ValueError(f"{name}: text after the closing {quote}")
            return name, "".join(value)
        else:
            value.append(char)
    raise ValueError(f"{name}: the value's {quote} is not closed on its line")

