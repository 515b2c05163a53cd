"""The hf engine's two KV stores, free of torch: the cached value is opaque (a ``DynamicCache`` there).

``PrefixCache`` keeps the KV of a prefix group's shared token prefix across calls, least recently used
evicted beyond ``max_entries``. ``RetainedStore`` keeps a request's final KV for its time-to-live,
bounded by entries and bytes (least recently stored or used evicted first); a later request reuses the
retained sequence sharing the longest token prefix with it (at least ``MIN_PREFIX_TOKENS``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

MIN_PREFIX_TOKENS = 8  # shortest token prefix worth reusing (shared or retained)

C = TypeVar("C")  # the cached KV value


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """Length of the common prefix of token sequences ``a`` and ``b``, at most ``limit``."""
    n = min(len(a), len(b), limit)
    if tuple(a[:n]) == tuple(b[:n]):
        return n
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_prefix(seqs: Sequence[Sequence[int]], limit: int) -> int:
    """Length of the token prefix all of ``seqs`` share, at most ``limit``."""
    first = seqs[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


class PrefixCache(Generic[C]):
    """(prefix ids, KV) per (model, prefix key), at most ``max_entries``, least recently used evicted."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[list[int], C]] = OrderedDict()

    def find(self, model: str, key: str, seqs: Sequence[Sequence[int]]) -> tuple[list[int], C] | None:
        """The entry for (``model``, ``key``) if every one of ``seqs`` starts with its prefix and keeps at
        least one token beyond it (it is then the most recently used), else None."""
        entry = self._entries.get((model, key))
        if entry is None:
            return None
        ids = entry[0]
        if len(ids) < min(len(s) for s in seqs) and all(list(s[: len(ids)]) == ids for s in seqs):
            self._entries.move_to_end((model, key))
            return entry
        return None

    def put(self, model: str, key: str, ids: list[int], kv: C) -> None:
        """Store ``kv`` (the KV of ``ids``) for (``model``, ``key``), evicting beyond ``max_entries``."""
        self._entries[(model, key)] = (ids, kv)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class _Retained(Generic[C]):
    """One retained KV: the token ids it covers, when it expires (clock seconds) and its size."""

    ids: tuple[int, ...]
    kv: C
    expires: float
    nbytes: int


class RetainedStore(Generic[C]):
    """Final KVs of requests, per (model, token ids), each kept until its time-to-live runs out.

    At most ``max_entries`` entries and ``max_bytes`` bytes; the bounds may be changed at any time and
    apply on the next ``put``. ``clock`` gives seconds (monotonic).
    """

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], _Retained[C]] = OrderedDict()  # LRU order
        self._bytes = 0

    def put(
        self, model: str, ids: tuple[int, ...], nbytes: int, ttl_s: float, build: Callable[[], C]
    ) -> None:
        """Keep the KV of ``ids`` (``nbytes``, made by ``build``) for ``ttl_s`` seconds, unless ``ids`` is
        shorter than MIN_PREFIX_TOKENS or ``nbytes`` exceeds ``max_bytes`` (then ``build`` is not called);
        then drop expired entries and evict to the bounds."""
        if len(ids) >= MIN_PREFIX_TOKENS and nbytes <= self.max_bytes:
            old = self._entries.pop((model, ids), None)
            if old:
                self._bytes -= old.nbytes
            self._entries[(model, ids)] = _Retained(ids, build(), self._clock() + float(ttl_s), nbytes)
            self._bytes += nbytes
        self.expire()
        while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
            _, dropped = self._entries.popitem(last=False)  # least recently stored or used first
            self._bytes -= dropped.nbytes

    def expire(self) -> None:
        """Drop the entries whose time-to-live has run out."""
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            self._bytes -= self._entries.pop(key).nbytes

    def longest(self, model: str, ids: Sequence[int]) -> tuple[list[int], C] | None:
        """(prefix ids, KV) of ``model``'s retained sequence sharing the longest prefix with ``ids`` (at
        least MIN_PREFIX_TOKENS; one token of ``ids`` is always left to feed), now most recently used; or
        None. Expired entries still count until ``expire`` runs."""
        best, best_n = None, MIN_PREFIX_TOKENS - 1
        limit = len(ids) - 1
        for key, entry in self._entries.items():
            if key[0] == model:
                n = common_prefix(entry.ids, ids, limit)
                if n > best_n:
                    best, best_n = key, n
        if best is None:
            return None
        self._entries.move_to_end(best)
        return list(ids[:best_n]), self._entries[best].kv

    def stats(self) -> dict[str, int]:
        """Entries and bytes held, after dropping expired entries."""
        self.expire()
        return {"entries": len(self._entries), "bytes": self._bytes}

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
