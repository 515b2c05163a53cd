"""Python tool: call ``module:function`` references with keyword arguments."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any

from .errors import ToolError

__all__ = ["call", "resolve"]


@cache
def resolve(ref: str) -> Callable[..., Any]:
    """Import and cache the callable named by ``"package.module:function"`` (dots allowed after ':')."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise ToolError(f"bad Python reference {ref!r}: expected 'module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ToolError(f"{ref}: no module named {module_name!r}") from None
        raise ToolError(f"{ref}: importing {module_name!r} failed: {e}") from e
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise ToolError(f"{ref}: {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, attr)
    if not callable(target):
        raise ToolError(f"{ref}: {attr_path!r} is not callable")
    return target


def call(ref: str, kwargs: dict[str, Any] | None = None) -> Any:
    """Call the referenced function; its exceptions become ToolError (original as ``__cause__``)."""
    func = resolve(ref)
    try:
        return func(**(kwargs or {}))
    except Exception as e:
        raise ToolError(f"{ref} raised {type(e).__name__}: {e}") from e
