"""
Unit tests for L{backtracweb.config.apps}: finding modules without importing
them, loading WSGI applications, and the app-loader registry.

Every module these tests import is written into C{tmp_path}; the
L{isolated_imports} fixture restores C{sys.path} and C{sys.modules}
afterwards.  Django is only set up in a subprocess, because it can be
set up once per process.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest

from backtracweb.config import apps
from backtracweb.config.apps import (
    BUILTIN_LOADERS, ENTRY_POINT_GROUP, app_loader, available_loaders, django_loader, find_module,
    interface_of, load_application, loader_settings, wsgi_loader,
)
from backtracweb.config.spec import REQUIRED, Setting, python_module, word
from backtracweb.errors import AppLoadError, StartupError

PACKAGE_ROOT = str(Path(apps.__file__).resolve().parents[2])
"""Where the backtracweb under test lives, for subprocesses to import the same one."""


def write(path: Path, source: str = "") -> Path:
    """Write C{source}, dedented, to C{path}, creating its directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def pythonpath(tmp_path, isolated_imports) -> Path:
    """A fresh directory to use as C{[app] pythonpath}."""
    directory = tmp_path / "pythonpath"
    directory.mkdir()
    return directory


def load_failed(cause: str, loader: str) -> str:
    """
    The message of the L{AppLoadError} for an exception while loading:
    C{cause} is the exception and its place, C{loader} the loader's name
    and the settings it declared (e.g. C{wsgi, application = 'm:a'}).
    """
    return f"{cause}; while loading the application ([app] loader = {loader})"


def wsgi_app(pythonpath: Path, application: str) -> dict:
    """The C{[app]} section for the wsgi loader, as L{load_config} builds it."""
    return {"loader": "wsgi", "pythonpath": (str(pythonpath),), "application": application}


# -- find_module --------------------------------------------------------------


class TestFindModule:
    def test_finds_without_executing(self, pythonpath, tmp_path):
        """
        A module in C{pythonpath} is found (L{find_module} returns None)
        without running its code: no side effect happens and it is not
        added to C{sys.modules}.
        """
        marker = tmp_path / "marker"
        write(
            pythonpath / "btw_side_effect.py",
            f"""\
            open({str(marker)!r}, "w").close()
            raise RuntimeError("must not be imported")
            """,
        )
        assert find_module("btw_side_effect", [str(pythonpath)]) is None
        assert not marker.exists()
        assert "btw_side_effect" not in sys.modules

    def test_pythonpath_is_searched(self, pythonpath):
        """
        The module is only found because of C{pythonpath}: without it the
        same name is reported missing.
        """
        write(pythonpath / "btw_only_here.py")
        assert find_module("btw_only_here", [str(pythonpath)]) is None
        assert find_module("btw_only_here", []) == (
            "module btw_only_here not found in pythonpath or sys.path"
        )

    def test_missing_top_level(self, pythonpath):
        """A missing top-level module is reported by name."""
        assert find_module("btw_no_such_module", [str(pythonpath)]) == (
            "module btw_no_such_module not found in pythonpath or sys.path"
        )

    def test_missing_submodule(self, pythonpath):
        """
        A missing submodule of an existing package is reported with its
        full dotted name and the package it was looked for in; the
        package's C{__init__} is not run.
        """
        write(pythonpath / "btw_pkg" / "__init__.py", "raise RuntimeError('imported')\n")
        assert find_module("btw_pkg.missing", [str(pythonpath)]) == (
            "module btw_pkg.missing not found in package btw_pkg"
        )
        assert "btw_pkg" not in sys.modules

    def test_module_used_as_package(self, pythonpath):
        """
        A dotted name through a plain module (not a package) is reported as
        such, without running the module.
        """
        write(pythonpath / "btw_plain.py", "raise RuntimeError('imported')\n")
        assert find_module("btw_plain.settings", [str(pythonpath)]) == (
            "btw_plain is a module, not a package"
        )
        assert "btw_plain" not in sys.modules

    def test_module_used_as_package_after_import(self, pythonpath):
        """
        The reason does not depend on whether the plain module happens to
        be imported already: it is still "a module, not a package".
        """
        write(pythonpath / "btw_plain.py", "value = 1\n")
        sys.path.insert(0, str(pythonpath))
        importlib.import_module("btw_plain")
        assert find_module("btw_plain.settings", [str(pythonpath)]) == (
            "btw_plain is a module, not a package"
        )

    def test_dotted_name_through_packages(self, pythonpath):
        """
        A module nested in packages is found without importing the
        packages: their C{__init__} modules raise, and nothing is added to
        C{sys.modules}.
        """
        write(pythonpath / "btw_outer" / "__init__.py", "raise RuntimeError('outer')\n")
        write(pythonpath / "btw_outer" / "inner" / "__init__.py", "raise RuntimeError('inner')\n")
        write(pythonpath / "btw_outer" / "inner" / "leaf.py", "raise RuntimeError('leaf')\n")
        assert find_module("btw_outer.inner.leaf", [str(pythonpath)]) is None
        assert find_module("btw_outer.inner", [str(pythonpath)]) is None
        assert find_module("btw_outer.inner.nope", [str(pythonpath)]) == (
            "module btw_outer.inner.nope not found in package btw_outer.inner"
        )
        assert not any(name.startswith("btw_outer") for name in sys.modules)

    def test_already_imported(self):
        """A module already in C{sys.modules} is found."""
        assert find_module("os", []) is None
        assert find_module("importlib.machinery", []) is None


