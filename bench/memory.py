"""Peak memory of `halo run` against the number of inputs: it should stay flat.

Two workflows, each run as its own `halo run` process (peak RSS from `os.wait4`, i.e. the child's own
`ru_maxrss`), at several batch sizes:

- tool-only: a pure Python step and a one-row DuckDB read per input (distinct calls: nothing merges);
- large-result: a DuckDB read returning 200 rows (about 9 KB of JSON) per input, every one distinct, so
  the call memo fills up to its byte bound and the journal grows by the results.

    .venv/bin/python bench/memory.py --out bench/results/memory_$(date +%F).md
    .venv/bin/python bench/memory.py --sizes 10000,50000 --large-sizes 10000,50000   # the defaults
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

WORKFLOWS = {
    "tool-only": """
workflow tools(item: int) {{
  db d = duckdb("{db}")
  twice = py("halo.runtime.tools.builtins:regex_params", text = "region {{item}}", pure = true) -> {{ region: text }}
  one = sql(d, "SELECT :k AS k, name FROM items WHERE id = 1", k = item)
  return k = one.k, twice
}}
""",
    "large-result": """
workflow large(item: int) {{
  db d = duckdb("{db}")
  rows = sql(d, "SELECT :k AS k, id, name, note FROM items ORDER BY id LIMIT 200", k = item)
  return first = rows.id
}}
""",
}


def make_db(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE items AS SELECT range AS id, 'item ' || range AS name, "
        "repeat('x', 12) AS note FROM range(1, 1001)"
    )
    con.close()


def run_once(kind: str, n: int, work: Path) -> dict:
    db = work / "bench.duckdb"
    if not db.exists():
        make_db(db)
    wf = work / f"{kind}.halo"
    wf.write_text(WORKFLOWS[kind].format(db=db))
    batch = work / f"in_{n}.jsonl"
    if not batch.exists():
        batch.write_text("".join(json.dumps({"item": i}) + "\n" for i in range(n)))
    out = work / f"{kind}_{n}.jsonl"
    cmd = [sys.executable, "-m", "halo", "run", str(wf), "-i", str(batch), "-o", str(out), "-q"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{kind} at {n}: halo run failed:\n{err}")
    journal = out.with_name(out.name + ".journal")
    result = {
        "workflow": kind,
        "inputs": n,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "seconds": seconds,
        "journal_mb": journal.stat().st_size / 2**20,
        "records": sum(1 for _ in out.open()),
    }
    for p in (out, journal):
        p.unlink()
    return result


def machine() -> str:
    model = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000,100000", help="batch sizes for tool-only")
    ap.add_argument("--large-sizes", default="10000,50000", help="batch sizes for large-result")
    ap.add_argument("--out", type=Path, help="write the markdown table here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="halo-mem-") as tmp:
        work = Path(tmp)
        for kind, sizes in (("tool-only", args.sizes), ("large-result", args.large_sizes)):
            for n in (int(s) for s in sizes.split(",") if s.strip()):
                r = run_once(kind, n, work)
                print(json.dumps(r), file=sys.stderr)
                rows.append(r)
    lines = [
        f"# `halo run` peak memory against batch size ({dt.date.today().isoformat()})",
        "",
        f"Machine: {machine()}. Each row is one `halo run` process (default options: window 512, call memo "
        "bounded at 64 MiB of JSON); peak RSS is the process's own `ru_maxrss`.",
        "",
        "| workflow | inputs | peak RSS (MB) | seconds | inputs/s | journal (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        assert r["records"] == r["inputs"], r
        lines.append(
            f"| {r['workflow']} | {r['inputs']:,} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} | "
            f"{r['inputs'] / r['seconds']:.0f} | {r['journal_mb']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
