"""Adapter for vLLM's offline ``LLM`` engine, used when ``import vllm`` works, and ``vllm serve`` processes for
the framework baseline.

Prefix caching is always on. JSON schemas go to vLLM's structured outputs (``StructuredOutputsParams``
in current releases, ``GuidedDecodingParams`` in older ones); without either, an instruction is added.
A schema reply cut by ``max_tokens`` that is not valid JSON fails its request.

Options beyond vLLM's own:

- ``dummy_weights``: every model runs with random weights of its real shape. Its directory is built from the
  model's entry in the hardware models' spec table (``hw_models/data/models.toml``: a ``config.json`` of the
  architecture; a mixture of experts becomes a dense model of its active width) plus SmolLM2's tokenizer,
  and loaded with ``load_format="dummy"``. No weights are downloaded; the text is meaningless, the timing real.
- ``memory_split={model: share}``: the models named stay resident side by side, each engine holding its share
  of GPU memory (``gpu_memory_utilization``); nothing sleeps. A model without a share is refused.
  Without it, one model is active: switching puts the active engine to sleep when sleep mode works on this
  platform, otherwise the active engine is shut down first.
- ``start_modes={model: "eager" or "compiled"}``: the plan's start mode per model (``enforce_eager`` for
  the others).
- ``sleep_levels={model: 1 or 2}``: the plan's sleep level per model (default 1). Level 1 copies the weights
  to host memory; level 2 discards them, and waking re-reads them (``reload_weights``; dummy weights are
  drawn again). Before sleeping, the engine's worker collects its garbage: tensors freed
  after their memory was unmapped are what made vLLM's ``cumem_allocator`` print CUDA errors.
- ``keep_warm``: ``close()`` keeps the started engines for the next ``VLLMEngine`` of this process with the
  same options (a bench's next mode, or a run after ``halo calibrate`` in one process); ``release_warm()``
  shuts them down. They are handed over with empty prefix caches, and with one model at a time all asleep.
  vLLM's compile cache lives under Halo's cache root (``VLLM_CACHE_ROOT`` unless set), so
  later starts of a shape skip compilation.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from halo.models import cache_root

from .base import (
    RANDOM_WEIGHTS_NOTE,
    SMOLLM2_ALIASES,
    SMOLLM2_ID,
    Engine,
    EngineUnavailable,
    GenRequest,
    GenResult,
    chat_messages,
    cut_json,
    validate,
)
from .model_cache import _publish, smollm2_dir, tokenizer_dir

DUMMY_POSITIONS = 32768  # max_position_embeddings of a dummy model (max_model_len bounds what is used)
_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}


def _import_vllm():
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root() / "vllm"))
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


# ---- random weights of a real shape ------------------------------------------------------------------------


def _spec_table() -> dict[str, dict]:
    """The hardware models' table of model architectures (read as data: the runtime does not price)."""
    text = resources.files("halo.hw_models").joinpath("data/models.toml").read_text()
    return tomllib.loads(text)


def spec_entry(model: str) -> tuple[str, dict]:
    """(table id, architecture) of a model id or alias in the spec table; EngineUnavailable if unknown."""
    table = _spec_table()
    wanted = model.strip().lower()
    for key, raw in table.items():
        if wanted in (key.lower(), *(a.lower() for a in raw.get("aliases", []))):
            return key, raw
    raise EngineUnavailable(
        f"dummy_weights: no architecture for {model!r} in hw_models/data/models.toml "
        f"(known: {', '.join(sorted(table))})"
    )


