"""
The sample file and the README are derived from the setting declarations:
these tests keep them in step with what the validator accepts.
"""

from __future__ import annotations

import re
from pathlib import Path

from backtracweb.apps import BUILTIN_LOADERS, loader_settings
from backtracweb.config import SECTIONS, STATIC_DOC, load_config
from backtracweb.docs import BEGIN, END, reference_markdown, sample_comment

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "etc" / "backtrac.ini"


def sample_sections() -> dict[str, list[str]]:
    """The sample's lines grouped by [section]."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in SAMPLE.read_text().splitlines():
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            current = header.group(1)
            sections[current] = []
        else:
            sections[current].append(line)
    return sections


def comment_above(lines: list[str], key: str) -> list[str]:
    """The comment block directly above the (possibly commented-out) key."""
    pattern = re.compile(rf"#? ?{re.escape(key)} = ")
    index = next(i for i, line in enumerate(lines) if pattern.match(line))
    block: list[str] = []
    for line in reversed(lines[:index]):
        if not line.startswith("#"):
            break
        block.insert(0, line)
    return block


def test_sample_is_valid_and_serves_the_demo():
    """etc/backtrac.ini loads as shipped, pointing at the demo project."""
    config = load_config(str(SAMPLE))
    assert config.app["DJANGO_SETTINGS_MODULE"] == "demosite.settings"
    assert config.app["pythonpath"] == (str(REPO / "demo"),)
    assert [(m.prefix, m.directory) for m in config.static] == [
        ("/static", str(REPO / "demo" / "static"))]


def test_sample_documents_every_key_as_declared():
    """
    Every declared key, including each built-in loader's, appears in its
    section with the comment generated from its declaration.
    """
    sections = sample_sections()
    assert list(sections)[1:] == [*SECTIONS, "static"]
    for section, settings in SECTIONS.items():
        for setting in settings:
            assert comment_above(sections[section], setting.key) == sample_comment(setting)
    for name, loader in BUILTIN_LOADERS.items():
        for setting in loader_settings(loader):
            assert comment_above(sections["app"], setting.key) == sample_comment(setting, name)


def test_sample_documents_static_section():
    text = " ".join(line.lstrip("# ") for line in sample_sections()["static"] if line.startswith("#"))
    assert STATIC_DOC in text


def test_readme_reference_is_generated_from_the_declarations():
    """
    The README's configuration reference is exactly what backtracweb.docs
    renders; after changing a setting run `python -m backtracweb.docs`.
    """
    readme = (REPO / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] == reference_markdown()
