"""The hf engine's KV stores without a model: prefix LRU by count, retained store by TTL, entries, bytes."""

from __future__ import annotations

from halo.runtime.engines.kv_cache import (
    MIN_PREFIX_TOKENS,
    PrefixCache,
    RetainedStore,
    common_prefix,
    shared_prefix,
)

SEQ = list(range(100, 120))  # 20 token ids


class Clock:
    """A settable monotonic clock."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ids(n: int, start: int = 100) -> tuple[int, ...]:
    return tuple(range(start, start + n))


def test_common_and_shared_prefix():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9], 10) == 2
    assert common_prefix([1, 2, 3, 4], (1, 2, 3, 4), 3) == 3  # capped by limit
    assert common_prefix([], [1], 5) == 0
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 7]], 10) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]], 2) == 2


def test_prefix_cache_evicts_least_recently_used_beyond_count():
    cache = PrefixCache(max_entries=2)
    cache.put("m", "a", SEQ[:8], "kv-a")
    cache.put("m", "b", SEQ[:9], "kv-b")
    assert cache.find("m", "a", [SEQ]) == (SEQ[:8], "kv-a")  # a is now the most recently used
    cache.put("m", "c", SEQ[:10], "kv-c")
    assert len(cache) == 2
    assert cache.find("m", "b", [SEQ]) is None  # b was evicted
    assert cache.find("m", "a", [SEQ]) and cache.find("m", "c", [SEQ])


def test_prefix_cache_entry_must_prefix_every_member_and_leave_a_token():
    cache = PrefixCache(max_entries=4)
    cache.put("m", "k", SEQ[:8], "kv")
    assert cache.find("m", "k", [SEQ, SEQ[:9]]) == (SEQ[:8], "kv")
    assert cache.find("m", "k", [SEQ, SEQ[:8]]) is None  # a member would have nothing left to feed
    assert cache.find("m", "k", [SEQ, [0, *SEQ]]) is None  # a member does not start with the prefix
    assert cache.find("other-model", "k", [SEQ]) is None
    cache.clear()
    assert len(cache) == 0 and cache.find("m", "k", [SEQ]) is None


def test_unfit_lookup_does_not_refresh_the_entry():
    cache = PrefixCache(max_entries=2)
    cache.put("m", "a", SEQ[:8], "kv-a")
    cache.put("m", "b", SEQ[:8], "kv-b")
    assert cache.find("m", "a", [SEQ[:8]]) is None  # too short to use: a stays least recently used
    cache.put("m", "c", SEQ[:8], "kv-c")
    assert cache.find("m", "a", [SEQ]) is None and cache.find("m", "b", [SEQ])


def test_retained_entries_expire_after_their_ttl():
    clock = Clock()
    store = RetainedStore(max_entries=10, max_bytes=1000, clock=clock)
    store.put("m", ids(10), 100, 5.0, lambda: "short")
    store.put("m", ids(10, 200), 100, 20.0, lambda: "long")
    assert store.stats() == {"entries": 2, "bytes": 200}
    clock.now = 4.9
    assert store.stats()["entries"] == 2
    clock.now = 5.0
    assert store.stats() == {"entries": 1, "bytes": 100}
    assert store.longest("m", [*ids(10), 7]) is None  # the expired sequence is gone
    assert store.longest("m", [*ids(10, 200), 7]) == (list(ids(10, 200)), "long")
    clock.now = 20.0
    assert store.stats() == {"entries": 0, "bytes": 0}


def test_retained_store_evicts_to_the_entry_bound_least_recently_used_first():
    store = RetainedStore(max_entries=2, max_bytes=10**6)
    for n in range(3):
        store.put("m", ids(10, 100 * (n + 1)), 10, 60, lambda n=n: f"kv{n}")
    assert store.stats() == {"entries": 2, "bytes": 20}
    assert store.longest("m", [*ids(10, 100), 1]) is None  # the oldest went first
    assert store.longest("m", [*ids(10, 200), 1])  # a lookup makes it the most recently used
    store.put("m", ids(10, 400), 10, 60, lambda: "kv3")
    assert store.longest("m", [*ids(10, 300), 1]) is None
    assert store.longest("m", [*ids(10, 200), 1]) and store.longest("m", [*ids(10, 400), 1])


def test_retained_store_evicts_to_the_byte_bound_and_skips_oversize_entries():
    store = RetainedStore(max_entries=100, max_bytes=250)
    built = []
    for n in range(3):
        store.put("m", ids(10, 100 * (n + 1)), 100, 60, lambda n=n: built.append(n) or n)
    assert store.stats() == {"entries": 2, "bytes": 200}
    store.put("m", ids(10, 900), 251, 60, lambda: built.append("big"))
    assert "big" not in built and store.stats()["entries"] == 2  # larger than the store: never built
    store.max_bytes = 150  # a smaller bound applies on the next put, even one that stores nothing
    store.put("m", ids(MIN_PREFIX_TOKENS - 1, 900), 10, 60, lambda: built.append("short"))
    assert "short" not in built  # too short to be worth retaining
    assert store.stats() == {"entries": 1, "bytes": 100}
    assert built == [0, 1, 2]


def test_retaining_the_same_ids_again_replaces_the_entry():
    clock = Clock()
    store = RetainedStore(max_entries=10, max_bytes=1000, clock=clock)
    store.put("m", ids(10), 100, 5, lambda: "old")
    store.put("m", ids(10), 120, 50, lambda: "new")
    assert store.stats() == {"entries": 1, "bytes": 120}
    clock.now = 10
    assert store.longest("m", [*ids(10), 1]) == (list(ids(10)), "new")  # with the new TTL


def test_longest_takes_the_longest_shared_prefix_of_the_same_model():
    store = RetainedStore(max_entries=10, max_bytes=10**6)
    store.put("m", ids(9), 1, 60, lambda: "nine")
    store.put("m", ids(15), 1, 60, lambda: "fifteen")
    store.put("other", ids(20), 1, 60, lambda: "other model")
    query = [*ids(12), 0, 0]
    assert store.longest("m", query) == (list(ids(12)), "fifteen")  # shares 12 tokens with it, 9 with "nine"
    assert store.longest("m", list(ids(15))) == (list(ids(14)), "fifteen")  # one token is left to feed
    assert store.longest("m", [*ids(MIN_PREFIX_TOKENS - 1), 0]) is None  # too short a match
    assert store.longest("nobody", query) is None
    store.clear()
    assert store.stats() == {"entries": 0, "bytes": 0}
