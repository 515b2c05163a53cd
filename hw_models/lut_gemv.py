"""SAIL (arXiv 2509.25853) CPU + SRAM LUT-GEMV model, and its Neoverse-N1 baseline.  Simulated.

Linear layers of low-bit decode (hw_models.md §5.3):

- N1 baseline: ``max(weight bytes / DRAM BW, batch·MACs / (cores·simd_macs_per_cycle·f))``;
  the SIMD cost per MAC does not shrink with fewer weight bits (it dequantises first).
- SAIL: weights stream from DRAM once per batch (batched LUT reuse); per activation vector a
  LUT of ``2^g`` partial sums is built for each group of ``g`` inputs, then every output does
  ``K/g`` lookups per weight bit, less the pattern-aware saving (13.8%).  Cost is therefore
  linear in the weight bit width, as T-MAC measured on real CPUs.

Attention and softmax stay on the cores in both designs (roofline on the CPU spec).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import batching, roofline
from .estimate import Estimate, resolve
from .specs import DeviceSpec, ModelSpec, as_device, as_model


def _matrices_per_layer(m: ModelSpec) -> int:
    """Distinct weight matrices (for LUT construction): q, k, v, o and the MLP projections."""
    return 4 + (3 if m.gated_mlp else 2)


def linear_time(model: ModelSpec, device: DeviceSpec, batch: int, bits: float) -> dict[str, float]:
    """Seconds of all linear layers (incl. LM head) for one decode step of ``batch`` tokens."""
    prm = device.params
    weights = model.params_active
    dram_s = weights * bits / 8 / device.mem_bw
    if prm["lut"]:
        g = int(prm["lut_group"])
        lookups = batch * weights * bits / g * (1.0 - prm["pattern_saving"])
        builds = batch * model.layers * _matrices_per_layer(model) * model.hidden / g * 2**g
        compute_s = (lookups + builds) / (prm["lut_lookups_per_cycle"] * prm["clock_hz"])
    else:
        compute_s = batch * weights / (device.cores * prm["simd_macs_per_cycle"] * prm["clock_hz"])
    return {
        "seconds": max(dram_s, compute_s),
        "dram_s": dram_s,
        "compute_s": compute_s,
        "bound": "memory" if dram_s >= compute_s else "compute",
    }


def decode_step(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    batch: int,
    context: float,
    bits: float | None = None,
    *,
    calibration: Mapping[str, Any] | None = None,
) -> Estimate:
    """One decode step of ``batch`` sequences at ``bits``-bit weights (default: the device's)."""
    m, d = as_model(model), as_device(device)
    p = resolve(d, calibration)
    bits = d.params.get("weight_bits", 4) if bits is None else bits
    lin = linear_time(m, d, batch, bits)
    flops = batch * m.attention_flops_per_token(context)
    kv = batch * context * m.kv_bytes_per_token()
    attn = roofline.op_time(flops, kv, d, "fp32", p)["seconds"] if context else 0.0
    seconds = lin["seconds"] + attn + p["iteration_overhead_s"]
    parts = {
        "linear_s": lin["seconds"],
        "linear_dram_s": lin["dram_s"],
        "linear_compute_s": lin["compute_s"],
        "bound": lin["bound"],
        "attention_s": attn,
        "overhead_s": p["iteration_overhead_s"],
        "bits": bits,
        "lut": bool(d.params["lut"]),
        "batch": batch,
        "simulated": True,
        **p.provenance(),
    }
    return Estimate(seconds, parts)


def speedup(
    model: str | ModelSpec,
    batch: int,
    context: float,
    bits: float,
    device: str | DeviceSpec = "SAIL",
    baseline: str | DeviceSpec = "Neoverse-N1",
) -> float:
    """Decode speedup of ``device`` over ``baseline`` at the same batch, context and bit width."""
    return (
        decode_step(model, baseline, batch, context, bits).seconds
        / decode_step(model, device, batch, context, bits).seconds
    )


def best_speedup(
    model: str | ModelSpec,
    context: float,
    batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    bits: Sequence[float] = (2, 3, 4),
) -> tuple[float, int, float]:
    """Largest speedup over a sweep (the papers' "up to"): (speedup, batch, bits)."""
    return max((speedup(model, b, context, w), b, w) for b in batches for w in bits)


def group_time(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    n_requests: int,
    prompt_tokens_per_req: int,
    cached_prefix_tokens: int,
    output_tokens_per_req: int,
    max_batch: int = 32,
    *,
    bits: float | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> Estimate:
    """An LLM operator group on a (LUT-)CPU: prefill by SIMD roofline, decode by LUT-GEMV."""
    m, d = as_model(model), as_device(device)
    p = resolve(d, calibration)
    bits = d.params.get("weight_bits", 4) if bits is None else bits
    return batching.group_time(
        m,
        d,
        p,
        weight_bytes=m.params_total * bits / 8,
        kv_per_token=m.kv_bytes_per_token(),
        n_requests=n_requests,
        prompt_tokens=prompt_tokens_per_req,
        cached_prefix_tokens=cached_prefix_tokens,
        output_tokens=output_tokens_per_req,
        max_batch=max_batch,
        prefill=lambda b, s, c: roofline.prefill_time(m, d, s, c, batch=b, calibration=calibration),
        step=lambda b, c: decode_step(m, d, b, c, bits, calibration=calibration),
    )
