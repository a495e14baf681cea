"""
The package's layers import one way: the HTTP engine (backtracweb/http/)
knows nothing of WSGI, static files, configuration or the services built
on it, so it can be read, tested and replaced on its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "backtracweb"


def imported(path: Path) -> set[str]:
    """The modules C{path} imports, absolute names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


BELOW_EVERY_LAYER = {"backtracweb", "backtracweb.errors", "backtracweb.twisted_internals"}
"""The version, the errors for admins, and the private parts of Twisted."""


def test_the_http_engine_imports_only_itself():
    """Under backtracweb/http/, what backtracweb modules import is backtracweb.http (or below)."""
    found = {(path.name, name) for path in (PACKAGE / "http").glob("*.py")
             for name in imported(path)
             if name.startswith("backtracweb") and not name.startswith("backtracweb.http")
             and name not in BELOW_EVERY_LAYER}
    assert found == set()


def test_twisted_web_is_not_used():
    """Twisted's HTTP server (twisted.web) is replaced, not half-used: no module imports it."""
    found = {(path.relative_to(PACKAGE).as_posix(), name) for path in PACKAGE.rglob("*.py")
             for name in imported(path) if name.startswith("twisted.web")}
    assert found == set()


LAYERS = ("config", "http", "app", "process")
"""The package's folders, each importing only from those before it (and L{BELOW_EVERY_LAYER})."""


def test_each_layer_imports_only_the_layers_below_it():
    """
    config/ (no reactor, no server) below http/ (the engine) below app/
    (serving a site in one process) below process/ (services, signals,
    the supervisor and its workers).
    """
    found = set()
    for rank, layer in enumerate(LAYERS):
        allowed = {f"backtracweb.{below}" for below in LAYERS[:rank + 1]} | BELOW_EVERY_LAYER
        for path in (PACKAGE / layer).glob("*.py"):
            for name in imported(path):
                if name.startswith("backtracweb") and not any(
                        name == a or name.startswith(a + ".") for a in allowed):
                    found.add((f"{layer}/{path.name}", name))
    assert found == set()


def test_the_top_holds_only_entry_points():
    """
    Besides the folders: the version, the errors, what twistd and the
    shell run, and the private parts of Twisted.
    """
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == [
        "__init__.py", "__main__.py", "cli.py", "errors.py", "tap.py", "twisted_internals.py"]


OWN_PRIVATE_NAMES = {"_stopping", "_current_frames", "_backtracweb_reports"}
"""
Private names read on objects other than C{self}: backtracweb's own (a
worker asks its service whether it is stopping; our mark on twistd's
runner class) and Python's (C{sys._current_frames}, documented).
"""


def private_attributes(path: Path) -> set[str]:
    """The private attributes C{path} reads or sets on anything but C{self} or C{cls}."""
    return {node.attr for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))}


def test_only_one_module_touches_twisted_internals():
    """
    Outside twisted_internals.py no module reads a private attribute of
    an object not its own (Twisted's, above all), and none imports a
    private module of Twisted's.
    """
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "twisted_internals.py":
            continue
        where = path.relative_to(PACKAGE).as_posix()
        found |= {(where, name) for name in private_attributes(path) - OWN_PRIVATE_NAMES}
        found |= {(where, name) for name in imported(path)
                  if name.startswith("twisted") and "._" in name}
    assert found == set()


def test_test_modules_have_names_of_their_own():
    """pytest imports test modules by their file name: two alike would stop collection."""
    tests = Path(__file__).resolve().parent
    names = [path.name for path in tests.rglob("test_*.py")]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []
