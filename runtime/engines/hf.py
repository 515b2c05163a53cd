"""Embedded engine: transformers ``generate`` on PyTorch (CPU or CUDA).

Requests are grouped by the model that actually runs, sorted by prompt length and run in left-padded
micro-batches bounded by a token budget. Requests sharing a ``prefix_key`` reuse the KV cache of their
common token prefix: computed once, kept in a small LRU across calls, copied for each micro-batch.
A request with ``retain_s`` leaves its final KV (prompt + generated tokens) in a retained store bounded
by entries and bytes, dropped after ``retain_s`` seconds (Continuum's time-to-live); a later request whose
token ids share a prefix of at least ``MIN_PREFIX_TOKENS`` with a retained sequence prefills only the rest.
Each request uses the longest reuse on offer (its prefix group's or a retained one); rows with different
cached heads still batch together (each head is left-padded to the longest and masked).
Models it cannot load locally run as SmolLM2-135M-Instruct; ``substitutions`` records that; an explicit
``model_map`` target that fails to load is an error instead. Requests with a ``json_schema`` decode
under that schema's grammar (``constrained``): the reply is valid JSON of the schema or an error.
On CPU the default fp32 makes greedy output identical with or without batching and prefix reuse.
"""

from __future__ import annotations

import copy
import inspect
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LogitsProcessorList

from .base import (
    RANDOM_WEIGHTS_NOTE,
    SMOLLM2_ALIASES,
    SMOLLM2_ID,
    Engine,
    EngineUnavailable,
    GenRequest,
    GenResult,
    chat_messages,
    json_cut_error,
    validate,
)
from .model_cache import random_model, smollm2_dir, tokenizer_dir

MIN_PREFIX_TOKENS = 8
CPU_BATCH_TOKENS = 65536    # padded positions per micro-batch on the CPU
ACTIVATION_WIDTHS = 16      # transient activations of one position in prefill, in hidden sizes (MLP, logits)


@dataclass
class _Loaded:
    """A resident model with its tokenizer."""

    model: object
    tokenizer: object
    context: int
    random: bool
    cache_kw: str  # generate's KV-cache argument: ``cache`` (transformers >= 5.2x) or ``past_key_values``
    batch_tokens: int  # padded positions (rows x (prompt + new tokens)) one micro-batch may hold
    grammars: object | None = None  # constrained.Grammars, made on the first request with a schema


@dataclass
class _Retained:
    """A retained KV: the token ids it covers (batch 1 cache), when it expires and its size."""

    ids: tuple[int, ...]
    cache: DynamicCache
    expires: float
    nbytes: int