def dummy_config(key: str, raw: dict, tokenizer: dict, positions: int = DUMMY_POSITIONS) -> dict:
    """A transformers ``config.json`` of the architecture ``raw`` (a spec-table entry). Qwen2.5 ids get Qwen2,
    Llama and SmolLM2 ids Llama, everything else Qwen3 (explicit head_dim, no attention bias); a mixture of
    experts becomes its dense stand-in: the MLP as wide as the experts one token uses."""
    name = key.lower()
    family = "qwen2" if "qwen2" in name else "llama" if ("llama" in name or "smollm" in name) else "qwen3"
    width = (
        raw["experts_per_token"] * raw["expert_intermediate"] if raw.get("experts") else raw["intermediate"]
    )
    return {
        "architectures": [_ARCHITECTURES[family]],
        "model_type": family,
        "hidden_size": raw["hidden"],
        "intermediate_size": width,
        "num_hidden_layers": raw["layers"],
        "num_attention_heads": raw["heads"],
        "num_key_value_heads": raw["kv_heads"],
        "head_dim": raw["head_dim"],
        "vocab_size": raw["vocab"],
        "tie_word_embeddings": bool(raw.get("tie_embeddings", False)),
        "max_position_embeddings": positions,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "attention_bias": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": tokenizer.get("bos_token_id"),
        "eos_token_id": tokenizer.get("eos_token_id"),
        "halo_dummy_of": key,
    }


def dummy_model_dir(
    model: str, cache_dir: str | Path | None = None, positions: int = DUMMY_POSITIONS
) -> Path:
    """The directory vLLM loads with ``load_format="dummy"`` for ``model``: its shape's ``config.json`` and
    SmolLM2's tokenizer, built once under ``<cache root>/dummy/`` (named by the config's hash)."""
    key, raw = spec_entry(model)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    tok = tokenizer_dir(root)
    ids = _tokenizer_ids(tok)
    config = dummy_config(key, raw, ids, positions)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]

    def build(out: Path) -> None:
        for f in tok.iterdir():
            if f.is_file():
                shutil.copyfile(f, out / f.name)
        (out / "config.json").write_text(json.dumps(config, indent=1))

    return _publish(root / "dummy" / f"{key.replace('/', '--')}-{digest}", build)


def _resolve(target: str, dummy_weights: bool, cache_dir) -> tuple[str, str | None]:
    """(the directory or hub id vLLM loads for a model-map target, substitution note or None)."""
    if dummy_weights and not Path(target).is_dir():
        source = SMOLLM2_ID if target in SMOLLM2_ALIASES else target
        return str(
            dummy_model_dir(source, cache_dir)
        ), f"{spec_entry(source)[0]} shape ({RANDOM_WEIGHTS_NOTE})"
    return (str(smollm2_dir(cache_dir)) if target in SMOLLM2_ALIASES else target), None


def _tokenizer_ids(tok: Path) -> dict:
    """BOS and EOS token ids of a saved tokenizer, read from its files (no transformers import)."""
    config = json.loads((tok / "tokenizer_config.json").read_text())
    vocab = {t["content"]: t["id"] for t in json.loads((tok / "tokenizer.json").read_text())["added_tokens"]}
    out = {}
    for name in ("bos_token", "eos_token"):
        token = config.get(name)
        token = token.get("content") if isinstance(token, dict) else token
        if token in vocab:
            out[f"{name}_id"] = vocab[token]
    return out


# ---- engines kept warm across engine objects ---------------------------------------------------------------

_WARM: dict[str, tuple[object, bool]] = {}  # options key -> (LLM, asleep)
_WARM_LOCK = threading.Lock()


def release_warm() -> None:
    """Shut down every engine kept warm by ``keep_warm`` (also done at interpreter exit)."""
    with _WARM_LOCK:
        held = [llm for llm, _ in _WARM.values()]
        _WARM.clear()
    for llm in held:
        _shutdown(llm)


atexit.register(release_warm)


