"""KV tensors of the hf engine: reading and building transformers ``DynamicCache`` objects.

A head is (token ids, a batch-1 KV covering at least them). ``batch_cache`` builds the input KV of a
micro-batch from its rows' heads, ``row_kv`` takes one row's columns out of a batch's KV to retain.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import DynamicCache

Head = tuple[list[int], DynamicCache]
Layers = list[tuple[torch.Tensor, torch.Tensor]]


def kv_layers(cache) -> Layers:
    """(keys, values) per layer, shape (batch, heads, seq, dim), across DynamicCache layouts."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def make_cache(config, layers: Layers) -> DynamicCache:
    """A DynamicCache for a model with ``config`` holding ``layers``."""
    cache = DynamicCache(config=config)
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def nbytes(layers: Layers) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


def batch_cache(config, heads: Sequence[Head | None], width_c: int) -> DynamicCache:
    """The input KV for rows with ``heads`` (at least one): a copy of one shared head repeated, or each
    row's own head cropped to its length and left-padded with zeros (masked) to ``width_c``."""
    first = heads[0]
    if first and all(h is first for h in heads) and len(first[0]) == first[1].get_seq_length():
        cache = copy.deepcopy(first[1])
        if len(heads) > 1:
            cache.batch_repeat_interleave(len(heads))
        return cache
    per_row = [
        [(k[:, :, : len(h[0])], v[:, :, : len(h[0])]) for k, v in kv_layers(h[1])] if h else None
        for h in heads
    ]
    template = next(r for r in per_row if r)
    layers = []
    for layer, (k0, v0) in enumerate(template):
        ks, vs = [], []
        for row in per_row:
            k, v = row[layer] if row else (k0[:, :, :0], v0[:, :, :0])
            gap = width_c - k.shape[2]
            ks.append(torch.cat([k.new_zeros(*k.shape[:2], gap, k.shape[3]), k], dim=2))
            vs.append(torch.cat([v.new_zeros(*v.shape[:2], gap, v.shape[3]), v], dim=2))
        layers.append((torch.cat(ks), torch.cat(vs)))
    return make_cache(config, layers)


def row_kv(cache, row: int, cols: list[int], device: str) -> Layers:
    """Row ``row`` of a batch's KV restricted to sequence positions ``cols``, as batch-1 layers."""
    index = torch.tensor(cols, device=device)
    return [
        (k[row : row + 1].index_select(2, index), v[row : row + 1].index_select(2, index))
        for k, v in kv_layers(cache)
    ]
