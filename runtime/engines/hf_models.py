"""Models of the hf engine: what runs for a declared model id, loading it, and SmolLM2 substitution.

A declared id runs as its ``model_map`` target, or as itself: a SmolLM2 alias, a local directory or a
snapshot in the local Hugging Face cache. Anything else runs as SmolLM2-135M-Instruct (a substitution),
and so does a snapshot that fails to load; an explicit ``model_map`` target that cannot be loaded is an
error instead. With random weights every id runs as ``random:<shape>`` (timing runs).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .base import RANDOM_WEIGHTS_NOTE, SMOLLM2_ALIASES, SMOLLM2_ID, EngineUnavailable
from .micro_batches import token_budget
from .model_cache import random_model, smollm2_dir, tokenizer_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .constrained import Grammars


@dataclass
class Loaded:
    """A resident model with its tokenizer."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    context: int
    random: bool
    cache_kw: str  # generate's KV-cache argument: ``cache`` (transformers >= 5.2x) or ``past_key_values``
    batch_tokens: int  # padded positions (rows x (prompt + new tokens)) one micro-batch may hold
    grammars: Grammars | None = None  # constrained.Grammars, made on the first request with a schema

    def eos_ids(self) -> set[int]:
        """The token ids that end a reply (the model's and the tokenizer's EOS)."""
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids


def resolve(
    model: str, model_map: dict[str, str], *, random_weights: bool, shape: str | dict, cache_dir
) -> tuple[str, str | None]:
    """(what actually runs for declared ``model``, substitution note or None).

    What runs is a local model directory or ``random:<shape>``.
    """
    if random_weights:
        actual = f"random:{shape if isinstance(shape, str) else 'custom'}"
        return actual, f"{actual} ({RANDOM_WEIGHTS_NOTE})"
    target = model_map.get(model, model)
    if target in SMOLLM2_ALIASES:
        return str(smollm2_dir(cache_dir)), None
    if Path(target).is_dir():
        return target, None
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(target, local_files_only=True), None
    except Exception as exc:  # not in the local hub cache: substitute, unless the user mapped it
        if model in model_map:
            why = "no such directory and not in the local Hugging Face cache"
            raise map_error(model, target, why) from exc
        return str(smollm2_dir(cache_dir)), SMOLLM2_ID


def substitute(model: str, actual: str, exc: Exception, *, mapped: bool, cache_dir) -> tuple[str, str]:
    """(SmolLM2's directory, note) to run instead of ``actual``, which failed to load with ``exc`` (e.g. a
    partial hub snapshot). Raises for a ``mapped`` model, and re-raises ``exc`` when SmolLM2 itself or
    random weights failed."""
    fallback = str(smollm2_dir(cache_dir))
    if mapped:
        raise map_error(model, actual, f"{type(exc).__name__}: {exc}") from exc
    if actual in (fallback, *SMOLLM2_ALIASES) or actual.startswith("random:"):
        raise exc
    return fallback, SMOLLM2_ID


def load_actual(
    actual: str,
    *,
    shape: str | dict,
    dtype: torch.dtype,
    device: str,
    cache_dir,
    max_batch_tokens: int | None,
) -> Loaded:
    """Load what ``resolve`` named onto ``device``, with a left-padding tokenizer and its batch budget."""
    source = tokenizer_dir(cache_dir) if actual.startswith("random:") else actual
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if actual.startswith("random:"):
        model = random_model(shape, dtype=dtype, device=device)
    else:
        # transformers declares to() as @wraps(nn.Module.to), which types the bound call as wanting the module
        model = AutoModelForCausalLM.from_pretrained(actual, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
    context = getattr(model.config, "max_position_embeddings", None) or 2048
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    budget = token_budget(model.config, device, dtype, max_batch_tokens)
    return Loaded(model, tokenizer, context, actual.startswith("random:"), cache_kw, budget)


def map_error(model: str, target: str, why: str) -> EngineUnavailable:
    return EngineUnavailable(f"--model-map {model}={target}: cannot load this model ({why})")
