"""Shared machinery: decode-step integration and batching an LLM operator group under KV memory.

Every backend (roofline GPU, NeuPIMs, Duplex, SAIL) supplies a prefill function and a decode-step
function; this module turns them into the time of a whole group of similar requests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .estimate import Estimate, Params
from .specs import DeviceSpec, ModelSpec

StepFn = Callable[[int, float], Estimate]  # (batch, context) -> one decode iteration
PrefillFn = Callable[[int, int, int], Estimate]  # (batch, prompt tokens, cached tokens) -> prefill


class CapacityError(ValueError):
    """The model (or one request's KV cache) does not fit in the device's memory."""


def integrate_decode(step: StepFn, batch: int, context_len: float, steps: int, segments: int = 8) -> Estimate:
    """Sum ``steps`` decode iterations whose context grows by one token each.

    The steps are split into at most ``segments`` runs, each priced at its midpoint context;
    numeric breakdown entries are summed, the rest are taken from the first run.
    """
    if steps <= 0:
        return Estimate(0.0, {"steps": 0})
    n = min(steps, segments)
    bounds = [round(i * steps / n) for i in range(n + 1)]
    total = 0.0
    breakdown: dict = {}
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        est = step(batch, context_len + (lo + hi - 1) / 2.0)
        count = hi - lo
        total += est.seconds * count
        for key, value in est.breakdown.items():
            if isinstance(value, float) and key.endswith("_s"):
                breakdown[key] = breakdown.get(key, 0.0) + value * count
            else:
                breakdown.setdefault(key, value)
    breakdown.update(steps=steps, seconds_per_step=total / steps)
    return Estimate(total, breakdown)


def kv_budget(model: ModelSpec, device: DeviceSpec, weight_bytes: float, p: Params, tp: int = 1) -> float:
    """Bytes left for KV on one device after weights and the activation reserve."""
    budget = p["mem_utilization"] * device.mem_capacity - weight_bytes / tp - p["activation_reserve_bytes"]
    if budget <= 0:
        raise CapacityError(
            f"{model.name} needs {weight_bytes / tp / 1e9:.1f} GB of weights per device; "
            f"{device.name} offers {p['mem_utilization'] * device.mem_capacity / 1e9:.1f} GB usable"
        )
    return budget


def group_time(
    model: ModelSpec,
    device: DeviceSpec,
    p: Params,
    *,
    weight_bytes: float,
    kv_per_token: float,
    n_requests: int,
    prompt_tokens: int,
    cached_prefix_tokens: int,
    output_tokens: int,
    max_batch: int,
    prefill: PrefillFn,
    step: StepFn,
    tp: int = 1,
) -> Estimate:
    """Run ``n_requests`` equal requests in waves of at most ``max_batch`` that fit the KV budget.

    The cached prefix is resident once (shared pages); each request adds its own uncached prompt
    and output tokens.  A wave is one batched prefill followed by ``output_tokens`` decode steps.
    """
    if n_requests <= 0:
        return Estimate(0.0, {"n_requests": 0, "batch": 0, "waves": 0})
    if not 0 <= cached_prefix_tokens <= prompt_tokens:
        raise ValueError("cached_prefix_tokens must lie between 0 and prompt_tokens")
    budget = kv_budget(model, device, weight_bytes, p, tp)
    shared = cached_prefix_tokens * kv_per_token / tp
    per_request = (prompt_tokens - cached_prefix_tokens + output_tokens) * kv_per_token / tp
    fit = math.inf if per_request == 0 else math.floor((budget - shared) / per_request)
    batch = int(min(max_batch, n_requests, fit))
    if batch < 1:
        raise CapacityError(
            f"one request of {prompt_tokens + output_tokens} tokens does not fit "
            f"the {budget / 1e9:.1f} GB KV budget of {device.name}"
        )
    full, rest = divmod(n_requests, batch)
    prefill_s = decode_s = 0.0
    parts: dict = {}
    for size, count in ((batch, full), (rest, 1 if rest else 0)):
        if not count:
            continue
        pre = prefill(size, prompt_tokens, cached_prefix_tokens)
        dec = integrate_decode(step, size, prompt_tokens, output_tokens)
        prefill_s += pre.seconds * count
        decode_s += dec.seconds * count
        parts.setdefault("prefill", pre.breakdown)
        parts.setdefault("decode", dec.breakdown)
    peak = weight_bytes / tp + shared + batch * per_request + p["activation_reserve_bytes"]
    breakdown = {
        "batch": batch,
        "waves": full + (1 if rest else 0),
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "kv_budget_bytes": budget,
        "kv_bytes_per_request": per_request,
        "batch_limited_by": (
            "memory"
            if fit < min(max_batch, n_requests)
            else "max_batch"
            if max_batch < n_requests
            else "n_requests"
        ),
        "tp": tp,
        "device": device.name,
        "simulated": device.simulated,
        **parts,
    }
    return Estimate(prefill_s + decode_s, breakdown, peak_memory_bytes=peak)
