"""The Estimate result type and the calibration parameters every estimator reads.

Defaults come from hw_models.md: the efficiency curve from the H100 anchors (§0, §6.1, §6.3),
data-movement rates from §6.3(e)/(f), lifecycle costs from §2.6.  A caller overrides any of them
with a calibration mapping: flat keys apply to every device, a nested mapping under a device
name (case-insensitive) applies to that device only and wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .specs import DeviceSpec

DEFAULTS: dict[str, Any] = {
    # GEMM efficiency η versus x = arithmetic intensity / device ridge.  The same η divides the
    # compute and the memory bound: 78% MBU at batch 1, a dip to 63% at the ridge (1.58x the
    # roofline at M=256 on H100) and 73-80% MFU at large M.
    "eta_curve": (
        (0.003, 0.78),
        (0.1, 0.77),
        (0.45, 0.70),
        (0.9, 0.63),
        (1.75, 0.73),
        (3.5, 0.79),
        (7.0, 0.80),
        (28.0, 0.74),
    ),
    "attn_decode_eta": 0.85,  # KV streaming, 78-91% of HBM at large batch (§6.3c)
    "attn_prefill_eta": 0.55,  # FlashAttention-2 prefill, 36-65% of dense peak (§6.3d)
    "weight_only_compute_overhead": 1.1,  # dequantising 4-bit weights costs ~10% at large M (§5.4)
    "iteration_overhead_s": 2.0e-4,  # scheduler, sampler, launches per engine iteration [I]
    "max_batched_tokens": 8192,  # prefill chunk (token budget per iteration)
    "mem_utilization": 0.9,  # vLLM gpu_memory_utilization default
    "activation_reserve_bytes": 2.0e9,
    "allreduce_latency_s": 1.5e-5,  # per TP all-reduce with CUDA graphs [I]; eager ~40 µs (§2.5)
    "link_efficiency": 0.73,  # 331.7 GB/s bus BW of 450 GB/s NVLink per direction (§2.5)
    "engine_init_s": 25.0,  # process start, CUDA graphs, allocator [I]: 30-100 s reloads
    "disk_bw": 2.0e9,  # local SSD, 1-7 GB/s (§2.6)
    "page_cache_bw": 6.97e9,  # page cache -> GPU, pageable copy (§6.3e)
    "h2d_bw": 54.7e9,  # pinned host -> GPU (§6.3e)
    "wake_s": 0.1,  # sleep-mode L1 wake, fixed part (§2.6: 0.1-6 s overall)
    # what torch.compile + CUDA graph capture add to a vLLM start, and what a decode iteration costs more
    # without CUDA graphs: measured on the H200 (vLLM 0.25.1, 0.5B shape) 48.7 s compiled against 10.7 s
    # eager, 20.2 s compiled with the compile cache filled; steps of 9.80 ms eager, 2.85 ms compiled
    # (bench/results/h200/h200_2026-12-03c.md). The cold start is priced: a cache may not be there.
    "compile_s": 38.0,
    "eager_step_s": 0.007,
    "offload_bw": 1.0e9,  # sleep L1's weight copy to the host: measured ~1 GB/s (vLLM 0.25.1, H200: 14B 29.8 s)
    "adapter_switch_s": 0.02,  # LoRA adapter swap, fixed part [I]
    "nvlink_bw": 394.9e9,
    "nvlink_latency_s": 2.2e-5,  # measured P2P, 1 GiB and 1 MiB (§6.3f)
    "pcie_bw": 54.7e9,
    "pcie_latency_s": 1.0e-5,
    "rdma_bw": 190e9,
    "rdma_latency_s": 2.0e-5,  # Mooncake 8x400G RoCE (§2.7)
}


@dataclass
class Estimate:
    """Seconds plus an explanatory breakdown (bounds, efficiencies, calibration provenance)."""

    seconds: float
    breakdown: dict[str, Any] = field(default_factory=dict)
    peak_memory_bytes: float = 0.0


class Params:
    """Defaults merged with a caller's calibration, remembering which keys were overridden."""

    def __init__(self, values: dict[str, Any], calibrated: set[str]):
        self._values = values
        self.calibrated_keys = calibrated
        xs, etas = zip(*values["eta_curve"], strict=True)
        self._log_x = np.log(np.asarray(xs, dtype=float))
        self._etas = np.asarray(etas, dtype=float)
        if "eta" in values:
            self._etas = np.full_like(self._etas, float(values["eta"]))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def eta(self, x: float) -> float:
        """GEMM efficiency at intensity/ridge ratio ``x`` (log-linear interpolation, clamped)."""
        return float(np.interp(np.log(max(x, 1e-9)), self._log_x, self._etas))

    def provenance(self) -> dict[str, Any]:
        """Breakdown entries saying whether (and which) calibrated values were used."""
        return {"calibrated": bool(self.calibrated_keys), "calibrated_keys": sorted(self.calibrated_keys)}


def resolve(device: DeviceSpec | None, calibration: Mapping[str, Any] | None) -> Params:
    """Merge DEFAULTS with ``calibration`` (flat keys, then the device's own sub-mapping)."""
    values = dict(DEFAULTS)
    calibrated: set[str] = set()
    if calibration:
        flat = {k: v for k, v in calibration.items() if not isinstance(v, Mapping)}
        nested = {k.lower(): v for k, v in calibration.items() if isinstance(v, Mapping)}
        own = nested.get(device.name.lower(), {}) if device is not None else {}
        for source in (flat, own):
            for key, value in source.items():
                if key not in DEFAULTS and key != "eta":
                    raise ValueError(f"unknown calibration key {key!r}; known: {', '.join(DEFAULTS)}, eta")
                values[key] = value
                calibrated.add(key)
    return Params(values, calibrated)
