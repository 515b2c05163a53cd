"""Device and model specs: dataclasses, loaders from the packaged TOML data, derived sizes.

Formulas follow hw_models.md section 2: parameters from the architecture, KV bytes per token
``2·L·n_kv·d_head·bytes`` and FLOPs per token ``2·active linear params + 4·L·h_q·d_h·context``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

# Bits stored per weight for each weight format.  w4a16 is 4-bit with one fp16 scale per 128
# weights (MARLIN), mxfp4 is 4-bit with one 8-bit scale per 32 weights (gpt-oss).
FORMAT_BITS = {
    "fp32": 32.0,
    "bf16": 16.0,
    "fp16": 16.0,
    "fp8": 8.0,
    "int8": 8.0,
    "w4a16": 4.0 + 16.0 / 128,
    "int4": 4.0 + 16.0 / 128,
    "mxfp4": 4.0 + 8.0 / 32,
}

# Dtype whose tensor-core peak a weight format computes at (weight-only formats dequantise).
COMPUTE_DTYPE = {
    "fp32": "fp32",
    "bf16": "bf16",
    "fp16": "fp16",
    "fp8": "fp8",
    "int8": "int8",
    "w4a16": "fp16",
    "int4": "fp16",
    "mxfp4": "bf16",
}


class UnknownSpecError(KeyError):
    """A device or model name that is neither a known id nor an alias."""

    def __init__(self, what: str, name: str, known: list[str]):
        self.name = name
        self.message = f"unknown {what} {name!r}; known: {', '.join(sorted(known))}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def format_bytes(fmt: str) -> float:
    """Bytes per weight for a weight format name."""
    try:
        return FORMAT_BITS[fmt.lower()] / 8.0
    except KeyError:
        raise ValueError(f"unknown weight format {fmt!r}; known: {', '.join(FORMAT_BITS)}") from None


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator or CPU host.  Rates are in FLOP/s and bytes/s, capacity in bytes."""

    name: str
    kind: str
    backend: str
    simulated: bool
    flops: dict[str, float]
    mem_bw: float
    mem_capacity: float
    links: dict[str, float] = field(default_factory=dict)
    price_per_hour: float = 0.0
    cores: int = 0
    params: dict[str, float] = field(default_factory=dict)

    def peak_flops(self, dtype: str) -> float:
        """Dense peak for a compute dtype; missing low-precision dtypes fall back to fp16/bf16."""
        for d in (dtype, "bf16", "fp16", "fp32"):
            if d in self.flops:
                return self.flops[d]
        raise ValueError(f"device {self.name} lists no flops")

    def ridge(self, dtype: str = "bf16") -> float:
        """Ridge point in FLOP per byte of memory traffic."""
        return self.peak_flops(dtype) / self.mem_bw

    def link_bw(self, link: str) -> float:
        if link not in self.links:
            raise ValueError(f"device {self.name} has no {link!r} link; it has {sorted(self.links)}")
        return self.links[link]


def _cpu_spec(raw: dict, name: str, cores: int) -> DeviceSpec:
    per_core = raw["flops_per_core"]
    bw = min(raw["mem_bw"], raw["mem_bw_per_core"] * cores)
    return DeviceSpec(
        name=name,
        kind=raw["kind"],
        backend=raw["backend"],
        simulated=raw["simulated"],
        flops={k: v * cores for k, v in per_core.items()},
        mem_bw=bw,
        mem_capacity=raw["mem_capacity"],
        links=dict(raw.get("links", {})),
        price_per_hour=raw.get("price_per_hour", 0.0) * cores,
        cores=cores,
        params=dict(raw.get("params", {})),
    )


@cache
def _device_table() -> dict[str, dict]:
    text = resources.files("halo.hw_models").joinpath("data/devices.toml").read_text()
    return tomllib.loads(text)


@cache
def _model_table() -> dict[str, dict]:
    text = resources.files("halo.hw_models").joinpath("data/models.toml").read_text()
    return tomllib.loads(text)


