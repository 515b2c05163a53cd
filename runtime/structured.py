"""Structured LLM output: find the JSON object in a reply and validate it against the declared fields."""

from __future__ import annotations

import json
import re
from typing import Any

from halo.types import Type
from halo.types import json_schema as json_schema  # re-exported: the schema lives with the types

_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


class OutputError(ValueError):
    """The reply has no valid object of the declared shape."""


def parse(text: str, t: Type) -> dict[str, Any]:
    """The declared fields from a reply: whole text, a fenced block, or the first balanced {...}."""
    obj = _find_object(text)
    if obj is None:
        raise OutputError("reply contains no JSON object")
    out: dict[str, Any] = {}
    for name, ft in t.fields or ():
        if name not in obj:
            raise OutputError(f"reply lacks field '{name}'")
        out[name] = _coerce(name, obj[name], ft.kind)
    return out


def repair_prompt(prompt: str, t: Type, error: str) -> str:
    """The retry prompt after an invalid reply: same task, an explicit shape."""
    shape = ", ".join(f'"{n}": <{ft.kind}>' for n, ft in t.fields or ())
    return f"{prompt}\n\nYour previous answer was invalid ({error}). Reply with only this JSON object: {{{shape}}}"


def _find_object(text: str) -> dict | None:
    for candidate in (text.strip(), *(m.group(1) for m in _FENCE.finditer(text))):
        try:
            value = json.loads(candidate)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    for start in (i for i, c in enumerate(text) if c == "{"):
        try:
            value, _ = decoder.raw_decode(text[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _coerce(name: str, value: Any, kind: str) -> Any:
    try:
        if kind == "text":
            return value if isinstance(value, str) else json.dumps(value)
        if kind == "int":
            number = float(value)
            if isinstance(value, bool) or not number.is_integer():
                raise ValueError
            return int(number)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
            raise ValueError
    except (TypeError, ValueError):
        raise OutputError(f"field '{name}' is not {kind}: {value!r:.40}") from None
    return value
