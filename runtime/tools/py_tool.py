"""Python tool: call ``module:function`` references with keyword arguments, under a timeout."""

from __future__ import annotations

import importlib
import threading
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


def call(ref: str, kwargs: dict[str, Any] | None = None, timeout_s: float | None = None) -> Any:
    """Call the referenced function; its exceptions become ToolError (original as ``__cause__``).

    With ``timeout_s`` the call runs in a daemon thread: past the timeout it is abandoned (Python cannot
    stop it; it may still finish in the background, but never blocks shutdown) and ToolError is raised.
    """
    func = resolve(ref)
    if timeout_s is None:
        return _invoke(ref, func, kwargs or {})
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = _invoke(ref, func, kwargs or {})
        except ToolError as e:
            box["error"] = e
        except BaseException as e:  # SystemExit and the like end this call only
            box["error"] = ToolError(f"{ref} raised {type(e).__name__}: {e}")

    worker = threading.Thread(target=target, name=f"py {ref}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise ToolError(f"{ref} timed out after {timeout_s:g} s (abandoned)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _invoke(ref: str, func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return func(**kwargs)
    except Exception as e:
        raise ToolError(f"{ref} raised {type(e).__name__}: {e}") from e
