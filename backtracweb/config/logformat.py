"""
The access-log format an admin writes in C{[log] access_format}: the
combined format, the fields a template may use, and what is wrong with a
template.  Declared here, with the settings, so that checking the file
needs nothing of the server that writes the lines.
"""

from __future__ import annotations

import string
from typing import Mapping

COMBINED = (
    '{client} - - [{time}] "{method} {path} {protocol}" {status} {bytes} '
    '"{referrer}" "{user_agent}"'
)
"""Apache's and nginx's "combined" format, which the usual log tools parse."""

FIELDS: Mapping[str, str] = {
    "client": "the client's address (the real one behind a trusted proxy)",
    "time": "when the request arrived, as in combined logs: 25/Nov/2026:18:40:00 +0000",
    "iso_time": "when the request arrived, ISO 8601 in UTC",
    "method": "the request method",
    "path": "the request target, with its query string",
    "protocol": "HTTP/1.1 or HTTP/1.0",
    "host": "the Host header",
    "status": "the response status code",
    "bytes": "response body bytes sent, - for none",
    "duration_ms": "milliseconds from the request's arrival to its last byte",
    "referrer": "the Referer header, - if none",
    "user_agent": "the User-Agent header, - if none",
}
"""The fields an C{access_format} template may use, as C{{name}}."""


def template_errors(template: str) -> str | None:
    """Why C{template} is not a usable format, or None if it is."""
    try:
        fields = [(name, spec, conversion)
                  for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as e:
        return f"not a valid template ({e}); write fields as {{name}} and braces as {{{{ }}}}"
    for name, _, _ in fields:
        if name not in FIELDS:
            return f"unknown field {{{name}}}; known fields: {', '.join(FIELDS)}"
    # Every field is text when a line is written: try the template on text.
    try:
        template.format_map({name: "-" for name in FIELDS})
    except (ValueError, TypeError) as e:
        return f"the template cannot be filled in: {e} (every field is text)"
    return None