class VLLMEngine(Engine):
    """vLLM offline engine: one active model (others asleep), or several resident side by side
    (``memory_split``). Public methods are serialized by a lock."""

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
        dummy_weights: bool = False,
        memory_split: dict[str, float] | None = None,
        keep_warm: bool = False,
        sleep_levels: dict[str, int] | None = None,
        start_modes: dict[str, str] | None = None,
        **llm_options,
    ):
        super().__init__(model_map)
        self._vllm = _import_vllm()
        self.cache_dir = cache_dir
        self.dummy_weights = dummy_weights
        self.memory_split = _check_split(memory_split)
        self.keep_warm = keep_warm
        self.sleep_levels = _check_levels(sleep_levels)
        self.start_modes = dict(start_modes or {})
        self.options = dict(
            enforce_eager=enforce_eager,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization or _default_memory_share(),
            seed=seed,
            enable_prefix_caching=True,
            disable_log_stats=False,  # keeps prefix-cache counters readable through get_metrics()
            **({"max_model_len": max_model_len} if max_model_len else {}),
            **({"load_format": "dummy"} if dummy_weights else {}),
            **llm_options,
        )
        self.sleep_mode = sleep_mode and self.memory_split is None and _sleep_available()
        self._llms: dict[str, Any] = {}  # actual model -> vllm.LLM
        self._keys: dict[str, str] = {}  # actual model -> its options key (for keep_warm)
        self._asleep: set[str] = set()
        self._asleep_at: dict[str, int] = {}  # actual model -> the level it sleeps at
        self._active: str | None = None
        self._declared: dict[str, str] = {}
        self._resolved: dict[str, str] = {}  # declared model -> what runs
        self._lock = threading.RLock()
        self._structured = self._structured_outputs_factory()

    def _actual(self, model: str) -> str:
        if model not in self._resolved:  # resolved once: every batch asks
            actual, note = _resolve(self.model_map.get(model, model), self.dummy_weights, self.cache_dir)
            self._resolved[model] = actual
            if note:
                self.substitutions[model] = note
        return self._resolved[model]

    def _share(self, model: str) -> float:
        split = self.memory_split or {}
        share = split.get(model, split.get(self.model_map.get(model, model)))
        if share is None:
            raise EngineUnavailable(
                f"memory_split gives no share of GPU memory to {model!r} (it names {', '.join(sorted(split))})"
            )
        return share

    def load(self, model: str) -> float:
        with self._lock:
            actual = self._actual(model)
            self._declared[model] = actual
            start = time.perf_counter()
            if self.memory_split is not None:
                self._active = actual
                if actual in self._llms:
                    return 0.0
                self._create(
                    actual, {**self._model_options(model), "gpu_memory_utilization": self._share(model)}
                )
                return time.perf_counter() - start
            if self._active == actual:
                return 0.0
            self._park_active()
            if actual not in self._llms:
                self._create(actual, self._model_options(model))
            if actual in self._asleep:
                self._wake(actual)
            self._active = actual
            return time.perf_counter() - start

    def _model_options(self, model: str) -> dict:
        """The engine options for a declared model: its planned start mode over ``enforce_eager``."""
        mode = self.start_modes.get(model)
        return {**self.options, **({"enforce_eager": mode == "eager"} if mode else {})}

    def _level(self, actual: str) -> int:
        return max((lv for m, lv in self.sleep_levels.items() if self._declared.get(m) == actual), default=1)

    def _wake(self, actual: str) -> None:
        llm = self._llms[actual]
        llm.wake_up()
        if self._asleep_at.pop(actual, 1) == 2:  # level 2 discarded the weights
            llm.collective_rpc(_refill_dummy_weights if self.dummy_weights else "reload_weights")
        self._asleep.discard(actual)

    def _create(self, actual: str, options: dict) -> None:
        """Start an engine for ``actual`` (or take the warm one with the same options)."""
        if self.sleep_mode:
            options["enable_sleep_mode"] = True
            # the worker-side steps around a sleep (_collect_garbage, _refill_dummy_weights) travel as
            # functions, which vLLM sends to its own engine process only with pickling allowed
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        key = _options_key(actual, options)
        with _WARM_LOCK:
            warm = _WARM.pop(key, None)
        if warm is not None:
            llm, asleep = warm
        else:
            asleep = False
            try:
                llm = self._vllm.LLM(model=actual, **options)
            except Exception:
                if not self.sleep_mode:
                    raise
                self.sleep_mode = False  # platform without sleep support: retry without it
                options.pop("enable_sleep_mode")
                key = _options_key(actual, options)
                llm = self._vllm.LLM(model=actual, **options)
        self._llms[actual], self._keys[actual] = llm, key
        if asleep:
            self._asleep.add(actual)

    def _park_active(self) -> None:
        """Sleep the active engine, or shut it down where sleeping is unsupported."""
        if self._active is None:
            return
        llm = self._llms[self._active]
        try:
            if not self.sleep_mode:
                raise NotImplementedError
            level = self._level(self._active)
            with contextlib.suppress(Exception):  # a worker that cannot run it still sleeps
                llm.collective_rpc(_collect_garbage)
            llm.sleep(level=level)
            self._asleep.add(self._active)
            self._asleep_at[self._active] = level
        except Exception:
            del self._llms[self._active]
            self._declared = {k: v for k, v in self._declared.items() if v != self._active}
            _shutdown(llm)
        self._active = None

    def resident_models(self) -> list[str]:
        with self._lock:
            if self.memory_split is not None:
                return [m for m, actual in self._declared.items() if actual in self._llms]
            return [m for m, actual in self._declared.items() if actual == self._active]

    def _llm(self, model: str):
        self.load(model)
        return self._llms[self._declared[model]]

    def count_tokens(self, model: str, text: str) -> int:
        with self._lock:
            return len(self._llm(model).get_tokenizer().encode(text, add_special_tokens=False))

    def close(self) -> None:
        with self._lock:
            for actual, llm in self._llms.items():
                if self.keep_warm:
                    if actual in self._asleep:
                        pass  # sleeping (level 1) discarded its prefix cache with the KV
                    elif self.sleep_mode:  # one model at a time: the next user wakes the one it needs
                        llm.sleep(level=1)
                        self._asleep.add(actual)
                    else:  # side by side: stays resident; the next user starts with an empty prefix cache
                        llm.reset_prefix_cache()
                    with _WARM_LOCK:
                        _WARM[self._keys[actual]] = (llm, actual in self._asleep)
                else:
                    _shutdown(llm)
            self._llms.clear()
            self._asleep.clear()
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
                    llm = self._llm(model)
                except Exception as exc:
                    for i in indices:
                        results[i] = GenResult.failed(f"load {model}: {exc}")
                    continue
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


