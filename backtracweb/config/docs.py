"""
The configuration reference and the sample file, rendered from the
setting declarations.

C{docs/configuration.md} is L{reference_markdown} and C{etc/backtrac.ini}
(installed as the packager's template) is L{render_sample}; tests keep both
identical to what this module renders, so the docs cannot drift from what
the validator accepts.  After changing a setting run
C{python -m backtracweb.config.docs}.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from backtracweb.config.apps import BUILTIN_LOADERS, loader_settings
from backtracweb.config.settings import (
    ENV_SECTION, FREE_SECTIONS, ROOT_SETTINGS, SECTION_DOCS, SECTIONS, STATIC_SECTION,
)
from backtracweb.config.spec import Setting

PATHS = {
    "config": "/etc/backtrac.ini",
    "drop-ins": "/etc/backtrac.d/*.ini",
    "env_file": "/etc/backtrac.env",
    "pidfile": "/run/backtracweb/twistd.pid",
    "logfile": "/var/log/backtracweb/twistd.log",
    "access_log": "/var/log/backtracweb/access.log",
    "socket": "/run/backtracweb/web.sock",
}
"""
The one set of paths the README, this template and the samples of etc/
(systemd unit, logrotate, nginx) use; tests/test_samples.py holds them to it.
"""

SAMPLE_HEADER = f"""\
# backtracweb configuration: a template. Install it as {PATHS["config"]}, then
# set [app] (pythonpath and the settings module) and [static] for your site.
#
#   Check:   backtracweb check -c {PATHS["config"]}
#   Start:   twistd --pidfile {PATHS["pidfile"]} \\
#                --logfile {PATHS["logfile"]} backtracweb -c {PATHS["config"]}
#   Reload:  kill -HUP "$(cat {PATHS["pidfile"]})"
#   Stop:    kill -TERM "$(cat {PATHS["pidfile"]})"
#
# Relative paths are resolved against the directory of this file, not the
# working directory (a daemon's is /). Unknown sections and keys are errors.
# A commented-out key shows its default, or an example where the default is
# empty or off. Quote values that contain commas.
"""

SAMPLE_VALUES: dict[tuple[str, str], str] = {
    ("server", "port"): "8080",
    ("server", "interface"): "127.0.0.1",
    ("threadpool", "min"): "2",
    ("threadpool", "max"): "10",
    ("app", "loader"): "django",
}
"""The values the template sets; every other key is commented out."""

SAMPLE_EXAMPLES: dict[tuple[str, str], str] = {
    ("", "include"): PATHS["drop-ins"],
    ("app", "pythonpath"): "/srv/mysite",
    ("app", "DJANGO_SETTINGS_MODULE"): "mysite.settings",
    ("app", "application"): "mysite.wsgi:application",
    ("app", "env_file"): PATHS["env_file"],
    ("server", "listen"): f"tcp:8080:interface=::1, unix:{PATHS['socket']}:mode=660",
    ("log", "access_log"): PATHS["access_log"],
    ("proxy", "trusted"): "127.0.0.1, 10.0.0.0/8",
    ("status", "path"): "/-/status",
}
"""Commented-out examples for keys whose default says little."""

SAMPLE_FREE = {
    ENV_SECTION: ("# MYSITE_MODE = production",),
    STATIC_SECTION: ("# /static = /srv/mysite/static", "# /media = /srv/mysite/media"),
}
"""The commented-out examples of the sections whose keys are the admin's own."""

FREE_EXAMPLES = {ENV_SECTION: "`NAME` such as `MYSITE_MODE`",
                 STATIC_SECTION: "a URL prefix such as `/static`"}

def _row(setting: Setting, note: str = "") -> str:
    return (
        f"| `{setting.key}`{note} | {setting.default_text()} | "
        f"{setting.check.expected} | {setting.meaning} |"
    )


def _loader_settings() -> list[tuple[str, Setting]]:
    return [(name, s) for name, loader in BUILTIN_LOADERS.items() for s in loader_settings(loader)]


REFERENCE_INTRO = """\
# Configuration reference

Every key of the INI file, with its default and what it accepts. This page
is generated from the declarations in `backtracweb/config/settings.py` (run
`python -m backtracweb.config.docs` after changing one), as is the commented
template `etc/backtrac.ini`; `backtracweb check -c FILE --print` shows the
effective value of every key and the file that set it.
"""


def reference_markdown() -> str:
    """C{docs/configuration.md}: tables of every section and key, with defaults and meanings."""
    header = ["| key | default | accepted values | meaning |", "|---|---|---|---|"]
    parts = [REFERENCE_INTRO, "## Before the first section", "", *header]
    parts += [_row(s) for s in ROOT_SETTINGS]
    for section, settings in SECTIONS.items():
        parts += ["", f"## `[{section}]`", "", SECTION_DOCS[section], "", *header]
        parts += [_row(s) for s in settings]
        if section == "app":
            parts += [_row(s, f" (loader = {name})") for name, s in _loader_settings()]
    for section, check in FREE_SECTIONS.items():
        parts += ["", f"## `[{section}]`", "", SECTION_DOCS[section], "",
                  "| key | value |", "|---|---|", f"| {FREE_EXAMPLES[section]} | {check.expected} |"]
    return "\n".join(parts) + "\n"


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, 76)]


def sample_comment(setting: Setting, loader: str | None = None) -> list[str]:
    """
    The comment lines above a key in the sample file: meaning, accepted
    values and default, as declared.
    """
    scope = f"(loader = {loader}) " if loader else ""
    accepted = f"Accepted: {setting.check.expected}. Default: {setting.default_text()}."
    return _comment(scope + setting.meaning) + _comment(accepted)


def _sample_key(section: str, setting: Setting, loader: str | None = None) -> list[str]:
    key = (section, setting.key)
    if key in SAMPLE_VALUES:
        line = f"{setting.key} = {SAMPLE_VALUES[key]}"
    elif key in SAMPLE_EXAMPLES:
        line = f"# {setting.key} = {SAMPLE_EXAMPLES[key]}"
    elif setting.required:
        line = f"# {setting.key} ="
    else:
        line = f"# {setting.key} = {setting.default_text() if setting.default != () else ''}".rstrip()
    return ["", *sample_comment(setting, loader), line]


def render_sample() -> str:
    """The sample configuration, C{etc/backtrac.ini}."""
    lines = SAMPLE_HEADER.splitlines()
    for setting in ROOT_SETTINGS:
        lines += _sample_key("", setting)
    for section, settings in SECTIONS.items():
        lines += ["", f"[{section}]", *_comment(SECTION_DOCS[section])]
        for setting in settings:
            lines += _sample_key(section, setting)
        if section == "app":
            for name, setting in _loader_settings():
                lines += _sample_key(section, setting, name)
    for section in FREE_SECTIONS:
        lines += ["", f"[{section}]", *_comment(SECTION_DOCS[section]), *SAMPLE_FREE[section]]
    return "\n".join(lines) + "\n"


def update(repo: Path) -> list[str]:
    """Rewrite the reference and the template; the names of those changed."""
    changed = []
    for path, text in ((repo / "docs" / "configuration.md", reference_markdown()),
                       (repo / "etc" / "backtrac.ini", render_sample())):
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(str(path))
    return changed


if __name__ == "__main__":
    import sys

    changed = update(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("updated: " + ", ".join(changed) if changed else "already up to date")
