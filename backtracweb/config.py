"""
Read and validate the INI file that describes a backtracweb site.

The settings are declared once, in L{SECTIONS} (plus the keys each app
loader declares); the configobj configspec is generated from them and
configobj's L{Validator} checks the file against it.  Every problem is
collected and reported together as a L{ConfigError}, one line each naming
the file, section, key, value and what was expected.

Nothing here imports the application, Django or the reactor, or starts a
thread: it runs in twistd's option parsing, before the daemon forks.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from configobj import ConfigObj, ConfigObjError, Section, flatten_errors, get_extra_values
from configobj.validate import ValidateError, Validator

from backtracweb.apps import AppLoader, available_loaders, find_module, loader_settings
from backtracweb.errors import AppLoadError, ConfigError
from backtracweb.spec import (
    Check,
    Invalid,
    Setting,
    custom_checks,
    directory,
    directory_list,
    integer,
    ip_address,
    word,
)

DEFAULT_LOADER = "django"

SECTIONS: Mapping[str, tuple[Setting, ...]] = MappingProxyType(
    {
        "server": (
            Setting("port", integer(1, 65535), 8080, "TCP port to listen on."),
            Setting(
                "interface",
                ip_address(),
                "127.0.0.1",
                "Address to bind: 0.0.0.0 for every IPv4 address, :: for every IPv6 one.",
            ),
        ),
        "threadpool": (
            Setting(
                "min",
                integer(0),
                2,
                "Worker threads kept running for the application, started after "
                "the daemon forks.",
            ),
            Setting(
                "max",
                integer(1),
                10,
                "Most worker threads, so most requests the application handles at "
                "once; at least min.",
            ),
        ),
        "app": (
            Setting(
                "loader",
                word(),
                DEFAULT_LOADER,
                "How the application is loaded: django, wsgi, or a loader "
                "registered in the entry-point group backtracweb.loaders.",
            ),
            Setting(
                "pythonpath",
                directory_list(),
                (),
                "Directories put first on sys.path before the application is imported.",
            ),
        ),
    }
)
"""Every fixed section and its settings, in the order the sample file shows them."""

STATIC_SECTION = "static"
STATIC_CHECK: Check = directory()
STATIC_DOC = (
    "URL prefix = directory, one line per mapping. Files under the directory are "
    "served at the prefix; every other path goes to the application. Prefixes match "
    "whole path segments and the longest one wins."
)

SECTION_DOCS: Mapping[str, str] = MappingProxyType(
    {
        "server": "Where to listen.",
        "threadpool": "The threads the WSGI application runs in.",
        "app": "The WSGI application. Keys besides loader and pythonpath belong to the loader.",
        STATIC_SECTION: STATIC_DOC,
    }
)


@dataclass(frozen=True)
class StaticMapping:
    """A URL prefix served from a directory of files."""

    prefix: str
    directory: str

    @property
    def segments(self) -> tuple[str, ...]:
        """The prefix's path segments: C{/a/b} is C{("a", "b")}."""
        return tuple(self.prefix.strip("/").split("/"))


@dataclass(frozen=True)
class Config:
    """
    A validated configuration: plain values, absolute paths.

    @ivar path: the absolute path of the file it was read from.
    @ivar values: every setting by section and key, defaults filled in, in
        declaration order.
    @ivar defaulted: the C{(section, key)} pairs the file did not set.
    @ivar app_loader: the loader named by C{[app] loader}.
    """

    path: str
    values: Mapping[str, Mapping[str, Any]]
    defaulted: frozenset[tuple[str, str]]
    static: tuple[StaticMapping, ...]
    app_loader: AppLoader

    @property
    def port(self) -> int:
        return self.values["server"]["port"]

    @property
    def interface(self) -> str:
        return self.values["server"]["interface"]

    @property
    def min_threads(self) -> int:
        return self.values["threadpool"]["min"]

    @property
    def max_threads(self) -> int:
        return self.values["threadpool"]["max"]

    @property
    def app(self) -> Mapping[str, Any]:
        """The C{[app]} section, as handed to the app loader."""
        return self.values["app"]

    @property
    def url(self) -> str:
        """Where the site can be reached, for people."""
        host = f"[{self.interface}]" if ":" in self.interface else self.interface
        return f"http://{host}:{self.port}/"


def configspec(app_settings: Iterable[Setting] = ()) -> list[str]:
    """
    The configobj configspec, with the chosen loader's C{[app]} keys.
    """
    lines: list[str] = []
    for section, settings in SECTIONS.items():
        lines.append(f"[{section}]")
        extra = tuple(app_settings) if section == "app" else ()
        lines.extend(setting.configspec_line() for setting in (*settings, *extra))
    lines.append(f"[{STATIC_SECTION}]")
    lines.append(f"__many__ = {STATIC_CHECK.spec}")
    return lines


