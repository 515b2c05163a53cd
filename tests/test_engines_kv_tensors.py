"""Building a micro-batch's input KV from per-row heads and slicing a row out, on small real tensors."""

from __future__ import annotations

import torch
from transformers import DynamicCache, LlamaConfig

from halo.runtime.engines.kv_tensors import batch_cache, kv_layers, make_cache, nbytes, row_kv

CONFIG = LlamaConfig(
    hidden_size=8,
    intermediate_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=32,
)


def head(length: int, fill: float) -> tuple[list[int], DynamicCache]:
    """A batch-1 head of ``length`` positions, keys = fill + position, values = -keys."""
    keys = fill + torch.arange(length, dtype=torch.float32).view(1, 1, length, 1).expand(1, 1, length, 4)
    return list(range(length)), make_cache(CONFIG, [(keys.clone(), -keys.clone()) for _ in range(2)])


def test_shared_head_is_copied_and_repeated():
    shared = head(3, 10.0)
    cache = batch_cache(CONFIG, [shared, shared, shared], 3)
    (k, v), _ = kv_layers(cache)
    assert k.shape == (3, 1, 3, 4) and torch.equal(k[2], kv_layers(shared[1])[0][0][0])
    k.zero_()  # the batch's cache is a copy: the shared head is untouched
    assert kv_layers(shared[1])[0][0][0, 0, 2, 0] == 12.0


def test_rows_own_heads_are_cropped_and_left_padded_with_zeros():
    long, short = head(5, 10.0), head(4, 20.0)
    short = (short[0][:2], short[1])  # a head covering more KV than its ids: cropped to the ids
    cache = batch_cache(CONFIG, [long, short, None], 5)
    for k, v in kv_layers(cache):
        assert k.shape == (3, 1, 5, 4)
        assert k[0, 0, :, 0].tolist() == [10, 11, 12, 13, 14]
        assert k[1, 0, :, 0].tolist() == [0, 0, 0, 20, 21] and torch.equal(v[1], -k[1])
        assert not k[2].any()  # a row without a head is all padding


def test_row_kv_takes_one_rows_columns():
    cache = batch_cache(CONFIG, [head(4, 10.0), head(4, 20.0)], 4)
    layers = row_kv(cache, 1, [0, 2, 3], "cpu")
    assert [tuple(k.shape) for k, _ in layers] == [(1, 1, 3, 4)] * 2
    assert layers[0][0][0, 0, :, 0].tolist() == [20, 22, 23]
    assert nbytes(layers) == 2 * 2 * 3 * 4 * 4  # layers x (keys, values) x positions x dim x fp32