# -- load_application ---------------------------------------------------------


class TestLoadApplication:
    def test_module_and_attribute(self, pythonpath):
        """
        C{module:attribute} names the WSGI callable; the module is imported
        from C{pythonpath}.
        """
        write(
            pythonpath / "btw_site.py",
            """\
            def app(environ, start_response):
                return [b"app"]
            """,
        )
        application = load_application(wsgi_loader, wsgi_app(pythonpath, "btw_site:app"))
        assert application is sys.modules["btw_site"].app
        assert sys.modules["btw_site"].__file__ == str(pythonpath / "btw_site.py")

    def test_attribute_defaults_to_application(self, pythonpath):
        """A bare module name means its C{application} attribute."""
        write(
            pythonpath / "btw_site.py",
            """\
            def application(environ, start_response):
                return [b"default"]
            """,
        )
        application = load_application(wsgi_loader, wsgi_app(pythonpath, "btw_site"))
        assert application is sys.modules["btw_site"].application

    def test_dotted_attribute(self, pythonpath):
        """C{module:obj.attr} follows attributes from the module."""
        write(
            pythonpath / "btw_site.py",
            """\
            class Holder:
                @staticmethod
                def wsgi(environ, start_response):
                    return [b"nested"]
            holder = Holder()
            """,
        )
        application = load_application(wsgi_loader, wsgi_app(pythonpath, "btw_site:holder.wsgi"))
        assert application is sys.modules["btw_site"].Holder.wsgi

    def test_module_in_package(self, pythonpath):
        """A dotted module name is imported through its package."""
        write(pythonpath / "btw_proj" / "__init__.py")
        write(pythonpath / "btw_proj" / "wsgi.py", "application = lambda environ, start: []\n")
        application = load_application(wsgi_loader, wsgi_app(pythonpath, "btw_proj.wsgi"))
        assert application is sys.modules["btw_proj.wsgi"].application

    def test_pythonpath_goes_first(self, tmp_path, isolated_imports):
        """
        The C{pythonpath} directories are put first on C{sys.path}, in
        their order, and moved rather than duplicated if already there;
        so a module there wins over one of the same name later on the path.
        """
        first, second, shadowed = (tmp_path / "first", tmp_path / "second", tmp_path / "late")
        write(first / "btw_first.py", "application = lambda environ, start: [b'first']\n")
        write(second / "btw_other.py")
        write(shadowed / "btw_first.py", "application = lambda environ, start: [b'late']\n")
        sys.path.append(str(shadowed))
        sys.path.append(str(second))
        app = {
            "loader": "wsgi",
            "pythonpath": (str(first), str(second)),
            "application": "btw_first",
        }
        application = load_application(wsgi_loader, app)
        assert sys.path[:2] == [str(first), str(second)]
        assert sys.path.count(str(second)) == 1
        assert application(None, None) == [b"first"]

    @pytest.mark.parametrize("module, setting, error", [
        ("application = 42\n", "btw_site:application",
         "int object is not callable, so it is not an application"),
        ("app = lambda environ, start: []\n", "btw_site:ap", "module btw_site has no attribute 'ap'"),
        # A bare module name means its attribute application.
        ("app = lambda environ, start: []\n", "btw_site",
         "module btw_site has no attribute 'application'"),
    ], ids=["not callable", "missing attribute", "missing default attribute"])
    def test_no_application_at_the_name(self, pythonpath, module, setting, error):
        """An L{AppLoadError} naming the setting and what is wrong with it."""
        write(pythonpath / "btw_site.py", module)
        with pytest.raises(AppLoadError) as caught:
            load_application(wsgi_loader, wsgi_app(pythonpath, setting))
        assert str(caught.value) == f"[app] application = {setting!r}: {error}"

    def test_module_raises_at_import(self, pythonpath):
        """
        An exception while importing the module becomes an L{AppLoadError}
        naming the loader, the setting, the exception and the file and line
        it was raised at; the original exception is its cause.
        """
        module = write(
            pythonpath / "btw_boom.py",
            """\
            import os

            raise RuntimeError("database is down")
            """,
        )
        with pytest.raises(AppLoadError) as caught:
            load_application(wsgi_loader, wsgi_app(pythonpath, "btw_boom:application"))
        assert str(caught.value) == load_failed(
            f"RuntimeError: database is down ({module}, line 3)",
            "wsgi, application = 'btw_boom:application'",
        )
        assert isinstance(caught.value.__cause__, RuntimeError)
        assert "btw_boom" not in sys.modules

    def test_innermost_frame_is_named(self, pythonpath):
        """
        When the exception comes from a module the application imports,
        the place named is where it was raised, not the import line.
        """
        write(pythonpath / "btw_outer_app.py", "import btw_helper\napplication = None\n")
        helper = write(pythonpath / "btw_helper.py", "x = 1\nx = {}['missing']\n")
        with pytest.raises(AppLoadError) as caught:
            load_application(wsgi_loader, wsgi_app(pythonpath, "btw_outer_app"))
        assert str(caught.value) == load_failed(
            f"KeyError: 'missing' ({helper}, line 2)", "wsgi, application = 'btw_outer_app'"
        )

    def test_missing_dependency_names_the_admins_file(self, pythonpath):
        """
        A dependency the application imports with C{importlib.import_module}
        (as Django does for C{INSTALLED_APPS}) and that is missing is
        reported at the admin's file and line, not inside importlib.
        """
        module = write(
            pythonpath / "btw_dep_app.py",
            "import importlib\nimportlib.import_module('btw_not_installed')\n",
        )
        with pytest.raises(AppLoadError) as caught:
            load_application(wsgi_loader, wsgi_app(pythonpath, "btw_dep_app"))
        assert str(caught.value) == load_failed(
            f"ModuleNotFoundError: No module named 'btw_not_installed' ({module}, line 2)",
            "wsgi, application = 'btw_dep_app'",
        )

    def test_syntax_error(self, pythonpath):
        """
        A module with a syntax error is an L{AppLoadError} naming the
        compiler's message and the file and line of the error.
        """
        source = "application = None\n\ndef broken(:\n    pass\n"
        module = write(pythonpath / "btw_syntax.py", source)
        with pytest.raises(SyntaxError) as compiled:
            compile(source, str(module), "exec")
        with pytest.raises(AppLoadError) as caught:
            load_application(wsgi_loader, wsgi_app(pythonpath, "btw_syntax"))
        assert str(caught.value) == load_failed(
            f"SyntaxError: {compiled.value.msg} ({module}, line 3)",
            "wsgi, application = 'btw_syntax'",
        )

    def test_loader_returning_non_callable(self):
        """A loader that returns something not callable is an L{AppLoadError}."""
        with pytest.raises(AppLoadError) as caught:
            load_application(lambda app: "not an app", {"loader": "custom", "pythonpath": ()})
        assert str(caught.value) == (
            "[app] loader = custom returned str, which is not an application"
        )

    def test_loader_app_load_error_passes_through(self):
        """An L{AppLoadError} raised by the loader itself is not re-wrapped."""
        error = AppLoadError("[app] custom = 1: the loader's own words")

        def loader(app):
            raise error

        with pytest.raises(AppLoadError) as caught:
            load_application(loader, {"loader": "custom", "pythonpath": ()})
        assert caught.value is error

    def test_loader_exception_names_declared_settings(self):
        """
        Other exceptions from a loader name its declared settings that the
        section holds, and nothing else from the section.
        """

        @app_loader(
            Setting("target", word(), REQUIRED, "doc"),
            Setting("absent", word(), REQUIRED, "doc"),
        )
        def loader(app):
            raise ValueError("no good")

        app = {"loader": "custom", "pythonpath": (), "target": "x", "other": "y"}
        with pytest.raises(AppLoadError) as caught:
            load_application(loader, app)
        [frame] = traceback.extract_tb(caught.value.__cause__.__traceback__)[-1:]
        assert str(caught.value) == load_failed(
            f"ValueError: no good ({frame.filename}, line {frame.lineno})",
            "custom, target = 'x'",
        )
        assert frame.filename == __file__
        assert isinstance(caught.value, StartupError)