def load_config(path: str, loaders: Mapping[str, AppLoader] | None = None) -> Config:
    """
    Read, validate and resolve the configuration file at C{path}.

    @param loaders: the app loaders by name; by default the built-in ones
        and those registered as entry points.
    @raise ConfigError: listing every problem found.
    """
    path = os.path.abspath(path)
    problems = _Problems(path)

    if loaders is None:
        try:
            loaders = available_loaders()
        except AppLoadError as e:
            problems.add(str(e))
            loaders = {}

    lines = _read(path)
    loader_name, loader = _choose_loader(_parse(path, lines, None), loaders, problems)
    app_settings = loader_settings(loader) if loader else ()
    parsed = _parse(path, lines, configspec(app_settings))

    validator = Validator(custom_checks(os.path.dirname(path)))
    result = parsed.validate(validator, preserve_errors=True)
    expected = _expected_by_key(app_settings)
    failed = set()
    for sections, key, error in flatten_errors(parsed, result):
        # A section written as a key comes back as ([], name).
        failed.add(("/".join(sections), key) if sections else (key, None))
        problems.add(_describe_error(parsed, sections, key, error, expected, loader_name))
    for sections, name in get_extra_values(parsed):
        if sections == ("app",) and loader is None:
            continue  # Its keys are unknowable; the loader error says why.
        problems.add(_describe_extra(parsed, sections, name, loader_name))

    # Rules that span keys, checked whenever the keys they read are valid.
    if not failed & {("threadpool", "min"), ("threadpool", "max"), ("threadpool", None)}:
        _check_threadpool(parsed, problems)
    static = () if (STATIC_SECTION, None) in failed else _static_mappings(parsed, problems)
    if loader is not None and not any(section == "app" for section, _ in failed):
        _check_modules(parsed, app_settings, problems)
    problems.raise_if_any()

    values = {
        section: MappingProxyType({s.key: parsed[section][s.key] for s in settings})
        for section, settings in SECTIONS.items()
    }
    values["app"] = MappingProxyType(
        {**values["app"], **{s.key: parsed["app"][s.key] for s in app_settings}}
    )
    defaulted = frozenset(
        (section, key) for section in values for key in parsed[section].defaults
    )
    assert loader is not None
    return Config(path, MappingProxyType(values), defaulted, static, loader)


class _Problems:
    """Collects problem lines for one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, text: str, line: int | None = None) -> None:
        where = self.path if line is None else f"{self.path}, line {line}"
        self.lines.append(f"{where}: {text}")

    def __bool__(self) -> bool:
        return bool(self.lines)

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(self.lines)


def _read(path: str) -> list[str]:
    """The file's lines; unreadable files are a L{ConfigError}."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the configuration file: {e.strerror}"]) from None
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise ConfigError(
            [f"{path}: the configuration file is not UTF-8 text (bad byte at offset {e.start})"]
        ) from None


# configobj's parse errors, rephrased; each message is matched by its start.
_PARSE_ERRORS = (
    ("Invalid line", "expected key = value, a [section] header or a # comment"),
    ("Parse error in value", "the value cannot be parsed (check its quotes)"),
    ("Parse error in multiline value", "the multi-line value cannot be parsed (check its triple quotes)"),
    ("Duplicate keyword name", "this key is already set earlier in its section"),
    ("Duplicate section name", "this section already appears earlier in the file"),
    ("Cannot compute the section depth", "mismatched brackets in the section header"),
    ("Cannot compute nesting level", "mismatched brackets in the section header"),
    ("Section too nested", "a subsection must be nested one level below its parent"),
)


def _parse(path: str, lines: list[str], spec: list[str] | None) -> ConfigObj:
    """Parse the file's lines with configobj; malformed lines raise."""
    try:
        return ConfigObj(lines, configspec=spec, interpolation=False)
    except ConfigObjError as e:
        errors = getattr(e, "errors", None) or [e]
        raise ConfigError([_describe_parse_error(path, error) for error in errors]) from None


def _describe_parse_error(path: str, error: ConfigObjError) -> str:
    message = str(error)
    reason = next((text for start, text in _PARSE_ERRORS if message.startswith(start)), message)
    return f"{path}, line {error.line_number}: {reason}: {error.line.strip()!r}"


def _choose_loader(
    raw: ConfigObj, loaders: Mapping[str, AppLoader], problems: _Problems
) -> tuple[str, AppLoader | None]:
    """Find the loader named in C{[app]}, whose keys the spec must include."""
    app = raw.get("app")
    name = app.get("loader", DEFAULT_LOADER) if isinstance(app, Section) else DEFAULT_LOADER
    if not isinstance(name, str):
        return str(name), None  # Validation reports the list itself.
    loader = loaders.get(name.strip())
    if loader is None and name.strip():
        known = ", ".join(sorted(loaders)) or "none"
        problems.add(f"[app] loader = {name!r}: unknown loader{_did_you_mean(name, loaders)}; "
                     f"known loaders: {known}")
    return name.strip(), loader


def _expected_by_key(app_settings: Iterable[Setting]) -> dict[tuple[str, str], Setting]:
    table = {(section, s.key): s for section, settings in SECTIONS.items() for s in settings}
    table.update({("app", s.key): s for s in app_settings})
    return table


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(value)
    return repr(value)


