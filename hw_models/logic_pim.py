"""Duplex (arXiv 2409.01141) xPU + Logic-PIM device model.  Simulated: no silicon exists.

Each op of a decode iteration goes to whichever side finishes it sooner, which amounts to
placement by Op/B (hw_models.md §5.2): the xPU is an H100-class GPU at the measured efficiency
curve; Logic-PIM reads HBM at ``lpim_bw_multiplier`` x the external bandwidth but has little
compute, so it wins low-Op/B ops (GQA decode attention at Op/B = group size, lightly loaded MoE
experts).  Expert co-processing splits the experts of a layer between both sides greedily
(most-loaded expert first, onto the side that would finish it earlier); both sides share the
same memory, so weights are never duplicated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from . import batching, roofline
from .estimate import Estimate, Params, resolve
from .specs import COMPUTE_DTYPE, DeviceSpec, ModelSpec, as_device, as_model, format_bytes


def _sides(d: DeviceSpec, p: Params, flops: float, nbytes: float, dtype: str) -> tuple[float, float]:
    """(xPU seconds, Logic-PIM seconds) for one op."""
    xpu = roofline.op_time(flops, nbytes, d, dtype, p)["seconds"] if flops or nbytes else 0.0
    eta = d.params["lpim_efficiency"]
    lpim = max(
        flops / (d.params["lpim_flops"] * eta), nbytes / (d.mem_bw * d.params["lpim_bw_multiplier"] * eta)
    )
    return xpu, lpim


def split_experts(loads: Sequence[tuple[float, float]]) -> tuple[float, float, int]:
    """Greedy hot/cold split of experts given (xPU s, Logic-PIM s) each: (xPU busy, LPIM busy, #on xPU)."""
    xpu = lpim = 0.0
    on_xpu = 0
    for tx, tl in sorted(loads, key=lambda t: -t[0]):
        if xpu + tx <= lpim + tl:
            xpu += tx
            on_xpu += 1
        else:
            lpim += tl
    return xpu, lpim, on_xpu


def decode_step(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    contexts: Sequence[float],
    *,
    calibration: Mapping[str, Any] | None = None,
) -> Estimate:
    """One Duplex decode iteration (attention and experts co-processed, other ops placed by time)."""
    m, d = as_model(model), as_device(device)
    p = resolve(d, calibration)
    dtype = COMPUTE_DTYPE[m.dtype]
    batch = len(contexts)
    wbytes = format_bytes(m.dtype)
    dense = _sides(d, p, 2.0 * batch * m.dense_params_per_layer, m.dense_params_per_layer * wbytes, dtype)
    kv_layer = sum(contexts) * m.kv_bytes_per_token() / m.layers
    attn = _sides(d, p, sum(m.attention_flops_per_token(c) for c in contexts) / m.layers, kv_layer, dtype)
    head = _sides(d, p, 2.0 * batch * m.lm_head_params, m.lm_head_params * wbytes, dtype)
    moe_s, on_xpu = 0.0, 0
    if m.is_moe:
        hit = roofline.active_experts(m, batch)
        tokens = batch * m.experts_per_token / hit
        count = math.ceil(hit)  # spread the expected bytes of `hit` experts over whole experts
        share = hit / count
        one = _sides(d, p, 2.0 * tokens * share * m.expert_params, share * m.expert_bytes(), dtype)
        x, lp, on_xpu = split_experts([one] * count)
        moe_s = max(x, lp)
    layer = min(dense) + min(attn) + moe_s
    seconds = m.layers * layer + min(head) + p["iteration_overhead_s"]
    parts = {
        "dense_s": m.layers * min(dense),
        "dense_on": "xpu" if dense[0] <= dense[1] else "logic_pim",
        "attention_s": m.layers * min(attn),
        "attention_on": "xpu" if attn[0] <= attn[1] else "logic_pim",
        "moe_s": m.layers * moe_s,
        "experts_on_xpu": on_xpu,
        "lm_head_s": min(head),
        "overhead_s": p["iteration_overhead_s"],
        "batch": batch,
        "simulated": True,
        **p.provenance(),
    }
    return Estimate(seconds, parts)


def speedup_vs_gpu(
    model: str | ModelSpec,
    batch: int,
    context: float,
    device: str | DeviceSpec = "Duplex",
    gpu: str | DeviceSpec = "H100-SXM",
    *,
    calibration: Mapping[str, Any] | None = None,
) -> float:
    """Decode throughput of Duplex over ``gpu`` running the same batch with halo's roofline."""
    base = roofline.decode_time(model, gpu, batch, context, calibration=calibration).seconds
    return base / decode_step(model, device, [context] * batch, calibration=calibration).seconds


def group_time(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    n_requests: int,
    prompt_tokens_per_req: int,
    cached_prefix_tokens: int,
    output_tokens_per_req: int,
    max_batch: int = 256,
    *,
    calibration: Mapping[str, Any] | None = None,
) -> Estimate:
    """An LLM operator group on Duplex: prefill on the xPU, decode co-processed."""
    m, d = as_model(model), as_device(device)
    p = resolve(d, calibration)
    return batching.group_time(
        m,
        d,
        p,
        weight_bytes=m.weight_bytes(),
        kv_per_token=m.kv_bytes_per_token(),
        n_requests=n_requests,
        prompt_tokens=prompt_tokens_per_req,
        cached_prefix_tokens=cached_prefix_tokens,
        output_tokens=output_tokens_per_req,
        max_batch=max_batch,
        prefill=lambda b, s, c: roofline.prefill_time(m, d, s, c, batch=b, calibration=calibration),
        step=lambda b, c: decode_step(m, d, [c] * b, calibration=calibration),
    )
