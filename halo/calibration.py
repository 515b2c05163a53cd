"""Calibration: measured timings that correct the cost model, kept in a JSON file.

EXPLAIN ANALYZE and the benchmarks append measurements; `fit` turns them into the numbers the cost
model reads. Measurement records (one dict each; `kind` says which):

| kind     | fields                                             | fitted into                                    |
|----------|----------------------------------------------------|------------------------------------------------|
| `llm`    | model, device, phase (prefill/decode/group), tokens, seconds, predicted_s? | `llm_rate[model@device:phase]` tokens/s; with predicted_s also `llm_factor[...]` = measured/predicted (least squares through the origin) |
| `tool`   | tool (sql/http/py), key? (node or db), seconds     | `tool_s[tool]` and `tool_s[key]`: mean seconds per call |
| `chars`  | model? , chars, tokens                             | `chars_per_token[model or "text"]`             |
| `output` | node ("workflow.node"), tokens                     | `output_tokens[node]`: mean output tokens      |
| `load`   | model, device, seconds                             | `load_s[model@device:load]`: mean seconds to make the model resident |
| `llm_steps` | model, device, base_s, iterations, seconds      | `llm_steps[model@device]` = {factor, step_s}: seconds ≈ factor·base_s + iterations·step_s (least squares over every group measured; an engine's fixed cost per iteration, as in transformers, shows up as step_s) |

`model` is the model id as the workflow declares it; `device` the hardware spec name (estimate.device).
`predicted_s` must be the uncalibrated estimate (`estimate.breakdown.roofline_s` for a whole group,
`prefill_s`/`decode_s` of a fresh uncalibrated estimate per phase), so refits do not compound.
Phase `group` scales the whole group (prefill and decode); it wins over per-phase numbers.
The file may also hold `hw`: hardware-model parameters passed as is to `halo.hw_models` (flat keys, or
per-device sub-tables such as `{"H100-SXM": {"eta": 0.6}}`). The default file is
`.halo/calibration.json` in the working directory.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_PATH = Path(".halo") / "calibration.json"


@dataclass
class Calibration:
    """Fitted numbers (see the module table) plus the measurements they came from."""

    llm_rate: dict[str, float] = field(default_factory=dict)
    llm_factor: dict[str, float] = field(default_factory=dict)
    llm_steps: dict[str, dict[str, float]] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)
    tool_s: dict[str, float] = field(default_factory=dict)
    chars_per_token: dict[str, float] = field(default_factory=dict)
    output_tokens: dict[str, float] = field(default_factory=dict)
    hw: dict[str, Any] = field(default_factory=dict)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    path: str | None = None

    def add(self, *measurements: dict[str, Any]) -> Calibration:
        """A new calibration refitted over the old measurements plus these."""
        return fit([*self.measurements, *measurements], self.path, self.hw)


def llm_key(model: str, device: str, phase: str) -> str:
    return f"{model}@{device}:{phase}"


def fit(measurements: list[dict[str, Any]], path: str | None = None, hw: dict[str, Any] | None = None) -> Calibration:
    """Fit rates, efficiency factors, latencies and chars/token from raw measurements."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    steps: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for m in measurements:
        kind = m["kind"]
        if kind == "llm":
            key = llm_key(m["model"], m["device"], m["phase"])
            _acc(sums, "rate", key, m["tokens"], m["seconds"])
            if m.get("predicted_s"):
                p = m["predicted_s"]
                _acc(sums, "factor", key, p * m["seconds"], p * p)
        elif kind == "tool":
            for key in {m["tool"], m.get("key") or m["tool"]}:
                _acc(sums, "tool", key, m["seconds"], 1.0)
        elif kind == "chars":
            _acc(sums, "chars", m.get("model") or "text", m["chars"], m["tokens"])
        elif kind == "output":
            _acc(sums, "output", m["node"], m["tokens"], 1.0)
        elif kind == "load":
            _acc(sums, "load", llm_key(m["model"], m["device"], "load"), m["seconds"], 1.0)
        elif kind == "llm_steps":
            steps[llm_key(m["model"], m["device"], "")[:-1]].append((m["base_s"], m["iterations"], m["seconds"]))
        else:
            raise ValueError(f"unknown measurement kind {kind!r}")
    out = Calibration(hw=dict(hw or {}), measurements=list(measurements), path=path)
    table = {"rate": out.llm_rate, "factor": out.llm_factor, "tool": out.tool_s,
             "chars": out.chars_per_token, "output": out.output_tokens, "load": out.load_s}
    for (what, key), (num, den) in sums.items():
        if den > 0:
            table[what][key] = num / den
    out.llm_steps = {key: _fit_steps(rows) for key, rows in steps.items()}
    return out


def _fit_steps(rows: list[tuple[float, float, float]]) -> dict[str, float]:
    """Non-negative least squares for seconds ≈ factor·base + iterations·step_s (two unknowns)."""
    a = np.array([[b, i] for b, i, _ in rows], dtype=float)
    y = np.array([s for _, _, s in rows], dtype=float)
    if len(rows) >= 2 and np.linalg.matrix_rank(a) == 2:
        (factor, step), *_ = np.linalg.lstsq(a, y, rcond=None)
        if factor >= 0 and step >= 0:
            return {"factor": float(factor), "step_s": float(step)}
    # One term explains it: the per-iteration cost alone (what a slow engine is dominated by), else the factor.
    it = a[:, 1] @ a[:, 1]
    if it > 0:
        return {"factor": 0.0, "step_s": float(a[:, 1] @ y / it)}
    return {"factor": float(a[:, 0] @ y / max(a[:, 0] @ a[:, 0], 1e-12)), "step_s": 0.0}


def _acc(sums, what: str, key: str, num: float, den: float) -> None:
    s = sums[(what, key)]
    s[0] += num
    s[1] += den


def load(path: str | Path | None = None) -> Calibration:
    """Read a calibration file (default `.halo/calibration.json`); a missing default file is empty."""
    p = Path(path) if path is not None else DEFAULT_PATH
    if not p.exists():
        if path is not None:
            raise FileNotFoundError(f"no calibration file at {p}")
        return Calibration()
    try:
        data = json.loads(p.read_text())
        return fit(data.get("measurements", []), str(p), data.get("hw"))
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise CalibrationError(f"{p}: not a Halo calibration file ({e})") from None


class CalibrationError(ValueError):
    """A calibration file that cannot be read."""


def save(cal: Calibration, path: str | Path | None = None) -> Path:
    """Write the calibration (fitted numbers and measurements) as JSON; returns the path."""
    p = Path(path or cal.path or DEFAULT_PATH)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in asdict(cal).items() if k != "path"}
    p.write_text(json.dumps({"halo_calibration": 1, **data}, indent=1, sort_keys=True))
    return p
