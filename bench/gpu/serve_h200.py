"""`halo serve` on the H200: Halo's server against the per-request baseline, through the same `vllm serve`s.

The servers (one per declared model, OpenAI-compatible) are already running. For each workload and mode
a fresh `halo serve` (its own state directory, so no memo carries over) on the openai engine, each model
sent to its own server (engine option `servers`), takes one `halo loadgen` run: first `saturate`
requests at once (saturated throughput), then Poisson arrivals at fractions of Halo's saturated
throughput for `duration_s`. Halo's mode admits arrivals in windows to one long-lived executor (merging
identical calls across requests, shared engine batches); the baseline (`--mode naive`) runs each request
alone through its own executor with the naive plan, `concurrency` at a time (a framework with that many
inputs in flight). The servers' prefix caches are emptied before every run where they allow it (vLLM
with VLLM_SERVER_DEV_MODE=1, as `halo.runtime.engines.vllm.serve` starts them).

    python bench/gpu/serve_h200.py --servers '{"Qwen/Qwen3-14B": "http://127.0.0.1:8001/v1", ...}' \\
        --workloads llm_voting,tpch_trident --out bench/results/h200/serve_h200_DATE.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from halo import api, loadgen
from halo.runtime.engines.base import EngineUnavailable
from halo.runtime.engines.vllm import reset_prefix_caches

ROOT = Path(__file__).resolve().parent.parent.parent
HARDWARE = "1 x H200 + cpu:16"
SATURATED = 1e5  # arrivals per second of a saturated run: all its requests at once
ENGINE_CONCURRENCY = 256  # requests one halo serve keeps in flight (vLLM's default --max-num-seqs)


def _emptied(servers: dict[str, str]) -> bool:
    """Empty the servers' prefix caches; False where a server does not allow it."""
    try:
        reset_prefix_caches(servers)
        return True
    except (EngineUnavailable, httpx.HTTPError):
        return False


def measure(
    workloads: list[tuple[str, Path, Path]],
    servers: dict[str, str],
    model_map: dict[str, str],
    out_md: Path,
    saturate: int = 400,
    fractions: Sequence[float] = (0.5, 0.9),
    duration_s: float = 30.0,
    concurrency: int = 64,
    window_ms: float = 50.0,
    budget_s: float | None = None,
) -> dict:
    """Measure every (name, workflow, inputs) in both modes; writes `out_md` after every row and returns
    the rows (a row that the budget left out has `not_run`)."""
    started = time.monotonic()
    engine = {"servers": servers, "max_concurrency": ENGINE_CONCURRENCY}
    options = ["--engine", "openai", "--hardware", HARDWARE, "--window-ms", str(window_ms)]
    options += ["--concurrency", str(concurrency)]
    options += [a for k, v in model_map.items() for a in ("--model-map", f"{k}={v}")]
    options += [a for k, v in engine.items() for a in ("--engine-opt", f"{k}={json.dumps(v)}")]
    result: dict = {
        "hardware": HARDWARE,
        "servers": servers,
        "model_map": model_map,
        "concurrency": concurrency,
        "engine_concurrency": ENGINE_CONCURRENCY,
        "window_ms": window_ms,
        "rows": [],
    }
    lines: list[str] = []
    for name, workflow, input_path in workloads:
        inputs = loadgen.read_inputs(input_path)
        served = api.compile(workflow).plan.name
        loads: list[tuple[str, float | None, dict]] = [("saturated", None, {"requests": saturate})]
        loads += [(f"{f:g} x halo", f, {"duration_s": duration_s}) for f in fractions]
        halo_rate = 0.0  # Halo's saturated throughput
        for label, fraction, load in loads:
            rate = SATURATED if fraction is None else round(fraction * halo_rate, 2) or None
            for mode in ("halo", "naive"):
                row: dict = {"workload": name, "mode": mode, "load": label, "rate": rate}
                if budget_s is not None and time.monotonic() - started > budget_s:
                    row["not_run"] = f"over the {budget_s:g} s budget"
                elif rate is None:
                    row["not_run"] = "no saturated throughput of halo to scale"
                else:
                    row["prefix_caches_emptied"] = _emptied(servers)
                    r, cpu = loadgen.fresh_run(
                        [workflow], [*options, "--mode", mode], served, inputs, rate, **load
                    )
                    if (label, mode) == ("saturated", "halo"):
                        halo_rate = r.throughput
                    row |= {
                        "sent": r.sent,
                        "outcomes": r.outcomes,
                        "throughput": r.throughput,
                        "wall_s": r.wall_s,
                        **{f"p{p}_ms": _ms(r.quantile(p / 100)) for p in (50, 90, 99)},
                        "server_cpu_ms_per_run": cpu,
                        "errors": r.errors,
                    }
                cells = [f"not run: {row['not_run']}"] if "not_run" in row else [*r.row(), f"{cpu:.1f}"]
                lines.append("| " + " | ".join([name, mode, label, *cells]) + " |")
                result["rows"].append(row)
                _write(out_md, result, lines, time.monotonic() - started)
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _write(out_md: Path, result: dict, lines: list[str], elapsed_s: float) -> None:
    cols = ["workload", "server", "load", *loadgen.columns(None), "server CPU ms/run"]
    emptied = all(row.get("prefix_caches_emptied", True) for row in result["rows"])
    head = [
        "# halo serve on the H200: Halo's server vs the per-request baseline, through the same vLLM servers",
        "",
        loadgen.machine_line(),
        f"- planned for {result['hardware']}; {elapsed_s:.0f} s in all; servers (declared model: base URL): "
        + ", ".join(f"{m}: {u}" for m, u in result["servers"].items()),
        f"- model map: {result['model_map'] or 'none'}; the openai engine keeps up to "
        f"{result['engine_concurrency']} requests in flight; windows of {result['window_ms']:g} ms; "
        + ("prefix caches emptied before every run" if emptied else "prefix caches not emptied (refused)"),
        "- halo: arrivals admitted in windows to one long-lived executor per workflow, planned on the first "
        "window; identical calls across requests merge; engine batches shared",
        "- naive: each request alone through its own executor with the naive plan (no merging across "
        f"requests), {result['concurrency']} requests at a time, the same servers",
        "- every request carries one input, the workload's inputs in turn; latency from POST to the result on "
        "the event stream; saturated: all requests sent at once; then Poisson arrivals at fractions of "
        "Halo's saturated throughput; each row a fresh server (fresh state, empty memo)",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(head + lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=json.loads, required=True, help="JSON: declared model -> base URL")
    ap.add_argument("--model-map", type=json.loads, default={}, help="JSON: declared model -> served name")
    ap.add_argument("--workloads", default="llm_voting,tpch_trident", help="names under workloads/")
    ap.add_argument("--saturate", type=int, default=400, help="requests sent at once")
    ap.add_argument("--fractions", default="0.5,0.9", help="rates as fractions of Halo's saturation")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of Poisson arrivals")
    ap.add_argument("--concurrency", type=int, default=64, help="the baseline's requests at once")
    ap.add_argument("--window-ms", type=float, default=50.0)
    ap.add_argument("--budget", type=float, default=None, help="seconds; later runs are not started")
    ap.add_argument("--out", type=Path, required=True, help="markdown; the rows go beside it as .json")
    args = ap.parse_args()
    workloads = [
        (w, ROOT / "workloads" / f"{w}.halo", ROOT / "workloads" / f"{w}.jsonl")
        for w in args.workloads.split(",")
    ]
    result = measure(
        workloads,
        args.servers,
        args.model_map,
        args.out,
        saturate=args.saturate,
        fractions=[float(f) for f in args.fractions.split(",")],
        duration_s=args.duration,
        concurrency=args.concurrency,
        window_ms=args.window_ms,
        budget_s=args.budget,
    )
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
