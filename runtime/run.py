"""`halo run`: set up engine, tools and journal, stream the batch through the executor, write results."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from halo.errors import HaloError
from halo.execution import ExecutionPlan
from halo.plan import LogicalPlan
from halo.runtime.engines import Engine, make_engine
from halo.runtime.executor import Executor, RunOptions
from halo.runtime.journal import Journal
from halo.runtime.stats import RunStats
from halo.runtime.toolbox import Toolbox


@dataclass
class RunResult:
    stats: RunStats
    output: Path
    journal: Path
    failed_records: int = 0  # records with an error in the whole output, earlier runs' included


def fingerprint(plan: LogicalPlan, sources: Iterable[str], input_path: str | Path) -> str:
    """Identifies a run: the workflow text and the input file's content (SHA-256, read in chunks)."""
    h = hashlib.sha256(plan.name.encode())
    for s in sources:
        h.update(s.encode())
    h.update(b"\x00input\x00")
    with open(input_path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:32]


def execute(
    xplan: ExecutionPlan,
    rows: Iterable[tuple[int, dict[str, Any]]],
    output: str | Path,
    fp: str,
    engine: str = "hf",
    engine_options: dict | None = None,
    options: RunOptions | None = None,
    resume: bool = False,
    progress=None,
    ray_address: str | None = None,
) -> RunResult:
    """Run the execution plan over `rows`, one JSON record per input in `output`.

    `rows` yields (row, params) and, for rows that failed validation, `RowError`s (they get a record too).
    Records stream to `output` as inputs finish; at the end the file is rewritten from the journal in row
    order. The journal sits beside the output (`OUTPUT.journal`). With `resume`, finished inputs are kept
    and the output file is rebuilt from the journal first, so no record is lost or duplicated.
    One engine runs in this process when the plan places LLM work on one device; two or more devices,
    `ray_address` or `$RAY_ADDRESS` start one engine worker per device on Ray (`halo.runtime.workers`).
    """
    output = Path(output)
    tools = Toolbox(xplan.logical)
    problems = tools.check()
    if problems:  # refused before the journal or the output is touched
        tools.close()
        raise HaloError(problems)
    journal_path = output.with_name(output.name + ".journal")
    try:
        journal = Journal(journal_path, fp, resume=resume)
    except BaseException:
        tools.close()
        raise
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        _rebuild(journal, output)
        stats = _stream(
            xplan, rows, output, journal, tools, engine, engine_options, options, progress, ray_address
        )
        _rebuild(journal, output)
        failed = journal.count_failed()
    finally:
        journal.close()
    return RunResult(stats, output, journal_path, failed)


def _rebuild(journal: Journal, output: Path) -> None:
    """Write every journaled record to `output` in row order (through a temporary file, then renamed)."""
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in journal.outputs():
            f.write(record + "\n")
    os.replace(tmp, output)


def device_options(xplan: ExecutionPlan, device: str, engine: str, options: dict | None) -> dict:
    """The engine options for one device: the given ones, plus, for a vLLM engine, the plan's memory split
    of co-resident models (each model's engine gets its share of GPU memory; none sleeps), the sleep
    level of each model it evicts and each model's start mode (eager or compiled) unless pinned."""
    out = dict(options or {})
    if engine != "vllm":
        return out
    split = xplan.memory.get(device)
    if split and "memory_split" not in out:
        out["memory_split"] = dict(split)
    levels = xplan.sleep_levels.get(device)
    if levels and "sleep_levels" not in out:
        out["sleep_levels"] = dict(levels)
    if xplan.start_modes and "enforce_eager" not in out:
        out["start_modes"] = dict(xplan.start_modes)
    return out


def _stream(
    xplan: ExecutionPlan,
    rows,
    output: Path,
    journal: Journal,
    tools: Toolbox,
    engine: str,
    engine_options: dict | None,
    options: RunOptions | None,
    progress,
    ray_address: str | None,
) -> RunStats:
    """Run the executor, appending each record to `output` as its input finishes; closes the tools."""
    pool = llm = None
    try:
        if any(op.kind == "llm" for op in xplan.logical.nodes()):
            devices = xplan.devices
            if len(devices) > 1 or ray_address or os.environ.get("RAY_ADDRESS"):
                from halo.runtime.workers import WorkerPool, specs_for

                specs = [
                    replace(spec, engine_options=device_options(xplan, spec.device, engine, engine_options))
                    for spec in specs_for(devices or ["cpu"], engine, engine_options)
                ]
                pool = WorkerPool(specs, address=ray_address)
            else:
                device = devices[0] if devices else ""
                llm = make_engine(engine, **device_options(xplan, device, engine, engine_options))
    except BaseException:
        tools.close()
        raise
    try:
        with output.open("a", encoding="utf-8") as f:

            def sink(record: str) -> None:
                f.write(record + "\n")
                f.flush()

            engines: Engine | Mapping[str, Engine] | None = llm
            if pool is not None:
                engines = pool.engines
            elif llm is not None and xplan.devices:  # one local engine for every placed device (by name)
                engines = {d: llm for d in xplan.devices}
            executor = Executor(xplan, engines, tools, journal, options)
            stats = executor.run(rows, sink, progress)
            if pool is not None:  # worker timelines in seconds from the run's start, like the stats
                stats.worker_restarts = pool.restarts
                stats.timelines = {
                    d: [
                        {**e, "start": e["start"] - executor.t0, "end": e["end"] - executor.t0}
                        for e in events
                    ]
                    for d, events in pool.timelines().items()
                }
                stats.workers = {d: e.worker_info() for d, e in pool.engines.items()}
            return stats
    finally:
        tools.close()
        if llm is not None:
            llm.close()
        if pool is not None:
            pool.close()
