"""Iteration-time model for GPU-like devices (and CPU hosts): a calibrated roofline.

Each op costs ``max(F/(P·η), B/(BW·η))`` with η read from the efficiency curve at the op's
intensity relative to the device ridge (hw_models.md §2.4); an iteration adds attention,
tensor-parallel all-reduces and a fixed overhead.  Every function returns an Estimate whose
breakdown says which bound applied, the efficiency used and whether it was calibrated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import batching
from .estimate import Estimate, Params, resolve
from .specs import COMPUTE_DTYPE, DeviceSpec, LoraAdapter, ModelSpec, as_device, as_model, format_bytes

Calibration = Mapping[str, Any] | None
WEIGHT_ONLY = {"w4a16", "int4", "mxfp4"}


def op_time(
    flops: float, nbytes: float, device: DeviceSpec, dtype: str, p: Params, eta: float | None = None
) -> dict[str, Any]:
    """Roofline time of one op; η comes from the curve unless given."""
    ridge = device.ridge(dtype)
    x = flops / nbytes / ridge if nbytes else math.inf
    e = p.eta(x) if eta is None else eta
    compute_s = flops / (device.peak_flops(dtype) * e)
    memory_s = nbytes / (device.mem_bw * e)
    return {
        "seconds": max(compute_s, memory_s),
        "compute_s": compute_s,
        "memory_s": memory_s,
        "bound": "compute" if compute_s >= memory_s else "memory",
        "eta": e,
        "intensity_over_ridge": x,
    }


def active_experts(model: ModelSpec, tokens: float) -> float:
    """Expected distinct experts per layer hit by ``tokens`` tokens under uniform top-k routing."""
    if not model.is_moe:
        return 0.0
    return model.experts * (1.0 - (1.0 - model.experts_per_token / model.experts) ** tokens)


def linear_cost(model: ModelSpec, tokens: float, sequences: float, fmt: str | None) -> tuple[float, float]:
    """(FLOPs, weight bytes read) of all linear layers for one iteration over ``tokens`` tokens.

    The LM head runs once per sequence (only sampled positions need logits); MoE layers read
    only the experts the tokens hit.
    """
    dense_fmt = fmt or model.dtype
    layer_flops = model.dense_params_per_layer + model.experts_per_token * model.expert_params
    flops = 2.0 * tokens * model.layers * layer_flops + 2.0 * sequences * model.lm_head_params
    dense = (model.layers * model.dense_params_per_layer + model.lm_head_params) * format_bytes(dense_fmt)
    experts = model.layers * active_experts(model, tokens) * model.expert_bytes(fmt)
    return flops, dense + experts


def _weight_format(model: ModelSpec, dtype: str | None) -> str:
    return (dtype or model.dtype).lower()


def _linear(
    model: ModelSpec, device: DeviceSpec, tokens: float, sequences: float, fmt: str, p: Params, tp: int
) -> dict[str, Any]:
    flops, nbytes = linear_cost(model, tokens, sequences, fmt if fmt != model.dtype else None)
    if fmt in WEIGHT_ONLY:
        flops *= p["weight_only_compute_overhead"]
    return op_time(flops / tp, nbytes / tp, device, COMPUTE_DTYPE[fmt], p)


def _allreduce(model: ModelSpec, device: DeviceSpec, tokens: float, p: Params, tp: int) -> float:
    """Two ring all-reduces per layer of the hidden states (GenZ form, §2.5)."""
    if tp == 1:
        return 0.0
    link = "nvlink" if "nvlink" in device.links else "pcie"
    bw = device.link_bw(link) / 2 * p["link_efficiency"]
    nbytes = tokens * model.hidden * 2
    one = p["allreduce_latency_s"] + 2 * (tp - 1) / tp * nbytes / bw
    return 2 * model.layers * one


def _attention(device: DeviceSpec, flops: float, kv_bytes: float, p: Params, eta_key: str, tp: int) -> float:
    if not flops and not kv_bytes:
        return 0.0
    compute = flops / tp / (device.peak_flops("bf16") * p[eta_key])
    memory = kv_bytes / tp / (device.mem_bw * p["attn_decode_eta"])
    return max(compute, memory)


def _finish(
    seconds: float, parts: dict[str, Any], model: ModelSpec, device: DeviceSpec, p: Params
) -> Estimate:
    parts.update(model=model.name, device=device.name, simulated=device.simulated, **p.provenance())
    return Estimate(seconds, parts)


def _prefill(
    model: ModelSpec,
    device: DeviceSpec,
    batch: int,
    tokens: int,
    cached: int,
    fmt: str,
    p: Params,
    tp: int,
    kv_dtype: str,
) -> Estimate:
    if not 0 <= cached <= tokens:
        raise ValueError("cached_tokens must lie between 0 and tokens")
    new = tokens - cached
    total = batch * new
    chunks = max(1, math.ceil(total / p["max_batched_tokens"]))
    lin = _linear(model, device, total / chunks, batch / chunks, fmt, p, tp)
    att_flops = batch * model.attention_flops_per_token(cached + (new + 1) / 2.0) * new
    kv_bytes = batch * tokens * model.kv_bytes_per_token(kv_dtype)
    attention_s = _attention(device, att_flops, kv_bytes, p, "attn_prefill_eta", tp)
    comm_s = chunks * _allreduce(model, device, total / chunks, p, tp)
    overhead_s = chunks * p["iteration_overhead_s"]
    linear_s = chunks * lin["seconds"]
    parts = {
        "phase": "prefill",
        "new_tokens": total,
        "iterations": chunks,
        "linear_s": linear_s,
        "linear_compute_s": chunks * lin["compute_s"],
        "linear_memory_s": chunks * lin["memory_s"],
        "bound": lin["bound"],
        "eta": lin["eta"],
        "attention_s": attention_s,
        "comm_s": comm_s,
        "overhead_s": overhead_s,
        "weight_format": fmt,
        "tp": tp,
    }
    return _finish(linear_s + attention_s + comm_s + overhead_s, parts, model, device, p)


def _decode_step(
    model: ModelSpec,
    device: DeviceSpec,
    batch: int,
    context: float,
    fmt: str,
    p: Params,
    tp: int,
    kv_dtype: str,
) -> Estimate:
    lin = _linear(model, device, batch, batch, fmt, p, tp)
    att_flops = batch * model.attention_flops_per_token(context)
    kv_bytes = batch * context * model.kv_bytes_per_token(kv_dtype)
    attention_s = _attention(device, att_flops, kv_bytes, p, "attn_decode_eta", tp)
    comm_s = _allreduce(model, device, batch, p, tp)
    overhead_s = p["iteration_overhead_s"]
    parts = {
        "phase": "decode",
        "batch": batch,
        "linear_s": lin["seconds"],
        "linear_compute_s": lin["compute_s"],
        "linear_memory_s": lin["memory_s"],
        "bound": lin["bound"],
        "eta": lin["eta"],
        "attention_s": attention_s,
        "comm_s": comm_s,
        "overhead_s": overhead_s,
        "weight_format": fmt,
        "tp": tp,
    }
    return _finish(lin["seconds"] + attention_s + comm_s + overhead_s, parts, model, device, p)


def prefill_time(
    model: str | ModelSpec | LoraAdapter,
    device: str | DeviceSpec,
    tokens: int,
    cached_tokens: int = 0,
    dtype: str | None = None,
    *,
    batch: int = 1,
    tp: int = 1,
    kv_dtype: str = "bf16",
    calibration: Calibration = None,
) -> Estimate:
    """Prefill ``batch`` prompts of ``tokens`` tokens, of which ``cached_tokens`` hit the KV cache.

    Only uncached tokens pay linear FLOPs; attention reads the cached prefix.  Prefill is split
    into iterations of at most ``max_batched_tokens`` tokens (chunked prefill).
    """
    m, d = as_model(model), as_device(device)
    p = resolve(d, calibration)
    return _prefill(m, d, batch, tokens, cached_tokens, _weight_format(m, dtype), p, tp, kv_dtype)


def decode_time(
    model: str | ModelSpec | LoraAdapter,
    device: str | DeviceSpec,
    batch: int,
    context_len: float,
    steps: int = 1,
    dtype: str | None = None,
    *,
    tp: int = 1,
    kv_dtype: str = "bf16",
    calibration: Calibration = None,
) -> Estimate:
    """``steps`` decode iterations of ``batch`` sequences starting with ``context_len`` tokens in KV."""
    m, d = as_model(model), as_device(device)
    p = resolve(d, calibration)
    fmt = _weight_format(m, dtype)
    return batching.integrate_decode(
        lambda b, c: _decode_step(m, d, b, c, fmt, p, tp, kv_dtype), batch, context_len, steps
    )


def group_time(
    model: str | ModelSpec | LoraAdapter,
    device: str | DeviceSpec,
    n_requests: int,
    prompt_tokens_per_req: int,
    cached_prefix_tokens: int,
    output_tokens_per_req: int,
    max_batch: int = 256,
    dtype: str | None = None,
    *,
    tp: int = 1,
    kv_dtype: str = "bf16",
    calibration: Calibration = None,
) -> Estimate:
    """Time and peak memory of an LLM operator group of ``n_requests`` similar requests.

    Requests run in waves sized by ``max_batch`` and the KV budget (capacity - weights);
    raises batching.CapacityError when the weights or a single request do not fit.
    """
    m, d = as_model(model), as_device(device)
    p = resolve(d, calibration)
    fmt = _weight_format(m, dtype)
    weights = m.weight_bytes(None if fmt == m.dtype else fmt)
    return batching.group_time(
        m,
        d,
        p,
        weight_bytes=weights,
        kv_per_token=m.kv_bytes_per_token(kv_dtype),
        n_requests=n_requests,
        prompt_tokens=prompt_tokens_per_req,
        cached_prefix_tokens=cached_prefix_tokens,
        output_tokens=output_tokens_per_req,
        max_batch=max_batch,
        tp=tp,
        prefill=lambda b, s, c: _prefill(m, d, b, s, c, fmt, p, tp, kv_dtype),
        step=lambda b, c: _decode_step(m, d, b, c, fmt, p, tp, kv_dtype),
    )


LOAD_SOURCES = ("disk", "host", "sleep", "reload", "peer")
SLEEP_LEVELS = (1, 2)


def load_time(
    model: str | ModelSpec | LoraAdapter,
    device: str | DeviceSpec,
    source: str = "disk",
    dtype: str | None = None,
    *,
    tp: int = 1,
    calibration: Calibration = None,
) -> Estimate:
    """Time to make ``model`` ready on ``device`` (§2.6).

    disk: cold engine start, weights read from local disk (vLLM full reload, 30-100 s);
    host: cold engine start, weights in the host page cache; sleep: wake a sleeping engine whose
    weights sit in pinned host memory (sleep mode L1); reload: wake an engine that discarded its weights
    (sleep mode L2), re-reading them from the page cache; peer: copy weights from a peer GPU over NVLink.
    A LoRA adapter over a resident base pays only its own bytes plus a small fixed cost.
    """
    if source not in LOAD_SOURCES:
        raise ValueError(f"unknown load source {source!r}; expected one of {LOAD_SOURCES}")
    d = as_device(device)
    p = resolve(d, calibration)
    if isinstance(model, LoraAdapter):
        nbytes, fixed, name = model.weight_bytes(), p["adapter_switch_s"], model.name
        bw = {"disk": p["disk_bw"], "host": p["h2d_bw"], "peer": p["nvlink_bw"]}.get(source, p["h2d_bw"])
    else:
        m = as_model(model)
        fmt = _weight_format(m, dtype)
        total = m.weight_bytes(None if fmt == m.dtype else fmt)
        name = m.name
        # the disk is shared by all TP ranks; the other paths copy each shard in parallel
        nbytes = total if source == "disk" else total / tp
        fixed = p["engine_init_s"] if source in ("disk", "host") else p["wake_s"]
        bw = {
            "disk": p["disk_bw"],
            "host": p["page_cache_bw"],
            "sleep": p["h2d_bw"],
            "reload": p["page_cache_bw"],
            "peer": p["nvlink_bw"],
        }[source]
    transfer_s = nbytes / bw
    parts = {
        "source": source,
        "bytes": nbytes,
        "transfer_s": transfer_s,
        "fixed_s": fixed,
        "bandwidth": bw,
        "model": name,
        "device": d.name,
        "simulated": d.simulated,
        **p.provenance(),
    }
    return Estimate(fixed + transfer_s, parts)


def start_mode_costs(device: str | DeviceSpec, *, calibration: Calibration = None) -> tuple[float, float]:
    """(seconds a compiled engine start takes beyond an eager one, seconds an eager decode iteration
    takes beyond a compiled one): what choosing between them weighs (§2.5, §2.6)."""
    p = resolve(as_device(device), calibration)
    return float(p["compile_s"]), float(p["eager_step_s"])


def sleep_time(
    model: str | ModelSpec, device: str | DeviceSpec, level: int, *, calibration: Calibration = None
) -> Estimate:
    """Time to put a model's engine to sleep (§2.6): level 1 copies the weights to host memory
    (``offload_bw``), level 2 discards them (freeing costs a fixed ``wake_s``-sized step)."""
    if level not in SLEEP_LEVELS:
        raise ValueError(f"sleep level must be one of {SLEEP_LEVELS}, got {level!r}")
    d = as_device(device)
    p = resolve(d, calibration)
    m = as_model(model)
    nbytes = m.weight_bytes() if level == 1 else 0
    parts = {"level": level, "bytes": nbytes, "model": m.name, "device": d.name, **p.provenance()}
    return Estimate(p["wake_s"] + nbytes / p["offload_bw"], parts)


def kv_transfer_time(nbytes: float, link: str = "nvlink", *, calibration: Calibration = None) -> Estimate:
    """Move ``nbytes`` of KV cache over ``link`` (nvlink, pcie, rdma): latency + bytes/bandwidth."""
    if link not in ("nvlink", "pcie", "rdma"):
        raise ValueError(f"unknown link {link!r}; expected nvlink, pcie or rdma")
    p = resolve(None, calibration)
    latency, bw = p[f"{link}_latency_s"], p[f"{link}_bw"]
    seconds = latency + nbytes / bw
    return Estimate(
        seconds,
        {
            "link": link,
            "bytes": nbytes,
            "latency_s": latency,
            "transfer_s": nbytes / bw,
            "bandwidth": bw,
            **p.provenance(),
        },
    )
