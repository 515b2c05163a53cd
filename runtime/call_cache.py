"""Identical calls served once: finished results (memory, then the journal), calls in flight, replayed effects.

A mergeable call has a key (`halo.consolidate.call_key`); its result is kept in a bytes-bounded memo
and in the journal, and an identical call that comes while it runs joins it as a waiter. A per-input
call (a side effect or a sampled LLM call) has no key; its result is journaled by (node, row), so a
resumed run replays it instead of running it again.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from halo.runtime.engines.base import GenRequest
from halo.runtime.journal import Journal
from halo.runtime.records import dumps

IN_DOUBT = (
    "interrupted by a crash: this call may have run; it is not repeated (--retry-in-doubt runs it again)"
)


@dataclass
class Call:
    """One executed call and the (input row, node) instances waiting on it.

    Identical LLM calls of different nodes share a key, so the waiters name their node.
    """

    node: str
    key: str | None
    waiters: list[tuple[int, str]]
    request: GenRequest | None = None
    repaired: bool = False

    @property
    def llm_request(self) -> GenRequest:
        """The request of an LLM call (a tool call has none)."""
        if self.request is None:
            raise ValueError(f"the call of '{self.node}' is not an LLM call")
        return self.request


class Memo:
    """Finished call results by key as JSON text, least recently used first, bounded in bytes.

    An entry counts its key and text plus a fixed overhead (the dict entry and its objects), so the bound
    is close to the memory really held. Each hit decodes its own copy, so inputs never share (or alter)
    one another's values.
    """

    def __init__(self, limit: int):
        self.limit, self.size, self.evicted = limit, 0, 0
        self.items: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()

    def get(self, key: str) -> tuple[Any, str | None] | None:
        hit = self.items.get(key)
        if hit is None:
            return None
        self.items.move_to_end(key)
        return decode(*hit)

    def put(self, key: str, text: str | None, error: str | None) -> None:
        old = self.items.pop(key, None)
        self.size += _size(key, text, error) - (_size(key, *old) if old else 0)
        self.items[key] = (text, error)
        while self.size > self.limit and self.items:
            k, v = self.items.popitem(last=False)
            self.size -= _size(k, *v)
            self.evicted += 1


ENTRY_BYTES = 300  # what one memo entry costs besides its key and text (measured on CPython 3.11)


def _size(key: str, text: str | None, error: str | None) -> int:
    return ENTRY_BYTES + len(key) + len(text or "") + len(error or "")


def decode(text: str | None, error: str | None) -> tuple[Any, str | None]:
    """A stored result: (value, error)."""
    return (None if text is None else json.loads(text)), error


class CallCache:
    """The memo, the calls in flight by key, and the journal behind them."""

    def __init__(self, journal: Journal, memo_bytes: int):
        self.journal = journal
        self.memo = Memo(memo_bytes)
        self.inflight: dict[str, Call] = {}
        self.resuming = False  # the journal held work when the run started: look there too

    def finished(self, key: str) -> tuple[Any, str | None] | None:
        """The (value, error) of a finished call with this key: from memory, else from the journal when it
        may hold results memory does not (entries were evicted, or an earlier run did work)."""
        hit = self.memo.get(key)
        if hit is None and (self.memo.evicted or self.resuming) and (stored := self.journal.get_call(key)):
            self.memo.put(key, *stored)
            hit = decode(*stored)
        return hit

    def join(self, key: str, row: int, node: str) -> bool:
        """Wait on the identical call in flight, if there is one."""
        call = self.inflight.get(key)
        if call is None:
            return False
        call.waiters.append((row, node))
        return True

    def open(self, call: Call) -> None:
        if call.key is not None:
            self.inflight[call.key] = call

    def close(self, call: Call, value: Any, error: str | None, sampled: bool) -> None:
        """Keep a finished call's result: by key (memo and journal), or by (node, row) when `sampled` (a
        sampled LLM call, journaled so that it is not drawn again; tool effects journal themselves)."""
        if call.key is not None:
            self.inflight.pop(call.key, None)
            text = None if error else dumps(value)
            self.memo.put(call.key, text, error)
            self.journal.put_call(call.key, text, error)
        elif sampled:
            self.journal.put_effect(call.node, call.waiters[0][0], value, error)

    def replay(self, node: str, row: int, retry_in_doubt: bool) -> tuple[Any, str | None, bool] | None:
        """(value, error, in doubt) of a per-input call an earlier run did (or may have done: in doubt,
        unless `retry_in_doubt` runs it again); None when it is to run."""
        prior = self.journal.get_effect(node, row)
        if prior is None:
            return None
        state, value, error = prior
        if state != "intent":
            return value, error, False
        return None if retry_in_doubt else (value, IN_DOUBT, True)
