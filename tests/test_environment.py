"""
The application's environment variables: C{[env]}, C{[app] env_file},
how they are validated, read, masked, and set before the import.
"""

from __future__ import annotations

import io
import os
import pickle
import textwrap
from pathlib import Path

import pytest

from backtracweb.cli import check
from backtracweb.config import environment
from backtracweb.config.environment import EnvFileError, name_problem, read_env_file, shown
from backtracweb.config.settings import load_config, summary
from backtracweb.errors import ConfigError

APP_MODULE = "btw_env_app"

# -- the environment file, line by line -----------------------------------------------

GOOD_LINES = [
    # (line, name, value)
    ("A=1", "A", "1"),
    ("A = spaced  ", "A", "spaced"),
    ("  _UNDER9=x", "_UNDER9", "x"),
    ("EMPTY=", "EMPTY", ""),
    ("URL=postgres://u:p@h/db?x=1#y", "URL", "postgres://u:p@h/db?x=1#y"),
    ("HOSTS=a.example,b.example", "HOSTS", "a.example,b.example"),
    ("SINGLE='a \\n $b \"c\"'", "SINGLE", 'a \\n $b "c"'),
    ('DOUBLE="a \\"b\\" \\\\ c"', "DOUBLE", 'a "b" \\ c'),
    ('QUOTED_SPACE="  kept  "', "QUOTED_SPACE", "  kept  "),
    ("EQUALS=a=b", "EQUALS", "a=b"),
]


@pytest.mark.parametrize("line, name, value", GOOD_LINES)
def test_a_line_is_a_variable(tmp_path, line, name, value):
    path = tmp_path / "env"
    path.write_text(line + "\n")
    assert read_env_file(str(path)) == {name: value}


def test_blank_lines_and_comments_are_skipped(tmp_path):
    path = tmp_path / "env"
    path.write_text("\n# a comment\n   ; another\n\nA=1\n  # indented comment\n")
    assert read_env_file(str(path)) == {"A": "1"}


BAD_LINES = [
    # (line, problem after "PATH, line 2: ")
    ("just-a-secret", "expected NAME=value, a blank line or a # comment"),
    ("export A=1", "expected NAME=value without export (a systemd environment file is not "
                   "a shell script)"),
    ("9LIVES=1", "'9LIVES' is not a valid variable name: expected letters, digits and _, "
                 "not starting with a digit"),
    ("MY-VAR=1", "'MY-VAR' is not a valid variable name: expected letters, digits and _, "
                 "not starting with a digit"),
    ("=1", "'' is not a valid variable name: expected letters, digits and _, not starting "
           "with a digit"),
    ('A="open', "A: the value's \" is not closed on its line"),
    ("A='open", "A: the value's ' is not closed on its line"),
    ('A="x" y', 'A: text after the closing "'),
    ("DJANGO_SETTINGS_MODULE=x", "DJANGO_SETTINGS_MODULE cannot be set here: set it as [app] "
                                 "DJANGO_SETTINGS_MODULE, which the django loader sets in the "
                                 "environment"),
    ("OK=1", "OK is already set on an earlier line"),
]


@pytest.mark.parametrize("line, problem", BAD_LINES)
def test_a_line_that_is_not_a_variable_is_named(tmp_path, line, problem):
    """The problem names the file and the line, never the line's text (a value may be secret)."""
    path = tmp_path / "env"
    path.write_text(f"OK=1\n{line}\n")
    with pytest.raises(EnvFileError) as caught:
        read_env_file(str(path))
    assert caught.value.problems == [f"{path}, line 2: {problem}"]


def test_every_bad_line_is_reported(tmp_path):
    path = tmp_path / "env"
    path.write_text("nope\nA=1\n1A=2\n")
    with pytest.raises(EnvFileError) as caught:
        read_env_file(str(path))
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == [
        f"{path}, line 1", f"{path}, line 3"]


