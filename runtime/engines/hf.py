"""Embedded engine: transformers ``generate`` on PyTorch (CPU or CUDA).

Requests are grouped by the model that actually runs (``hf_models``: loading, and SmolLM2 for a model it
cannot load, recorded in ``substitutions``) and run in left-padded micro-batches bounded by a token
budget (``micro_batches``). Requests sharing a ``prefix_key`` reuse the KV cache of their common token
prefix: computed once, kept in a small LRU across calls, copied for each micro-batch. A request with
``retain_s`` leaves its final KV (prompt + generated tokens) in a retained store bounded by entries and
bytes, dropped after ``retain_s`` seconds (Continuum's time-to-live); a later request whose token ids
share a prefix of at least ``MIN_PREFIX_TOKENS`` with a retained sequence prefills only the rest (both
stores: ``kv_cache``). Each request uses the longest reuse on offer (its prefix group's or a retained
one); rows with different cached heads still batch together (each head is left-padded to the longest
and masked: ``kv_tensors``). Requests with a ``json_schema`` decode under that schema's grammar
(``constrained``): the reply is valid JSON of the schema or an error.
On CPU the default fp32 makes greedy output identical with or without batching and prefix reuse.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from transformers import DynamicCache, LogitsProcessorList

from .base import Engine, GenRequest, GenResult, chat_messages, json_cut_error, validate
from .hf_models import Loaded, load_actual, resolve, substitute
from .kv_cache import MIN_PREFIX_TOKENS, PrefixCache, RetainedStore, shared_prefix
from .kv_tensors import Head, batch_cache, make_cache, nbytes, row_kv
from .micro_batches import micro_batches

if TYPE_CHECKING:
    import xgrammar as xgr

    from .constrained import Grammars, SchemaProcessor


@dataclass
class _Item:
    """One valid request after tokenization; ``index`` is its position in the caller's list."""

    index: int
    req: GenRequest
    ids: list[int]
    head: Head | None = None  # reused (prefix ids, KV covering at least them)
    grammar: xgr.CompiledGrammar | None = None  # compiled ``req.json_schema`` (None: unconstrained)


