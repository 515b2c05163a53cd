"""Calibration: measured timings that correct the cost model, kept in a JSON file.

EXPLAIN ANALYZE and the benchmarks append measurements; `fit` turns them into the numbers the cost
model reads. Measurement records (one dict each; `kind` says which):

| kind     | fields                                             | fitted into                                    |
|----------|----------------------------------------------------|------------------------------------------------|
| `llm`    | model, device, phase (prefill/decode/group), tokens, seconds, predicted_s? | `llm_rate[model@device:phase]` tokens/s; with predicted_s also `llm_factor[...]` = measured/predicted (least squares through the origin) |
| `tool`   | tool (sql/http/py), key? (node or db), seconds     | `tool_s[tool]` and `tool_s[key]`: mean seconds per call |
| `chars`  | model? , chars, tokens                             | `chars_per_token[model or "text"]`             |
| `output` | node ("workflow.node"), tokens, batch_max?         | `output_tokens[node]`: mean output tokens; `output_max[node]`: mean of the longest reply per engine batch (the batch decodes that long) |
| `load`   | model, device, seconds, mode?                      | `load_s[model@device:load]` (`...:load:MODE` with a mode): mean seconds to make the model resident |
| `llm_batch` | model, device, n, prefill_tokens, steps, seconds, ran_as?, mode? | `engine[model@device]` (`model@device:MODE` with a mode): the engine's batch-time law, seconds ≈ batch_s + step_s·steps + seq_step_s·n·steps + token_s·prefill_tokens (non-negative least squares over every engine batch measured; a slow engine's fixed cost per iteration, as in transformers, shows up as step_s) |

`model` is the model id as the workflow declares it; `device` the hardware spec name (estimate.device);
`mode` how the engine ran (vLLM: `eager` without CUDA graphs, `compiled` with torch.compile and graphs).
`predicted_s` must be the uncalibrated estimate (`estimate.breakdown.roofline_s` for a whole group,
`prefill_s`/`decode_s` of a fresh uncalibrated estimate per phase), so refits do not compound.
Phase `group` scales the whole group (prefill and decode); it wins over per-phase numbers.
The file may also hold `hw`: hardware-model parameters passed as is to `halo.hw_models` (flat keys, or
per-device sub-tables such as `{"H100-SXM": {"eta": 0.6}}`). The default file is
`.halo/calibration.json` in the working directory.
"""

from __future__ import annotations

import itertools
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
    engine: dict[str, dict[str, Any]] = field(default_factory=dict)
    output_max: dict[str, float] = field(default_factory=dict)
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


ENGINE_TERMS = ("batch_s", "step_s", "seq_step_s", "token_s")
ENGINE_PHASES = ("prefill", "decode", "decode", "prefill")  # the phase each term's time belongs to


def llm_key(model: str, device: str, phase: str) -> str:
    return f"{model}@{device}:{phase}"


def engine_key(model: str, device: str) -> str:
    return f"{model}@{device}"


def _moded(key: str, record: dict[str, Any]) -> str:
    return f"{key}:{record['mode']}" if record.get("mode") else key


def engine_features(n: float, steps: float, prefill_tokens: float) -> list[float]:
    """The terms of the batch-time law, in ENGINE_TERMS order."""
    return [1.0, steps, n * steps, prefill_tokens]


def fit(
    measurements: list[dict[str, Any]], path: str | None = None, hw: dict[str, Any] | None = None
) -> Calibration:
    """Fit rates, efficiency factors, latencies, chars/token and engine batch laws from raw measurements."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
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
            if m.get("batch_max") is not None:
                _acc(sums, "output_max", m["node"], m["batch_max"], 1.0)
        elif kind == "load":
            _acc(sums, "load", llm_key(m["model"], m["device"], _moded("load", m)), m["seconds"], 1.0)
        elif kind == "llm_batch":
            batches[_moded(engine_key(m["model"], m["device"]), m)].append(m)
        else:
            raise ValueError(f"unknown measurement kind {kind!r}")
    out = Calibration(hw=dict(hw or {}), measurements=list(measurements), path=path)
    table = {
        "rate": out.llm_rate,
        "factor": out.llm_factor,
        "tool": out.tool_s,
        "chars": out.chars_per_token,
        "output": out.output_tokens,
        "output_max": out.output_max,
        "load": out.load_s,
    }
    for (what, key), (num, den) in sums.items():
        if den > 0:
            table[what][key] = num / den
    out.engine = {key: _fit_engine(rows) for key, rows in batches.items()}
    return out


def _fit_engine(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Non-negative least squares for the batch-time law: the best fit over every subset of the terms
    (four terms: sixteen small solves), so no term goes negative to explain noise."""
    a = np.array([engine_features(r["n"], r["steps"], r["prefill_tokens"]) for r in rows], dtype=float)
    y = np.array([r["seconds"] for r in rows], dtype=float)
    best, best_err = np.zeros(len(ENGINE_TERMS)), float(y @ y)
    for mask in itertools.product((False, True), repeat=len(ENGINE_TERMS)):
        cols = [i for i, on in enumerate(mask) if on]
        if not cols or len(cols) > len(rows):
            continue
        coef, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
        if (coef < 0).any():
            continue
        err = float(np.sum((a[:, cols] @ coef - y) ** 2))
        if err < best_err - 1e-12:
            best, best_err = np.zeros(len(ENGINE_TERMS)), err
            best[cols] = coef
    fitted: dict[str, Any] = {t: float(v) for t, v in zip(ENGINE_TERMS, best, strict=True)}
    fitted["batches"] = len(rows)
    fitted["rms_s"] = (best_err / len(rows)) ** 0.5
    ran_as = sorted({r["ran_as"] for r in rows if r.get("ran_as")})
    if ran_as:
        fitted["ran_as"] = ", ".join(ran_as)
    return fitted


def engine_phases(
    fitted: dict[str, Any], n: float, steps: float, prefill_tokens: float
) -> tuple[float, float]:
    """One engine batch of `n` requests under a fitted law: (prefill seconds, decode seconds)."""
    out = {"prefill": 0.0, "decode": 0.0}
    terms = zip(ENGINE_TERMS, ENGINE_PHASES, engine_features(n, steps, prefill_tokens), strict=True)
    for term, phase, x in terms:
        out[phase] += fitted[term] * x
    return out["prefill"], out["decode"]


def engine_seconds(fitted: dict[str, Any], n: float, steps: float, prefill_tokens: float) -> float:
    """One engine batch's seconds under a fitted law."""
    return sum(engine_phases(fitted, n, steps, prefill_tokens))


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
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
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