def test_unreadable_and_undecodable_files(tmp_path):
    with pytest.raises(EnvFileError) as caught:
        read_env_file(str(tmp_path / "missing"))
    assert caught.value.problems == [f"cannot read {tmp_path / 'missing'}: No such file or directory"]
    path = tmp_path / "env"
    path.write_bytes(b"A=\xff\n")
    with pytest.raises(EnvFileError) as caught:
        read_env_file(str(path))
    assert caught.value.problems == [f"{path} is not UTF-8 text (bad byte at offset 2)"]


# -- names and masking ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["A", "a_b", "_X1", "SECRET_KEY"])
def test_names_that_can_be_set(name):
    assert name_problem(name) is None


def test_pythonpath_is_refused_with_the_key_to_use():
    assert name_problem("PYTHONPATH") == (
        "PYTHONPATH cannot be set here: use [app] pythonpath: Python reads the variable only "
        "when it starts")


@pytest.mark.parametrize("name, masked", [
    ("SECRET_KEY", True), ("DB_PASSWORD", True), ("api_token", True), ("AWS_ACCESS_KEY_ID", True),
    ("PRIVATE_PEM", True), ("OAUTH_CLIENT", True), ("HASH_SALT", True), ("CREDENTIALS", True),
    ("MYSITE_MODE", False), ("DJANGO_DEBUG", False), ("ALLOWED_HOSTS", False),
])
def test_secret_looking_names_are_masked(name, masked):
    assert (shown(name, "v") == environment.MASK) is masked


# -- in the configuration ------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, isolated_imports) -> Path:
    """A directory with a WSGI module that reports its environment at import."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / f"{APP_MODULE}.py").write_text(textwrap.dedent("""\
        import os
        SEEN = {name: os.environ.get(name) for name in ("MYSITE_MODE", "SECRET_KEY")}
        def application(environ, start_response):
            return []
        """))
    return tmp_path


def write(site: Path, body: str, env_file: str | None = None) -> Path:
    """A file serving the test module, with C{body} appended, and an env file if given."""
    if env_file is not None:
        (site / "site.env").write_text(env_file)
        (site / "site.env").chmod(0o600)
    path = site / "backtrac.ini"
    path.write_text(f"[app]\nloader = wsgi\npythonpath = app\napplication = {APP_MODULE}\n"
                    + textwrap.dedent(body))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    return [line.replace(str(path.parent), "SITE") for line in caught.value.problems]


def test_env_section_and_file(site):
    """Both sources end up in the configuration's environment; the file's stay out of values."""
    config = load_config(str(write(site, "env_file = site.env\n[env]\nMYSITE_MODE = production\n",
                                   env_file="SECRET_KEY='s3cr3t'\n")))
    assert config.environment == {"MYSITE_MODE": "production", "SECRET_KEY": "s3cr3t"}
    assert config.app["env_file"] == str(site / "site.env")
    assert "s3cr3t" not in repr(config.values)
    assert pickle.loads(pickle.dumps(config)).environment == config.environment


def test_no_environment_by_default(site):
    config = load_config(str(write(site, "")))
    assert config.environment == {}
    assert config.app["env_file"] == "off"


def test_env_mistakes_are_reported_with_the_rest(site):
    """Bad names, a list value, a name set twice and the env file's lines, all at once."""
    path = write(site, """\
        env_file = site.env
        [env]
        MY-MODE = x
        PYTHONPATH = /srv
        HOSTS = a, b
        SECRET_KEY = here
        """, env_file="SECRET_KEY=there\nbroken\n")
    assert problems(path) == [
        "SITE/backtrac.ini: [env] HOSTS = 'a, b': expected a single value, got a list (quote "
        "values that contain commas)",
        "SITE/backtrac.ini: [env] 'MY-MODE' is not a valid variable name: expected letters, "
        "digits and _, not starting with a digit",
        "SITE/backtrac.ini: [env] PYTHONPATH cannot be set here: use [app] pythonpath: Python "
        "reads the variable only when it starts",
        "SITE/backtrac.ini: [app] env_file = 'SITE/site.env': SITE/site.env, line 2: expected "
        "NAME=value, a blank line or a # comment",
    ]