class HFEngine(Engine):
    """transformers engine; see the module docstring. All public methods are serialized by a lock."""

    name = "hf"

    def __init__(
        self,
        model_map: dict[str, str] | None = None,
        device: str | None = None,
        dtype: str = "auto",
        threads: int | None = None,
        max_batch_size: int = 256,
        max_batch_tokens: int | None = None,
        prefix_reuse: bool = True,
        prefix_cache_size: int = 8,
        random_weights: bool = False,
        retain_entries: int = 1024,
        retain_bytes: int = 1 << 30,
        shape: str | dict = "qwen2.5-1.5b",
        cache_dir: str | Path | None = None,
    ):
        super().__init__(model_map)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":  # fp32 on CPU: faster to be exact (batch- and prefix-invariant greedy output)
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.dtype = getattr(torch, dtype)
        if threads:
            torch.set_num_threads(threads)
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.prefix_reuse = prefix_reuse
        self.random_weights = random_weights
        self.shape = shape
        self.cache_dir = cache_dir
        self._lock = threading.RLock()
        self._loaded: dict[str, Loaded] = {}  # actual model -> resident model
        self._declared: dict[str, str] = {}  # declared id -> actual model
        self._prefixes: PrefixCache[DynamicCache] = PrefixCache(prefix_cache_size)
        self._retained: RetainedStore[DynamicCache] = RetainedStore(retain_entries, retain_bytes)
        for model in self.model_map:  # an explicit target that does not exist is an error up front
            self._resolve(model)

    @property
    def prefix_cache_size(self) -> int:
        return self._prefixes.max_entries

    @prefix_cache_size.setter
    def prefix_cache_size(self, value: int) -> None:
        self._prefixes.max_entries = value

    @property
    def retain_entries(self) -> int:
        return self._retained.max_entries

    @retain_entries.setter
    def retain_entries(self, value: int) -> None:
        self._retained.max_entries = value

    @property
    def retain_bytes(self) -> int:
        return self._retained.max_bytes

    @retain_bytes.setter
    def retain_bytes(self, value: int) -> None:
        self._retained.max_bytes = value

    # ---- models -------------------------------------------------------------------------------

    def _resolve(self, model: str) -> tuple[str, str | None]:
        return resolve(
            model,
            self.model_map,
            random_weights=self.random_weights,
            shape=self.shape,
            cache_dir=self.cache_dir,
        )

    def load(self, model: str) -> float:
        with self._lock:
            if model in self._declared:
                return 0.0
            start = time.perf_counter()
            actual, note = self._resolve(model)
            if actual not in self._loaded:
                try:
                    self._loaded[actual] = self._load_actual(actual)
                except Exception as exc:
                    mapped = model in self.model_map and not self.random_weights
                    actual, note = substitute(model, actual, exc, mapped=mapped, cache_dir=self.cache_dir)
                    if actual not in self._loaded:
                        self._loaded[actual] = self._load_actual(actual)
            self._declared[model] = actual
            if note:
                self.substitutions[model] = note
            return time.perf_counter() - start

    def _load_actual(self, actual: str) -> Loaded:
        return load_actual(
            actual,
            shape=self.shape,
            dtype=self.dtype,
            device=self.device,
            cache_dir=self.cache_dir,
            max_batch_tokens=self.max_batch_tokens,
        )

    def resident_models(self) -> list[str]:
        with self._lock:
            return list(self._declared)

    def count_tokens(self, model: str, text: str) -> int:
        with self._lock:
            self.load(model)
            tokenizer = self._loaded[self._declared[model]].tokenizer
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def retained_stats(self) -> dict[str, int]:
        """Entries and bytes held by the retained-KV store (after dropping expired entries)."""
        with self._lock:
            return self._retained.stats()

    def close(self) -> None:
        with self._lock:
            self._loaded.clear()
            self._declared.clear()
            self._prefixes.clear()
            self._retained.clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ---- generation ---------------------------------------------------------------------------

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        with self._lock:
            results: list[GenResult | None] = [None] * len(requests)
            by_actual: dict[str, list[int]] = {}  # declared ids that run as the same model batch together
            for i, req in enumerate(requests):
                try:
                    self.load(req.model)
                except Exception as exc:  # a model that fails to load fails only its requests
                    results[i] = GenResult.failed(f"load {req.model}: {exc}")
                    continue
                by_actual.setdefault(self._declared[req.model], []).append(i)
            for actual, indices in by_actual.items():
                loaded = self._loaded[actual]
                items: list[_Item] = []
                for i in indices:
                    try:
                        item, error = self._prepare(loaded, i, requests[i])
                    except Exception as exc:
                        item, error = None, f"prompt: {exc}"
                    if error:
                        results[i] = GenResult.failed(error)
                    elif item is not None:  # no error: prepared
                        items.append(item)
                try:
                    self._run_model(loaded, actual, items, results)
                except Exception as exc:  # engine bug or OOM: fail what is left, keep finished results
                    for item in items:
                        results[item.index] = results[item.index] or GenResult.failed(f"engine: {exc}")
            return results  # type: ignore[return-value]

    def _prepare(self, loaded: Loaded, index: int, req: GenRequest) -> tuple[_Item | None, str | None]:
        error = validate(req, loaded.context)
        if error:
            return None, error
        tok = loaded.tokenizer
        try:
            text = tok.apply_chat_template(chat_messages(req), add_generation_prompt=True, tokenize=False)
        except Exception:  # tokenizer without a chat template
            text = "\n\n".join(m["content"] for m in chat_messages(req)) + "\n\n"
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) + req.max_tokens > loaded.context:
            return None, (
                f"prompt ({len(ids)} tokens) + max_tokens ({req.max_tokens}) exceeds context {loaded.context}"
            )
        grammar = None
        if req.json_schema is not None and not loaded.random:  # timing runs decode unconstrained
            try:
                grammar = _grammars(loaded).compile(req.json_schema)
            except Exception as exc:
                return None, f"json_schema: {exc}"
        return _Item(index, req, ids, grammar=grammar), None

    def _run_model(self, loaded: Loaded, actual: str, items: list[_Item], results: list) -> None:
        """Run one model's requests: each takes the longest reuse on offer (its prefix group's shared KV or
        a retained KV it extends), then all are batched together, rows with the same head side by side."""
        self._retained.expire()
        groups: dict[str, list[_Item]] = {}
        prefix_s: dict[int, float] = {}
        for item in items:
            item.head = self._retained.longest(actual, item.ids)
            if self.prefix_reuse and item.req.prefix_key is not None:
                groups.setdefault(item.req.prefix_key, []).append(item)
        for key, members in groups.items():
            start = time.perf_counter()
            prefix = self._prefix_for(loaded, actual, key, members)
            n = len(prefix[0]) if prefix else 0
            takers = [it for it in members if not (it.head and len(it.head[0]) > n)]
            for it in takers:
                it.head = prefix
                prefix_s[it.index] = (time.perf_counter() - start) / max(len(takers), 1)
        for batch in micro_batches(items, self.max_batch_size, loaded.batch_tokens):
            self._run_batch(loaded, batch, results, sum(prefix_s.get(it.index, 0.0) for it in batch))

    def _prefix_for(self, loaded: Loaded, actual: str, key: str, members: list[_Item]) -> Head | None:
        """(prefix ids, KV cache) shared by ``members``: from the LRU if it still fits, else computed."""
        seqs = [it.ids for it in members]
        entry = self._prefixes.find(actual, key, seqs)
        if entry:
            return entry
        if len(members) < 2:
            return None
        n = shared_prefix(seqs, min(len(s) for s in seqs) - 1)  # every member keeps >= 1 token to feed
        if n < MIN_PREFIX_TOKENS:
            return None
        ids = seqs[0][:n]
        cache = DynamicCache(config=loaded.model.config)
        with torch.inference_mode():
            loaded.model(
                input_ids=torch.tensor([ids], device=self.device), use_cache=True, **{loaded.cache_kw: cache}
            )
        self._prefixes.put(actual, key, ids, cache)
        return ids, cache

    def _run_batch(self, loaded: Loaded, batch: list[_Item], results: list, prefix_s=0.0) -> None:
        """Generate one micro-batch (`prefix_s`: time already spent on its shared prefixes); on failure
        retry its requests one by one to isolate the bad one."""
        start = time.perf_counter() - prefix_s
        try:
            rows, schema = self._generate_ids(loaded, batch)
        except Exception as exc:
            if len(batch) > 1:
                for item in batch:
                    self._run_batch(loaded, [item], results, prefix_s / len(batch))
            else:
                results[batch[0].index] = GenResult.failed(f"generate: {exc}", time.perf_counter() - start)
            return
        seconds = (time.perf_counter() - start) / len(batch)
        for row, (item, new_ids) in enumerate(zip(batch, rows, strict=True)):
            kept = _cut(loaded, item, new_ids)
            text = cast(str, loaded.tokenizer.decode(kept, skip_special_tokens=True))  # one sequence: one str
            cached = len(item.head[0]) if item.head else 0
            error = None
            if item.grammar is not None and schema is not None and not schema.complete(row, kept):
                error = f"{json_cut_error(item.req.max_tokens)}; reply was {text[:120]!r}"
            results[item.index] = GenResult(text, len(item.ids), len(kept), cached, seconds, error)

    def _generate_ids(
        self, loaded: Loaded, batch: list[_Item]
    ) -> tuple[list[list[int]], SchemaProcessor | None]:
        """New token ids per row, and the schema processor (None without schemas).

        Row i is [pad]*(C - h_i) + cached head_i + [pad]*(W - t_i) + tail_i, C the longest cached head, W
        the longest uncached tail; positions come from the attention mask, so padding anywhere is
        invisible. Without heads this is plain left padding. Rows that asked for ``retain_s`` leave their
        final KV in the retained store. Rows with a schema decode under its grammar."""
        req = batch[0].req
        pad = loaded.tokenizer.pad_token_id
        heads = [len(it.head[0]) if it.head else 0 for it in batch]
        width_c = max(heads)
        tails = [it.ids[h:] for it, h in zip(batch, heads, strict=True)]
        width = max(len(t) for t in tails)
        ids, mask = [], []
        for it, h, t in zip(batch, heads, tails, strict=True):
            ids.append([pad] * (width_c - h) + it.ids[:h] + [pad] * (width - len(t)) + t)
            mask.append([0] * (width_c - h) + [1] * h + [0] * (width - len(t)) + [1] * len(t))
        max_new = max(it.req.max_tokens for it in batch)
        kwargs = {"max_new_tokens": max_new, "pad_token_id": pad, "do_sample": req.temperature > 0}
        if req.temperature > 0:
            kwargs.update(temperature=req.temperature, top_k=0, top_p=req.top_p or 1.0)
            if req.seed is not None:
                torch.manual_seed(req.seed)
        if loaded.random:  # timing runs decode the full length
            kwargs["min_new_tokens"] = max_new
        schema = None
        if any(it.grammar is not None for it in batch):
            from .constrained import SchemaProcessor

            grammar_rows = [(it.grammar, it.req.max_tokens) for it in batch]
            schema = SchemaProcessor(_grammars(loaded), grammar_rows, greedy=req.temperature == 0)
            kwargs["logits_processor"] = LogitsProcessorList([schema])
        retain = [i for i, it in enumerate(batch) if it.req.retain_s]
        cache = None
        if width_c:
            cache = batch_cache(loaded.model.config, [it.head for it in batch], width_c)
        elif retain:  # an empty cache of our own, to read the rows to retain from afterwards
            cache = DynamicCache(config=loaded.model.config)
        if cache is not None:
            kwargs[loaded.cache_kw] = cache
        with torch.inference_mode():
            # PreTrainedModel does not list GenerationMixin among its bases; AutoModelForCausalLM's classes do
            out = loaded.model.generate(  # type: ignore[operator]
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                **kwargs,
            )
        rows = [row[width_c + width :].tolist() for row in out]
        if retain:
            assert cache is not None  # made above whenever a row retains
            fed = cache.get_seq_length() - width_c - width  # generated tokens whose KV is in the cache
            for i in retain:
                it, h, t_len = batch[i], heads[i], len(tails[i])
                kept = _cut(loaded, it, rows[i])[: max(fed, 0)]
                cols = [*range(width_c - h, width_c), *range(width_c + width - t_len, width_c + width)]
                cols += range(width_c + width, width_c + width + len(kept))
                self._retain(loaded, it.req, tuple(it.ids + kept), row_kv(cache, i, cols, self.device))
        return rows, schema

    def _retain(self, loaded: Loaded, req: GenRequest, ids: tuple[int, ...], layers) -> None:
        """Keep ``layers`` (the KV of ``ids``) for ``req.retain_s`` seconds, within the store's bounds."""
        assert req.retain_s is not None  # called for the rows that ask for retain_s
        build = partial(make_cache, loaded.model.config, layers)
        self._retained.put(self._declared[req.model], ids, nbytes(layers), float(req.retain_s), build)


def _cut(loaded: Loaded, item: _Item, new_ids: list[int]) -> list[int]:
    """A row's new tokens cut at EOS (inclusive) and at the request's own max_tokens."""
    eos = loaded.eos_ids()
    kept: list[int] = []
    for tok in new_ids[: item.req.max_tokens]:
        kept.append(tok)
        if tok in eos and not loaded.random:
            break
    return kept


def _grammars(loaded: Loaded) -> Grammars:
    """The model's schema compiler (made once; xgrammar is imported only when a schema is first used)."""
    if loaded.grammars is None:
        try:
            from .constrained import Grammars
        except ImportError as exc:
            hint = "constrained decoding needs xgrammar (pip install 'halo[engine]')"
            raise RuntimeError(f"{hint}: {exc}") from exc
        vocab = loaded.model.get_output_embeddings().weight.shape[0]
        loaded.grammars = Grammars(loaded.tokenizer, vocab, loaded.eos_ids())
    return loaded.grammars
