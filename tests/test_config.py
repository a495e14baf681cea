"""
Configuration loading and validation: every rule, with its exact message.

Each bad file must produce one line per problem naming the file, the
section, the key, the value and what was expected, all problems at once.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from backtracweb.config.apps import app_loader
from backtracweb.config.settings import SECTIONS, configspec, load_config, summary
from backtracweb.config.spec import REQUIRED, Setting, endpoint_files, integer, with_endpoint_files
from backtracweb.errors import ConfigError


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A directory with a settings package and static directories in it."""
    (tmp_path / "static").mkdir()
    (tmp_path / "media").mkdir()
    (tmp_path / "proj" / "mysite").mkdir(parents=True)
    (tmp_path / "proj" / "mysite" / "__init__.py").write_text("")
    (tmp_path / "proj" / "mysite" / "settings.py").write_text("")
    (tmp_path / "afile").write_text("not a directory")
    return tmp_path


def write(site: Path, body: str, name: str = "backtrac.ini") -> Path:
    path = site / name
    path.write_text(textwrap.dedent(body))
    return path


APP = """
[app]
pythonpath = proj
DJANGO_SETTINGS_MODULE = mysite.settings
"""


def running(listen=(), file_environment=None) -> SimpleNamespace:
    """What L{load_config} reads of a running server's configuration, on reload."""
    return SimpleNamespace(listen=listen, file_environment=file_environment or {})


def problems(site: Path, body: str) -> list[str]:
    """The problem lines for a file, with the file's path stripped."""
    path = write(site, body)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    return [line.replace(str(path), "FILE") for line in caught.value.problems]


def test_minimal_file_gets_every_default(site):
    """Only the settings module is required; everything else has a default."""
    config = load_config(str(write(site, APP)))
    assert (config["server"]["port"], config["server"]["interface"]) == (8080, "127.0.0.1")
    assert (config.min_threads, config.max_threads) == (2, 10)
    assert config.app["loader"] == "django"
    assert config.static == ()
    assert config.is_default("server", "port")
    assert not config.is_default("app", "DJANGO_SETTINGS_MODULE")
    assert config.url == "http://127.0.0.1:8080/"
    assert config.listen == ("tcp:8080:interface=127.0.0.1",)


def test_full_file_values_and_relative_paths(site, monkeypatch):
    """
    Relative paths resolve against the file's directory, not the working
    directory, which for a daemon is /.
    """
    monkeypatch.chdir("/")
    config = load_config(str(write(site, """
        [server]
        port = 9000
        interface = ::1
        [threadpool]
        min = 0
        max = 1
        [app]
        loader = django
        pythonpath = proj, .
        DJANGO_SETTINGS_MODULE = mysite.settings
        [static]
        /static = static
        /static/media/ = media
        /abs = {site / "static"}
        """.replace("{site / \"static\"}", str(site / "static")))))
    assert config.url == "http://[::1]:9000/"
    assert config.listen == ("tcp:9000:interface=\\:\\:1",)
    assert (config.min_threads, config.max_threads) == (0, 1)
    assert config.app["pythonpath"] == (str(site / "proj"), str(site))
    assert [(m.prefix, m.directory) for m in config.static] == [
        ("/static", str(site / "static")),
        ("/static/media", str(site / "media")),
        ("/abs", str(site / "static")),
    ]
    assert config.static[1].segments == ("static", "media")


def test_path_relative_to_config_given_relatively(site, monkeypatch):
    """A config path given relative to the cwd is made absolute at once."""
    monkeypatch.chdir(site)
    write(site, APP)
    config = load_config("backtrac.ini")
    assert config.path == str(site / "backtrac.ini")