def _index(table: dict[str, dict]) -> dict[str, str]:
    index = {}
    for key, raw in table.items():
        for alias in [key, *raw.get("aliases", [])]:
            index[alias.lower()] = key
    return index


def device_names() -> list[str]:
    return list(_device_table())


def device(name: str, cores: int | None = None) -> DeviceSpec:
    """Look up a device by name or alias (case-insensitive); ``cores`` sizes a CPU host."""
    table = _device_table()
    key = _index(table).get(name.strip().lower())
    if key is None:
        raise UnknownSpecError("device", name, list(table))
    raw = table[key]
    if raw["kind"] == "cpu":
        return _cpu_spec(raw, key, cores if cores is not None else raw["cores"])
    if cores is not None:
        raise ValueError(f"device {key} is not a CPU; it takes no core count")
    return DeviceSpec(
        name=key,
        kind=raw["kind"],
        backend=raw["backend"],
        simulated=raw["simulated"],
        flops=dict(raw["flops"]),
        mem_bw=raw["mem_bw"],
        mem_capacity=raw["mem_capacity"],
        links=dict(raw.get("links", {})),
        price_per_hour=raw.get("price_per_hour", 0.0),
        params=dict(raw.get("params", {})),
    )


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer (GQA attention; gated or plain MLP; optional MoE)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tie_embeddings: bool = False
    gated_mlp: bool = True
    experts: int = 0
    experts_per_token: int = 0
    expert_intermediate: int = 0
    dtype: str = "bf16"
    expert_dtype: str | None = None
    params_published: float | None = None
    active_published: float | None = None

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def attn_params_per_layer(self) -> int:
        """QKV and output projections."""
        q = self.heads * self.head_dim
        return self.hidden * (q + 2 * self.kv_heads * self.head_dim) + q * self.hidden

    def _mlp_params(self, width: int) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden * width

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert (0 for dense models)."""
        return self._mlp_params(self.expert_intermediate) if self.is_moe else 0

    @property
    def dense_params_per_layer(self) -> int:
        """Per-layer parameters every token uses (attention, router, or the dense MLP)."""
        if self.is_moe:
            return self.attn_params_per_layer + self.hidden * self.experts
        return self.attn_params_per_layer + self._mlp_params(self.intermediate)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params_total(self) -> int:
        layer = self.dense_params_per_layer + self.experts * self.expert_params
        untied_head = 0 if self.tie_embeddings else self.lm_head_params
        return self.layers * layer + self.embedding_params + untied_head

    @property
    def params_active(self) -> int:
        """Parameters multiplied per token: layers with the routed experts, plus the LM head."""
        layer = self.dense_params_per_layer + self.experts_per_token * self.expert_params
        return self.layers * layer + self.lm_head_params

    def weight_bytes(self, fmt: str | None = None) -> float:
        """Bytes of all weights; ``fmt`` overrides the checkpoint formats for every tensor."""
        expert_fmt = fmt or self.expert_dtype or self.dtype
        experts = self.layers * self.experts * self.expert_params
        return (self.params_total - experts) * format_bytes(fmt or self.dtype) + experts * format_bytes(
            expert_fmt
        )

    def expert_bytes(self, fmt: str | None = None) -> float:
        """Bytes of one expert's weights in one layer."""
        return self.expert_params * format_bytes(fmt or self.expert_dtype or self.dtype)

    def kv_bytes_per_token(self, kv_dtype: str = "bf16") -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * format_bytes(kv_dtype)

    def attention_flops_per_token(self, context: float) -> float:
        """QKᵀ and PV FLOPs of one new token attending to ``context`` tokens, all layers."""
        return 4.0 * self.layers * self.heads * self.head_dim * context

    def flops_per_token(self, context: float = 0.0) -> float:
        return 2.0 * self.params_active + self.attention_flops_per_token(context)

    @property
    def gqa_group(self) -> int:
        return self.heads // self.kv_heads


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter over a resident base model: swapping it moves only its own small weights."""

    base: ModelSpec
    rank: int
    name: str = ""
    dtype: str = "bf16"

    @property
    def params(self) -> int:
        """r·(in+out) per adapted projection; all attention and MLP projections are adapted."""
        m = self.base
        q, kv = m.heads * m.head_dim, m.kv_heads * m.head_dim
        attn = (m.hidden + q) + 2 * (m.hidden + kv) + (q + m.hidden)
        width = m.intermediate if not m.is_moe else m.expert_intermediate
        mlp = (3 if m.gated_mlp else 2) * (m.hidden + width)
        return self.rank * m.layers * (attn + mlp)

    def weight_bytes(self) -> float:
        return self.params * format_bytes(self.dtype)


def _spec_from_raw(name: str, raw: dict) -> ModelSpec:
    return ModelSpec(
        name=name,
        layers=raw["layers"],
        hidden=raw["hidden"],
        heads=raw["heads"],
        kv_heads=raw["kv_heads"],
        head_dim=raw["head_dim"],
        intermediate=raw["intermediate"],
        vocab=raw["vocab"],
        tie_embeddings=raw.get("tie_embeddings", False),
        gated_mlp=raw.get("gated_mlp", True),
        experts=raw.get("experts", 0),
        experts_per_token=raw.get("experts_per_token", 0),
        expert_intermediate=raw.get("expert_intermediate", 0),
        dtype=raw.get("dtype", "bf16"),
        expert_dtype=raw.get("expert_dtype"),
        params_published=raw.get("params_total"),
        active_published=raw.get("params_active"),
    )


def model_names() -> list[str]:
    return list(_model_table())


def model(name: str) -> ModelSpec:
    """Look up a model by HF id or alias (case-insensitive), or load a ``config.json`` path."""
    table = _model_table()
    key = _index(table).get(name.strip().lower())
    if key is not None:
        return _spec_from_raw(key, table[key])
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return model_from_hf_config(path)
    raise UnknownSpecError("model", name, list(table))


_HF_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def model_from_hf_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a Hugging Face ``config.json`` (Llama/Qwen/Mistral/Mixtral-style keys)."""
    path = Path(path)
    cfg = json.loads(path.read_text())
    cfg = cfg.get("text_config", cfg)
    try:
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        raw = {
            "layers": cfg["num_hidden_layers"],
            "hidden": hidden,
            "heads": heads,
            "kv_heads": cfg.get("num_key_value_heads") or heads,
            "head_dim": cfg.get("head_dim") or hidden // heads,
            "intermediate": cfg["intermediate_size"],
            "vocab": cfg["vocab_size"],
        }
    except KeyError as exc:
        raise ValueError(f"{path}: config.json lacks {exc.args[0]!r}") from None
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 0
    raw.update(
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        experts=experts,
        experts_per_token=cfg.get("num_experts_per_tok", 0) if experts else 0,
        expert_intermediate=(cfg.get("moe_intermediate_size") or cfg["intermediate_size"]) if experts else 0,
        dtype=_HF_DTYPES.get(str(cfg.get("torch_dtype") or cfg.get("dtype")), "bf16"),
    )
    return _spec_from_raw(name or cfg.get("_name_or_path") or path.parent.name, raw)


def lora(base: str | ModelSpec, rank: int, name: str = "") -> LoraAdapter:
    """A LoRA adapter of ``rank`` over ``base``."""
    spec = model(base) if isinstance(base, str) else base
    if rank <= 0:
        raise ValueError("LoRA rank must be positive")
    return LoraAdapter(base=spec, rank=rank, name=name or f"{spec.name}+lora-r{rank}")


def as_model(m: str | ModelSpec | LoraAdapter) -> ModelSpec:
    """The ModelSpec that computes for ``m`` (an adapter computes with its base)."""
    if isinstance(m, LoraAdapter):
        return m.base
    return model(m) if isinstance(m, str) else m


def as_device(d: str | DeviceSpec) -> DeviceSpec:
    return device(d) if isinstance(d, str) else d


def with_params(d: DeviceSpec, **params: float) -> DeviceSpec:
    """A copy of ``d`` with some backend parameters replaced (for what-if studies)."""
    return replace(d, params={**d.params, **params})
