"""`halo bench`: one workload under the baselines and the Halo plan, on the same engine, side by side."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from halo.errors import Diagnostic, HaloError
from halo.execution import MODES as EXECUTION_MODES
from halo.execution import ExecutionPlan, for_mode
from halo.plan import LogicalPlan, OpNode
from halo.runtime.executor import RunOptions
from halo.runtime.run import RunResult, execute
from halo.runtime.tools.duckdb_tool import in_memory

MODES = tuple(EXECUTION_MODES)  # the baselines and Halo, each an execution plan (halo.execution)
# Each input on its own, every LLM call a request to a serving engine: the framework baseline
# (halo.runtime.framework) and the same workloads written for LangGraph (bench/peers, in a checkout).
PEERS = ("framework", "langgraph")
BENCH_MODES = (*MODES, *PEERS)


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


def _unisolable(op: OpNode) -> str | None:
    """Why one mode's run of `op` would change what the next mode sees, when no copy can prevent it."""
    if op.kind == "sql" and op.sql_write and op.db is not None and op.db.kind != "duckdb":
        return f"writes to {op.db.kind} database '{op.db.name}'"
    if op.kind == "http" and op.side_effect:
        return f"sends HTTP {str(op.option('method', 'GET')).upper()}"
    if op.kind == "py" and op.side_effect:
        return "calls an impure py function (add pure = true if it has no side effects)"
    return None


def check_isolable(plan: LogicalPlan) -> None:
    """Raise a HaloError located at every side effect that each mode would repeat on the same target."""
    found = [(op, why) for op in plan.nodes() if (why := _unisolable(op))]
    if found:
        raise HaloError(
            [
                Diagnostic(
                    op.pos,
                    f"halo bench cannot isolate '{op.id}': it {why}, and every mode "
                    "would do it again; bench runs workflows whose only side effects are "
                    "DuckDB writes (run each mode with `halo run --mode` instead)",
                )
                for op, why in found
            ]
        )


def isolate(plan: LogicalPlan, folder: Path) -> LogicalPlan:
    """`plan` with every DuckDB file it writes copied into `folder` (fresh on each call; a file that does
    not exist yet stays absent, so the run creates it there) and its sql nodes pointed at the copies."""
    written = {
        op.db.target
        for op in plan.nodes()
        if op.kind == "sql"
        and op.sql_write
        and op.db is not None
        and op.db.kind == "duckdb"
        and not in_memory(op.db.target)
    }
    if not written:
        return plan
    folder.mkdir(parents=True, exist_ok=True)
    copies = {
        t: folder / f"{Path(t).stem}-{hashlib.sha256(t.encode()).hexdigest()[:8]}.duckdb" for t in written
    }
    for target, copy in copies.items():
        for suffix in ("", ".wal"):
            src, dst = Path(target + suffix), Path(str(copy) + suffix)
            dst.unlink(missing_ok=True)
            if src.exists():
                shutil.copyfile(src, dst)
    graph = plan.graph.copy()
    for n in graph:
        op = graph.nodes[n]["op"]
        if op.kind == "sql" and op.db is not None and op.db.kind == "duckdb" and op.db.target in copies:
            graph.nodes[n]["op"] = replace(op, db=replace(op.db, target=str(copies[op.db.target])))
    return LogicalPlan(plan.workflow, graph, plan.returns)


def run_mode(
    xplan: ExecutionPlan,
    rows,
    workdir: Path,
    fp: str,
    engine: str,
    engine_options: dict,
    mode: str,
) -> RunResult:
    """Run one mode on a fresh journal (`workdir/MODE.jsonl`) and its own copies of the DuckDB files
    it writes (`workdir/MODE.db/`). Halo runs `xplan`; a baseline runs its own plan (`for_mode`) with
    `xplan`'s engine batches (naive keeps its own)."""
    plan = isolate(xplan.logical, workdir / f"{mode}.db")
    run = replace(xplan, logical=plan) if mode == "halo" else for_mode(plan, mode, xplan.policy)
    window = EXECUTION_MODES[mode].get("window")
    return execute(
        run,
        rows,
        workdir / f"{mode}.jsonl",
        f"{fp}-{mode}",
        engine=engine,
        engine_options=engine_options,
        options=RunOptions(window=window) if window else None,
    )


