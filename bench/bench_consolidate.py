"""Consolidate and cost 10,000 inputs of a 10-operator workflow on one core (target < 1 s).

Usage: .venv/bin/python bench/bench_consolidate.py [--inputs N] [--repeat R] [--out results.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

from halo import api
from halo.consolidate import consolidate
from halo.cost import estimate

WORKFLOW = '''
workflow bench(question: text, region: text, year: int, doc: text, user: int) {
  model small = "Qwen/Qwen3-8B"
  model big = "Qwen/Qwen3-32B"
  db tpch = duckdb(":memory:")
  extract = llm(small, system = "You extract query parameters from an analyst's question. Reply in JSON.",
                prompt = "Document:\\n{doc}\\n\\nQuestion: {question}", max_tokens = 64) -> {region: text, year: int}
  revenue = sql(tpch, """SELECT n_name, sum(l_extendedprice) AS rev FROM lineitem JOIN nation ON true
                         WHERE r_name = :region AND o_year = :year GROUP BY n_name ORDER BY rev DESC LIMIT 5""",
                region = region, year = year)
  nations = sql(tpch, "select n_name from nation where r_name = :r", r = extract.region)
  rates = http("GET", "https://rates.example/{region}", query = {year: year})
  clean = py("builtins:regex_params", pure = true, text = question)
  answer = llm(big, system = "You are a careful financial analyst. Use only the data given.",
               prompt = "Question: {question}\\nRevenue:\\n{revenue}\\nNations: {nations}\\nRates: {rates}",
               max_tokens = 256)
  critique = llm(small, system = "You check answers for arithmetic errors.", prompt = "{answer}", max_tokens = 128)
  title = llm(small, prompt = "Give a short title for: {question}", temperature = 0.7, max_tokens = 16)
  audit = sql(tpch, "INSERT INTO audit VALUES (:u, :q)", u = user, q = question)
  summary = llm(small, system = "Summarize for an executive.", prompt = "{doc}", max_tokens = 96)
  return answer, critique, title, summary
}
'''


def rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    regions = ["ASIA", "EUROPE", "AFRICA", "AMERICA", "MIDDLE EAST"]
    docs = [
        f"Quarterly report {i}. "
        + "Revenue grew in several markets while costs held steady. " * rng.randint(4, 12)
        for i in range(50)
    ]
    return [
        {
            "question": f"What was the revenue of {rng.choice(regions)} in {rng.randint(1992, 1998)}, "
            f"variant {rng.randint(0, n // 4)}?",
            "region": rng.choice(regions),
            "year": rng.randint(1992, 1998),
            "doc": rng.choice(docs),
            "user": rng.randint(1, 500),
        }
        for _ in range(n)
    ]


def run(n: int, repeat: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".halo", delete=False) as f:
        f.write(WORKFLOW)
    plan = api.compile(f.name).plan
    os.unlink(f.name)
    batch = rows(n)
    best = {"consolidate_s": float("inf"), "cost_s": float("inf")}
    for _ in range(repeat):
        t0 = time.perf_counter()
        cplan = consolidate(plan, batch)
        t1 = time.perf_counter()
        costed = estimate(cplan)
        t2 = time.perf_counter()
        best["consolidate_s"] = min(best["consolidate_s"], t1 - t0)
        best["cost_s"] = min(best["cost_s"], t2 - t1)
    best["total_s"] = best["consolidate_s"] + best["cost_s"]
    best["groups"] = {gid: (g.instances, g.calls, g.estimated) for gid, g in cplan.groups.items()}
    best["estimate_s"] = costed.seconds
    best["nodes"] = len(plan.nodes())
    return best


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
        "unknown",
    )


def report(n: int, r: dict) -> str:
    lines = [
        f"# Consolidation + cost benchmark ({date.today().isoformat()})",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (one used); Python {platform.python_version()}; "
        f"1-min load average {os.getloadavg()[0]:.1f} during the run (shared machine).",
        f"Workload: {n:,} inputs x {r['nodes']} operators (`bench/bench_consolidate.py`), best of repeats.",
        "",
        "| stage | seconds |",
        "|---|---|",
        f"| consolidate (keys, merges, prefix groups) | {r['consolidate_s']:.3f} |",
        f"| cost (tokens, roofline, tools) | {r['cost_s']:.3f} |",
        f"| **total** (target < 1 s) | **{r['total_s']:.3f}** |",
        "",
        "| node | instances | calls | estimated |",
        "|---|---|---|---|",
    ]
    lines += [f"| {gid} | {i:,} | {c:,} | {'yes' if e else 'no'} |" for gid, (i, c, e) in r["groups"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    text = report(args.inputs, run(args.inputs, args.repeat))
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