# -- the django loader ----------------------------------------------------------


class TestDjangoLoader:
    def test_settings_module_from_section_wins(self, monkeypatch):
        """
        The loader sets C{DJANGO_SETTINGS_MODULE} from the section before
        asking Django for its WSGI handler, replacing the environment's.
        """
        import django.core.wsgi

        seen = []

        def get_wsgi_application():
            seen.append(os.environ["DJANGO_SETTINGS_MODULE"])
            return lambda environ, start_response: []

        monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "someone_else.settings")
        monkeypatch.setattr(django.core.wsgi, "get_wsgi_application", get_wsgi_application)
        django_loader({"loader": "django", "pythonpath": (), "DJANGO_SETTINGS_MODULE": "btw.settings"})
        assert seen == ["btw.settings"]
        assert os.environ["DJANGO_SETTINGS_MODULE"] == "btw.settings"

    def test_real_django(self, tmp_path):
        """
        In a fresh interpreter, with the environment naming another settings
        module, loading a minimal project gives Django's WSGI handler
        configured from the section's settings module, which answers a
        request.
        """
        project = tmp_path / "project"
        write(
            project / "btw_settings.py",
            """\
            SECRET_KEY = "unit-test"
            DEBUG = False
            ALLOWED_HOSTS = ["*"]
            INSTALLED_APPS = []
            MIDDLEWARE = []
            ROOT_URLCONF = "btw_urls"
            DATABASES = {}
            """,
        )
        write(
            project / "btw_urls.py",
            """\
            from django.http import HttpResponse
            from django.urls import path

            urlpatterns = [path("", lambda request: HttpResponse(b"hello from django"))]
            """,
        )
        script = textwrap.dedent(
            """\
            import os, sys
            from wsgiref.util import setup_testing_defaults
            from backtracweb.config.apps import django_loader, load_application

            app = load_application(django_loader, {
                "loader": "django",
                "pythonpath": (sys.argv[1],),
                "DJANGO_SETTINGS_MODULE": "btw_settings",
            })
            from django.conf import settings
            environ = {}
            setup_testing_defaults(environ)
            statuses = []
            body = b"".join(app(environ, lambda status, headers: statuses.append(status)))
            print(os.environ["DJANGO_SETTINGS_MODULE"], type(app).__name__,
                  settings.SECRET_KEY, statuses[0], body.decode(), sep="|")
            """
        )
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "someone_else.settings"}
        env["PYTHONPATH"] = PACKAGE_ROOT
        result = subprocess.run(
            [sys.executable, "-c", script, str(project)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == (
            "btw_settings|WSGIHandler|unit-test|200 OK|hello from django\n"
        )

    def test_broken_settings(self, tmp_path):
        """
        In a fresh interpreter, a settings module that raises is an
        L{AppLoadError} naming C{DJANGO_SETTINGS_MODULE}, the exception,
        and the settings file and line.
        """
        project = tmp_path / "project"
        settings = write(project / "btw_bad_settings.py", "SECRET_KEY = 'x'\nraise ValueError('bad setting')\n")
        script = textwrap.dedent(
            """\
            import sys
            from backtracweb.config.apps import django_loader, load_application
            from backtracweb.errors import AppLoadError
            try:
                load_application(django_loader, {
                    "loader": "django",
                    "pythonpath": (sys.argv[1],),
                    "DJANGO_SETTINGS_MODULE": "btw_bad_settings",
                })
            except AppLoadError as e:
                print(e)
            """
        )
        env = dict(os.environ)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env["PYTHONPATH"] = PACKAGE_ROOT
        result = subprocess.run(
            [sys.executable, "-c", script, str(project)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == load_failed(
            f"ValueError: bad setting ({settings}, line 2)",
            "django, DJANGO_SETTINGS_MODULE = 'btw_bad_settings'",
        ) + "\n"


# -- the registry -----------------------------------------------------------------


# -- the interface: WSGI or ASGI ------------------------------------------------------------


async def asgi_function(scope, receive, send):
    """An ASGI 3 application."""


class ASGIObject:
    async def __call__(self, scope, receive, send):
        """An ASGI 3 application as an object (Django's, Starlette's, Channels')."""


class ASGI2Class:
    """An ASGI 2 application: instantiated with the scope."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        pass


def wsgi_function(environ, start_response):
    """A WSGI application."""


class WSGIObject:
    def __call__(self, environ, start_response):
        """A WSGI application as an object."""


@pytest.mark.parametrize("application, interface", [
    (asgi_function, "asgi"), (ASGIObject(), "asgi"), (ASGI2Class, "wsgi"),
    (wsgi_function, "wsgi"), (WSGIObject(), "wsgi"),
])
def test_the_interface_of_an_application(application, interface):
    assert interface_of(application) == interface


class TestInterfaceMismatch:
    def test_an_asgi_application_under_wsgi(self, pythonpath):
        write(pythonpath / "btw_asgi.py", "async def application(scope, receive, send):\n    pass\n")
        with pytest.raises(AppLoadError) as caught:
            load_application(wsgi_loader, {**wsgi_app(pythonpath, "btw_asgi"), "interface": "wsgi"})
        assert str(caught.value) == (
            "[app] interface = wsgi, but the application btw_asgi.application is an ASGI "
            "application (an async callable): set [app] interface = asgi to serve it")

    def test_a_wsgi_application_under_asgi(self, pythonpath):
        write(pythonpath / "btw_wsgi.py", "def application(environ, start_response):\n    pass\n")
        with pytest.raises(AppLoadError) as caught:
            load_application(wsgi_loader, {**wsgi_app(pythonpath, "btw_wsgi"), "interface": "asgi"})
        assert str(caught.value) == (
            "[app] interface = asgi, but the application btw_wsgi.application is not an ASGI 3 "
            "application (an async callable taking scope, receive and send); it looks like "
            "WSGI: set [app] interface = wsgi, or name its ASGI counterpart")

    def test_each_under_its_own(self, pythonpath):
        write(pythonpath / "btw_both.py", "async def asgi(scope, receive, send):\n    pass\n"
                                          "def wsgi(environ, start_response):\n    pass\n")
        for interface in ("wsgi", "asgi"):
            app = {**wsgi_app(pythonpath, f"btw_both:{interface}"), "interface": interface}
            assert load_application(wsgi_loader, app).__name__ == interface

    @pytest.mark.parametrize("asgi_application, expected", [
        (None, "ASGIHandler"),
        ("btw_asgi.application", "router"),
        ("btw_asgi.nothing", "AppLoadError: the Django setting ASGI_APPLICATION = "
                             "'btw_asgi.nothing': module btw_asgi has no attribute 'nothing'"),
    ])
    def test_django_under_asgi(self, tmp_path, asgi_application, expected):
        """
        In a fresh interpreter: with interface = asgi the django loader gives
        the project's ASGI_APPLICATION (a Channels router, say), else
        Django's ASGI handler.
        """
        project = tmp_path / "project"
        write(project / "btw_settings.py", f"""\
            SECRET_KEY = "unit-test"
            ROOT_URLCONF = "btw_settings"
            urlpatterns = []
            ASGI_APPLICATION = {asgi_application!r}
            """)
        write(project / "btw_asgi.py", """\
            async def router(scope, receive, send):
                pass

            application = router
            """)
        script = textwrap.dedent("""\
            import sys
            from backtracweb.config.apps import django_loader, load_application
            from backtracweb.errors import AppLoadError
            try:
                app = load_application(django_loader, {
                    "loader": "django", "interface": "asgi", "pythonpath": (sys.argv[1],),
                    "DJANGO_SETTINGS_MODULE": "btw_settings",
                })
            except AppLoadError as e:
                print(f"AppLoadError: {e}")
            else:
                print(getattr(app, "__name__", type(app).__name__))
            """)
        env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
        result = subprocess.run([sys.executable, "-c", script, str(project)], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected + "\n"


def fake_distribution(directory: Path, name: str, entry_points: str) -> None:
    """
    Install a distribution in C{directory} as far as
    L{importlib.metadata} can tell: a C{.dist-info} with entry points.
    """
    info = directory / f"{name}-1.0.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    write(info / "entry_points.txt", entry_points)


class TestAvailableLoaders:
    def test_builtins(self):
        """The built-in loaders are C{django} and C{wsgi}."""
        loaders = available_loaders()
        assert loaders["django"] is django_loader
        assert loaders["wsgi"] is wsgi_loader
        assert BUILTIN_LOADERS == {"django": django_loader, "wsgi": wsgi_loader}

    def test_entry_point_loader(self, tmp_path, isolated_imports):
        """
        A loader registered by an installed distribution under
        L{ENTRY_POINT_GROUP} is found by its entry-point name.
        """
        write(tmp_path / "btw_third_party.py", "def load(app):\n    return lambda e, s: []\n")
        fake_distribution(
            tmp_path, "btw_third_party", f"[{ENTRY_POINT_GROUP}]\nfancy = btw_third_party:load\n"
        )
        sys.path.insert(0, str(tmp_path))
        importlib.invalidate_caches()
        loaders = available_loaders()
        assert loaders["fancy"] is sys.modules["btw_third_party"].load
        assert loaders["django"] is django_loader and loaders["wsgi"] is wsgi_loader

    def test_broken_entry_point(self, tmp_path, isolated_imports):
        """
        An entry point whose module fails to import is an L{AppLoadError}
        naming the entry point, its target and the exception.
        """
        module = write(tmp_path / "btw_broken_loader.py", "raise ImportError('needs libfoo')\n")
        fake_distribution(
            tmp_path, "btw_broken", f"[{ENTRY_POINT_GROUP}]\nbroken = btw_broken_loader:load\n"
        )
        sys.path.insert(0, str(tmp_path))
        importlib.invalidate_caches()
        with pytest.raises(AppLoadError) as caught:
            available_loaders()
        assert str(caught.value) == (
            "app loader 'broken' (entry point btw_broken_loader:load) failed to import: "
            f"ImportError: needs libfoo ({module}, line 1)"
        )

    def test_builtin_name_not_overridden(self, tmp_path, isolated_imports):
        """
        An entry point named like a built-in loader is ignored: not even
        imported (its module would raise), and the built-in stays.
        """
        write(tmp_path / "btw_hijack.py", "raise RuntimeError('must not be imported')\n")
        fake_distribution(
            tmp_path,
            "btw_hijack",
            f"[{ENTRY_POINT_GROUP}]\ndjango = btw_hijack:load\nwsgi = btw_hijack:load\n",
        )
        sys.path.insert(0, str(tmp_path))
        importlib.invalidate_caches()
        loaders = available_loaders()
        assert loaders["django"] is django_loader
        assert loaders["wsgi"] is wsgi_loader
        assert "btw_hijack" not in sys.modules

    def test_entry_points_group(self, monkeypatch):
        """Only the L{ENTRY_POINT_GROUP} group is asked for."""
        asked = []

        def entry_points(**kwargs):
            asked.append(kwargs)
            return []

        monkeypatch.setattr(apps, "entry_points", entry_points)
        assert available_loaders() == BUILTIN_LOADERS
        assert asked == [{"group": "backtracweb.loaders"}]


class TestLoaderSettings:
    def test_decorator_attaches_settings(self):
        """
        L{app_loader} returns the function itself, carrying the declared
        settings in order.
        """
        first = Setting("one", word(), REQUIRED, "first")
        second = Setting("two", python_module(), "x.y", "second")

        def loader(app):
            return lambda environ, start_response: []

        assert app_loader(first, second)(loader) is loader
        assert loader.settings == (first, second)
        assert loader_settings(loader) == (first, second)

    def test_plain_callable(self):
        """A callable that declared nothing has no settings."""
        assert loader_settings(lambda app: None) == ()

    def test_builtin_settings(self):
        """The built-in loaders declare their one required key each."""
        assert [(s.key, s.required) for s in loader_settings(wsgi_loader)] == [
            ("application", True)
        ]
        assert [(s.key, s.required) for s in loader_settings(django_loader)] == [
            ("DJANGO_SETTINGS_MODULE", True)
        ]
