"""
App loaders: how the C{[app]} section becomes a WSGI or ASGI application.

A loader is a callable that takes the validated C{[app]} section (a
mapping) and returns the application: a WSGI callable, or an ASGI 3 one
when C{[app] interface = asgi}.  It carries a C{settings}
attribute: the L{Setting}s it accepts in C{[app]} besides the common
C{loader} and C{pythonpath}, so they are validated like every other key.
The decorator L{app_loader} attaches them.

Two loaders are built in, C{django} and C{wsgi}; third parties register
more under the entry-point group C{backtracweb.loaders}.  Loaders run in
the daemon, after it has forked, inside C{startService}: importing an
application may start threads, which would not survive the fork.
Registering a loader must therefore import nothing heavy.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import traceback
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from backtracweb.config.spec import REQUIRED, Setting, python_module, python_object
from backtracweb.errors import AppLoadError

ENTRY_POINT_GROUP = "backtracweb.loaders"

INTERFACES = ("wsgi", "asgi")
"""What C{[app] interface} may say: how the server calls the application."""

WSGIApplication = Callable[..., Iterable[bytes]]
Application = Callable[..., Any]
"""A WSGI or an ASGI application."""
AppLoader = Callable[[Mapping[str, Any]], Application]


def app_loader(*settings: Setting) -> Callable[[AppLoader], AppLoader]:
    """
    Declare a function as an app loader accepting the given C{[app]} keys.
    """

    def declare(function: AppLoader) -> AppLoader:
        function.settings = settings  # type: ignore[attr-defined]
        return function

    return declare


@app_loader(
    Setting(
        "DJANGO_SETTINGS_MODULE",
        python_module(),
        REQUIRED,
        "The Django settings module, importable from pythonpath.",
    )
)
def django_loader(app: Mapping[str, Any]) -> Application:
    """
    Load a Django project through Django's own WSGI handler, or its ASGI
    handler with C{[app] interface = asgi}.

    The settings module named in the file wins over any
    C{DJANGO_SETTINGS_MODULE} in the environment: the file is the contract.
    """
    os.environ["DJANGO_SETTINGS_MODULE"] = app["DJANGO_SETTINGS_MODULE"]
    if app.get("interface") == "asgi":
        return _django_asgi_application()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def _django_asgi_application() -> Application:
    """
    The project's C{ASGI_APPLICATION} (the setting Channels' projects and
    runserver use: its C{asgi.py} routing WebSockets to consumers), else
    Django's own ASGI handler.
    """
    from django.conf import settings
    from django.core.asgi import get_asgi_application

    named = getattr(settings, "ASGI_APPLICATION", None)
    if not named:
        return get_asgi_application()
    module_name, _, attribute = named.rpartition(".")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise AppLoadError(
            f"the Django setting ASGI_APPLICATION = {named!r}: module {module_name} has no "
            f"attribute {attribute!r}") from None


@app_loader(
    Setting(
        "application",
        python_object(),
        REQUIRED,
        "The WSGI (or, with interface = asgi, ASGI) callable to serve, importable from "
        "pythonpath.",
    )
)
def wsgi_loader(app: Mapping[str, Any]) -> Application:
    """Import any WSGI or ASGI callable named as C{module:attribute}."""
    module_name, _, attribute = app["application"].partition(":")
    target: Any = importlib.import_module(module_name)
    for name in (attribute or "application").split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise AppLoadError(
                f"[app] application = {app['application']!r}: "
                f"module {module_name} has no attribute {attribute or 'application'!r}"
            ) from None
    if not callable(target):
        raise AppLoadError(
            f"[app] application = {app['application']!r}: "
            f"{type(target).__name__} object is not callable, so it is not an application"
        )
    return target


BUILTIN_LOADERS: dict[str, AppLoader] = {"django": django_loader, "wsgi": wsgi_loader}


def available_loaders() -> dict[str, AppLoader]:
    """
    Every loader by name: the built-in ones, then those registered as entry
    points.  A built-in name cannot be taken over by a third party.

    @raise AppLoadError: an entry point failed to import.
    """
    loaders = dict(BUILTIN_LOADERS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in loaders:
            continue
        try:
            loader = entry.load()
        except Exception as e:
            raise AppLoadError(
                f"app loader {entry.name!r} (entry point {entry.value}) failed to import: "
                f"{_describe_exception(e)}"
            ) from None
        loaders[entry.name] = loader
    return loaders


def loader_settings(loader: AppLoader) -> tuple[Setting, ...]:
    """The C{[app]} settings a loader declared (none if it declared none)."""
    return tuple(getattr(loader, "settings", ()))


def find_module(name: str, pythonpath: Iterable[str]) -> str | None:
    """
    Say why C{name} cannot be imported from C{pythonpath} plus C{sys.path},
    or return None if it can be found.

    Only the import system's finders are asked; no module is executed, so
    this is safe before the daemon forks.
    """
    path = [*pythonpath, *sys.path]
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        dotted = ".".join(parts[:depth])
        if dotted in sys.modules:
            search = getattr(sys.modules[dotted], "__path__", None)
        else:
            spec = importlib.machinery.PathFinder.find_spec(dotted, path)
            if spec is None:
                parent = ".".join(parts[: depth - 1])
                where = f"package {parent}" if parent else "pythonpath or sys.path"
                return f"module {dotted} not found in {where}"
            search = spec.submodule_search_locations
        if depth < len(parts):
            if search is None:
                return f"{dotted} is a module, not a package"
            path = list(search)
    return None


def load_application(loader: AppLoader, app: Mapping[str, Any],
                     environment: Mapping[str, str] = MappingProxyType({})) -> Application:
    """
    Set the application's C{environment} variables (C{[env]}, C{[app]
    env_file}), put C{[app] pythonpath} first on C{sys.path} and run the
    loader.

    @raise AppLoadError: anything went wrong, described in one paragraph
        naming the C{[app]} settings, the exception and where it was raised;
        or the application is not of C{[app] interface}.
    """
    os.environ.update(environment)
    for directory in reversed(app.get("pythonpath", ())):
        if directory in sys.path:
            sys.path.remove(directory)
        sys.path.insert(0, directory)
    try:
        application = loader(app)
    except AppLoadError:
        raise
    except Exception as e:
        # The cause comes first: twistd relays only 100 bytes to the terminal.
        settings = "".join(
            f", {s.key} = {app[s.key]!r}" for s in loader_settings(loader) if s.key in app
        )
        raise AppLoadError(
            f"{_describe_exception(e)}; while loading the application "
            f"([app] loader = {app['loader']}{settings})"
        ) from e
    if not callable(application):
        raise AppLoadError(
            f"[app] loader = {app['loader']} returned {type(application).__name__}, "
            "which is not an application"
        )
    expected, found = app.get("interface", "wsgi"), interface_of(application)
    if found != expected:
        raise AppLoadError(_MISMATCH[expected].format(name=describe_application(application)))
    return application


_MISMATCH = {
    "wsgi": "[app] interface = wsgi, but the application {name} is an ASGI application (an "
            "async callable): set [app] interface = asgi to serve it",
    "asgi": "[app] interface = asgi, but the application {name} is not an ASGI 3 application "
            "(an async callable taking scope, receive and send); it looks like WSGI: set "
            "[app] interface = wsgi, or name its ASGI counterpart",
}


def interface_of(application: Application) -> str:
    """
    C{asgi} for an ASGI 3 application (a coroutine function, or an object
    whose C{__call__} is one), else C{wsgi}.
    """
    if _is_coroutine_function(application):
        return "asgi"
    if not isinstance(application, type) and _is_coroutine_function(
            getattr(type(application), "__call__", None)):
        return "asgi"
    return "wsgi"


def _is_coroutine_function(function: object) -> bool:
    # asgiref's also knows the functions marked as coroutine functions
    # (markcoroutinefunction), as Django marks its async middleware.
    try:
        from asgiref.sync import iscoroutinefunction
    except ImportError:  # pragma: no cover - Django brings asgiref
        from inspect import iscoroutinefunction
    return iscoroutinefunction(function)


def describe_application(application: object) -> str:
    """The application as C{module.name}, for messages."""
    name = getattr(application, "__qualname__", type(application).__qualname__)
    module = getattr(application, "__module__", type(application).__module__)
    return f"{module}.{name}"


_IMPORTLIB = os.path.dirname(importlib.__file__) + os.sep


def _describe_exception(e: BaseException) -> str:
    """
    One line for an exception from the admin's own code: its type, message
    and the innermost place it was raised, which is what they will open.
    """
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, SyntaxError) and e.filename:
        return f"{type(e).__name__}: {e.msg} ({e.filename}, line {e.lineno})"
    # The innermost frame in a file of theirs: the import system's say nothing.
    frames = [
        f
        for f in traceback.extract_tb(e.__traceback__)
        if not f.filename.startswith("<") and not f.filename.startswith(_IMPORTLIB)
    ]
    if frames:
        text += f" ({frames[-1].filename}, line {frames[-1].lineno})"
    return text
