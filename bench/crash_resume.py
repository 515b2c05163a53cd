"""kill -9 at random points across a run and its resumes: nothing lost, duplicated or repeated.

The workflow does, per input: a pure Python step that takes a while, an SQL INSERT into DuckDB and an
impure Python call that appends a line to a file. Each trial starts `halo run`, kills it with SIGKILL
after a random delay, resumes it with `--resume` (killing the resume too, at random, up to the trial's
number of kills), and finally lets a resume finish. Then it counts, over the output file, the database
and the appended file:

- lost: inputs with no record; duplicated: inputs with more than one record;
- repeated: inputs whose INSERT or append happened more than once;
- in doubt: inputs reported as "interrupted by a crash" (a side effect that may have run), against the
  calls that can have been running when the process died (tool workers per kill).

    .venv/bin/python bench/crash_resume.py --kills 20 --out bench/results/crash_resume_$(date +%F).md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
WORKFLOW = """
workflow crash(item: int) {{
  db shop = duckdb("{db}")
  slow = py("crash_tools:slow_double", x = item, delay = {delay}, pure = true)
  note = sql(shop, "INSERT INTO log VALUES (:r, :v)", r = item, v = slow)
  mark = py("crash_tools:append_line", path = "{marks}", row = item, after = note.rowcount)
  return slow, mark
}}
"""
TOOL_WORKERS = 8  # RunOptions.tool_workers: at most this many tool calls are running at a kill


def trial(work: Path, inputs: int, kills: int, delay: float, rng: random.Random) -> dict:
    db, marks = work / "shop.duckdb", work / "marks.txt"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE log (row_id INTEGER, v INTEGER)")
    con.close()
    wf = work / "crash.halo"
    wf.write_text(WORKFLOW.format(db=db, marks=marks, delay=delay))
    batch = work / "in.jsonl"
    batch.write_text("".join(json.dumps({"item": i}) + "\n" for i in range(1, inputs + 1)))
    out = work / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    cmd = [
        sys.executable,
        "-m",
        "halo",
        "run",
        str(wf),
        "-i",
        str(batch),
        "-o",
        str(out),
        "-q",
        "--window",
        "32",
    ]
    expected_s = inputs * delay / TOOL_WORKERS
    killed, at = 0, []
    for attempt in range(kills + 1):
        before = _lines(out)
        proc = subprocess.Popen(
            cmd + (["--resume"] if attempt else []),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if attempt < kills:
            while proc.poll() is None and _lines(out) <= before:  # kill only once work is under way
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, expected_s / 2))
            if proc.poll() is None:
                done = _lines(out)
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
                at.append(done)
        proc.wait(timeout=600)
    err = proc.stderr.read().decode()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"final resume exited {proc.returncode}: {err[-2000:]}")
    records: dict[int, int] = {}
    doubt = 0
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        records[rec["row"]] = records.get(rec["row"], 0) + 1
        doubt += any("interrupted by a crash" in e["error"] for e in rec["error"] or [])
    con = duckdb.connect(str(db), read_only=True)
    writes = dict(con.execute("SELECT row_id, count(*) FROM log GROUP BY row_id").fetchall())
    con.close()
    appends: dict[int, int] = {}
    for line in marks.read_text().splitlines() if marks.exists() else []:
        appends[int(line)] = appends.get(int(line), 0) + 1
    rows = range(1, inputs + 1)
    return {
        "inputs": inputs,
        "kills": killed,
        "records_at_kills": at,
        "lost": sum(1 for r in rows if r not in records),
        "duplicated": sum(1 for r in rows if records.get(r, 0) > 1),
        "repeated": sum(1 for c in (*writes.values(), *appends.values()) if c > 1),
        "in_doubt": doubt,
        "in_doubt_bound": killed * TOOL_WORKERS,
    }


def _lines(path: Path) -> int:
    """Records in the output file so far (it holds finished inputs only)."""
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="kills in all, spread over the trials")
    ap.add_argument("--per-trial", type=int, default=4, help="kills per trial (run + resumes)")
    ap.add_argument("--inputs", type=int, default=300)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds per pure Python step")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    results, left = [], args.kills
    while left > 0:
        n = min(args.per_trial, left)
        with tempfile.TemporaryDirectory() as tmp:
            results.append(trial(Path(tmp), args.inputs, n, args.delay, rng))
        left -= max(results[-1]["kills"], 1)
        print(json.dumps(results[-1]), flush=True)
    keys = ("lost", "duplicated", "repeated", "in_doubt", "in_doubt_bound")
    total = {k: sum(r[k] for r in results) for k in (*keys, "kills")}
    lines = [
        f"# Crash and resume: kill -9 at {total['kills']} random points ({dt.date.today().isoformat()})",
        "",
        f"- machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; `{' '.join(sys.argv)}`",
        f"- workflow per input: pure py ({args.delay} s), DuckDB INSERT, impure py appending to a file (32 inputs in flight); "
        f"{args.inputs} inputs per trial, {args.per_trial} kills per trial (the run and its resumes)",
        f"- in doubt may be at most {TOOL_WORKERS} per kill (the tool workers that can be inside a call)",
        "",
        "| trial | kills | records when killed | lost | duplicated | repeated | in doubt | in-doubt bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {i + 1} | {r['kills']} | {', '.join(map(str, r['records_at_kills']))} | {r['lost']} | {r['duplicated']} | {r['repeated']} | {r['in_doubt']} | "
        f"{r['in_doubt_bound']} |"
        for i, r in enumerate(results)
    ]
    lines.append(
        f"| all | {total['kills']} | | {total['lost']} | {total['duplicated']} | {total['repeated']} | "
        f"{total['in_doubt']} | {total['in_doubt_bound']} |"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    ok = (
        total["lost"] == total["duplicated"] == total["repeated"] == 0
        and total["in_doubt"] <= total["in_doubt_bound"]
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
