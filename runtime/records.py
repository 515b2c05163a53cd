"""The one JSON writer for output records and journal rows: always valid JSON, always encodable as UTF-8.

JSON has no NaN or infinities: such floats become null. A string holding a lone UTF-16 surrogate (which
UTF-8 cannot encode) gets U+FFFD in its place; a surrogate pair becomes the character it encodes.
"""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(value: Any) -> str:
    """`value` as compact JSON text (non-JSON objects as their str())."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere
        text = json.dumps(_finite(value), default=str, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _finite(value: Any) -> Any:
    """A copy with every non-finite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def rejected_record(row: int, reason: str) -> dict[str, Any]:
    """The output record of an input row that failed validation (it never ran)."""
    return {"row": row, "inputs": None, "outputs": None, "error": [{"node": "input", "error": reason}]}
