"""MARLIN-style W4A16 kernels (PPoPP'25, arXiv 2408.11743): 4-bit weights, fp16 activations.

A W4A16 GEMM reads ``4 + 16/group`` bits per weight (3.88x fewer bytes than fp16 at group 128)
and computes in fp16 with a small dequantisation overhead, so on the roofline it stays
memory-bound, near the full byte ratio, until the batch reaches about ridge/3.88; past that
it turns compute-bound and the gain fades (hw_models.md §5.4).  MARLIN targets Ampere; on
Hopper vLLM uses Machete, which this model treats the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import roofline
from .estimate import resolve
from .specs import DeviceSpec, ModelSpec, as_device


def bits_per_weight(group_size: int = 128) -> float:
    return 4.0 + 16.0 / group_size


def byte_ratio(group_size: int = 128) -> float:
    """fp16 bytes over W4A16 bytes: the ideal memory-bound speedup (3.88 at group 128)."""
    return 16.0 / bits_per_weight(group_size)


def crossover_batch(device: str | DeviceSpec, group_size: int = 128) -> float:
    """Batch at which a W4A16 GEMM reaches the ridge: ridge / byte ratio (~ridge/4)."""
    return as_device(device).ridge("fp16") / byte_ratio(group_size)


def gemm_speedup(
    k: int,
    n: int,
    batch: int,
    device: str | DeviceSpec,
    group_size: int = 128,
    *,
    calibration: Mapping[str, Any] | None = None,
) -> float:
    """fp16 time over W4A16 time for a ``batch``x``k`` by ``k``x``n`` GEMM."""
    d = as_device(device)
    p = resolve(d, calibration)
    flops = 2.0 * batch * k * n
    fp16 = roofline.op_time(flops, 2.0 * k * n, d, "fp16", p)["seconds"]
    w4 = roofline.op_time(
        flops * p["weight_only_compute_overhead"], k * n * bits_per_weight(group_size) / 8, d, "fp16", p
    )["seconds"]
    return fp16 / w4


def decode_speedup(
    model: str | ModelSpec,
    device: str | DeviceSpec,
    batch: int,
    context: float,
    *,
    calibration: Mapping[str, Any] | None = None,
) -> float:
    """Whole decode-step speedup of W4A16 over fp16 weights (attention and overheads unchanged)."""
    fp16 = roofline.decode_time(model, device, batch, context, dtype="fp16", calibration=calibration)
    w4 = roofline.decode_time(model, device, batch, context, dtype="w4a16", calibration=calibration)
    return fp16.seconds / w4.seconds
