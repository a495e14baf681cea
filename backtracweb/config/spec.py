"""
The vocabulary every backtracweb setting is declared in.

A L{Setting} is declared once, with its check, default and documentation;
the configobj configspec, the error messages, the sample file's comments,
the README's reference and C{backtracweb check}'s summary are all derived
from these declarations, so they cannot drift apart.

Checks are configobj check names.  The ones configobj lacks (paths that
must exist, Python names, IP addresses with a readable message) are plain
functions gathered by L{custom_checks}; the path checks receive the directory of the
configuration file, because a daemon's working directory is C{/} and
relative paths must mean "next to the file".
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator

from configobj.validate import ValidateError

from backtracweb.config.logformat import template_errors

REQUIRED = object()
"""Marker default: the key has no default and must appear in the file."""


class Invalid(ValidateError):
    """
    A value failed one of backtracweb's own checks.

    The message is the complete reason, phrased for an admin; configobj's
    own errors are rephrased from the setting's C{expected} text instead.
    """


@dataclass(frozen=True)
class Check:
    """
    A configobj check paired with the phrase an admin reads when it fails.

    @ivar spec: the configobj check, e.g. C{integer(min=1, max=65535)}.
    @ivar expected: what a valid value looks like, e.g. C{an integer between
        1 and 65535}; it completes "expected ..." in error messages.
    """

    spec: str
    expected: str


@dataclass(frozen=True)
class Setting:
    """
    One key of the INI file: its check, default and meaning.

    @ivar default: the value used when the key is absent, written as it
        would be in the file, or L{REQUIRED}.
    @ivar doc: one or two sentences for the sample file and the README.
    @ivar restart: whether a change takes a restart (SIGHUP leaves the
        running server as it is, and says so); the reload code and the
        docs both read this.
    """

    key: str
    check: Check
    default: Any
    doc: str
    restart: bool = False

    @property
    def meaning(self) -> str:
        """The documentation as printed: L{doc}, and whether a change takes a restart."""
        return self.doc + (" Needs a restart." if self.restart else "")

    @property
    def required(self) -> bool:
        """Whether the key must be present in the file."""
        return self.default is REQUIRED

    def configspec_line(self) -> str:
        """This setting as a line of a configobj configspec."""
        spec = self.check.spec
        if not self.required:
            inner = spec[spec.index("(") + 1 : -1] if "(" in spec else ""
            name = spec.split("(")[0]
            default = _spec_literal(self.default)
            args = f"{inner}, default={default}" if inner else f"default={default}"
            spec = f"{name}({args})"
        return f"{self.key} = {spec}"

    def default_text(self) -> str:
        """The default as an admin would write it in the file."""
        if self.required:
            return "none, required"
        if isinstance(self.default, (list, tuple)):
            return ", ".join(self.default) if self.default else "empty"
        return str(self.default)


def _spec_literal(value: Any) -> str:
    """Render a default in configspec syntax."""
    if isinstance(value, (list, tuple)):
        return "list(" + ", ".join(repr(str(v)) for v in value) + ")"
    if isinstance(value, str):
        return repr(value)
    return str(value)


# -- Check constructors -----------------------------------------------------


def integer(minimum: int, maximum: int | None = None) -> Check:
    """An integer, at least C{minimum} and at most C{maximum} when given."""
    if maximum is None:
        return Check(f"integer(min={minimum})", f"an integer of at least {minimum}")
    return Check(
        f"integer(min={minimum}, max={maximum})",
        f"an integer between {minimum} and {maximum}",
    )


def seconds(minimum: float) -> Check:
    """A duration in seconds, fractions allowed."""
    return Check(f"float(min={minimum})", f"a number of seconds of at least {minimum:g}")


def size() -> Check:
    """A size in bytes with an optional K, M or G suffix (powers of 1024)."""
    return Check("size()", "a size in bytes with an optional K, M or G suffix, such as 10M")


def networks() -> Check:
    """IP addresses and CIDR blocks, and C{unix} for peers on unix sockets."""
    return Check(
        "network_list()",
        "a comma-separated list of IP addresses or CIDR blocks such as 127.0.0.1, 10.0.0.0/8, "
        "and unix for clients on a unix socket",
    )


def endpoints() -> Check:
    """Twisted server endpoint strings."""
    return Check(
        "endpoint_list()",
        "a comma-separated list of Twisted endpoint strings such as tcp:8080 or "
        "unix:/run/backtracweb/web.sock",
    )


def log_destination() -> Check:
    """Where a log goes: a file, twistd's log, or nowhere."""
    return Check("log_destination()", "a file path, - for twistd's log, or off")


