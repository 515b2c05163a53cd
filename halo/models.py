"""Where local model files live: shared by the token counter and the engines, so neither imports the other."""

from __future__ import annotations

import os
from pathlib import Path

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"


def cache_root() -> Path:
    """``$HALO_CACHE_DIR`` if set, else ``~/.cache/halo``."""
    return Path(os.environ.get("HALO_CACHE_DIR") or Path.home() / ".cache" / "halo")


def smollm2_location(root: Path | None = None) -> Path:
    """Where the converted SmolLM2 model lives under a cache root (it may not be there yet)."""
    return (Path(root) if root is not None else cache_root()) / "models" / SMOLLM2_DIRNAME
