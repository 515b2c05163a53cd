"""LLM engines behind one interface: ``hf`` (embedded transformers), ``vllm`` (offline vLLM) and
``openai`` (any OpenAI-compatible HTTP server). Heavy imports happen only when an engine is made."""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting make a shared 2-core machine several times slower. This takes
# effect only if torch is not imported yet (engines import it lazily); an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .base import (
    RANDOM_WEIGHTS_NOTE,
    SMOLLM2_ID,
    Engine,
    EngineUnavailable,
    GenRequest,
    GenResult,
    check_model_map,
)

ENGINE_NAMES = ("hf", "vllm", "openai", "fake")


def make_engine(name: str, **options) -> Engine:
    """Build engine ``name`` with its keyword options (all accept ``model_map``)."""
    if name == "hf":
        from .hf import HFEngine

        return HFEngine(**options)
    if name == "openai":
        from .openai import OpenAIEngine

        return OpenAIEngine(**options)
    if name == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(**options)
    if name == "fake":
        from .fake import FakeEngine

        return FakeEngine(**options)
    raise EngineUnavailable(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")


__all__ = [
    "ENGINE_NAMES",
    "RANDOM_WEIGHTS_NOTE",
    "SMOLLM2_ID",
    "Engine",
    "EngineUnavailable",
    "GenRequest",
    "GenResult",
    "check_model_map",
    "make_engine",
]
