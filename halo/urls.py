"""URL templates: the scheme, host and port stay literal, and every value is percent-encoded where it stands.

A value filling a path hole becomes part of one path segment (`/`, `?`, `#`, `%` and `.` encoded, so
`../admin` stays the segment `%2E%2E%2Fadmin`); a value in the query or the fragment is encoded as one
component (`&`, `=`, `+`, `#` encoded). The query record of an http() call is appended the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from halo.template import Hole, Template, format_value, lookup

__all__ = ["ORIGIN_LITERAL", "UrlError", "encode", "origin", "origin_hole", "render", "with_query"]

ORIGIN_LITERAL = (
    "the scheme, host and port of a URL must be literal (values may fill the path, query or fragment)"
)
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*[/?#]")


class UrlError(ValueError):
    """A URL that Halo refuses to send (a value would change its origin, or a query that is not a record)."""


def origin_hole(t: Template) -> Hole | None:
    """The first hole of a URL template that stands in its scheme, host or port; None when those are literal."""
    holes = t.holes()
    if not holes or _ORIGIN.match(t.static_prefix()):
        return None
    return holes[0]


def render(t: Template, env: dict[str, Any]) -> str:
    """The URL with each hole's value percent-encoded for its place; UrlError if a hole is in the origin."""
    if origin_hole(t) is not None:
        raise UrlError(f"URL refused: {ORIGIN_LITERAL}")
    out: list[str] = []
    seen = ""
    for p in t.pieces:
        if isinstance(p, str):
            out.append(p)
            seen += p
            continue
        value = lookup(env, p.parts)
        text = json.dumps(value, default=str, ensure_ascii=False) if p.as_json else format_value(value)
        out.append(encode(text, seen))
    return "".join(out)


def encode(text: str, before: str) -> str:
    """`text` percent-encoded for where it stands after the literal URL text `before`: one path segment
    (dots too, so `..` cannot climb) or one query/fragment component."""
    encoded = quote(text, safe="")
    return encoded if "?" in before or "#" in before else encoded.replace(".", "%2E")


def with_query(url: str, query: dict[str, Any] | None) -> str:
    """`url` with the query record appended (after any query the URL already has), values encoded."""
    if query is None:
        return url
    if not isinstance(query, dict):
        raise UrlError(f"http() query must be a record of parameters, got {type(query).__name__}")
    if not query:
        return url
    parts = urlsplit(url)
    added = "&".join(f"{quote(str(k), safe='')}={quote(_query_text(v), safe='')}" for k, v in query.items())
    joined = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=joined))


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port made explicit for http and https."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def _query_text(value: Any) -> str:
    """Text of one query value: scalars as written (booleans lower-case), records and lists as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, default=str, ensure_ascii=False)