@pytest.mark.parametrize(
    "body, expected",
    [
        ("[server]\nport = 0\n", "FILE: [server] port = '0': expected an integer between 1 and 65535"),
        ("[server]\nport = 65536\n",
         "FILE: [server] port = '65536': expected an integer between 1 and 65535"),
        ("[server]\nport = http\n",
         "FILE: [server] port = 'http': expected an integer between 1 and 65535"),
        ("[server]\nport = \n", "FILE: [server] port = '': expected an integer between 1 and 65535"),
        ("[server]\nport = 80, 81\n", "FILE: [server] port = '80, 81': expected an integer "
         "between 1 and 65535 (quote values that contain commas)"),
        ("[server]\ninterface = localhost\n", "FILE: [server] interface = 'localhost': expected an "
         "IPv4 or IPv6 address such as 127.0.0.1, 0.0.0.0 or ::1"),
        ("[server]\ncpu_scheduling = fifo\n",
         "FILE: [server] cpu_scheduling = 'fifo': expected batch or normal"),
        ("[threadpool]\nmin = -1\n",
         "FILE: [threadpool] min = '-1': expected an integer of at least 0"),
        ("[threadpool]\nmax = 0\n", "FILE: [threadpool] max = '0': expected an integer of at least 1"),
        ("[threadpool]\nmin = 5\nmax = 4\n",
         "FILE: [threadpool] min = 5 is greater than max = 4; min must not exceed max"),
        ("[threadpool]\nmin = 11\n",
         "FILE: [threadpool] min = 11 is greater than max = 10; min must not exceed max"),
        ("[server]\nmaxx = 4\n",
         "FILE: [server] maxx is not a known key; known keys: port, interface, listen, "
         "workers, cpu_affinity, cpu_scheduling, graceful_timeout, start_timeout, "
         "worker_timeout, max_requests, max_requests_jitter, max_memory, request_warn"),
        ("[threadpool]\nmaxx = 4\n", "FILE: [threadpool] maxx is not a known key "
         "(did you mean max?); known keys: min, max"),
        ("[srever]\nport = 1\n", "FILE: [srever] is not a known section (did you mean server?); "
         "known sections: server, threadpool, app, log, proxy, limits, status, env, static"),
        ("port = 1\n", "FILE: port = '1' is outside any section; put it under the [section] "
         "it belongs to"),
        ("server = 1\n", "FILE: server is written as a key, but it is a section: "
         "write [server] on a line of its own"),
        ("[server]\n[[sub]]\nport = 1\n", "FILE: [server] has an unexpected subsection [[sub]]"),
        ("[static]\n/static = nowhere\n", "FILE: [static] /static = 'nowhere': directory "
         "SITE/nowhere does not exist"),
        ("[static]\n/static = afile\n", "FILE: [static] /static = 'afile': SITE/afile is not a "
         "directory"),
        ("[static]\nstatic = static\n", "FILE: [static] static = 'SITE/static': a URL prefix must "
         "start with /, e.g. /static"),
        ("[static]\n/ = static\n", "FILE: [static] / = 'SITE/static': the root path belongs to "
         "the application; use a prefix like /static"),
        ("[static]\n/a//b = static\n", "FILE: [static] /a//b = 'SITE/static': a URL prefix is "
         "plain path segments, without //, ., .., %, ?, # or \\"),
        ("[static]\n/a/../b = static\n", "FILE: [static] /a/../b = 'SITE/static': a URL prefix is "
         "plain path segments, without //, ., .., %, ?, # or \\"),
        ("[static]\n/a%20b = static\n", "FILE: [static] /a%20b = 'SITE/static': a URL prefix is "
         "plain path segments, without //, ., .., %, ?, # or \\"),
        ("[static]\n/s = static\n/s/ = media\n", "FILE: [static] /s/ = 'SITE/media': the same "
         "prefix as /s; each prefix may be mapped once"),
    ],
)
def test_each_bad_value_is_reported_exactly(site, body, expected):
    """Each rule has one message naming the file, section, key and value."""
    lines = problems(site, body + APP)
    assert [line.replace(str(site), "SITE") for line in lines] == [expected]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("[app]\n", "FILE: [app] DJANGO_SETTINGS_MODULE is missing: expected a dotted Python "
         "module name such as mysite.settings; required when loader = django (set [app], and "
         "[static] for the site's files)"),
        ("[app]\nDJANGO_SETTINGS_MODULE = my-site.settings\n",
         "FILE: [app] DJANGO_SETTINGS_MODULE = 'my-site.settings': expected a dotted Python "
         "module name such as mysite.settings"),
        ("[app]\nDJANGO_SETTINGS_MODULE = a.settings, b\n",
         "FILE: [app] DJANGO_SETTINGS_MODULE = 'a.settings, b': expected a single value, "
         "got a list (quote values that contain commas)"),
        ("[app]\nDJANGO_SETTINGS_MODULE = nosuch.settings\n",
         "FILE: [app] DJANGO_SETTINGS_MODULE = 'nosuch.settings': module nosuch not found in "
         "pythonpath or sys.path; pythonpath is empty"),
        ("[app]\npythonpath = proj\nDJANGO_SETTINGS_MODULE = mysite.nosettings\n",
         "FILE: [app] DJANGO_SETTINGS_MODULE = 'mysite.nosettings': module mysite.nosettings "
         "not found in package mysite; pythonpath is SITE/proj"),
        ("[app]\npythonpath = proj\nDJANGO_SETTINGS_MODULE = mysite.settings.x\n",
         "FILE: [app] DJANGO_SETTINGS_MODULE = 'mysite.settings.x': mysite.settings is a module, "
         "not a package; pythonpath is SITE/proj"),
        ("[app]\npythonpath = nowhere\nDJANGO_SETTINGS_MODULE = mysite.settings\n",
         "FILE: [app] pythonpath = 'nowhere': directory SITE/nowhere does not exist"),
        ("[app]\nloader = djnago\nDJANGO_SETTINGS_MODULE = mysite.settings\n",
         "FILE: [app] loader = 'djnago': unknown loader (did you mean django?); "
         "known loaders: django, wsgi"),
        ("[app]\nloader = wsgi\npythonpath = proj\nDJANGO_SETTINGS_MODULE = mysite.settings\n",
         "FILE: [app] application is missing: expected module:attribute such as "
         "mysite.wsgi:application (the attribute defaults to application); required when "
         "loader = wsgi"),
        ("[app]\nloader = wsgi\npythonpath = proj\napplication = mysite.wsgi:\n",
         "FILE: [app] application = 'mysite.wsgi:': expected module:attribute such as "
         "mysite.wsgi:application (the attribute defaults to application)"),
        ("[app]\nloader = wsgi\npythonpath = proj\napplication = mysite.nowsgi\n",
         "FILE: [app] application = 'mysite.nowsgi': module mysite.nowsgi not found in "
         "package mysite; "
         "pythonpath is SITE/proj"),
    ],
)
def test_app_section_rules(site, body, expected):
    """The [app] keys depend on the loader; its own keys are validated too."""
    lines = problems(site, body)
    assert [line.replace(str(site), "SITE") for line in lines][:1] == [expected]


