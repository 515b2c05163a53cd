"""NeuPIMs (ASPLOS'24) NPU + PIM device model.  Simulated: no silicon exists.

GEMMs (QKV, projection, FFN, LM head) run on the NPU's systolic arrays; decode attention is a
GEMV on PIM channels holding each request's KV (hw_models.md §5.1).  Per request and layer a
channel takes ``t = slope·L + intercept`` with slope = KV bytes per token-layer / channel rate;
requests are pinned to channels by greedy min-load packing and a layer waits for the busiest
channel.  Execution modes of one decode iteration:

- ``neupims``: dual row buffers let NPU and PIM work at once; two sub-batches interleave, so a
  layer costs ``max(G_A, P_B) + max(G_B, P_A)``.  Weight tiles are assumed reused by both
  sub-batches, so the GEMM time splits in proportion to tokens [I].
- ``naive``: single row buffer (blocked mode): a layer costs ``G + P``.
- ``npu_only``: attention also on the NPU, streaming KV over the external bus.
- ``gpu_only``: everything on a GPU with the same peaks (iso-resource; the paper's GPU is not
  specified in the sources [I]) at the measured GPU efficiency curve of hw_models.roofline.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from . import batching, roofline
from .estimate import Estimate, Params, resolve
from .specs import COMPUTE_DTYPE, DeviceSpec, ModelSpec, as_device, as_model

MODES = ("neupims", "naive", "npu_only", "gpu_only")


def pim_channel_loads(model: ModelSpec, device: DeviceSpec, contexts: Sequence[float]) -> list[float]:
    """Seconds of PIM attention per layer on each channel (longest request first, least-loaded channel)."""
    per_token_layer = 2 * model.kv_heads * model.head_dim * 2
    slope = per_token_layer / device.params["pim_channel_bw"]
    intercept = device.params["pim_intercept_s"]
    loads = [(0.0, ch) for ch in range(int(device.params["pim_channels"]))]
    heapq.heapify(loads)
    for ctx in sorted(contexts, reverse=True):
        load, ch = heapq.heappop(loads)
        heapq.heappush(loads, (load + slope * ctx + intercept, ch))
    return [load for load, _ in sorted(loads, key=lambda item: item[1])]


def split_sub_batches(contexts: Sequence[float], parts: int) -> list[list[float]]:
    """Balance requests over ``parts`` sub-batches by total context (greedy)."""
    bins: list[list[float]] = [[] for _ in range(parts)]
    sums = [0.0] * parts
    for ctx in sorted(contexts, reverse=True):
        i = min(range(parts), key=sums.__getitem__)
        bins[i].append(ctx)
        sums[i] += ctx
    return [b for b in bins if b]


def _gemm(model: ModelSpec, device: DeviceSpec, tokens: int, p: Params) -> dict[str, Any]:
    flops, nbytes = roofline.linear_cost(model, tokens, tokens, None)
    return roofline.op_time(
        flops, nbytes, device, COMPUTE_DTYPE[model.dtype], p, eta=device.params["npu_efficiency"]
    )


def decode_step(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    contexts: Sequence[float],
    mode: str = "neupims",
    *,
    calibration: Mapping[str, Any] | None = None,
) -> Estimate:
    """One decode iteration for requests with the given KV lengths, in one of MODES."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    m, d = as_model(model), as_device(device)
    p = resolve(d, calibration)
    batch = len(contexts)
    if mode == "gpu_only":
        gpu = replace(d, name=f"{d.name}-iso-GPU", kind="gpu", backend="roofline", simulated=False)
        step = roofline.decode_time(m, gpu, batch, sum(contexts) / batch, calibration=calibration)
        parts = {
            "gemm_s": step.breakdown["linear_s"],
            "attention_s": step.breakdown["attention_s"],
            "mode": mode,
            "batch": batch,
            "gemm_bound": step.breakdown["bound"],
            "gpu_eta": step.breakdown["eta"],
            "simulated": True,
            **p.provenance(),
        }
        return Estimate(parts["gemm_s"] + parts["attention_s"], parts)
    gemm = _gemm(m, d, batch, p)
    layers = m.layers
    if mode == "npu_only":
        kv = sum(contexts) * m.kv_bytes_per_token()
        flops = sum(m.attention_flops_per_token(c) for c in contexts)
        att = roofline.op_time(flops, kv, d, COMPUTE_DTYPE[m.dtype], p, eta=d.params["npu_efficiency"])
        seconds = gemm["seconds"] + att["seconds"]
        parts = {"gemm_s": gemm["seconds"], "attention_s": att["seconds"]}
    elif mode == "naive":
        pim = layers * max(pim_channel_loads(m, d, contexts))
        seconds = gemm["seconds"] + pim
        parts = {"gemm_s": gemm["seconds"], "attention_s": pim}
    else:
        subs = split_sub_batches(contexts, int(d.params["sub_batches"]))
        g = [gemm["seconds"] / layers * len(s) / batch for s in subs]
        a = [max(pim_channel_loads(m, d, s)) for s in subs]
        if len(subs) == 1:
            per_layer, fill = g[0] + a[0], 0.0
        else:
            per_layer = max(g[0], a[1]) + max(g[1], a[0])
            fill = min(g[0], a[0])
        seconds = layers * per_layer + fill
        parts = {
            "gemm_s": gemm["seconds"],
            "attention_s": layers * sum(a),
            "pipeline_fill_s": fill,
            "sub_batches": [len(s) for s in subs],
        }
    parts.update(
        mode=mode,
        batch=batch,
        gemm_bound=gemm["bound"],
        npu_eta=gemm["eta"],
        simulated=True,
        **p.provenance(),
    )
    return Estimate(seconds, parts)


def compare(
    model: str | ModelSpec,
    contexts: Sequence[float],
    device: str | DeviceSpec = "NeuPIMs",
    *,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Throughput gain of NeuPIMs over each baseline mode (ratio of iteration times)."""
    t = {mode: decode_step(model, device, contexts, mode, calibration=calibration).seconds for mode in MODES}
    return {mode: t[mode] / t["neupims"] for mode in MODES if mode != "neupims"}


def group_time(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    n_requests: int,
    prompt_tokens_per_req: int,
    cached_prefix_tokens: int,
    output_tokens_per_req: int,
    max_batch: int = 256,
    *,
    mode: str = "neupims",
    calibration: Mapping[str, Any] | None = None,
) -> Estimate:
    """An LLM operator group on NeuPIMs: prefill on the NPU, decode per ``mode``."""
    m, d = as_model(model), as_device(device)
    p = resolve(d, calibration)
    npu = dict(calibration or {}) | {"eta": d.params["npu_efficiency"]}
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
        prefill=lambda b, s, c: roofline.prefill_time(m, d, s, c, batch=b, calibration=npu),
        step=lambda b, c: decode_step(m, d, [c] * b, mode, calibration=calibration),
    )