def _describe_error(
    parsed: ConfigObj,
    sections: list[str],
    key: str | None,
    error: Any,
    settings: Mapping[tuple[str, str], Setting],
    loader_name: str,
) -> str:
    """One problem line for a configobj validation failure."""
    section = "/".join(sections)
    if key is None or not sections:
        name = key or section
        return f"{name} is written as a key, but it is a section: write [{name}] on a line of its own"
    setting = settings.get((section, key))
    check = setting.check if setting else STATIC_CHECK
    if error is False:
        needed = f"; required when loader = {loader_name}" if section == "app" else ""
        return f"[{section}] {key} is missing: expected {check.expected}{needed}"
    value = _format_value(parsed[section][key])
    if isinstance(error, Invalid):
        return f"[{section}] {key} = {value}: {error}"
    if isinstance(error, ValidateError):
        if isinstance(parsed[section][key], list):
            return (f"[{section}] {key} = {value}: expected {check.expected} "
                    "(quote values that contain commas)")
        return f"[{section}] {key} = {value}: expected {check.expected}"
    raise error  # A bug in a check function, not in the file.


def _describe_extra(parsed: ConfigObj, sections: tuple[str, ...], name: str, loader: str) -> str:
    """One problem line for a section or key the configspec does not know."""
    container = parsed
    for section in sections:
        container = container[section]
    if not sections:
        if isinstance(container[name], Section):
            known = [*SECTIONS, STATIC_SECTION]
            return (f"[{name}] is not a known section{_did_you_mean(name, known)}; "
                    f"known sections: {', '.join(known)}")
        return (f"{name} = {_format_value(container[name])} is outside any section; "
                "put it under the [section] it belongs to")
    section = "/".join(sections)
    known = [k for k in parsed.configspec[section].scalars if k != "__many__"]
    if isinstance(container[name], Section):
        return f"[{section}] has an unexpected subsection [[{name}]]"
    for_loader = f" with loader = {loader}" if section == "app" else ""
    return (f"[{section}] {name} is not a known key{for_loader}{_did_you_mean(name, known)}; "
            f"known keys: {', '.join(known)}")


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_threadpool(parsed: ConfigObj, problems: _Problems) -> None:
    low, high = parsed["threadpool"]["min"], parsed["threadpool"]["max"]
    if low > high:
        problems.add(f"[threadpool] min = {low} is greater than max = {high}; "
                     "min must not exceed max")


def _static_mappings(parsed: ConfigObj, problems: _Problems) -> tuple[StaticMapping, ...]:
    """Turn C{[static]} into mappings, rejecting prefixes that cannot match."""
    by_prefix: dict[str, str] = {}
    mappings = []
    for key, directory_path in parsed[STATIC_SECTION].items():
        prefix = "/" + key.strip().strip("/")
        segments = prefix.strip("/").split("/")
        if not key.startswith("/"):
            problems.add(f"[{STATIC_SECTION}] {key} = {directory_path!r}: "
                         "a URL prefix must start with /, e.g. /static")
        elif prefix == "/":
            problems.add(f"[{STATIC_SECTION}] {key} = {directory_path!r}: "
                         "the root path belongs to the application; use a prefix like /static")
        elif any(s in ("", ".", "..") for s in segments) or any(c in key for c in "?#%\\"):
            problems.add(f"[{STATIC_SECTION}] {key} = {directory_path!r}: a URL prefix "
                         "is plain path segments, without //, ., .., %, ?, # or \\")
        elif prefix in by_prefix:
            problems.add(f"[{STATIC_SECTION}] {key} = {directory_path!r}: the same prefix as "
                         f"{by_prefix[prefix]}; each prefix may be mapped once")
        else:
            by_prefix[prefix] = key
            mappings.append(StaticMapping(prefix, directory_path))
    return tuple(mappings)


def _check_modules(parsed: ConfigObj, app_settings: Iterable[Setting], problems: _Problems) -> None:
    """
    Check, without importing anything, that the modules the loader will
    import can be found: a typo then fails before the daemon forks.
    """
    app = parsed["app"]
    for setting in app_settings:
        if setting.check.spec.split("(")[0] not in ("python_module", "python_object"):
            continue
        module = app[setting.key].partition(":")[0]
        reason = find_module(module, app["pythonpath"])
        if reason:
            problems.add(f"[app] {setting.key} = {app[setting.key]!r}: {reason}; "
                         f"pythonpath is {', '.join(app['pythonpath']) or 'empty'}")


def summary(config: Config) -> str:
    """
    What the configuration would serve, one setting a line, for
    C{backtracweb check}: every declared key with its effective value.
    """
    lines = [f"{config.path}: configuration is valid", f"serving {config.url}"]
    for section, values in config.values.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            text = ", ".join(value) if isinstance(value, tuple) else str(value)
            default = "  (default)" if (section, key) in config.defaulted else ""
            lines.append(f"  {key} = {text or '(empty)'}{default}")
    lines.append(f"[{STATIC_SECTION}]")
    for mapping in config.static:
        lines.append(f"  {mapping.prefix} = {mapping.directory}")
    if not config.static:
        lines.append("  (no static mappings)")
    return "\n".join(lines)
