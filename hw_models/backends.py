"""Pick the estimator for a device: ``group_time`` of an LLM operator group on any known device."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from . import logic_pim, lut_gemv, npu_pim, roofline
from .estimate import Estimate
from .specs import DeviceSpec, ModelSpec, as_device

BACKENDS: dict[str, ModuleType] = {
    "roofline": roofline,
    "npu_pim": npu_pim,
    "logic_pim": logic_pim,
    "lut_gemv": lut_gemv,
}


def backend(device: str | DeviceSpec) -> ModuleType:
    """The module that estimates LLM work on ``device`` (named by its spec's ``backend``)."""
    return BACKENDS[as_device(device).backend]


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
    """Estimate an LLM operator group on any device, simulated or real (see each backend)."""
    d = as_device(device)
    return backend(d).group_time(
        model,
        d,
        n_requests,
        prompt_tokens_per_req,
        cached_prefix_tokens,
        output_tokens_per_req,
        max_batch,
        calibration=calibration,
    )
