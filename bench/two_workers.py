"""Two declared models on one engine vs one engine worker per model (Ray), on this CPU, with SmolLM2.

The workflow asks two models about every input (independent calls), then writes both answers to DuckDB.
`cpu:1` plans one engine for both models (one process, models switched); `2 x cpu:1` plans two engine
hosts, so `halo run` starts two Ray workers and each runs the model placed on it. Each run's measured
makespan stands beside the simulator's prediction (`halo.api.simulate`, the same cost model).

Usage: .venv/bin/python bench/two_workers.py [--inputs 48] [--tokens 24] [--calibration FILE] [--out results.md]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb
from memory import machine

from halo import api

WORKFLOW = """
workflow two(q: text) {{
  model m = "Qwen/Qwen3-14B"
  model n = "Qwen/Qwen3-32B"
  db d = duckdb("{db}")
  a = llm(m, prompt = "Say one word about {{q}}.", max_tokens = {tokens}, temperature = 0)
  b = llm(n, prompt = "Name a color for {{q}}.", max_tokens = {tokens}, temperature = 0)
  w = sql(d, "INSERT INTO log VALUES (:q, :a, :b)", q = q, a = a, b = b)
  return a = a, b = b
}}
"""
LAYOUTS = {"1 engine (cpu:1)": "cpu:1", "2 workers (2 x cpu:1)": "2 x cpu:1"}


def run(hardware: str, inputs: int, tokens: int, work: Path, cal) -> dict:
    work.mkdir()
    db = work / "log.duckdb"
    duckdb.connect(str(db)).execute("CREATE TABLE log (q TEXT, a TEXT, b TEXT)").close()
    batch = work / "in.jsonl"
    batch.write_text("".join(json.dumps({"q": f"thing {i}"}) + "\n" for i in range(inputs)))
    compiled = api.compile(WORKFLOW.format(db=db, tokens=tokens), filename=str(work / "two.halo"))
    predicted = (
        api.simulate(compiled, batch, hardware, optimizer="heuristic", calibration=cal).rows[0][1].makespan
    )
    start = time.perf_counter()
    res = api.run(
        compiled, batch, work / "out.jsonl", hardware=hardware, engine="hf", engine_options={"threads": 1}
    )
    wall = time.perf_counter() - start
    busy: dict[str, float] = {}
    for b in res.stats.engine_batches:
        busy[b["device"]] = busy.get(b["device"], 0.0) + b["seconds"]
    return {
        "wall": wall,
        "executor": res.stats.seconds,
        "predicted": predicted,
        "busy": busy,
        "loads": res.stats.model_loads,
        "failed": res.stats.failed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--calibration", help="calibration file (halo calibrate Qwen/Qwen3-14B Qwen/Qwen3-32B)")
    args = ap.parse_args()
    cal = api.load_calibration(args.calibration)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, hw) in enumerate(LAYOUTS.items()):
            r = run(hw, args.inputs, args.tokens, Path(tmp) / str(i), cal)
            engines = ", ".join(f"{d} {s:.1f} s" for d, s in sorted(r["busy"].items()))
            rows.append(
                f"| {label} | {r['wall']:.1f} | {r['executor']:.1f} | {r['predicted']:.1f} | {engines} | "
                f"{r['loads']} | {r['failed']} |"
            )
    text = "\n".join(
        [
            f"# Two models: one engine vs two Ray engine workers ({date.today().isoformat()})",
            "",
            f"Machine: {machine()}. `python bench/two_workers.py --inputs {args.inputs} --tokens {args.tokens}`: "
            "engine hf (SmolLM2-135M for both declared models, one torch thread per engine), "
            f"{args.inputs} inputs, two independent LLM calls each, then a DuckDB write.",
            "",
            "| layout | wall s (with Ray start) | executor s | predicted s (simulated) | engine busy by device | "
            "model loads | failed |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