def test_keys_of_another_loader_are_unknown(site):
    """With loader = wsgi, DJANGO_SETTINGS_MODULE is a typo-class error, not ignored."""
    lines = problems(site, "[app]\nloader = wsgi\napplication = json:dumps\n"
                           "DJANGO_SETTINGS_MODULE = mysite.settings\n")
    assert lines == ["FILE: [app] DJANGO_SETTINGS_MODULE is not a known key with loader = wsgi; "
                     "known keys: loader, interface, pythonpath, env_file, application"]


def test_every_problem_is_reported_at_once(site):
    """One pass reports bad values, unknown keys and cross-key rules together."""
    lines = problems(site, """
        [server]
        port = 0
        maxx = 3
        [threadpool]
        min = 12
        max = 10
        [static]
        /static = nowhere
        [srever]
        """)
    assert len(lines) == 6, lines
    text = "\n".join(lines)
    for fragment in ("[server] port = '0'", "[server] maxx", "[threadpool] min = 12",
                     "[static] /static = 'nowhere'", "[srever]", "DJANGO_SETTINGS_MODULE is missing"):
        assert fragment in text


def test_error_text_lists_problems_one_per_line(site):
    """The exception's text is what admins read: a count, then one problem a line."""
    path = write(site, APP + "[server]\nport = 0\ninterface = x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    text = str(caught.value)
    assert text.splitlines()[0] == "2 problems in the configuration:"
    assert all(line.startswith(f"  {path}: [server] ") for line in text.splitlines()[1:])


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"[server]\nport 8080\n", "FILE, line 2: expected key = value, a [section] header or "
         "a # comment: 'port 8080'"),
        (b"[server]\nport = '8080\n", "FILE, line 2: the value cannot be parsed (check its "
         "quotes): \"port = '8080\""),
        (b"[server]\nport = 1\nport = 2\n", "FILE, line 3: this key is already set earlier in "
         "its section: 'port = 2'"),
        (b"[server]\n[server]\n", "FILE, line 2: this section already appears earlier in the "
         "file: '[server]'"),
        (b"[server\n", "FILE, line 1: expected key = value, a [section] header or a # comment: "
         "'[server'"),
        (b"[[server]\n", "FILE, line 1: mismatched brackets in the section header: '[[server]'"),
        (b"\xff\xfe[server]\n", "FILE: the configuration file is not UTF-8 text (bad byte at "
         "offset 0)"),
    ],
)
def test_unparseable_files(site, content, expected):
    """Syntax errors name the line number and quote the line."""
    path = site / "backtrac.ini"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.problems[0].replace(str(path), "FILE") == expected


