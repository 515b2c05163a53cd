"""Halo: a declarative query optimizer for batched agentic LLM workflows.

The library API is `halo.api` (also reachable as `halo.api` after `import halo`):
`compile`, `plan`, `run`, `analyze`, `bench`, `simulate`, `calibrate`.
"""

from __future__ import annotations

__all__ = ["api"]


def __getattr__(name: str):
    """`halo.api` on first use, so importing any `halo.*` module does not load the whole pipeline."""
    if name == "api":
        import halo.api as module  # importing binds `api` on this package: later lookups skip __getattr__

        return module
    raise AttributeError(f"module 'halo' has no attribute {name!r}")