def test_a_name_in_both_places_is_an_error(site):
    path = write(site, "env_file = site.env\n[env]\nSECRET_KEY = here\n",
                 env_file="SECRET_KEY=there\n")
    assert problems(path) == [
        "SITE/backtrac.ini: [env] SECRET_KEY is set here and in [app] env_file = "
        "'SITE/site.env': set it in one of them"]


def test_a_missing_env_file(site):
    path = write(site, "env_file = nowhere.env\n")
    assert problems(path) == [
        "SITE/backtrac.ini: [app] env_file = 'SITE/nowhere.env': cannot read SITE/nowhere.env: "
        "No such file or directory"]


def test_on_reload_the_env_file_is_not_read_again(site):
    """
    A reload keeps the variables the server started with: after --uid the
    file may be unreadable, and a change takes a restart anyway.
    """
    path = write(site, "env_file = site.env\n", env_file="SECRET_KEY=old\n")
    started = load_config(str(path))
    (site / "site.env").unlink()
    reloaded = load_config(str(path), running=started)
    assert reloaded.environment == {"SECRET_KEY": "old"}


def test_summary_masks_secrets(site):
    """check's summary names every variable; values of secrets and of the file never appear."""
    config = load_config(str(write(
        site, "env_file = site.env\n[env]\nMYSITE_MODE = production\nDB_PASSWORD = hunter2\n",
        env_file="TOKEN_X=abc\nPLAIN=visible-in-file\n")))
    text = summary(config)
    lines = text.splitlines()
    assert lines[lines.index("[env]") + 1:lines.index("[env]") + 5] == [
        "  MYSITE_MODE = production",
        f"  DB_PASSWORD = {environment.MASK}",
        f"  TOKEN_X = {environment.MASK}  (from {site / 'site.env'})",
        f"  PLAIN = {environment.MASK}  (from {site / 'site.env'})",
    ]
    for secret in ("hunter2", "abc", "visible-in-file"):
        assert secret not in text


def test_check_sets_the_environment_before_the_import(site, monkeypatch):
    """
    backtracweb check imports the application as the daemon does: with the
    variables set (the file's too), and warns when the file is world-readable.
    """
    for name in ("MYSITE_MODE", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    path = write(site, "env_file = site.env\n[env]\nMYSITE_MODE = production\n",
                 env_file="SECRET_KEY=s3cr3t\n")
    monkeypatch.setattr(os, "environ", dict(os.environ))  # restored after the test
    out, err = io.StringIO(), io.StringIO()
    assert check(str(path), out, err) == 0, err.getvalue()
    import btw_env_app

    assert btw_env_app.SEEN == {"MYSITE_MODE": "production", "SECRET_KEY": "s3cr3t"}
    assert "warning" not in out.getvalue()
    assert "s3cr3t" not in out.getvalue()


def test_check_warns_of_a_world_readable_env_file(site, monkeypatch):
    path = write(site, "env_file = site.env\n", env_file="SECRET_KEY=s3cr3t\n")
    (site / "site.env").chmod(0o644)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    out = io.StringIO()
    assert check(str(path), out, io.StringIO()) == 0
    assert out.getvalue().splitlines()[-1] == (
        f"warning: [app] env_file {site / 'site.env'} is readable by every user (mode 0644): "
        "it holds the application's secrets; chmod o-r it")


def test_load_application_sets_variables_before_the_loader_runs(monkeypatch):
    from backtracweb.config.apps import load_application

    monkeypatch.setattr(os, "environ", dict(os.environ))
    seen = {}

    def loader(app):
        seen.update(os.environ)
        return lambda environ, start_response: []

    load_application(loader, {"loader": "test", "pythonpath": ()}, {"MYSITE_MODE": "x"})
    assert seen["MYSITE_MODE"] == "x"