def log_format() -> Check:
    """An access-log format: C{combined} or a template of named fields."""
    return Check("log_format()", "combined, or a template of {fields} such as {client} {status}")


def url_path_or_off() -> Check:
    """A URL path for a built-in page, or C{off}."""
    return Check("url_path_or_off()", "off, or a URL path such as /-/status")


def file_patterns() -> Check:
    """Files or glob patterns, for C{include}."""
    return Check("file_patterns()", "a comma-separated list of file paths or glob patterns")


def one_of(*choices: str) -> Check:
    """One of a few fixed words."""
    quoted = ", ".join(repr(c) for c in choices)
    return Check(f"option({quoted})", " or ".join(choices))


def word() -> Check:
    """A single non-empty word, such as a loader name."""
    return Check("word()", "a single word such as django or wsgi")


def ip_address() -> Check:
    """A literal IPv4 or IPv6 address (no host names: binding is exact)."""
    return Check("ip_address()", "an IPv4 or IPv6 address such as 127.0.0.1, 0.0.0.0 or ::1")


def directory() -> Check:
    """An existing directory, relative to the configuration file's directory."""
    return Check("directory()", "an existing directory")


def directory_list() -> Check:
    """A comma-separated list of existing directories."""
    return Check("directory_list()", "a comma-separated list of existing directories")


def env_value() -> Check:
    """The value of an environment variable: one string."""
    return Check("env_value()", "any text (quoted if it contains commas)")


def env_file() -> Check:
    """A file of environment variables, or C{off}."""
    return Check("env_file()", "off, or the path of a file of NAME=value lines")


def python_module() -> Check:
    """A dotted Python module name such as C{mysite.settings}."""
    return Check("python_module()", "a dotted Python module name such as mysite.settings")


def python_object() -> Check:
    """A C{module:attribute} reference to a Python object."""
    return Check(
        "python_object()",
        "module:attribute such as mysite.wsgi:application (the attribute defaults to application)",
    )


# -- backtracweb's own check functions --------------------------------------


def _single(value: Any) -> str:
    """
    Insist on one string: configobj turns C{a, b} into a list, which for a
    single-valued key is almost always an unquoted comma.
    """
    if isinstance(value, list):
        raise Invalid("expected a single value, got a list (quote values that contain commas)")
    return value


def check_word(value: Any) -> str:
    """configobj check C{word}: one non-empty token without spaces."""
    value = _single(value).strip()
    if not value or any(c.isspace() for c in value):
        raise Invalid(f"expected {word().expected}")
    return value


def check_ip_address(value: Any) -> str:
    """configobj check C{ip_address}: a literal address, returned normalised."""
    value = _single(value)
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise Invalid(f"expected {ip_address().expected}") from None


