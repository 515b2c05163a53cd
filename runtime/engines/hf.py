"""Embedded engine: transformers ``generate`` on PyTorch (CPU or CUDA).

Requests are grouped by the model that actually runs, sorted by prompt length and run in left-padded
micro-batches bounded by a token budget. Requests sharing a ``prefix_key`` reuse the KV cache of their
common token prefix: computed once, kept in a small LRU across calls, copied for each micro-batch.
Models it cannot load locally run as SmolLM2-135M-Instruct; ``substitutions`` records that.
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
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from .base import (
    RANDOM_WEIGHTS_NOTE,
    SMOLLM2_ALIASES,
    SMOLLM2_ID,
    Engine,
    GenRequest,
    GenResult,
    chat_messages,
    validate,
)
from .model_cache import random_model, smollm2_dir, tokenizer_dir

MIN_PREFIX_TOKENS = 8


@dataclass
class _Loaded:
    """A resident model with its tokenizer."""

    model: object
    tokenizer: object
    context: int
    random: bool
    cache_kw: str  # generate's KV-cache argument: ``cache`` (transformers >= 5.2x) or ``past_key_values``


@dataclass
class _Item:
    """One valid request after tokenization; ``index`` is its position in the caller's list."""

    index: int
    req: GenRequest
    ids: list[int]


class HFEngine(Engine):
    """transformers engine; see the module docstring. All public methods are serialized by a lock."""

    name = "hf"

    def __init__(
        self,
        model_map: dict[str, str] | None = None,
        device: str | None = None,
        dtype: str = "auto",
        threads: int | None = None,
        max_batch_size: int = 16,
        max_batch_tokens: int = 16384,
        prefix_reuse: bool = True,
        prefix_cache_size: int = 8,
        random_weights: bool = False,
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
        self.shape = shape
        self.cache_dir = cache_dir
        self._lock = threading.RLock()
        self._loaded: dict[str, _Loaded] = {}  # actual model -> resident model
        self._declared: dict[str, str] = {}  # declared id -> actual model
        self._prefixes: OrderedDict[tuple[str, str], tuple[list[int], DynamicCache]] = OrderedDict()

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
        except Exception:  # not in the local hub cache: substitute
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
                except Exception:
                    fallback = str(smollm2_dir(self.cache_dir))
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
        return _Loaded(model, tokenizer, context, actual.startswith("random:"), cache_kw)

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
        return _Item(index, req, ids), None

    def _run_model(self, loaded: _Loaded, actual: str, items: list[_Item], results: list) -> None:
        """Run one model's requests: prefix groups from their shared KV, the rest plainly; all batched."""
        plain: list[_Item] = []
        groups: dict[str, list[_Item]] = {}
        for item in items:
            if self.prefix_reuse and item.req.prefix_key is not None:
                groups.setdefault(item.req.prefix_key, []).append(item)
            else:
                plain.append(item)
        for key, members in groups.items():
            start = time.perf_counter()
            prefix = self._prefix_for(loaded, actual, key, members)
            if prefix is None:
                plain.extend(members)
                continue
            share = (time.perf_counter() - start) / len(members)
            for batch in self._micro_batches(members):
                self._run_batch(loaded, batch, results, prefix, share)
        for batch in self._micro_batches(plain):
            self._run_batch(loaded, batch, results)

    def _micro_batches(self, items: list[_Item]) -> list[list[_Item]]:
        """Batches of requests with the same sampling settings, sorted by prompt length, within budget."""
        ordered = sorted(items, key=lambda it: (_sampling_key(it.req), len(it.ids)))
        batches: list[list[_Item]] = []
        for item in ordered:
            batch = batches[-1] if batches else None
            if (
                batch
                and _sampling_key(batch[0].req) == _sampling_key(item.req)
                and len(batch) < self.max_batch_size
            ):
                width = len(item.ids) + max(it.req.max_tokens for it in [*batch, item])
                if width * (len(batch) + 1) <= self.max_batch_tokens:
                    batch.append(item)
                    continue
            batches.append([item])
        return batches

    def _run_batch(self, loaded: _Loaded, batch: list[_Item], results: list, prefix=None, share=0.0) -> None:
        """Generate one micro-batch; on failure retry its requests one by one to isolate the bad one."""
        start = time.perf_counter() - share * len(batch)
        try:
            rows = self._generate_ids(loaded, batch, prefix)
        except Exception as exc:
            if len(batch) > 1:
                for item in batch:
                    self._run_batch(loaded, [item], results, prefix, share)
            else:
                results[batch[0].index] = GenResult.failed(f"generate: {exc}", time.perf_counter() - start)
            return
        seconds = (time.perf_counter() - start) / len(batch)
        cached = len(prefix[0]) if prefix else 0
        for item, new_ids in zip(batch, rows, strict=True):
            results[item.index] = self._result(loaded, item, new_ids, cached, seconds)

    def _generate_ids(self, loaded: _Loaded, batch: list[_Item], prefix=None) -> list[list[int]]:
        """New token ids per row. Without a prefix, prompts are left-padded; with one, the padding sits
        between the cached prefix and each suffix (positions come from the attention mask)."""
        req = batch[0].req
        pad = loaded.tokenizer.pad_token_id
        head = prefix[0] if prefix else []
        tails = [it.ids[len(head) :] for it in batch]
        width = max(len(t) for t in tails)
        ids = [head + [pad] * (width - len(t)) + t for t in tails]
        mask = [[1] * len(head) + [0] * (width - len(t)) + [1] * len(t) for t in tails]
        max_new = max(it.req.max_tokens for it in batch)
        kwargs = {"max_new_tokens": max_new, "pad_token_id": pad, "do_sample": req.temperature > 0}
        if req.temperature > 0:
            kwargs.update(temperature=req.temperature, top_k=0, top_p=1.0)
            if req.seed is not None:
                torch.manual_seed(req.seed)
        if loaded.random:  # timing runs decode the full length
            kwargs["min_new_tokens"] = max_new
        if prefix:
            cache = copy.deepcopy(prefix[1])
            if len(batch) > 1:
                cache.batch_repeat_interleave(len(batch))
            kwargs[loaded.cache_kw] = cache
        with torch.inference_mode():
            out = loaded.model.generate(
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                **kwargs,
            )
        return [row[len(head) + width :].tolist() for row in out]

    def _result(
        self, loaded: _Loaded, item: _Item, new_ids: list[int], cached: int, seconds: float
    ) -> GenResult:
        """Cut a row at EOS (inclusive) and at the request's own max_tokens, then decode."""
        eos = _eos_ids(loaded)
        kept: list[int] = []
        for tok in new_ids[: item.req.max_tokens]:
            kept.append(tok)
            if tok in eos and not loaded.random:
                break
        text = loaded.tokenizer.decode(kept, skip_special_tokens=True)
        return GenResult(text, len(item.ids), len(kept), cached, seconds)

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
    """Requests batch together only when they sample identically (greedy, or same temperature and seed)."""
    return (0.0, None) if req.temperature == 0 else (req.temperature, req.seed)


def _eos_ids(loaded: _Loaded) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids
