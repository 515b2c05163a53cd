"""Python tools of the differential suite: deterministic results; `note` counts its calls (a side effect)."""

import hashlib
from collections import Counter

CALLS: Counter = Counter()


def _h(x) -> str:
    return hashlib.sha256(repr(x).encode()).hexdigest()[:6]


def tag(x) -> dict:
    """Pure: a record derived from `x`."""
    return {"t": f"t{_h(x)}", "n": len(str(x)) % 5}


def note(x) -> str:
    """Impure: counts the call, returns a value derived from `x`."""
    CALLS[repr(x)] += 1
    return f"n{_h(x)}"