@dataclass
class _Item:
    """One valid request after tokenization; ``index`` is its position in the caller's list."""

    index: int
    req: GenRequest
    ids: list[int]
    head: tuple[list[int], DynamicCache] | None = None  # reused (prefix ids, KV covering at least them)
    grammar: object | None = None  # the compiled grammar of ``req.json_schema`` (None: unconstrained)


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
        self.prefix_cache_size = prefix_cache_size
        self.random_weights = random_weights
        self.retain_entries = retain_entries
        self.retain_bytes = retain_bytes
        self.shape = shape
        self.cache_dir = cache_dir
        self._lock = threading.RLock()
        self._loaded: dict[str, _Loaded] = {}  # actual model -> resident model
        self._declared: dict[str, str] = {}  # declared id -> actual model
        self._prefixes: OrderedDict[tuple[str, str], tuple[list[int], DynamicCache]] = OrderedDict()
        self._retained: OrderedDict[tuple[str, tuple[int, ...]], _Retained] = OrderedDict()  # LRU order
        self._retained_bytes = 0
        for model in self.model_map:  # an explicit target that does not exist is an error up front
            self._resolve(model)

    # ---- models -------------------------------------------------------------------------------

    def _resolve(self, model: str) -> tuple[str, str | None]:
        """(what actually runs for declared ``model``, substitution note or None).

        What runs is a local model directory or ``random:<shape>``.
        """
        if self.random_weights:
            actual = f"random:{self.shape if isinstance(self.shape, str) else 'custom'}"
            return actual, f"{actual} ({RANDOM_WEIGHTS_NOTE})"
        target = self.model_map.get(model, model)
        if target in SMOLLM2_ALIASES:
            return str(smollm2_dir(self.cache_dir)), None
        if Path(target).is_dir():
            return target, None
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(target, local_files_only=True), None
        except Exception as exc:  # not in the local hub cache: substitute, unless the user mapped it
            if model in self.model_map:
                raise _map_error(model, target, "no such directory and not in the local Hugging Face cache") from exc
            return str(smollm2_dir(self.cache_dir)), SMOLLM2_ID

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
                    fallback = str(smollm2_dir(self.cache_dir))
                    if model in self.model_map and not self.random_weights:
                        raise _map_error(model, actual, f"{type(exc).__name__}: {exc}") from exc
                    if actual in (fallback, *SMOLLM2_ALIASES) or actual.startswith("random:"):
                        raise
                    actual, note = fallback, SMOLLM2_ID  # e.g. a partial hub snapshot: substitute too
                    if actual not in self._loaded:
                        self._loaded[actual] = self._load_actual(actual)
            self._declared[model] = actual
            if note:
                self.substitutions[model] = note
            return time.perf_counter() - start

    def _load_actual(self, actual: str) -> _Loaded:
        source = tokenizer_dir(self.cache_dir) if actual.startswith("random:") else actual
        tokenizer = AutoTokenizer.from_pretrained(source)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if actual.startswith("random:"):
            model = random_model(self.shape, dtype=self.dtype, device=self.device)
        else:
            model = AutoModelForCausalLM.from_pretrained(actual, dtype=self.dtype).to(self.device).eval()
        context = getattr(model.config, "max_position_embeddings", None) or 2048
        cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        return _Loaded(model, tokenizer, context, actual.startswith("random:"), cache_kw, self._token_budget(model))

    def _token_budget(self, model) -> int:
        """`max_batch_tokens` when given; on a GPU, half its free memory over the KV and activation bytes
        of one position; on the CPU a fixed budget."""
        if self.max_batch_tokens:
            return self.max_batch_tokens
        if not self.device.startswith("cuda"):
            return CPU_BATCH_TOKENS
        cfg = model.config
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        size = torch.finfo(self.dtype).bits // 8
        per_position = size * (2 * cfg.num_hidden_layers * kv_heads * head_dim + ACTIVATION_WIDTHS * cfg.hidden_size)
        free, _ = torch.cuda.mem_get_info()
        return max(CPU_BATCH_TOKENS, int(0.5 * free / per_position))

    def resident_models(self) -> list[str]:
        with self._lock:
            return list(self._declared)

    def count_tokens(self, model: str, text: str) -> int:
        with self._lock:
            self.load(model)
            tokenizer = self._loaded[self._declared[model]].tokenizer
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        with self._lock:
            self._loaded.clear()
            self._declared.clear()
            self._prefixes.clear()
            self._retained.clear()
            self._retained_bytes = 0
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
                items = []
                for i in indices:
                    try:
                        item, error = self._prepare(loaded, i, requests[i])
                    except Exception as exc:
                        item, error = None, f"prompt: {exc}"
                    if error:
                        results[i] = GenResult.failed(error)
                    else:
                        items.append(item)
                try:
                    self._run_model(loaded, actual, items, results)
                except Exception as exc:  # engine bug or OOM: fail what is left, keep finished results
                    for item in items:
                        results[item.index] = results[item.index] or GenResult.failed(f"engine: {exc}")
            return results  # type: ignore[return-value]

    def _prepare(self, loaded: _Loaded, index: int, req: GenRequest) -> tuple[_Item | None, str | None]:
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
            return (
                None,
                f"prompt ({len(ids)} tokens) + max_tokens ({req.max_tokens}) exceeds context {loaded.context}",
            )
        grammar = None
        if req.json_schema is not None and not loaded.random:  # timing runs decode unconstrained
            try:
                grammar = _grammars(loaded).compile(req.json_schema)
            except Exception as exc:
                return None, f"json_schema: {exc}"
        return _Item(index, req, ids, grammar=grammar), None

    def _run_model(self, loaded: _Loaded, actual: str, items: list[_Item], results: list) -> None:
        """Run one model's requests: each takes the longest reuse on offer (its prefix group's shared KV or
        a retained KV it extends), then all are batched together, rows with the same head side by side."""
        self._expire()
        groups: dict[str, list[_Item]] = {}
        prefix_s: dict[int, float] = {}
        for item in items:
            item.head = self._retained_head(actual, item.ids)
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
        for batch in self._micro_batches(loaded, items):
            self._run_batch(loaded, batch, results, sum(prefix_s.get(it.index, 0.0) for it in batch))

    def _micro_batches(self, loaded: _Loaded, items: list[_Item]) -> list[list[_Item]]:
        """Batches of requests with the same sampling settings, rows sharing a head together, then by
        prompt length, within the engine's memory budget."""
        ordered = sorted(items, key=lambda it: (_sampling_key(it.req), it.req.prefix_key or "", len(it.ids)))
        batches: list[list[_Item]] = []
        for item in ordered:
            batch = batches[-1] if batches else None
            if (
                batch
                and _sampling_key(batch[0].req) == _sampling_key(item.req)
                and len(batch) < self.max_batch_size
            ):
                width = len(item.ids) + max(it.req.max_tokens for it in [*batch, item])
                if width * (len(batch) + 1) <= loaded.batch_tokens:
                    batch.append(item)
                    continue
            batches.append([item])
        return batches

    def _run_batch(self, loaded: _Loaded, batch: list[_Item], results: list, prefix_s=0.0) -> None:
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
            text = loaded.tokenizer.decode(kept, skip_special_tokens=True)
            cached = len(item.head[0]) if item.head else 0
            error = None
            if item.grammar is not None and not schema.complete(row, kept):
                error = f"{json_cut_error(item.req.max_tokens)}; reply was {text[:120]!r}"
            results[item.index] = GenResult(text, len(item.ids), len(kept), cached, seconds, error)

    def _generate_ids(self, loaded: _Loaded, batch: list[_Item]) -> tuple[list[list[int]], object]:
        """New token ids per row, and the schema processor (None without schemas). Row i is [pad]*(C - h_i) + cached head_i + [pad]*(W - t_i) + tail_i,
        C the longest cached head, W the longest uncached tail; positions come from the attention mask,
        so padding anywhere is invisible. Without heads this is plain left padding. Rows that asked for
        ``retain_s`` leave their final KV in the retained store. Rows with a schema decode under its grammar."""
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

            rows = [(it.grammar, it.req.max_tokens) for it in batch]
            schema = SchemaProcessor(loaded.grammars, rows, greedy=req.temperature == 0)
            kwargs["logits_processor"] = LogitsProcessorList([schema])
        retain = [i for i, it in enumerate(batch) if it.req.retain_s]
        cache = None
        if width_c:
            cache = self._batch_cache(loaded, batch, width_c)
        elif retain:  # an empty cache of our own, to read the rows to retain from afterwards
            cache = DynamicCache(config=loaded.model.config)
        if cache is not None:
            kwargs[loaded.cache_kw] = cache
        with torch.inference_mode():
            out = loaded.model.generate(
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                **kwargs,
            )
        rows = [row[width_c + width :].tolist() for row in out]
        if retain:
            fed = cache.get_seq_length() - width_c - width  # generated tokens whose KV is in the cache
            for i in retain:
                it, h, t = batch[i], heads[i], len(tails[i])
                kept = _cut(loaded, it, rows[i])[: max(fed, 0)]
                cols = [*range(width_c - h, width_c), *range(width_c + width - t, width_c + width)]
                cols += range(width_c + width, width_c + width + len(kept))
                index = torch.tensor(cols, device=self.device)
                layers = [(k[i : i + 1].index_select(2, index), v[i : i + 1].index_select(2, index))
                          for k, v in _kv(cache)]
                self._retain(loaded, it.req, tuple(it.ids + kept), layers)
        return rows, schema

    def _batch_cache(self, loaded: _Loaded, batch: list[_Item], width_c: int) -> DynamicCache:
        """The input KV for a batch with cached heads: a copy of one shared prefix repeated, or each row's
        own head cropped to its length and left-padded with zeros (masked) to ``width_c``."""
        first = batch[0].head
        if first and all(it.head is first for it in batch) and len(first[0]) == first[1].get_seq_length():
            cache = copy.deepcopy(first[1])
            if len(batch) > 1:
                cache.batch_repeat_interleave(len(batch))
            return cache
        per_row = [[(k[:, :, : len(it.head[0])], v[:, :, : len(it.head[0])]) for k, v in _kv(it.head[1])]
                   if it.head else None for it in batch]
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
        return _make_cache(loaded, layers)

    # ---- retained KV (time-to-live) -----------------------------------------------------------

    def _retain(self, loaded: _Loaded, req: GenRequest, ids: tuple[int, ...], layers) -> None:
        """Keep ``layers`` (the KV of ``ids``) for ``req.retain_s`` seconds, within the store's bounds."""
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if len(ids) >= MIN_PREFIX_TOKENS and nbytes <= self.retain_bytes:
            actual = self._declared[req.model]
            old = self._retained.pop((actual, ids), None)
            if old:
                self._retained_bytes -= old.nbytes
            entry = _Retained(ids, _make_cache(loaded, layers), time.monotonic() + float(req.retain_s), nbytes)
            self._retained[(actual, ids)] = entry
            self._retained_bytes += nbytes
        self._expire()
        while self._retained and (
            len(self._retained) > self.retain_entries or self._retained_bytes > self.retain_bytes
        ):  # least recently stored or used first
            _, dropped = self._retained.popitem(last=False)
            self._retained_bytes -= dropped.nbytes

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, e in self._retained.items() if e.expires <= now]:
            self._retained_bytes -= self._retained.pop(key).nbytes

    def _retained_head(self, actual: str, ids: list[int]) -> tuple[list[int], DynamicCache] | None:
        """(prefix ids, retained KV) of the retained sequence sharing the longest prefix with ``ids`` (at
        least MIN_PREFIX_TOKENS; one token is always left to feed), or None."""
        best, best_n = None, MIN_PREFIX_TOKENS - 1
        limit = len(ids) - 1
        for key, entry in self._retained.items():
            if key[0] == actual:
                n = _common_prefix(entry.ids, ids, limit)
                if n > best_n:
                    best, best_n = key, n
        if best is None:
            return None
        self._retained.move_to_end(best)
        return ids[:best_n], self._retained[best].cache

    def retained_stats(self) -> dict[str, int]:
        """Entries and bytes held by the retained-KV store (after dropping expired entries)."""
        with self._lock:
            self._expire()
            return {"entries": len(self._retained), "bytes": self._retained_bytes}

    def _prefix_for(self, loaded: _Loaded, actual: str, key: str, members: list[_Item]):
        """(prefix ids, KV cache) shared by ``members``: from the LRU if it still fits, else computed."""
        limit = min(len(it.ids) for it in members) - 1  # every member keeps >= 1 token to feed
        entry = self._prefixes.get((actual, key))
        if entry and len(entry[0]) <= limit and all(it.ids[: len(entry[0])] == entry[0] for it in members):
            self._prefixes.move_to_end((actual, key))
            return entry
        if len(members) < 2:
            return None
        first = members[0].ids
        n = 0
        while n < limit and all(it.ids[n] == first[n] for it in members):
            n += 1
        if n < MIN_PREFIX_TOKENS:
            return None
        cache = DynamicCache(config=loaded.model.config)
        with torch.inference_mode():
            ids = torch.tensor([first[:n]], device=self.device)
            loaded.model(input_ids=ids, use_cache=True, **{loaded.cache_kw: cache})
        self._prefixes[(actual, key)] = (first[:n], cache)
        while len(self._prefixes) > self.prefix_cache_size:
            self._prefixes.popitem(last=False)
        return first[:n], cache


