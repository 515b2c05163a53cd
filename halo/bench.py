"""`halo bench`: one workload under the baselines and the Halo plan, on the same engine, side by side."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

from halo.plan import LogicalPlan
from halo.runtime.executor import RunOptions
from halo.runtime.run import execute

MODES: dict[str, dict[str, Any]] = {
    "naive": {"merge": False, "prefix_keys": False, "window": 8, "max_batch": 8},
    "opwise": {"merge": False, "operator_at_a_time": True},
    "halo": {},
}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def run_modes(plan: LogicalPlan, rows, workdir: Path, fp: str, engine: str, engine_options: dict,
              modes: list[str], priority: list[str], batching: dict[str, int] | None = None) -> dict[str, Any]:
    """Run each mode on a fresh journal; returns their RunStats by mode.

    `batching` (max_batch, batch_tokens) applies to the batched modes; naive keeps its own concurrency.
    """
    out = {}
    for mode in modes:
        extra = (batching or {}) if mode != "naive" else {}
        opts = RunOptions(**{**MODES[mode], **extra}, priority=priority if mode == "halo" else [])
        res = execute(plan, rows, workdir / f"{mode}.jsonl", f"{fp}-{mode}", engine=engine,
                      engine_options=engine_options, options=opts)
        out[mode] = res.stats
    return out


def table(workload: str, n: int, stats: dict[str, Any], predicted_s: float | None, engine: str,
          note: str = "") -> str:
    """The markdown result: makespan, throughput, tokens, cache hits, merges, prediction and speedups."""
    rows = ["| mode | makespan (s) | inputs/s | calls | merged | prompt tok | cached tok (hit %) | "
            "generated tok | failed | speedup vs naive | speedup vs opwise |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {m: s.totals()["seconds"] for m, s in stats.items()}
    for mode, s in stats.items():
        t = s.totals()
        hit = 100 * t["cached_tokens"] / t["prompt_tokens"] if t["prompt_tokens"] else 0.0
        vs = [f"{base[b] / t['seconds']:.2f}x" if b in base and t["seconds"] else "-" for b in ("naive", "opwise")]
        rows.append(f"| {mode} | {t['seconds']:.1f} | {t['inputs_per_s']:.3f} | {t['calls']:,} | {t['merged']:,} | "
                    f"{t['prompt_tokens']:,} | {t['cached_tokens']:,} ({hit:.0f}%) | {t['completion_tokens']:,} | "
                    f"{t['failed']:,} | {vs[0]} | {vs[1]} |")
    subs = next(iter(stats.values())).substitutions if stats else {}
    head = [f"## {workload}: {n:,} inputs",
            "",
            f"- date: {dt.date.today().isoformat()}; machine: {machine()}; engine: {engine}",
            f"- models: {', '.join(f'{k} ran as {v}' for k, v in subs.items()) or 'as declared'}"]
    if predicted_s is not None and "halo" in stats:
        measured = stats["halo"].totals()["seconds"]
        head.append(f"- Halo plan: predicted {predicted_s:.1f} s, measured {measured:.1f} s "
                    f"({(predicted_s - measured) / measured:+.0%})")
    if note:
        head.append(f"- {note}")
    return "\n".join([*head, "", *rows, ""])
