"""Binding values to SQL parameters: only scalars travel; lists and records are refused, never their repr."""

from __future__ import annotations

from typing import Any

from halo.sql import SqlError, bind

__all__ = ["bind_scalars"]

_NOT_SCALAR = (list, tuple, dict, set, frozenset)


def bind_scalars(names: list[str], params: dict[str, Any] | None) -> dict[str, Any]:
    """The values a statement needs, by name; SqlError for a missing one or one that is a list or record."""
    values = bind(names, params)
    for name, value in values.items():
        if isinstance(value, _NOT_SCALAR):
            what = "record" if isinstance(value, dict) else "list"
            raise SqlError(
                f"SQL parameter :{name} got a {what}; bind one scalar value (pick a field or element)"
            )
    return values