def _check_split(split: dict[str, float] | None) -> dict[str, float] | None:
    if split is None:
        return None
    if not split or any(not 0 < float(s) < 1 for s in split.values()) or sum(split.values()) > 0.98:
        raise EngineUnavailable(
            f"memory_split must give each model a share in (0, 1), together at most 0.98; got {split}"
        )
    return {m: float(s) for m, s in split.items()}


def _check_levels(levels: dict[str, int] | None) -> dict[str, int]:
    levels = dict(levels or {})
    bad = {m: lv for m, lv in levels.items() if lv not in (1, 2)}
    if bad:
        raise EngineUnavailable(f"sleep_levels must be 1 or 2 per model; got {bad}")
    return levels


def _collect_garbage(worker) -> None:
    """Run in the engine's worker before it sleeps: free unreferenced tensors while their memory is
    still mapped, and wait for the GPU, so the sleep unmaps nothing that is still in use."""
    import torch

    gc.collect()
    torch.cuda.synchronize()


def _refill_dummy_weights(worker) -> None:
    """Run in the engine's worker after a level-2 wake with dummy weights: random weights again (what
    re-reading real ones would restore), not whatever the reallocated memory holds."""
    from vllm.model_executor.model_loader.weight_utils import initialize_dummy_weights

    runner = worker.model_runner
    initialize_dummy_weights(runner.get_model(), runner.model_config)