def run_modes(
    xplan: ExecutionPlan,
    rows,
    workdir: Path,
    fp: str,
    engine: str,
    engine_options: dict,
    modes: list[str],
) -> dict[str, Any]:
    """Run each mode (see run_mode) after refusing side effects no copy isolates; RunStats by mode."""
    plan = xplan.logical
    check_isolable(plan)
    out = {
        m: run_mode(xplan, rows, workdir, fp, engine, engine_options, m).stats
        for m in modes
        if m not in PEERS
    }
    peers = [m for m in modes if m in PEERS]
    if peers:
        out.update(run_peers(plan, rows, workdir, engine, engine_options, peers))
    return {m: out[m] for m in modes}


def run_peers(
    plan: LogicalPlan, rows, workdir: Path, engine: str, engine_options: dict, modes: list[str]
) -> dict[str, Any]:
    """Run the framework baseline and the LangGraph peer, each on its own copies of the DuckDB files it
    writes, against the server(s) that serve `engine` (started and warm before the clock starts, shared by
    the modes); RunStats by mode. Records go to `workdir/MODE.jsonl`."""
    from halo.runtime import framework

    models = sorted({op.llm_model() for op in plan.nodes() if op.kind == "llm"})
    out = {}
    with framework.serving(engine, engine_options, models, workdir / "servers") as served:
        for mode in modes:
            runner = framework.run if mode == "framework" else _langgraph().run
            mplan = isolate(plan, workdir / f"{mode}.db")
            out[mode] = runner(mplan, rows, workdir / f"{mode}.jsonl", served.servers, served.model_map)
            served.reset()  # the next mode starts with an empty prefix cache
    return out


def _langgraph():
    from halo.runtime.engines import EngineUnavailable

    try:
        from bench.peers import langgraph_peer
    except ImportError as exc:
        raise EngineUnavailable(
            f"mode langgraph needs bench/peers (run from a checkout) and the `peers` extra: {exc}"
        ) from exc
    return langgraph_peer


def table(
    workload: str, n: int, stats: dict[str, Any], predicted_s: float | None, engine: str, note: str = ""
) -> str:
    """The markdown result: makespan, throughput, tokens, cache hits, merges, prediction and speedups."""
    rows = [
        "| mode | makespan (s) | inputs/s | calls | merged | prompt tok | cached tok (hit %) | "
        "generated tok | failed | speedup vs naive | speedup vs opwise |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {m: s.totals()["seconds"] for m, s in stats.items()}
    for mode, s in stats.items():
        t = s.totals()
        hit = 100 * t["cached_tokens"] / t["prompt_tokens"] if t["prompt_tokens"] else 0.0
        vs = [
            f"{base[b] / t['seconds']:.2f}x" if b in base and t["seconds"] else "-"
            for b in ("naive", "opwise")
        ]
        rows.append(
            f"| {mode} | {t['seconds']:.1f} | {t['inputs_per_s']:.3f} | {t['calls']:,} | {t['merged']:,} | "
            f"{t['prompt_tokens']:,} | {t['cached_tokens']:,} ({hit:.0f}%) | {t['completion_tokens']:,} | "
            f"{t['failed']:,} | {vs[0]} | {vs[1]} |"
        )
    subs = next(iter(stats.values())).substitutions if stats else {}
    head = [
        f"## {workload}: {n:,} inputs",
        "",
        f"- date: {dt.date.today().isoformat()}; machine: {machine()}; engine: {engine}",
        f"- models: {', '.join(f'{k} ran as {v}' for k, v in subs.items()) or 'as declared'}",
    ]
    if predicted_s is not None and "halo" in stats:
        measured = stats["halo"].totals()["seconds"]
        head.append(
            f"- Halo plan: predicted {predicted_s:.1f} s, measured {measured:.1f} s "
            f"({(predicted_s - measured) / measured:+.0%})"
        )
    if note:
        head.append(f"- {note}")
    return "\n".join([*head, "", *rows, ""])
