"""
The sample file and the README are derived from the setting declarations:
these tests keep them in step with what the validator accepts.  After
changing a setting, run `python -m backtracweb.docs` to regenerate both.
"""

from __future__ import annotations

import re
from pathlib import Path

from backtracweb.apps import BUILTIN_LOADERS, loader_settings
from backtracweb.config import ROOT_SETTINGS, SECTIONS, load_config
from backtracweb.docs import (
    BEGIN,
    END,
    reference_markdown,
    render_sample,
    sample_comment,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "etc" / "backtrac.ini"


def test_sample_is_rendered_from_the_declarations():
    """etc/backtrac.ini is exactly what backtracweb.docs renders."""
    assert SAMPLE.read_text() == render_sample()


def test_sample_is_valid_and_serves_the_demo():
    """etc/backtrac.ini loads as shipped, pointing at the demo project."""
    config = load_config(str(SAMPLE))
    assert config.app["DJANGO_SETTINGS_MODULE"] == "demosite.settings"
    assert config.app["pythonpath"] == (str(REPO / "demo"),)
    assert [(m.prefix, m.directory) for m in config.static] == [
        ("/static", str(REPO / "demo" / "static"))]


def test_sample_documents_every_key_with_its_default():
    """
    Every declared key, including each built-in loader's, appears once with
    its comment; a commented-out key shows its default (or an example).
    """
    text = render_sample()
    keys = [("", s) for s in ROOT_SETTINGS]
    keys += [(section, s) for section, settings in SECTIONS.items() for s in settings]
    for section, setting in keys:
        comment = "\n".join(sample_comment(setting))
        assert f"{comment}\n" in text, setting.key
        assert len(re.findall(rf"^#? ?{re.escape(setting.key)} =", text, re.M)) == 1, setting.key
    for name, loader in BUILTIN_LOADERS.items():
        for setting in loader_settings(loader):
            assert "\n".join(sample_comment(setting, name)) in text
    assert "# graceful_timeout = 30\n" in text
    assert "# max_body = 1G\n" in text


def test_readme_reference_is_generated_from_the_declarations():
    """The README's configuration reference is exactly what backtracweb.docs renders."""
    readme = (REPO / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] == reference_markdown()
