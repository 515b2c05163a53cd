"""The hf engine's micro-batch forming and token budget, without a model."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from halo.runtime.engines import GenRequest
from halo.runtime.engines.micro_batches import CPU_BATCH_TOKENS, micro_batches, sampling_key, token_budget


@dataclass
class Row:
    req: GenRequest
    ids: list[int]


def row(n: int, max_tokens: int = 4, **kw) -> Row:
    return Row(GenRequest(model="m", prompt="p", max_tokens=max_tokens, **kw), list(range(n)))


def test_sampling_key_ignores_top_p_and_seed_when_greedy():
    assert sampling_key(GenRequest("m", "p", seed=1, top_p=0.5)) == sampling_key(GenRequest("m", "p"))
    assert sampling_key(GenRequest("m", "p", temperature=0.7, seed=1)) != sampling_key(
        GenRequest("m", "p", temperature=0.7, seed=2)
    )


def test_batches_split_by_sampling_then_group_prefix_keys_and_sort_by_length():
    rows = [row(9, prefix_key="b"), row(3), row(5, temperature=0.5), row(7, prefix_key="a"), row(2)]
    batches = micro_batches(rows, max_batch_size=8, batch_tokens=10**6)
    assert [[len(r.ids) for r in b] for b in batches] == [[2, 3, 7, 9], [5]]


def test_batches_respect_row_count_and_padded_token_budget():
    rows = [row(10, max_tokens=6) for _ in range(5)]
    assert [len(b) for b in micro_batches(rows, max_batch_size=2, batch_tokens=10**6)] == [2, 2, 1]
    assert [len(b) for b in micro_batches(rows, max_batch_size=8, batch_tokens=48)] == [3, 2]  # 16 per row
    longest = [row(10, max_tokens=2), row(10, max_tokens=30)]  # the longest max_tokens widens every row
    assert [len(b) for b in micro_batches(longest, max_batch_size=8, batch_tokens=60)] == [1, 1]


def test_token_budget_is_the_given_one_or_fixed_on_cpu():
    config = SimpleNamespace(num_attention_heads=4, hidden_size=64, num_hidden_layers=2)
    assert token_budget(config, "cpu", torch.float32, 1234) == 1234
    assert token_budget(config, "cpu", torch.float32, None) == CPU_BATCH_TOKENS