def test_several_syntax_errors_are_reported_together(site):
    path = site / "backtrac.ini"
    path.write_text("[server]\nport 1\ninterface 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert [p.split(": ")[0] for p in caught.value.problems] == [
        f"{path}, line 2", f"{path}, line 3"]


def test_missing_file(site):
    with pytest.raises(ConfigError) as caught:
        load_config(str(site / "nope.ini"))
    assert caught.value.problems == [
        f"{site / 'nope.ini'}: cannot read the configuration file: No such file or directory"]


def test_directory_instead_of_file(site):
    with pytest.raises(ConfigError) as caught:
        load_config(str(site))
    assert caught.value.problems == [
        f"{site}: cannot read the configuration file: Is a directory"]


def test_unreadable_file(site, monkeypatch):
    """Permission problems name the file and the reason (simulated: tests run as root)."""
    path = write(site, APP)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.problems == [f"{path}: cannot read the configuration file: Permission denied"]


def test_quoted_values_and_inline_comments(site):
    """configobj quoting and inline comments work as admins expect."""
    config = load_config(str(write(site, APP + '[server]\nport = "8081"  # a comment\n')))
    assert config["server"]["port"] == 8081


def test_third_party_loader_keys_are_validated(site):
    """A loader declares its keys; they are checked like the built-in ones."""

    @app_loader(Setting("workers", integer(1, 8), REQUIRED, "doc"),
                Setting("mode", integer(0), 3, "doc"))
    def custom(app):
        return lambda environ, start_response: []

    path = write(site, "[app]\nloader = custom\nworkers = 9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), loaders={"custom": custom})
    assert caught.value.problems == [
        f"{path}: [app] workers = '9': expected an integer between 1 and 8"]

    path = write(site, "[app]\nloader = custom\nworkers = 2\n")
    config = load_config(str(path), loaders={"custom": custom})
    assert (config.app["workers"], config.app["mode"], config.app_loader) == (2, 3, custom)


def test_configspec_is_generated_from_the_declarations():
    """The configspec configobj validates against, with the loader's keys."""
    spec = configspec([Setting("extra", integer(1), REQUIRED, "doc")])
    assert spec[:20] == [
        "include = file_patterns(default=list())",
        "[server]",
        "port = integer(min=1, max=65535, default=8080)",
        "interface = ip_address(default='127.0.0.1')",
        "listen = endpoint_list(default=list())",
        "workers = integer(min=1, max=64, default=1)",
        "cpu_affinity = option('auto', 'off', default='auto')",
        "cpu_scheduling = option('batch', 'normal', default='batch')",
        "graceful_timeout = float(min=0, default=30)",
        "start_timeout = float(min=1, default=60)",
        "worker_timeout = float(min=1, default=30)",
        "max_requests = integer(min=0, default=0)",
        "max_requests_jitter = integer(min=0, default=0)",
        "max_memory = size(default='0')",
        "request_warn = float(min=0, default=60)",
        "[threadpool]",
        "min = integer(min=0, default=2)",
        "max = integer(min=1, default=10)",
        "[app]",
        "loader = word(default='django')",
    ]
    assert spec[20:24] == ["interface = option('wsgi', 'asgi', default='wsgi')",
                           "pythonpath = directory_list(default=list())",
                           "env_file = env_file(default='off')", "extra = integer(min=1)"]
    assert "status_path" not in spec
    assert "allow = network_list(default=list('127.0.0.1', '::1'))" in spec
    assert "max_body = size(default='1G')" in spec
    assert spec[-2:] == ["[static]", "__many__ = directory()"]


def test_summary_shows_every_setting_and_marks_defaults(site):
    config = load_config(str(write(site, APP + "[server]\nport = 9001\n[static]\n/s = static\n")))
    text = summary(config)
    assert text.splitlines()[:4] == [
        f"{site / 'backtrac.ini'}: configuration is valid",
        "serving http://127.0.0.1:9001/",
        "[server]",
        "  port = 9001",
    ]
    assert "  interface = 127.0.0.1  (default)" in text
    assert "  min = 2  (default)" in text
    assert f"  pythonpath = {site / 'proj'}" in text
    assert "  DJANGO_SETTINGS_MODULE = mysite.settings" in text
    assert f"  /s = {site / 'static'}" in text


# -- endpoints naming files ---------------------------------------------------------


def test_the_files_an_endpoint_reads_and_the_endpoint_reading_others():
    endpoint = "ssl:443:privateKey=/etc/k\\:1.pem:certKey=/etc/c.pem:interface=127.0.0.1"
    assert endpoint_files(endpoint) == {"privateKey": "/etc/k:1.pem", "certKey": "/etc/c.pem"}
    assert endpoint_files("tcp:80:interface=127.0.0.1") == {}
    assert with_endpoint_files(endpoint, {"privateKey": "/proc/self/fd/6"}) == (
        "ssl:443:privateKey=/proc/self/fd/6:certKey=/etc/c.pem:interface=127.0.0.1")


def test_endpoints_in_use_are_not_parsed_again(site):
    """
    On reload, the running server's endpoints are taken as they are: an
    ssl: endpoint's key may be unreadable once privileges are dropped (here
    it is missing); a new endpoint is still parsed.
    """
    endpoint = f"ssl:8443:privateKey={site}/key.pem"
    path = write(site, APP + f"[server]\nlisten = {endpoint}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert "is not a usable Twisted endpoint" in str(caught.value)
    assert load_config(str(path), running=running(listen=(endpoint,))).listen == (endpoint,)
    with pytest.raises(ConfigError):
        load_config(str(path), running=running(listen=("tcp:8080",)))


def test_what_needs_a_restart_is_declared_with_the_setting():
    """The reload code and the docs read one declaration: the sockets and processes."""
    from backtracweb.config.settings import RESTART_KEYS

    assert RESTART_KEYS == {("server", key) for key in (
        "port", "interface", "listen", "workers", "cpu_affinity", "cpu_scheduling")} | {
        ("app", "env_file"), ("app", "interface")}
    listen = next(s for s in SECTIONS["server"] if s.key == "listen")
    assert listen.meaning.endswith("for socket activation. Needs a restart.")
    graceful = next(s for s in SECTIONS["server"] if s.key == "graceful_timeout")
    assert "restart" not in graceful.meaning