def _options_key(actual: str, options: dict) -> str:
    return json.dumps([actual, options], sort_keys=True, default=str)


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


# ---- `vllm serve`: the server the framework baseline talks to ---------------------------------------------

_HALO_OPTIONS = {
    "model_map",
    "cache_dir",
    "dummy_weights",
    "memory_split",
    "keep_warm",
    "sleep_mode",
    "sleep_levels",
    "start_modes",
}


def serve_args(model_dir: str, names: list[str], port: int, share: float, options: dict) -> list[str]:
    """The ``vllm serve`` command line for one model: the engine's options as flags (``max_model_len=4096``
    becomes ``--max-model-len 4096``, ``enforce_eager=true`` ``--enforce-eager``), served under ``names``."""
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir]
    args += ["--served-model-name", *names, "--host", "127.0.0.1", "--port", str(port)]
    args += [
        "--gpu-memory-utilization",
        str(share),
        "--enable-prompt-tokens-details",
    ]  # cached tokens in usage
    if options.get("dummy_weights"):
        args += ["--load-format", "dummy"]
    for key, value in sorted(options.items()):
        if key in _HALO_OPTIONS or key == "gpu_memory_utilization" or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        else:
            args += [flag, json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return args


@contextlib.contextmanager
def serve(
    models: list[str], options: dict, log_dir: Path, start_timeout: float = 900.0
) -> Iterator[dict[str, str]]:
    """Start one ``vllm serve`` process per model that runs (declared ids that run as the same model share
    it), one after another, each with its ``memory_split`` share (else ``gpu_memory_utilization``, else an
    equal part of 0.9); yields {declared id: base URL}; stops them on exit. Servers take the engine options of
    ``VLLMEngine`` (``dummy_weights`` builds the same directories)."""
    model_map = options.get("model_map") or {}
    split = _check_split(options.get("memory_split")) or {}
    by_dir: dict[str, list[str]] = {}
    for model in models:
        actual, _ = _resolve(
            model_map.get(model, model), bool(options.get("dummy_weights")), options.get("cache_dir")
        )
        by_dir.setdefault(actual, []).append(model)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "VLLM_CACHE_ROOT": os.environ.get("VLLM_CACHE_ROOT", str(cache_root() / "vllm")),
        "VLLM_SERVER_DEV_MODE": "1",  # serves POST /reset_prefix_cache (reset_prefix_caches)
    }
    procs: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    try:
        for i, (actual, names) in enumerate(by_dir.items()):
            share = next((split[n] for n in names if n in split), None) or split.get(actual)
            share = share or options.get("gpu_memory_utilization") or round(0.9 / len(by_dir), 3)
            port = _free_port()
            log = log_dir / f"vllm-serve-{i}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    serve_args(actual, names, port, share, options),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            _wait_ready(proc, url, log, start_timeout)
            urls.update({n: f"{url}/v1" for n in names})
        yield urls
    finally:
        for proc in procs:
            _stop(proc)


def reset_prefix_caches(urls: dict[str, str]) -> None:
    """Empty the prefix cache of every server in ``urls`` (``serve``'s), so that one run's prompts do not
    serve the next run's; EngineUnavailable if a server refuses."""
    for root in sorted({u.removesuffix("/v1") for u in urls.values()}):
        resp = httpx.post(f"{root}/reset_prefix_cache", timeout=60.0)
        if resp.status_code != 200:
            raise EngineUnavailable(
                f"{root}/reset_prefix_cache answered {resp.status_code}: {resp.text[:200]}"
            )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Wait until the server answers ``/v1/models``; raise with its log's tail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineUnavailable(f"vllm serve exited ({proc.returncode}): {_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v1/models", timeout=2.0).status_code == 200:
                return
        time.sleep(1.0)
    raise EngineUnavailable(f"vllm serve did not answer within {timeout:.0f} s: {_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server's process group: SIGTERM, then SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
