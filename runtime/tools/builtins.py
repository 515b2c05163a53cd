"""Pure functions for workflow processor/python nodes (callable as ``halo.runtime.tools.builtins:<name>``)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

__all__ = ["TPCH_PARAM_CONFIG", "regex_params", "search_keyword"]

_DATE = r"([0-9]{4}[-/][0-9]{2}[-/][0-9]{2})"
_MODE = r"(AIR\s+REG|AIR|RAIL|SHIP|TRUCK|MAIL|FOB)"
_NUM = r"([0-9]*\.?[0-9]+)"

# The regex_param_extractor configuration of the Halo TPC-H templates (tpch_trident.yaml).
TPCH_PARAM_CONFIG: dict[str, Any] = {
    "enums": {
        "region": ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"],
        "segment": ["AUTOMOBILE", "BUILDING", "FURNITURE", "HOUSEHOLD", "MACHINERY"],
        "shipmode": ["AIR", "AIR REG", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"],
        "orderpriority_prefix": ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"],
    },
    "regex": {
        "date": [
            rf"(?i)\bdate\s*[=:]\s*{_DATE}\b",
            rf"(?i)\bafter\s+{_DATE}\b",
            rf"(?i)\bbefore\s+{_DATE}\b",
        ],
        "date2": [rf"(?i)\bdate2\s*[=:]\s*{_DATE}\b", rf"(?i)\bto\s+{_DATE}\b"],
        "year": [r"(?i)\byear\s*[=:]\s*(199[2-8])\b", r"(?i)\b(199[2-8])\b"],
        "year2": [r"(?i)\byear2\s*[=:]\s*(199[2-8])\b", r"(?i)\bbetween\s+(199[2-8])\s+and\s+(199[2-8])\b"],
        "region": [
            r"(?i)\bregion\s*[=:]\s*([A-Z][A-Z ]+?)\b",
            r"(?i)\b(AF(RICA)?|AMERICA|ASIA|EUROPE|MIDDLE\s+EAST)\b",
        ],
        "nation": [
            r"(?i)\bnation\s*[=:]\s*([A-Z][A-Z ]+?)\b",
            r"(?i)\b(JAPAN|CHINA|INDIA|FRANCE|GERMANY|CANADA|BRAZIL|UNITED\s+STATES|RUSSIA)\b",
        ],
        "nation2": [r"(?i)\bnation2\s*[=:]\s*([A-Z][A-Z ]+?)\b", r"(?i)\bvs\s+([A-Z][A-Z ]+?)\b"],
        "segment": [
            r"(?i)\bsegment\s*[=:]\s*(AUTOMOBILE|BUILDING|FURNITURE|HOUSEHOLD|MACHINERY)\b",
            r"(?i)\b(AUTOMOBILE|BUILDING|FURNITURE|HOUSEHOLD|MACHINERY)\b",
        ],
        "brand": [r"(?i)\bbrand\s*[=:]\s*(Brand#[0-9]{2})\b", r"(?i)\b(Brand#[0-9]{2})\b"],
        "type": [r"(?i)\btype\s*[=:]\s*([A-Za-z0-9_\- ]{3,30})\b"],
        "size": [r"(?i)\bsize\s*[=:]\s*([0-9]{1,3})\b"],
        "shipmode": [rf"(?i)\bshipmode\s*[=:]\s*{_MODE}\b", rf"(?i)\b{_MODE}\b"],
        "shipmode2": [rf"(?i)\bshipmode2\s*[=:]\s*{_MODE}\b"],
        "discount_lo": [rf"(?i)\bdiscount\s*[=:]\s*{_NUM}\b", rf"(?i)\bdiscount_lo\s*[=:]\s*{_NUM}\b"],
        "discount_hi": [rf"(?i)\bdiscount_hi\s*[=:]\s*{_NUM}\b"],
        "qty": [r"(?i)\bqty\s*[<=>:]\s*([0-9]{1,4})\b", r"(?i)\bquantity\s*[<=>:]\s*([0-9]{1,4})\b"],
    },
    "defaults": {
        "year": 1994,
        "region": "ASIA",
        "segment": "BUILDING",
        "shipmode": "MAIL",
        "shipmode2": "SHIP",
        "date": "1995-03-15",
        "discount_lo": 0.05,
        "discount_hi": 0.07,
        "qty": 24,
        "size": 15,
        "type": "BRASS",
        "brand": "Brand#13",
        "nation": "CANADA",
        "nation2": "GERMANY",
    },
    # The templates also upper-case "brand", which turns "Brand#23" into "BRAND#23" and matches no
    # TPC-H part; brand is left as written here.
    "normalize": {
        "uppercase_fields": ["region", "nation", "nation2", "segment", "shipmode", "shipmode2"],
        "date_fields": ["date", "date2"],
        "numeric_fields": ["year", "year2", "size", "qty", "discount_lo", "discount_hi"],
        "strip_quotes": True,
    },
}


def regex_params(
    text: str,
    enums: dict | None = None,
    regex: dict | None = None,
    defaults: dict | None = None,
    normalize: dict | None = None,
    allow_multi: list[str] | bool | None = None,
) -> dict[str, Any]:
    """Extract query parameters from free text, Halo ``regex_param_extractor`` style.

    Each field takes capture group 1 of its first matching pattern (all matches, as a
    list, for fields in ``allow_multi``). Values are normalized (quotes stripped, upper-cased,
    dates as YYYY-MM-DD, numbers as int/float); enum fields are canonicalized by exact or unique
    prefix match. Fields without a valid match take their default; fields with neither are left
    out. Omitted config sections fall back to ``TPCH_PARAM_CONFIG``.
    """
    enums = TPCH_PARAM_CONFIG["enums"] if enums is None else enums
    regex = TPCH_PARAM_CONFIG["regex"] if regex is None else regex
    defaults = TPCH_PARAM_CONFIG["defaults"] if defaults is None else defaults
    norm = TPCH_PARAM_CONFIG["normalize"] if normalize is None else normalize
    multi = set(regex) if allow_multi is True else set(allow_multi or ())
    out: dict[str, Any] = {}
    for field, patterns in regex.items():
        found = []
        for pattern in [patterns] if isinstance(patterns, str) else patterns:
            hits = [v for v in (_capture(field, m) for m in re.finditer(pattern, text)) if v]
            found += hits if field in multi else hits[:1]
            if found and field not in multi:
                break
        values = [v for v in (_normalize(field, f, norm, enums) for f in found) if v is not None]
        if values:
            out[field] = values if field in multi else values[0]
    return {**defaults, **out}


def _capture(field: str, match: re.Match) -> str | None:
    """Group 1; for a ``*2`` field (``between X and Y``) the last group that matched."""
    if field.endswith("2") and match.lastindex and match.lastindex > 1:
        return match.group(match.lastindex)
    return match.group(1)


def _normalize(field: str, value: str, norm: dict, enums: dict) -> Any:
    """One normalized value, or None when it is invalid for the field."""
    value = " ".join(value.split())
    if norm.get("strip_quotes"):
        value = value.strip("'\"` ")
    if field in norm.get("uppercase_fields", ()):
        value = value.upper()
    if field in norm.get("date_fields", ()):
        try:
            return dt.date.fromisoformat(value.replace("/", "-")).isoformat()
        except ValueError:
            return None
    if field in norm.get("numeric_fields", ()):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() and "." not in value else number
    if field in enums:
        options = enums[field]
        upper = value.upper()
        if upper in options:
            return upper
        prefixed = [o for o in options if o.startswith(upper)]
        return prefixed[0] if len(prefixed) == 1 else None
    return value or None


_STOPWORDS = frozenset(
    "a an and about are as at be by can could did do does for from give how i in is it list me movie "
    "movies of on or please show tell that the their there these this to was what when where which who "
    "whom why with film films page pages article wiki wikipedia find info information".split()
)


def search_keyword(text: str, max_words: int = 3) -> str:
    """A compact ILIKE/full-text keyword from a question: a quoted phrase if any, else the first
    ``max_words`` non-stopword words (the deterministic stand-in for the templates' keyword planner)."""
    quoted = re.search(r"[\"“']([^\"”']{2,80})[\"”']", text)
    if quoted:
        return quoted.group(1).strip()
    words = [w for w in re.findall(r"[\w][\w.&-]*", text) if w.lower() not in _STOPWORDS]
    return " ".join(words[:max_words])
