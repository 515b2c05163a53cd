"""Adapter for vLLM's offline ``LLM`` engine, used when ``import vllm`` works.

Prefix caching is always on. JSON schemas go to vLLM's structured outputs (``StructuredOutputsParams``
in current releases, ``GuidedDecodingParams`` in older ones); without either, an instruction is added.
A schema reply cut by ``max_tokens`` that is not valid JSON fails its request.
Switching models puts the active engine to sleep (level 1) when sleep mode works on this platform,
otherwise the active engine is shut down first.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time

from .base import (
    SMOLLM2_ALIASES,
    Engine,
    EngineUnavailable,
    GenRequest,
    GenResult,
    chat_messages,
    cut_json,
    validate,
)
from .model_cache import smollm2_dir


def _import_vllm():
    try:
        import vllm
    except Exception as exc:
        raise EngineUnavailable(
            f"the vllm engine needs the vllm package, which is not importable here ({exc}). "
            "Use engine 'hf', or run the vLLM tier with `make test-vllm` (separate environment)."
        ) from exc
    return vllm


def _default_memory_share() -> float:
    """Share of device memory vLLM reserves: 0.85 of a GPU; on the CPU the flag reserves host memory, which
    the driver, the tools and other processes share, so a quarter of it."""
    import torch

    return 0.85 if torch.cuda.is_available() else 0.25


class VLLMEngine(Engine):
    """vLLM offline engine (one active model; others sleep). Public methods are serialized by a lock."""

    name = "vllm"

    def __init__(
        self,
        model_map: dict[str, str] | None = None,
        enforce_eager: bool = False,
        sleep_mode: bool = True,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        seed: int = 0,
        cache_dir=None,
        **llm_options,
    ):
        super().__init__(model_map)
        self._vllm = _import_vllm()
        self.cache_dir = cache_dir
        self.options = dict(
            enforce_eager=enforce_eager,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization or _default_memory_share(),
            seed=seed,
            enable_prefix_caching=True,
            disable_log_stats=False,  # keeps prefix-cache counters readable through get_metrics()
            **({"max_model_len": max_model_len} if max_model_len else {}),
            **llm_options,
        )
        self.sleep_mode = sleep_mode and _sleep_available()
        self._llms: dict[str, object] = {}  # actual model -> LLM (awake or asleep)
        self._active: str | None = None
        self._declared: dict[str, str] = {}
        self._lock = threading.RLock()
        self._structured = self._structured_outputs_factory()

    def _actual(self, model: str) -> str:
        target = self.model_map.get(model, model)
        return str(smollm2_dir(self.cache_dir)) if target in SMOLLM2_ALIASES else target

    def load(self, model: str) -> float:
        with self._lock:
            actual = self._actual(model)
            self._declared[model] = actual
            if self._active == actual:
                return 0.0
            start = time.perf_counter()
            self._park_active()
            if actual in self._llms:
                self._llms[actual].wake_up()
            else:
                self._llms[actual] = self._create(actual)
            self._active = actual
            return time.perf_counter() - start

    def _create(self, actual: str):
        options = dict(self.options)
        if self.sleep_mode:
            options["enable_sleep_mode"] = True
        try:
            return self._vllm.LLM(model=actual, **options)
        except Exception:
            if not self.sleep_mode:
                raise
            self.sleep_mode = False  # platform without sleep support: retry without it
            options.pop("enable_sleep_mode")
            return self._vllm.LLM(model=actual, **options)

    def _park_active(self) -> None:
        """Sleep the active engine, or shut it down where sleeping is unsupported."""
        if self._active is None:
            return
        llm = self._llms[self._active]
        try:
            if not self.sleep_mode:
                raise NotImplementedError
            llm.sleep(level=1)
        except Exception:
            del self._llms[self._active]
            self._declared = {k: v for k, v in self._declared.items() if v != self._active}
            _shutdown(llm)
        self._active = None

    def resident_models(self) -> list[str]:
        with self._lock:
            return [m for m, actual in self._declared.items() if actual == self._active]

    def count_tokens(self, model: str, text: str) -> int:
        with self._lock:
            self.load(model)
            return len(self._llms[self._active].get_tokenizer().encode(text, add_special_tokens=False))

    def close(self) -> None:
        with self._lock:
            for llm in self._llms.values():
                _shutdown(llm)
            self._llms.clear()
            self._declared.clear()
            self._active = None

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        with self._lock:
            results: list[GenResult | None] = [None] * len(requests)
            by_model: dict[str, list[int]] = {}
            for i, req in enumerate(requests):
                by_model.setdefault(req.model, []).append(i)
            for model, indices in by_model.items():
                try:
                    self.load(model)
                except Exception as exc:
                    for i in indices:
                        results[i] = GenResult.failed(f"load {model}: {exc}")
                    continue
                llm = self._llms[self._active]
                limit = llm.llm_engine.model_config.max_model_len
                valid = []
                for i in indices:
                    error = validate(requests[i], limit)
                    if error:
                        results[i] = GenResult.failed(error)
                    else:
                        valid.append(i)
                self._run(llm, requests, valid, results)
            return results  # type: ignore[return-value]

    def _run(self, llm, requests: list[GenRequest], indices: list[int], results: list) -> None:
        """One ``llm.chat`` call for all ``indices``; on failure, one call each to isolate the bad one."""
        if not indices:
            return
        start = time.perf_counter()
        try:
            outputs = llm.chat(
                [chat_messages(requests[i], instruct_json=self._structured is None) for i in indices],
                sampling_params=[self._sampling(requests[i]) for i in indices],
                use_tqdm=False,
            )
        except Exception as exc:
            if len(indices) > 1:
                for i in indices:
                    self._run(llm, requests, [i], results)
            else:
                results[indices[0]] = GenResult.failed(f"generate: {exc}", time.perf_counter() - start)
            return
        share = (time.perf_counter() - start) / len(indices)
        for i, out in zip(indices, outputs, strict=True):
            completion = out.outputs[0]
            results[i] = GenResult(
                text=completion.text,
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(completion.token_ids),
                cached_tokens=int(getattr(out, "num_cached_tokens", 0) or 0),
                seconds=share,
                error=cut_json(requests[i], completion.text, completion.finish_reason == "length"),
            )

    def _sampling(self, req: GenRequest):
        params = {"temperature": req.temperature, "max_tokens": req.max_tokens, "seed": req.seed}
        if req.top_p is not None:
            params["top_p"] = req.top_p
        if req.json_schema is not None and self._structured is not None:
            params.update(self._structured(req.json_schema))
        return self._vllm.SamplingParams(**params)

    def _structured_outputs_factory(self):
        """schema -> SamplingParams kwargs for this vLLM version, or None when it has neither API."""
        from vllm import sampling_params as sp

        if hasattr(sp, "StructuredOutputsParams"):
            return lambda schema: {"structured_outputs": sp.StructuredOutputsParams(json=schema)}
        if hasattr(sp, "GuidedDecodingParams"):
            return lambda schema: {"guided_decoding": sp.GuidedDecodingParams(json=schema)}
        return None

    def prefix_cache_stats(self) -> dict[str, float]:
        """vLLM's prefix-cache counters (``hits``/``queries`` in tokens) where metrics are exposed."""
        with self._lock:
            llm = self._llms.get(self._active) if self._active else None
            stats: dict[str, float] = {}
            try:
                metrics = llm.get_metrics() if llm is not None else []
            except Exception:
                return stats
            for metric in metrics:
                name = getattr(metric, "name", "")
                if name.startswith("vllm:prefix_cache_"):
                    key = name.removeprefix("vllm:prefix_cache_")
                    stats[key] = stats.get(key, 0.0) + float(getattr(metric, "value", 0) or 0)
            return stats


def _sleep_available() -> bool:
    """Whether this vLLM platform supports sleep mode (CUDA/ROCm); unknown counts as yes."""
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_sleep_mode_available())
    except Exception:
        return True


def _shutdown(llm) -> None:
    """Stop an LLM's engine core (where the API exists) and free its memory."""
    engine = getattr(llm, "llm_engine", None)
    for target in (engine, getattr(engine, "engine_core", None)):
        stop = getattr(target, "shutdown", None)
        if callable(stop):
            with contextlib.suppress(Exception):
                stop()
    gc.collect()
