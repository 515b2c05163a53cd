"""`halo serve` on the CPU: saturated throughput and latency against arrival rate, Halo vs the baseline.

For each engine, workload and mode a fresh `halo serve` (its own state directory, so no memo carries
over) takes one `halo loadgen` run: first `--saturate` requests at once (saturated throughput), then, on
the fake engine, Poisson arrivals at fractions of Halo's saturated throughput for `--duration` seconds
(on hf, SmolLM2 on two shared cores, the saturated runs alone fill the time budget). Halo's mode
admits arrivals in windows to one long-lived executor (merging identical calls across requests, shared
engine batches); the baseline (`--mode naive`) runs each request alone through its own executor with
the naive plan, 8 at a time, against the same warm engine (what a framework does per request).

    .venv/bin/python bench/serve_cpu.py --engines fake,hf --out bench/results/serve_cpu_2026-12-03.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from halo import loadgen

ROOT = Path(__file__).resolve().parent.parent


def measure(workload, engine, mode, window_ms, inputs, rate, **load) -> tuple[loadgen.Report, float]:
    """One loadgen run on a fresh server: the report and the server's CPU milliseconds per finished run."""
    options = ["--engine", engine, "--mode", mode, "--hardware", "cpu:2", "--window-ms", str(window_ms)]
    return loadgen.fresh_run(
        [ROOT / "workloads" / f"{workload}.halo"], options, workload, inputs, rate, **load
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="fake,hf")
    ap.add_argument("--workloads", default="llm_voting,demo")
    ap.add_argument("--saturate", type=int, nargs=2, default=(300, 8), help="requests (fake, hf)")
    ap.add_argument("--fractions", default="0.25,0.5,0.9", help="rates as fractions of Halo's saturation")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds of Poisson arrivals (fake engine)")
    ap.add_argument("--window-ms", type=float, default=50.0)
    ap.add_argument("--slo-ms", type=float, nargs=2, default=(250.0, 10_000.0), help="(fake, hf)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    sections = []
    started = time.perf_counter()
    for engine in args.engines.split(","):
        k = 0 if engine == "fake" else 1
        slo = args.slo_ms[k]
        cols = ["workload", "server", "load", *loadgen.columns(slo), "server CPU ms/run"]
        lines = [f"## engine {engine}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for workload in args.workloads.split(","):
            inputs = loadgen.read_inputs(ROOT / "workloads" / f"{workload}.jsonl")
            saturated: dict[str, float] = {}
            for mode in ("halo", "naive"):
                r, cpu = measure(
                    workload, engine, mode, args.window_ms, inputs, 1e5, requests=args.saturate[k], slo_ms=slo
                )
                saturated[mode] = r.throughput
                lines.append(
                    f"| {workload} | {mode} | saturated | " + " | ".join(r.row()) + f" | {cpu:.1f} |"
                )
            for f in fractions if engine == "fake" else ():
                rate = round(f * saturated["halo"], 2)
                for mode in ("halo", "naive"):
                    r, cpu = measure(
                        workload,
                        engine,
                        mode,
                        args.window_ms,
                        inputs,
                        rate,
                        duration_s=args.duration,
                        slo_ms=slo,
                    )
                    lines.append(
                        f"| {workload} | {mode} | {f:g} x halo | " + " | ".join(r.row()) + f" | {cpu:.1f} |"
                    )
        sections.append("\n".join(lines))
    head = [
        "# halo serve on the CPU: Halo's server vs the per-request baseline",
        "",
        loadgen.machine_line(),
        f"- {' '.join(sys.argv[1:])}; {time.perf_counter() - started:.0f} s in all",
        "- halo: arrivals admitted in windows (--window-ms) to one long-lived executor per workflow, "
        "planned on the first window; identical calls across requests merge; engine batches shared",
        "- naive: each request alone through its own executor with the naive plan (no merging across "
        "requests, batches only within one request), 8 requests at a time, same warm engine",
        "- every request carries one input, the workload's inputs in turn (their duplicates are what "
        "users repeating one another look like); latency from POST to the result on the event stream",
        "- saturated: all requests sent at once; then Poisson arrivals at fractions of Halo's saturated "
        "throughput; each row is a fresh server (fresh state, empty memo)",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(head) + "\n" + "\n\n".join(sections) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
