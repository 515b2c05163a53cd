"""Dispatch cost of the operator-at-a-time baseline against Halo mode, on a 6-node tool-only workflow.

Every input is distinct (nothing merges), each node is a one-row DuckDB query, so the time is the
executor's own cost plus the queries. The baseline must not lose to an implementation cost: opwise
dispatch is O(1) amortized per event, so at 1,600 inputs it should stay within 2x of Halo mode.

    .venv/bin/python bench/opwise_dispatch.py --out bench/results/opwise_dispatch_$(date +%F).md
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import machine  # noqa: E402

from halo import api  # noqa: E402
from halo.execution import MODES, for_mode  # noqa: E402
from halo.runtime.executor import RunOptions  # noqa: E402
from halo.runtime.run import execute  # noqa: E402

WORKFLOW = """
workflow chain(x: int) {
  db d = duckdb(":memory:")
  a = sql(d, "SELECT :v + 1 AS v", v = x)
  b = sql(d, "SELECT :v + 1 AS v", v = a.v)
  c = sql(d, "SELECT :v + 1 AS v", v = b.v)
  e = sql(d, "SELECT :v * 2 AS v", v = x)
  f = sql(d, "SELECT :v + :w AS v", v = c.v, w = e.v)
  g = sql(d, "SELECT :v - 1 AS v", v = f.v)
  return g.v
}
"""


def timed(mode: str, n: int, work: Path) -> float:
    plan = api.compile(WORKFLOW, filename=str(work / "chain.halo")).plan
    rows = [(i + 1, {"x": i}) for i in range(n)]
    start = time.perf_counter()
    options = RunOptions(window=MODES[mode].get("window", RunOptions.window))
    res = execute(for_mode(plan, mode), rows, work / f"{mode}_{n}.jsonl", f"fp-{mode}-{n}", options=options)
    seconds = time.perf_counter() - start
    assert res.stats.inputs == n and res.stats.failed == 0, res.stats.totals()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200,1600")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = [
        f"# Operator-at-a-time dispatch cost ({dt.date.today().isoformat()})",
        "",
        f"Machine: {machine()}. `{Path(__file__).name}`: a 6-node tool-only workflow (one-row DuckDB "
        "queries), every input distinct; wall time of `execute` in one process.",
        "",
        "| inputs | halo (s) | opwise (s) | opwise / halo |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="halo-opwise-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            halo_s, opwise_s = timed("halo", n, Path(tmp)), timed("opwise", n, Path(tmp))
            lines.append(f"| {n:,} | {halo_s:.2f} | {opwise_s:.2f} | {opwise_s / halo_s:.2f}x |")
            print(lines[-1], file=sys.stderr)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
