"""`halo run`: set up engine, tools and journal, stream the batch through the executor, write results."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from halo.plan import LogicalPlan
from halo.runtime.engines import make_engine
from halo.runtime.executor import Executor, RunOptions
from halo.runtime.journal import Journal
from halo.runtime.stats import RunStats
from halo.runtime.toolbox import Toolbox


@dataclass
class RunResult:
    stats: RunStats
    output: Path
    journal: Path


def fingerprint(plan: LogicalPlan, sources: Iterable[str], input_path: str | Path) -> str:
    """Identifies a run: the workflow text and the input file (path, size and mtime)."""
    h = hashlib.sha256(plan.name.encode())
    for s in sources:
        h.update(s.encode())
    st = os.stat(input_path)
    h.update(f"{Path(input_path).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def execute(plan: LogicalPlan, rows: Iterable[tuple[int, dict[str, Any]]], output: str | Path, fp: str,
            engine: str = "hf", engine_options: dict | None = None, options: RunOptions | None = None,
            resume: bool = False, progress=None) -> RunResult:
    """Run the plan over `rows`, appending one JSON record per input to `output`.

    The journal sits beside the output (`OUTPUT.journal`). With `resume`, finished inputs are kept
    and the output file is rebuilt from the journal first, so no record is lost or duplicated.
    """
    output = Path(output)
    journal_path = output.with_name(output.name + ".journal")
    journal = Journal(journal_path, fp, resume=resume)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as f:
        for record in journal.outputs():
            f.write(record + "\n")
    needs_llm = any(op.kind == "llm" for op in plan.nodes())
    llm = make_engine(engine, **(engine_options or {})) if needs_llm else None
    tools = Toolbox(plan)
    try:
        with output.open("a", encoding="utf-8") as f:
            def sink(record: dict) -> None:
                f.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
                f.flush()
            stats = Executor(plan, llm, tools, journal, options).run(rows, sink, progress)
    finally:
        tools.close()
        journal.close()
        if llm is not None:
            llm.close()
    return RunResult(stats, output, journal_path)
