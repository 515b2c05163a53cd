"""Shared prompt prefixes across the calls of one LLM group (BatchLLM-style global prefix sharing).

Calls are sorted by their rendered prompt text, so calls with a common prefix become neighbours; the
prefix common to all calls (system prompt, static template text) is the root group, and runs of
neighbours that share a longer prefix (e.g. the same rendered context) form sub-groups. Running calls
in this order lets the engine compute each prefix once and reuse its KV cache for every member; those
groups measure the prefill *saved*. The *identity* of a shared prefix, by which the engine groups and
caches requests and the optimizer co-locates groups, is `prefix_key`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from halo.plan import OpNode
from halo.tokens import TokenCounter

MIN_EXTRA_CHARS = 64  # a sub-group must share this much beyond the root prefix (~16 tokens, one KV block)
MAX_GROUPS = 2000  # sub-groups kept, by tokens saved


def prefix_key(op: OpNode, system_text: str | None) -> str:
    """The one identity of a shared prefix: requests of `op`'s model whose rendered system text is
    `system_text` and whose prompt template has the same static prefix (the text before its first hole)."""
    head = f"{op.model}\x00{system_text or ''}\x00{op.templates['prompt'].static_prefix()}"
    return hashlib.blake2b(head.encode(), digest_size=8).hexdigest()


@dataclass
class PrefixGroup:
    """Calls (`members`, in run order) that share `prefix_tokens` prompt tokens; the prefix is computed once."""

    prefix_chars: int
    prefix_tokens: int
    members: list[int]
    saved_tokens: int  # prefill tokens not recomputed beyond the enclosing group's prefix


@dataclass
class PrefixPlan:
    """The root prefix shared by every call, sub-groups sharing more, and the call order for the runtime."""

    root: PrefixGroup
    groups: list[PrefixGroup] = field(default_factory=list)
    order: list[int] = field(default_factory=list)

    @property
    def saved_tokens(self) -> int:
        return self.root.saved_tokens + sum(g.saved_tokens for g in self.groups)

    @property
    def text(self) -> str:
        line = f"{len(self.order):,} calls share a {self.root.prefix_tokens:,}-token prefix"
        if self.groups:
            line += f"; {len(self.groups):,} sub-groups share more"
        return line + f"; saves {self.saved_tokens:,} prefill tokens"


def lcp(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over C-level slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def prefix_groups(texts: list[str], counter: TokenCounter) -> PrefixPlan:
    """Group calls by shared prompt prefix; `texts[i]` is call i's prompt (system first)."""
    n = len(texts)
    order = sorted(range(n), key=texts.__getitem__)
    shared = [
        lcp(x, y) if (x := texts[a]) != (y := texts[b]) else len(x)
        for a, b in zip(order, order[1:], strict=False)
    ]
    root_chars = min(shared) if shared else 0
    root_tokens = counter.count(texts[order[0]][:root_chars]) if root_chars else 0
    root = PrefixGroup(root_chars, root_tokens, order, root_tokens * (n - 1))
    groups: list[PrefixGroup] = []
    start = 0
    for i in range(len(shared) + 1):
        if i < len(shared) and shared[i] >= root_chars + MIN_EXTRA_CHARS:
            continue
        if i > start:
            chars = min(shared[start:i])
            tokens = counter.count(texts[order[start]][:chars])
            members = order[start : i + 1]
            groups.append(PrefixGroup(chars, tokens, members, (tokens - root_tokens) * (len(members) - 1)))
        start = i + 1
    groups.sort(key=lambda g: -g.saved_tokens)
    return PrefixPlan(root, [g for g in groups[:MAX_GROUPS] if g.saved_tokens > 0], order)
