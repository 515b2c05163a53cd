"""Micro-batches of the hf engine: which requests generate together, and how many padded positions fit.

A micro-batch holds requests that sample identically, at most ``max_batch_size`` rows, and at most the
token budget of padded positions (rows x (longest prompt + longest max_tokens)). The budget is
``max_batch_tokens`` when given; on a GPU half its free memory over the KV and activation bytes of one
position; on the CPU a fixed ``CPU_BATCH_TOKENS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import torch

from .base import GenRequest

CPU_BATCH_TOKENS = 65536  # padded positions per micro-batch on the CPU
ACTIVATION_WIDTHS = 16  # transient activations of one position in prefill, in hidden sizes (MLP, logits)


class Tokenized(Protocol):
    """A request with its prompt token ids."""

    req: GenRequest
    ids: list[int]


T = TypeVar("T", bound=Tokenized)


def token_budget(config, device: str, dtype: torch.dtype, max_batch_tokens: int | None) -> int:
    """Padded positions one micro-batch of a model with ``config`` may hold on ``device``."""
    if max_batch_tokens:
        return max_batch_tokens
    if not device.startswith("cuda"):
        return CPU_BATCH_TOKENS
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    size = torch.finfo(dtype).bits // 8
    kv = 2 * config.num_hidden_layers * kv_heads * head_dim
    per_position = size * (kv + ACTIVATION_WIDTHS * config.hidden_size)
    free, _ = torch.cuda.mem_get_info()
    return max(CPU_BATCH_TOKENS, int(0.5 * free / per_position))


def sampling_key(req: GenRequest) -> tuple:
    """Requests batch together only when they sample identically (greedy, or same temperature, top_p and
    seed)."""
    return (0.0, None, None) if req.temperature == 0 else (req.temperature, req.top_p, req.seed)


def micro_batches(items: Sequence[T], max_batch_size: int, batch_tokens: int) -> list[list[T]]:
    """Batches of ``items`` with the same sampling settings, rows sharing a prefix key together, then by
    prompt length, within ``max_batch_size`` rows and ``batch_tokens`` padded positions."""
    ordered = sorted(items, key=lambda it: (sampling_key(it.req), it.req.prefix_key or "", len(it.ids)))
    batches: list[list[T]] = []
    for item in ordered:
        batch = batches[-1] if batches else None
        if batch and sampling_key(batch[0].req) == sampling_key(item.req) and len(batch) < max_batch_size:
            width = len(item.ids) + max(it.req.max_tokens for it in [*batch, item])
            if width * (len(batch) + 1) <= batch_tokens:
                batch.append(item)
                continue
        batches.append([item])
    return batches