def _resolve_directory(value: str, base: str) -> str:
    """Resolve one path against C{base} and insist that it is a directory."""
    value = value.strip()
    if not value:
        raise Invalid(f"expected {directory().expected}, got an empty path")
    path = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
    if not os.path.exists(path):
        raise Invalid(f"directory {path} does not exist")
    if not os.path.isdir(path):
        raise Invalid(f"{path} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise Invalid(f"directory {path} is not readable")
    return path


def check_directory(value: Any, *, base: str) -> str:
    """configobj check C{directory}: an existing directory, made absolute."""
    return _resolve_directory(_single(value), base)


def check_directory_list(value: Any, *, base: str) -> tuple[str, ...]:
    """configobj check C{directory_list}: existing directories, made absolute."""
    values = value if isinstance(value, list) else [value]
    return tuple(_resolve_directory(v, base) for v in values if v.strip())


def check_env_value(value: Any) -> str:
    """configobj check C{env_value}: any one string, kept as written."""
    return _single(value)


def check_env_file(value: Any, *, base: str) -> str:
    """
    configobj check C{env_file}: C{off} or a path, made absolute.  The file
    is read after validation (L{backtracweb.config.environment.read_env_file}).
    """
    value = _single(value).strip()
    if value == "off":
        return value
    if not value:
        raise Invalid(f"expected {env_file().expected}")
    path = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
    if os.path.isdir(path):
        raise Invalid(f"{path} is a directory; expected a file of NAME=value lines")
    return path


def _is_dotted_name(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def check_python_module(value: Any) -> str:
    """configobj check C{python_module}: syntax only; importing comes later."""
    value = _single(value).strip()
    if not _is_dotted_name(value):
        raise Invalid(f"expected {python_module().expected}")
    return value


def check_python_object(value: Any) -> str:
    """configobj check C{python_object}: C{module[:attr.attr]}, syntax only."""
    value = _single(value).strip()
    module, _, attribute = value.partition(":")
    if not _is_dotted_name(module) or (value.count(":") and not _is_dotted_name(attribute)):
        raise Invalid(f"expected {python_object().expected}")
    return value


_SIZE = re.compile(r"^(\d+)\s*([KMG]?)i?B?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def check_size(value: Any) -> int:
    """configobj check C{size}: C{10M} is 10485760."""
    match = _SIZE.match(_single(value).strip())
    if not match:
        raise Invalid(f"expected {size().expected}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


def _as_list(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v.strip() for v in values if v.strip()]


def check_network_list(value: Any) -> tuple[str, ...]:
    """configobj check C{network_list}: normalised networks, as strings."""
    result = []
    for item in _as_list(value):
        if item == "unix":
            result.append(item)
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise Invalid(f"{item!r} is not an IP address or CIDR block; expected "
                          f"{networks().expected}") from None
        result.append(item)
    return tuple(result)


# An IPv6 address as the value of interface=, up to the next ":name=".
_IPV6_CHAR = r"(?:[0-9A-Fa-f.]|:(?![A-Za-z_]+=))"
_IPV6_INTERFACE = re.compile(rf"(interface=)({_IPV6_CHAR}*:(?![A-Za-z_]+=){_IPV6_CHAR}*)")


def _escape_ipv6_interface(endpoint: str) -> str:
    """
    Let admins write C{tcp:8080:interface=::1}: Twisted's endpoint syntax
    separates parameters with colons, so an IPv6 address needs them escaped.
    """
    return _IPV6_INTERFACE.sub(lambda m: m.group(1) + m.group(2).replace(":", "\\:"), endpoint)


# Endpoint parameters that name files, by endpoint type.
_ENDPOINT_PATHS = {"ssl": ("privateKey", "certKey", "extraCertChain", "dhParameters")}


def _endpoint_fields(endpoint: str) -> list[str]:
    """The type and parameters of an endpoint string (colons escaped by \\ kept)."""
    return re.split(r"(?<!\\):", endpoint)


def _file_parameters(fields: list[str]) -> Iterator[tuple[int, str, str]]:
    """(index, name, path as written) of each of the endpoint's parameters naming a file."""
    names = _ENDPOINT_PATHS.get(fields[0].strip(), ())
    for index, field in enumerate(fields[1:], start=1):
        name, equals, path = field.partition("=")
        if equals and name in names:
            yield index, name, path


def tcp_address(description: str) -> tuple[str, int] | None:
    """The (interface, port) of a C{tcp:} endpoint string, else None."""
    parts = description.replace("\\:", "\0").split(":")
    if parts[0] not in ("tcp", "tcp6") or len(parts) < 2 or not parts[1].isdigit():
        return None
    options = dict(part.split("=", 1) for part in parts[2:] if "=" in part)
    default = "::" if parts[0] == "tcp6" else "0.0.0.0"
    return options.get("interface", default).replace("\0", ":"), int(parts[1])


def readable_endpoint(description: str) -> str:
    """C{tcp:8080:interface=127.0.0.1} as C{127.0.0.1:8080}; others as written."""
    address = tcp_address(description)
    if address is None:
        return description
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def endpoint_files(endpoint: str) -> dict[str, str]:
    """
    The files an endpoint reads when it is parsed (a TLS key and
    certificates), by parameter name.
    """
    return {name: re.sub(r"\\(.)", r"\1", path)  # Twisted's escapes undone
            for _, name, path in _file_parameters(_endpoint_fields(endpoint))}


def with_endpoint_files(endpoint: str, files: dict[str, str]) -> str:
    """The endpoint string reading the files given by parameter name instead."""
    fields = _endpoint_fields(endpoint)
    for index, name, _ in _file_parameters(fields):
        if name in files:
            fields[index] = f"{name}={files[name]}"
    return ":".join(fields)


def _absolute_endpoint(endpoint: str, base: str) -> str:
    """
    The endpoint string with relative file paths (a unix socket, TLS keys and
    certificates) resolved against C{base}, like every path in the file.
    """
    fields = _endpoint_fields(endpoint)

    def absolute(path: str) -> str:
        return path if path.startswith("/") else os.path.join(base, path)

    if fields[0].strip() == "unix" and len(fields) > 1 and "=" not in fields[1]:
        fields[1] = absolute(fields[1])
    for index, name, path in _file_parameters(fields):
        fields[index] = f"{name}={absolute(path)}"
    return ":".join(fields)


def check_endpoint_list(value: Any, *, base: str,
                        in_use: Collection[str] = ()) -> tuple[str, ...]:
    """
    configobj check C{endpoint_list}: each string must parse as a Twisted
    server endpoint.  Parsing uses a memory reactor: nothing is bound.

    Endpoints C{in_use} (bound by the running server) are taken as they
    are: parsing an ssl: endpoint reads its key, which a server that has
    dropped privileges may no longer read, and a reload does not rebind.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    result = []
    for given in _as_list(value):
        item = _absolute_endpoint(_escape_ipv6_interface(given), base)
        if item in in_use:
            result.append(item)
            continue
        try:
            serverFromString(MemoryReactor(), item)
        except Exception as e:
            hint = ""
            if isinstance(e, ImportError) and "OpenSSL" in str(e):
                hint = "; TLS needs pyOpenSSL: pip install 'backtracweb[tls]'"
            if item.startswith("systemd:") and isinstance(e, IndexError):
                # Well formed; no socket passed to this process.  The daemon
                # says so when it starts; `backtracweb check` (run by
                # ExecStartPre=, which gets no sockets) must accept it.
                result.append(item)
                continue
            raise Invalid(f"{given!r} is not a usable Twisted endpoint: "
                          f"{type(e).__name__}: {e}{hint}") from None
        result.append(item)
    return tuple(result)


def check_log_destination(value: Any, *, base: str) -> str:
    """configobj check C{log_destination}: C{off}, C{-}, or a file in an existing directory."""
    value = _single(value).strip()
    if value in ("off", "-"):
        return value
    if not value:
        raise Invalid(f"expected {log_destination().expected}")
    path = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
    if os.path.isdir(path):
        raise Invalid(f"{path} is a directory; expected a file path")
    if not os.path.isdir(os.path.dirname(path)):
        raise Invalid(f"directory {os.path.dirname(path)} does not exist")
    return path


def check_log_format(value: Any) -> str:
    """configobj check C{log_format}: C{combined} or a valid template."""
    value = value if isinstance(value, str) else ", ".join(value)
    if value.strip() == "combined":
        return "combined"
    problem = template_errors(value)
    if problem:
        raise Invalid(problem)
    return value


def check_url_path_or_off(value: Any) -> str:
    """configobj check C{url_path_or_off}."""
    value = _single(value).strip()
    if value == "off":
        return value
    segments = value.split("/")[1:]
    if not value.startswith("/") or value == "/" or any(s in ("", ".", "..") for s in segments):
        raise Invalid(f"expected {url_path_or_off().expected}")
    if any(c in value for c in "?#%\\ "):
        raise Invalid(f"expected {url_path_or_off().expected}, without ?, #, %, \\ or spaces")
    return value


def check_file_patterns(value: Any, *, base: str) -> tuple[str, ...]:
    """configobj check C{file_patterns}: patterns made absolute (matching is done later)."""
    return tuple(os.path.normpath(os.path.join(base, os.path.expanduser(v))) for v in _as_list(value))


def custom_checks(base: str, endpoints_in_use: Collection[str] = ()
                  ) -> dict[str, Callable[..., Any]]:
    """
    The check functions configobj lacks, for a file in directory C{base}
    (and a running server's endpoints, see L{check_endpoint_list}).
    """

    def bind(function: Callable[..., Any]) -> Callable[..., Any]:
        return lambda value: function(value, base=base)

    return {
        "word": check_word,
        "ip_address": check_ip_address,
        "directory": bind(check_directory),
        "directory_list": bind(check_directory_list),
        "env_value": check_env_value,
        "env_file": bind(check_env_file),
        "python_module": check_python_module,
        "python_object": check_python_object,
        "size": check_size,
        "network_list": check_network_list,
        "endpoint_list": lambda value: check_endpoint_list(value, base=base,
                                                           in_use=endpoints_in_use),
        "log_destination": bind(check_log_destination),
        "log_format": check_log_format,
        "url_path_or_off": check_url_path_or_off,
        "file_patterns": bind(check_file_patterns),
    }
