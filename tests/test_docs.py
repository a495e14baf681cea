"""
The template (etc/backtrac.ini) and the reference (docs/configuration.md)
are derived from the setting declarations: these tests keep them in step
with what the validator accepts.  After changing a setting, run
`python -m backtracweb.config.docs` to regenerate both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backtracweb.config.apps import BUILTIN_LOADERS, loader_settings
from backtracweb.config.docs import reference_markdown, render_sample, sample_comment
from backtracweb.config.settings import FREE_SECTIONS, ROOT_SETTINGS, SECTIONS, load_config
from backtracweb.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "etc" / "backtrac.ini"
DEMO = REPO / "demo"


def test_sample_is_rendered_from_the_declarations():
    """etc/backtrac.ini is exactly what backtracweb.config.docs renders."""
    assert SAMPLE.read_text() == render_sample()


def test_template_asks_for_the_site_in_one_line():
    """
    As installed, the template names the one thing to do: set [app] (and
    [static]); nothing about paths that exist only in the source tree.
    """
    with pytest.raises(ConfigError) as caught:
        load_config(str(SAMPLE))
    assert caught.value.problems == [
        f"{SAMPLE}: [app] DJANGO_SETTINGS_MODULE is missing: expected a dotted Python module "
        "name such as mysite.settings; required when loader = django (set [app], and [static] "
        "for the site's files)"]


def test_template_with_the_site_set_is_valid(tmp_path):
    """Uncommenting [app]'s examples and [static]'s, pointed at a site, is all it takes."""
    text = SAMPLE.read_text()
    for example, value in (("# pythonpath = /srv/mysite", f"pythonpath = {DEMO}"),
                           ("# DJANGO_SETTINGS_MODULE = mysite.settings",
                            "DJANGO_SETTINGS_MODULE = demosite.settings"),
                           ("# /static = /srv/mysite/static", f"/static = {DEMO / 'static'}")):
        assert text.count(f"\n{example}\n") == 1, example
        text = text.replace(f"\n{example}\n", f"\n{value}\n")
    path = tmp_path / "backtrac.ini"
    path.write_text(text)
    config = load_config(str(path))
    assert config.app["pythonpath"] == (str(DEMO),)
    assert [(m.prefix, m.directory) for m in config.static] == [("/static", str(DEMO / "static"))]


def test_demo_has_its_own_file():
    """demo/backtrac.ini, which the quick start serves, loads and points at the demo."""
    config = load_config(str(DEMO / "backtrac.ini"))
    assert config.app["DJANGO_SETTINGS_MODULE"] == "demosite.settings"
    assert config.app["pythonpath"] == (str(DEMO),)
    assert [(m.prefix, m.directory) for m in config.static] == [("/static", str(DEMO / "static"))]


def test_sample_documents_every_key_with_its_default():
    """
    Every declared key, including each built-in loader's, appears once with
    its comment; a commented-out key shows its default (or an example).
    """
    text = render_sample()
    keys = [("", s) for s in ROOT_SETTINGS]
    keys += [(section, s) for section, settings in SECTIONS.items() for s in settings]
    sections = dict(re.findall(r"^#? ?\[(\w+)\]\n(.*?)(?=^#? ?\[|\Z)", text, re.M | re.S))
    for section, setting in keys:
        comment = "\n".join(sample_comment(setting))
        assert f"{comment}\n" in text, setting.key
        # Once in its section (a key of another section may share its name).
        where = sections[section] if section else text.split("[server]", 1)[0]
        assert len(re.findall(rf"^#? ?{re.escape(setting.key)} =", where, re.M)) == 1, setting.key
    for name, loader in BUILTIN_LOADERS.items():
        for setting in loader_settings(loader):
            assert "\n".join(sample_comment(setting, name)) in text
    assert "# graceful_timeout = 30\n" in text
    assert "# max_body = 1G\n" in text


def test_reference_is_generated_from_the_declarations():
    """docs/configuration.md is exactly what backtracweb.config.docs renders, every section in it."""
    text = (REPO / "docs" / "configuration.md").read_text()
    assert text == reference_markdown()
    for section in (*SECTIONS, *FREE_SECTIONS):
        assert f"## `[{section}]`" in text