def _sampling_key(req: GenRequest) -> tuple:
    """Requests batch together only when they sample identically (greedy, or same temperature, top_p, seed)."""
    return (0.0, None, None) if req.temperature == 0 else (req.temperature, req.top_p, req.seed)


def _cut(loaded: _Loaded, item: _Item, new_ids: list[int]) -> list[int]:
    """A row's new tokens cut at EOS (inclusive) and at the request's own max_tokens."""
    eos = _eos_ids(loaded)
    kept: list[int] = []
    for tok in new_ids[: item.req.max_tokens]:
        kept.append(tok)
        if tok in eos and not loaded.random:
            break
    return kept


def _common_prefix(a, b, limit: int) -> int:
    """Length of the common prefix of token sequences ``a`` and ``b``, at most ``limit``."""
    n = min(len(a), len(b), limit)
    if tuple(a[:n]) == tuple(b[:n]):
        return n
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer, shape (batch, heads, seq, dim), across DynamicCache layouts."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def _make_cache(loaded: _Loaded, layers) -> DynamicCache:
    cache = DynamicCache(config=loaded.model.config)
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def _map_error(model: str, target: str, why: str) -> EngineUnavailable:
    return EngineUnavailable(f"--model-map {model}={target}: cannot load this model ({why})")


def _grammars(loaded: _Loaded):
    """The model's schema compiler (made once; xgrammar is imported only when a schema is first used)."""
    if loaded.grammars is None:
        try:
            from .constrained import Grammars
        except ImportError as exc:
            raise RuntimeError(f"constrained decoding needs xgrammar (pip install 'halo[engine]'): {exc}") from exc
        vocab = loaded.model.get_output_embeddings().weight.shape[0]
        loaded.grammars = Grammars(loaded.tokenizer, vocab, _eos_ids(loaded))
    return loaded.grammars


def _eos_ids(loaded: _Loaded) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids
