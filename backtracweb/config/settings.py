"""
Read and validate the INI file that describes a backtracweb site.

The settings are declared once, in L{ROOT_SETTINGS} and L{SECTIONS} (plus
the keys each app loader declares); the configobj configspec is generated
from them and configobj's L{Validator} checks the file against it.  Every
problem is collected and reported together as a L{ConfigError}, one line
each naming the file, section, key, value and what was expected.

A file may C{include} others (e.g. C{/etc/backtrac.d/*.ini}); they are
merged in sorted order, later files winning, and every value remembers the
file it came from, for error messages and C{backtracweb check --print}.

Nothing here imports the application, Django or the reactor, or starts a
thread: it runs in twistd's option parsing, before the daemon forks.
"""

from __future__ import annotations

import difflib
import glob
import os
import time
from dataclasses import dataclass, field
from types import MappingProxyType, SimpleNamespace
from typing import Any, Iterable, Mapping

from configobj import ConfigObj, ConfigObjError, Section, flatten_errors, get_extra_values
from configobj.validate import ValidateError, Validator

from backtracweb.config import environment
from backtracweb.config.apps import (
    INTERFACES, AppLoader, available_loaders, find_module, loader_settings,
)
from backtracweb.config.spec import (
    Check, Invalid, Setting, custom_checks, directory, directory_list, endpoints, env_file,
    env_value, file_patterns, integer, ip_address, log_destination, log_format, networks, one_of,
    seconds, size, url_path_or_off, word,
)
from backtracweb.errors import AppLoadError, ConfigError

DEFAULT_LOADER = "django"

MOST_WORKERS = 64
"""The most worker processes, whether configured or added with SIGTTIN."""

ROOT_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "include",
        file_patterns(),
        (),
        "Further files merged into this one, in sorted order, later files winning; "
        "for packagers' and admins' drop-ins such as /etc/backtrac.d/*.ini. Written "
        "before the first section.",
    ),
)
"""Keys that stand before any section."""

SECTIONS: Mapping[str, tuple[Setting, ...]] = MappingProxyType(
    {
        "server": (
            Setting("port", integer(1, 65535), 8080, "TCP port to listen on.", restart=True),
            Setting(
                "interface",
                ip_address(),
                "127.0.0.1",
                "Address to bind: 0.0.0.0 for every IPv4 address, :: for every IPv6 one.",
                restart=True,
            ),
            Setting(
                "listen",
                endpoints(),
                (),
                "Instead of port and interface: Twisted endpoints to listen on, e.g. "
                "tcp:8080:interface=::1, ssl:8443:privateKey=/etc/ssl/key.pem:certKey="
                "/etc/ssl/cert.pem, unix:/run/backtracweb/web.sock:mode=660, or "
                "systemd:domain=INET:index=0 for socket activation.",
                restart=True,
            ),
            Setting(
                "workers",
                integer(1, MOST_WORKERS),
                1,
                "Worker processes serving the site, each with its own thread pool, "
                "sharing the listening sockets; the twistd process supervises them "
                "(restarts one that dies or hangs, passes on signals; SIGTTIN adds a "
                "worker and SIGTTOU removes one while it runs). About one per CPU core.",
                restart=True,
            ),
            Setting(
                "cpu_affinity",
                one_of("auto", "off"),
                "auto",
                "With several workers: auto keeps each worker on one CPU of those "
                "the daemon may use, in turn (a Python process whose threads move "
                "between CPUs pays for it at every hand-over of the GIL); off "
                "leaves it to the kernel.",
                restart=True,
            ),
            Setting(
                "cpu_scheduling",
                one_of("batch", "normal"),
                "batch",
                "The Linux scheduling policy of the serving threads. batch "
                "(SCHED_BATCH, as systemd's CPUSchedulingPolicy=batch) lets a thread "
                "that wakes wait for the running one to block, which saves about a "
                "tenth of the CPU time of a small request: each request wakes the "
                "event loop and a pool thread, which would otherwise preempt each "
                "other only to wait for Python's interpreter lock. normal "
                "(SCHED_OTHER) is the kernel's default.",
                restart=True,
            ),
            Setting(
                "graceful_timeout",
                seconds(0),
                30,
                "On SIGTERM, how long requests in flight may take to finish before "
                "the server exits anyway.",
            ),
            Setting(
                "start_timeout",
                seconds(1),
                60,
                "With several workers: how long a worker may take to load the "
                "application and serve. One that takes longer has its threads' stacks "
                "logged and is killed; at the daemon's first start that fails the start. "
                "With interface = asgi, also how long the application's lifespan startup "
                "may take.",
            ),
            Setting(
                "worker_timeout",
                seconds(1),
                30,
                "With several workers: how long a worker's event loop may go without "
                "answering the supervisor's heartbeat (stuck in a C extension, "
                "deadlocked, stopped) before its threads' stacks are logged and it is "
                "killed and replaced. Requests running in the thread pool do not "
                "block the heartbeat, however long they take.",
            ),
            Setting(
                "max_requests",
                integer(0),
                0,
                "With several workers: a worker that has served this many requests is "
                "replaced (its successor serves before it drains, so nothing is "
                "refused): a bound on slow leaks in the application. 0: never.",
            ),
            Setting(
                "max_requests_jitter",
                integer(0),
                0,
                "Up to this many requests added at random to each worker's max_requests, "
                "so that workers started together are not all replaced together.",
            ),
            Setting(
                "max_memory",
                size(),
                "0",
                "With several workers: a worker whose resident memory grows past this "
                "size (such as 512M) is replaced as for max_requests. 0: never.",
            ),
            Setting(
                "request_warn",
                seconds(0),
                60,
                "A request still running in the application after this many seconds "
                "is logged once, with its method, path, thread (or asyncio task) and "
                "stack, so that a hung view can be found without a debugger; 0 turns "
                "this off.",
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
                "How the application is loaded: django, wsgi (any callable named by "
                "application, WSGI or ASGI), or a loader registered in the entry-point "
                "group backtracweb.loaders.",
            ),
            Setting(
                "interface",
                one_of(*INTERFACES),
                "wsgi",
                "wsgi: the application is a WSGI callable, run in the thread pool. asgi: it "
                "is an ASGI 3 callable (Django's get_asgi_application(), for async views "
                "and streaming), run on Twisted's asyncio reactor, which twistd backtracweb "
                "installs.",
                restart=True,
            ),
            Setting(
                "pythonpath",
                directory_list(),
                (),
                "Directories put first on sys.path before the application is imported.",
            ),
            Setting(
                "env_file",
                env_file(),
                "off",
                "A file of NAME=value lines (as systemd's EnvironmentFile=) set in the "
                "application's environment with [env], for secrets kept out of this "
                "file. Read by twistd before --uid drops privileges, so it may be "
                "readable by root only; never printed.",
                restart=True,
            ),
        ),
        "log": (
            Setting(
                "access_log",
                log_destination(),
                "-",
                "Where to log each request: a file (reopened on SIGUSR1), - for "
                "twistd's log, or off.",
            ),
            Setting(
                "access_format",
                log_format(),
                "combined",
                "combined (as Apache and nginx write it) or a template of fields: "
                "{client} {time} {iso_time} {method} {path} {protocol} {host} {status} "
                "{bytes} {duration_ms} {referrer} {user_agent}.",
            ),
        ),
        "proxy": (
            Setting(
                "trusted",
                networks(),
                (),
                "Proxies whose X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host "
                "and Forwarded headers are believed; from anyone else they are ignored.",
            ),
        ),
        "limits": (
            Setting(
                "max_body",
                size(),
                "1G",
                "Largest request body accepted; a larger one gets 413 before it is read.",
            ),
            Setting(
                "max_request_line",
                size(),
                "4K",
                "Longest request line (method, target and version); a longer one gets 414.",
            ),
            Setting(
                "max_header_field",
                size(),
                "8K",
                "Longest header field (name and value); a longer one gets 431.",
            ),
            Setting(
                "max_header_bytes",
                size(),
                "64K",
                "Largest request line plus headers; a larger head gets 431.",
            ),
            Setting("max_headers", integer(1), 100,
                    "Most header fields in one request; more get 431."),
            Setting(
                "idle_timeout",
                seconds(1),
                60,
                "Seconds a connection may stay idle, or take to send a request's "
                "headers or the next part of its body, before it is closed (408 if "
                "a request had begun).",
            ),
            Setting(
                "send_timeout",
                seconds(1),
                60,
                "Seconds a client may leave a response unread (taking none of its "
                "bytes) before the connection is closed and the application's thread "
                "freed.",
            ),
            Setting(
                "max_queue",
                integer(0),
                100,
                "Requests that may wait for a busy thread pool; beyond that they get "
                "503 with Retry-After at once.",
            ),
            Setting(
                "max_message",
                size(),
                "1M",
                "With interface = asgi: largest WebSocket message accepted (all its "
                "frames, decompressed); a larger one closes the WebSocket with code 1009.",
            ),
            Setting(
                "websocket_ping",
                seconds(0),
                20,
                "With interface = asgi: seconds between two pings an open WebSocket is "
                "sent; one whose client has not answered the last ping by the next is "
                "closed. 0: no pings.",
            ),
        ),
        "status": (
            Setting(
                "path",
                url_path_or_off(),
                "off",
                "URL of the status page (JSON, or Prometheus text with Accept: "
                "text/plain or ?format=prometheus), answered without the thread pool.",
            ),
            Setting(
                "allow",
                networks(),
                ("127.0.0.1", "::1"),
                "Client addresses allowed to read the status page.",
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

ENV_SECTION = "env"
ENV_CHECK: Check = env_value()
ENV_DOC = (
    "NAME = value, one line per environment variable set for the application "
    "before it is imported, such as MYSITE_MODE = production. Values of names that look "
    "secret (SECRET, PASS, TOKEN, KEY, ...) are never printed. Needs a restart."
)
FREE_SECTIONS: Mapping[str, Check] = MappingProxyType({ENV_SECTION: ENV_CHECK,
                                                       STATIC_SECTION: STATIC_CHECK})
"""The sections whose keys are the admin's own, and the check of their values."""

SECTION_DOCS: Mapping[str, str] = MappingProxyType(
    {
        "server": "Where to listen, the worker processes and how they are watched, and how "
                  "long to wait for requests when stopping.",
        "threadpool": "The threads the WSGI application runs in.",
        "app": "The WSGI application. Keys besides loader, pythonpath and env_file "
               "belong to the loader.",
        "log": "The access log.",
        "proxy": "Reverse proxies in front of backtracweb.",
        "limits": "Protection against oversized requests, slow clients and overload.",
        "status": "A status page for health checks and monitoring.",
        ENV_SECTION: ENV_DOC,
        STATIC_SECTION: STATIC_DOC,
    }
)

RESTART_SECTIONS = frozenset({"app", ENV_SECTION})
"""Sections SIGHUP cannot change at all: the application and its environment."""
RESTART_KEYS = frozenset(
    (section, setting.key)
    for section, settings in SECTIONS.items() for setting in settings if setting.restart
)
"""
The other settings SIGHUP cannot change in a running server (the
sockets, the processes), as their declarations say.
"""


class Values(SimpleNamespace):
    """
    A section's validated values as read-only attributes, for code that
    reads them on every request (C{limits.max_body}); built from the
    declarations, so a new key needs no code to reach the server.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"settings are read-only: {name}")


def section_defaults(section: str) -> dict[str, Any]:
    """The validated defaults of C{section}'s settings (for tests and tools)."""
    parsed = ConfigObj({}, configspec=configspec(), interpolation=False)
    parsed.validate(Validator(custom_checks(os.getcwd())))
    return {s.key: parsed[section][s.key] for s in SECTIONS[section] if not s.required}


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

    @ivar path: the absolute path of the main file.
    @ivar values: every setting by section and key, defaults filled in, in
        declaration order.
    @ivar sources: the file each C{(section, key)} was set in; keys absent
        from it took their default.  Static mappings are C{("static", prefix)}.
    @ivar files: the main file, then the included ones, in merge order.
    @ivar app_loader: the loader named by C{[app] loader}.
    @ivar loaded_at: when the files were read (seconds since the epoch).
    @ivar file_environment: the variables of C{[app] env_file}, kept out of
        C{values} so that nothing prints them.
    """

    path: str
    values: Mapping[str, Mapping[str, Any]]
    sources: Mapping[tuple[str, str], str]
    static: tuple[StaticMapping, ...]
    app_loader: AppLoader
    files: tuple[str, ...] = ()
    loaded_at: float = field(default_factory=time.time)
    file_environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self.values[section]

    @property
    def app(self) -> Mapping[str, Any]:
        """The C{[app]} section, as handed to the app loader."""
        return self.values["app"]

    @property
    def environment(self) -> dict[str, str]:
        """The variables set for the application: C{[env]} and C{[app] env_file}'s."""
        return {**self.values[ENV_SECTION], **self.file_environment}

    @property
    def min_threads(self) -> int:
        return self.values["threadpool"]["min"]

    @property
    def max_threads(self) -> int:
        return self.values["threadpool"]["max"]

    @property
    def listen(self) -> tuple[str, ...]:
        """Twisted endpoint strings to listen on, from C{listen} or C{port}/C{interface}."""
        server = self.values["server"]
        if server["listen"]:
            return server["listen"]
        interface = server["interface"].replace(":", "\\:")
        return (f"tcp:{server['port']}:interface={interface}",)

    @property
    def url(self) -> str:
        """Where the site can be reached, for people (the first TCP address)."""
        server = self.values["server"]
        if server["listen"]:
            return ", ".join(server["listen"])
        interface = server["interface"]
        host = f"[{interface}]" if ":" in interface else interface
        return f"http://{host}:{server['port']}/"

    def reloadable(self, section: str) -> Values:
        """The settings of C{section} a reload may change (L{Setting.restart} false)."""
        values = self.values[section]
        return Values(**{s.key: values[s.key] for s in SECTIONS[section] if not s.restart})

    def is_default(self, section: str, key: str) -> bool:
        return (section, key) not in self.sources

    def __reduce__(self):
        # The supervisor hands its configuration to worker processes
        # (backtracweb.process.supervisor): read-only mapping views do not pickle.
        values = {section: dict(settings) for section, settings in self.values.items()}
        return _unpickle_config, (
            self.path, values, dict(self.sources), self.static, self.app_loader, self.files,
            self.loaded_at, dict(self.file_environment),
        )


def _unpickle_config(path, values, sources, static, app_loader, files, loaded_at,
                     file_environment) -> Config:
    return Config(
        path=path,
        values=MappingProxyType({k: MappingProxyType(v) for k, v in values.items()}),
        sources=MappingProxyType(sources),
        static=static,
        app_loader=app_loader,
        files=files,
        loaded_at=loaded_at,
        file_environment=MappingProxyType(file_environment),
    )


def configspec(app_settings: Iterable[Setting] = ()) -> list[str]:
    """The configobj configspec, with the chosen loader's C{[app]} keys."""
    lines = [setting.configspec_line() for setting in ROOT_SETTINGS]
    for section, settings in SECTIONS.items():
        lines.append(f"[{section}]")
        extra = tuple(app_settings) if section == "app" else ()
        lines.extend(setting.configspec_line() for setting in (*settings, *extra))
    for section, check in FREE_SECTIONS.items():
        lines.append(f"[{section}]")
        lines.append(f"__many__ = {check.spec}")
    return lines


def load_config(path: str, loaders: Mapping[str, AppLoader] | None = None,
                running: Config | None = None) -> Config:
    """
    Read, validate and resolve the configuration file at C{path}, with the
    files it includes.

    @param loaders: the app loaders by name; by default the built-in ones
        and those registered as entry points.
    @param running: when reloading, the configuration the server started
        with.  What it cannot change without a restart and may no longer be
        allowed to read (after C{--uid}) is taken from it, not read again:
        its listening endpoints (L{spec.check_endpoint_list}) and the
        variables of its C{env_file}.
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

    merged, sources, files = _read_with_includes(path, problems)
    loader_name, loader = _choose_loader(merged, loaders, problems, sources)
    app_settings = loader_settings(loader) if loader else ()
    parsed = ConfigObj(merged, configspec=configspec(app_settings), interpolation=False)

    endpoints_in_use = running.listen if running else ()
    validator = Validator(custom_checks(os.path.dirname(path), endpoints_in_use))
    result = parsed.validate(validator, preserve_errors=True)
    expected = _expected_by_key(app_settings)
    failed = set()
    for sections, key, error in flatten_errors(parsed, result):
        # A section written as a key comes back as ([], name).
        where = ("/".join(sections), key) if sections else (key, None)
        failed.add(where)
        text = _describe_error(parsed, sections, key, error, expected, loader_name)
        problems.add(text, sources.get(where) or sources.get(("", key)))
    for sections, name in get_extra_values(parsed):
        if sections == ("app",) and loader is None:
            continue  # Its keys are unknowable; the loader error says why.
        section = "/".join(sections)
        # A key, or else a section (recorded by its full path).
        source = sources.get((section, name)) or sources.get((f"{section}/{name}".strip("/"), None))
        problems.add(_describe_extra(parsed, sections, name, loader_name), source)

    # Rules that span keys, checked whenever the keys they read are valid.
    if not failed & {("threadpool", "min"), ("threadpool", "max"), ("threadpool", None)}:
        _check_threadpool(parsed, problems, sources)
    if not any(section == "server" for section, _ in failed):
        _check_listen(parsed, problems, sources)
    static = () if (STATIC_SECTION, None) in failed else _static_mappings(parsed, problems, sources)
    variables: dict[str, str] = {}
    file_variables: dict[str, str] = {}
    if (ENV_SECTION, None) not in failed:
        variables = _environment(parsed, problems, sources)
    if ("app", "env_file") not in failed:
        file_variables = (dict(running.file_environment) if running
                          else _file_environment(parsed, problems, sources))
        _check_both_set(variables, file_variables, parsed, problems, sources)
    if loader is not None and not any(section == "app" for section, _ in failed):
        _check_modules(parsed, app_settings, problems, sources)
    problems.raise_if_any()
    assert loader is not None

    values = {"": MappingProxyType({s.key: parsed[s.key] for s in ROOT_SETTINGS})}
    for section, settings in SECTIONS.items():
        extra = app_settings if section == "app" else ()
        values[section] = MappingProxyType(
            {s.key: parsed[section][s.key] for s in (*settings, *extra)}
        )
    values[ENV_SECTION] = MappingProxyType(variables)
    return Config(
        path=path,
        values=MappingProxyType(values),
        sources=MappingProxyType(sources),
        static=static,
        app_loader=loader,
        files=tuple(files),
        file_environment=MappingProxyType(file_variables),
    )


class _Problems:
    """Collects problem lines, each prefixed with the file it is about."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, text: str, path: str | None = None) -> None:
        self.lines.append(f"{path or self.path}: {text}")

    def extend(self, lines: Iterable[str]) -> None:
        self.lines.extend(lines)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(self.lines)


def _read_with_includes(
    path: str, problems: _Problems
) -> tuple[dict[str, Any], dict[tuple[str, str], str], list[str]]:
    """
    The main file merged with the files it includes, later files winning,
    and the file each value came from.  Unreadable or malformed files raise
    at once: nothing sensible can be said about their contents.
    """
    main = _parse(path, _read(path), None)
    files = [path]
    raw_include = main.get("include", ())
    if isinstance(raw_include, Section):
        pass  # Validation reports a section named include.
    elif raw_include:
        try:
            patterns = custom_checks(os.path.dirname(path))["file_patterns"](raw_include)
        except Invalid as e:  # pragma: no cover - file_patterns accepts any text
            problems.add(f"include = {raw_include!r}: {e}")
            patterns = ()
        for pattern in patterns:
            if glob.has_magic(pattern):
                files.extend(sorted(glob.glob(pattern)))
            elif os.path.exists(pattern):
                files.append(pattern)
            else:
                problems.add(f"include = {pattern!r}: file {pattern} does not exist")

    merged: dict[str, Any] = {}
    sources: dict[tuple[str, str], str] = {}
    errors: list[str] = []
    for index, name in enumerate(files):
        try:
            parsed = main if index == 0 else _parse(name, _read(name), None)
        except ConfigError as e:
            errors.extend(e.problems)
            continue
        if index and "include" in parsed:
            problems.add("include is only allowed in the main configuration file", name)
            del parsed["include"]
        _merge(merged, parsed, "", name, sources)
    if errors:
        raise ConfigError(problems.lines + errors)
    return merged, sources, files


def _merge(into: dict[str, Any], parsed: Section, section: str, name: str,
           sources: dict[tuple[str, str], str]) -> None:
    """Copy C{parsed} over C{into}, recording where each value came from."""
    for key, value in parsed.items():
        if isinstance(value, Section):
            target = into.get(key)
            path = f"{section}/{key}".strip("/")
            if not isinstance(target, dict):
                target = into[key] = {}
                sources.setdefault((path, None), name)
            _merge(target, value, path, name, sources)
        else:
            into[key] = value
            sources[(section, key)] = name


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
    raw: Mapping[str, Any], loaders: Mapping[str, AppLoader], problems: _Problems,
    sources: Mapping[tuple[str, str], str],
) -> tuple[str, AppLoader | None]:
    """Find the loader named in C{[app]}, whose keys the spec must include."""
    app = raw.get("app")
    name = app.get("loader", DEFAULT_LOADER) if isinstance(app, dict) else DEFAULT_LOADER
    if not isinstance(name, str):
        return str(name), None  # Validation reports the list itself.
    loader = loaders.get(name.strip())
    if loader is None and name.strip():
        known = ", ".join(sorted(loaders)) or "none"
        problems.add(f"[app] loader = {name!r}: unknown loader{_did_you_mean(name, loaders)}; "
                     f"known loaders: {known}", sources.get(("app", "loader")))
    return name.strip(), loader


def _expected_by_key(app_settings: Iterable[Setting]) -> dict[tuple[str, str], Setting]:
    table = {(section, s.key): s for section, settings in SECTIONS.items() for s in settings}
    table.update({("", s.key): s for s in ROOT_SETTINGS})
    table.update({("app", s.key): s for s in app_settings})
    return table


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(value)
    return repr(value)


def _where(section: str, key: str) -> str:
    return f"[{section}] {key}" if section else key


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
    if key is None or (not sections and (key in SECTIONS or key in FREE_SECTIONS)):
        name = key or section
        return f"{name} is written as a key, but it is a section: write [{name}] on a line of its own"
    if not sections and isinstance(parsed.get(key), Section):
        return f"[{key}] is a section, but {key} must be written as a key before the first section"
    setting = settings.get((section, key))
    check = setting.check if setting else FREE_SECTIONS[section]
    where = _where(section, key)
    if error is False:
        needed = f"; required when loader = {loader_name}" if section == "app" else ""
        if section == "app" and not parsed["app"].get("pythonpath"):
            # Nothing of a site yet, as in the installed template: say what to do.
            needed += " (set [app], and [static] for the site's files)"
        return f"{where} is missing: expected {check.expected}{needed}"
    container = parsed[section] if section else parsed
    value = _format_value(container[key])
    if isinstance(error, Invalid):
        return f"{where} = {value}: {error}"
    if isinstance(error, ValidateError):
        if isinstance(container[key], list):
            return f"{where} = {value}: expected {check.expected} (quote values that contain commas)"
        return f"{where} = {value}: expected {check.expected}"
    raise error  # A bug in a check function, not in the file.


def _describe_extra(parsed: ConfigObj, sections: tuple[str, ...], name: str, loader: str) -> str:
    """One problem line for a section or key the configspec does not know."""
    container = parsed
    for section in sections:
        container = container[section]
    if not sections:
        if isinstance(container[name], Section):
            known = [*SECTIONS, *FREE_SECTIONS]
            return (f"[{name}] is not a known section{_did_you_mean(name, known)}; "
                    f"known sections: {', '.join(known)}")
        keys = [s.key for s in ROOT_SETTINGS]
        hint = _did_you_mean(name, keys)
        return (f"{name} = {_format_value(container[name])} is outside any section{hint}; "
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


def _check_threadpool(parsed: ConfigObj, problems: _Problems, sources) -> None:
    low, high = parsed["threadpool"]["min"], parsed["threadpool"]["max"]
    if low > high:
        source = sources.get(("threadpool", "min")) or sources.get(("threadpool", "max"))
        problems.add(f"[threadpool] min = {low} is greater than max = {high}; "
                     "min must not exceed max", source)


def _check_listen(parsed: ConfigObj, problems: _Problems, sources) -> None:
    server = parsed["server"]
    explicit = [key for key in ("port", "interface") if key not in server.defaults]
    if server["listen"] and explicit:
        problems.add(
            f"[server] listen = {', '.join(server['listen'])!r} and "
            f"{' and '.join(explicit)} are both set; use either listen or port and interface",
            sources.get(("server", "listen")),
        )


def _static_mappings(parsed: ConfigObj, problems: _Problems, sources) -> tuple[StaticMapping, ...]:
    """Turn C{[static]} into mappings, rejecting prefixes that cannot match."""
    by_prefix: dict[str, str] = {}
    mappings = []
    for key, directory_path in parsed[STATIC_SECTION].items():
        prefix = "/" + key.strip().strip("/")
        segments = prefix.strip("/").split("/")
        where = f"[{STATIC_SECTION}] {key} = {directory_path!r}"
        source = sources.get((STATIC_SECTION, key))
        if not key.startswith("/"):
            problems.add(f"{where}: a URL prefix must start with /, e.g. /static", source)
        elif prefix == "/":
            problems.add(f"{where}: the root path belongs to the application; "
                         "use a prefix like /static", source)
        elif any(s in ("", ".", "..") for s in segments) or any(c in key for c in "?#%\\"):
            problems.add(f"{where}: a URL prefix is plain path segments, "
                         "without //, ., .., %, ?, # or \\", source)
        elif prefix in by_prefix:
            problems.add(f"{where}: the same prefix as {by_prefix[prefix]}; "
                         "each prefix may be mapped once", source)
        else:
            by_prefix[prefix] = key
            mappings.append(StaticMapping(prefix, directory_path))
    return tuple(mappings)


def _environment(parsed: ConfigObj, problems: _Problems, sources) -> dict[str, str]:
    """The variables of C{[env]}, rejecting names that cannot be set."""
    variables = {}
    for name, value in parsed[ENV_SECTION].items():
        problem = environment.name_problem(name)
        if problem:
            problems.add(f"[{ENV_SECTION}] {problem}", sources.get((ENV_SECTION, name)))
        else:
            variables[name] = value
    return variables


def _file_environment(parsed: ConfigObj, problems: _Problems, sources) -> dict[str, str]:
    """The variables of C{[app] env_file}, read now (as root, before C{--uid})."""
    path = parsed["app"]["env_file"]
    if path == "off":
        return {}
    try:
        return environment.read_env_file(path)
    except environment.EnvFileError as e:
        source = sources.get(("app", "env_file"))
        for problem in e.problems:
            problems.add(f"[app] env_file = {path!r}: {problem}", source)
        return {}


def _check_both_set(variables: Mapping[str, str], file_variables: Mapping[str, str],
                    parsed: ConfigObj, problems: _Problems, sources) -> None:
    """A name set in both places is a mistake: neither silently wins."""
    for name in sorted(variables.keys() & file_variables.keys()):
        problems.add(f"[{ENV_SECTION}] {name} is set here and in [app] env_file = "
                     f"{parsed['app']['env_file']!r}: set it in one of them",
                     sources.get((ENV_SECTION, name)))


def _check_modules(parsed: ConfigObj, app_settings: Iterable[Setting], problems: _Problems,
                   sources) -> None:
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
                         f"pythonpath is {', '.join(app['pythonpath']) or 'empty'}",
                         sources.get(("app", setting.key)))


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(value) or "(empty)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def summary(config: Config, with_sources: bool = False) -> str:
    """
    What the configuration would serve, one setting a line, for
    C{backtracweb check}: every declared key with its effective value, and
    with C{with_sources} the file that set it.
    """

    def origin(section: str, key: str) -> str:
        source = config.sources.get((section, key))
        if with_sources:
            return f"  ({source or 'default'})"
        return "  (default)" if source is None else ""

    lines = [f"{config.path}: configuration is valid", f"serving {config.url}"]
    if len(config.files) > 1:
        lines.append(f"files: {', '.join(config.files)}")
    for section, values in config.values.items():
        if section == ENV_SECTION:
            continue
        if section:
            lines.append(f"[{section}]")
        for key, value in values.items():
            if section or value:
                lines.append(f"  {key} = {_text(value)}{origin(section, key)}")
    lines.append(f"[{ENV_SECTION}]")
    for name, value in config.values[ENV_SECTION].items():
        lines.append(f"  {name} = {environment.shown(name, value)}{origin(ENV_SECTION, name)}")
    for name in config.file_environment:
        lines.append(f"  {name} = {environment.MASK}  (from {config['app']['env_file']})")
    if not config.environment:
        lines.append("  (no variables)")
    lines.append(f"[{STATIC_SECTION}]")
    for mapping in config.static:
        lines.append(f"  {mapping.prefix} = {mapping.directory}"
                     + (origin(STATIC_SECTION, mapping.prefix) if with_sources else ""))
    if not config.static:
        lines.append("  (no static mappings)")
    return "\n".join(lines)
