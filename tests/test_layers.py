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


def test_the_http_engine_imports_only_itself():
    """Every backtracweb module imported under backtracweb/http/ is in backtracweb.http."""
    found = {(path.name, name) for path in (PACKAGE / "http").glob("*.py")
             for name in imported(path)
             if name.startswith("backtracweb") and not name.startswith("backtracweb.http")}
    assert found == set()


def test_twisted_web_is_not_used():
    """Twisted's HTTP server (twisted.web) is replaced, not half-used: no module imports it."""
    found = {(path.relative_to(PACKAGE).as_posix(), name) for path in PACKAGE.rglob("*.py")
             for name in imported(path) if name.startswith("twisted.web")}
    assert found == set()
