"""EXPLAIN with costs: logical report -> consolidation -> cost -> placement (optional) -> simulation (optional).

Keys added to `halo.explain.logical_report`'s dict (every block with a "text" is one line the text
renderer prints):

| where       | key          | content                                                                      |
|-------------|--------------|------------------------------------------------------------------------------|
| node        | `calls`      | distinct calls after merging (an upper bound when `merge.estimated`)         |
| node        | `merge`      | instances, calls, ratio (calls/instances), estimated, text                  |
| node (LLM)  | `prefix`     | shared_tokens (all calls), groups, top [{prefix_tokens, members}], saved_tokens, text |
| node        | `estimate`   | seconds, device, prefill_tokens, decode_tokens, prompt_tokens, output_tokens, kv_bytes, kv_reuse_bytes, breakdown, calibrated, defaults, text |
| node        | `placement`  | devices, start, end, order, text (with a hardware)                          |
| report      | `rewrites`   | one line per merge or prefix-sharing rewrite                                |
| report      | `totals`     | instances, calls, prefill_tokens, decode_tokens, seconds (serial sum), device, text |
| report      | `optimizer`  | method, status, objective, makespan, cost_usd, bound, gap, solve_s, notes, text |
| report      | `simulation` | makespan, throughput, utilization, switches, label, text                    |
| report      | `calibration`| path, calibrated (bool), text                                                |
| report      | `batching`   | max_batch, batch_tokens (the engine batches priced and run), text            |
| report      | `execution`  | `halo.execution.ExecutionPlan.as_dict`: what the runtime executes, rules' actions |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from halo import execution
from halo.batch import Batch
from halo.batching import BatchPolicy, candidates
from halo.calibration import Calibration
from halo.consolidate import ConsolidatedPlan, consolidate
from halo.cost import CostedPlan, estimate, to_problem
from halo.execution import ExecutionPlan
from halo.explain import logical_report
from halo.optimizer import PhysicalPlan, Problem, optimize, simulate
from halo.plan import LogicalPlan
from halo.residency import memory_split, sleep_levels
from halo.rules import check_names

TOP_PREFIX_GROUPS = 5


def explain_report(
    plan: LogicalPlan,
    batch: Batch,
    hardware: str | None = None,
    optimizer: str = "auto",
    simulate: bool = False,
    calibration: Calibration | None = None,
    time_limit_s: float = 10.0,
    policy: BatchPolicy | None = None,
    disabled: Iterable[str] = (),
    start_mode: str | None = None,
) -> dict[str, Any]:
    """The EXPLAIN report with merges, prefix groups, estimates, the execution plan and (with `hardware`)
    placements. `policy` is the engine batching the run will use; when None the cheapest candidate is
    chosen. `disabled`: rules switched off (`halo.rules`). `start_mode` pins every engine's start mode
    (`halo.cost.start_modes`)."""
    return _run(
        plan, batch, hardware, optimizer, simulate, calibration, time_limit_s, policy, disabled, start_mode
    ).report


@dataclass
class Priced:
    """A planned batch: the EXPLAIN report, the optimizer's plan (None without hardware) and the
    execution plan the runtime follows."""

    report: dict[str, Any]
    physical: PhysicalPlan | None
    execution: ExecutionPlan
    problem: Problem | None = None  # what the optimizer placed (None without hardware)


def physical_plan(
    plan: LogicalPlan,
    batch: Batch,
    hardware: str,
    optimizer: str = "auto",
    calibration: Calibration | None = None,
    time_limit_s: float = 10.0,
    policy: BatchPolicy | None = None,
    simulate: bool = False,
    disabled: Iterable[str] = (),
    start_mode: str | None = None,
) -> Priced:
    """Plan the batch for `hardware` (`simulate`: with the report's simulation block)."""
    return _run(
        plan, batch, hardware, optimizer, simulate, calibration, time_limit_s, policy, disabled, start_mode
    )


def _run(
    plan, batch, hardware, method, sim, calibration, time_limit_s, policy, disabled, start_mode
) -> Priced:
    cal = calibration or Calibration()
    off = check_names(disabled)
    report = logical_report(plan, batch)
    cplan = consolidate(plan, batch, cal, merge="merge" not in off)
    costed, report["batching"] = batched_estimate(
        cplan, hardware, cal, policy, fuse="fusion" not in off, start_mode=start_mode
    )
    _annotate(report, cplan, costed)
    report["calibration"] = {
        "path": cal.path,
        "calibrated": bool(cal.measurements),
        "text": f"Calibration: {cal.path} ({len(cal.measurements)} measurements)"
        if cal.measurements
        else "Calibration: none (default constants)",
    }
    physical = problem = None
    if costed.hardware:
        problem = to_problem(costed)
        if "co_residency" in off:
            problem.max_resident = 1
        physical = optimize(problem, method=method, time_limit_s=time_limit_s)
        _placements(report, physical)
        report["optimizer"] = _optimizer_block(physical)
        if sim:
            r = simulate(problem, physical, n_inputs=cplan.inputs)
            report["simulation"] = {
                "makespan": r.makespan,
                "throughput": r.throughput,
                "utilization": r.utilization,
                "switches": r.switches,
                "label": r.label,
                "text": f"Simulation ({r.label}): makespan {r.makespan:.2f} s, "
                f"{r.throughput or 0:.2f} inputs/s, {r.switches} model switch(es)",
            }
    xplan = _execution(plan, cplan, costed.policy, physical, off)
    if problem is not None and physical is not None:
        if "co_residency" not in off:
            xplan.memory = memory_split(problem, physical)
        xplan.sleep_levels = sleep_levels(problem, physical)
    xplan.start_modes = {m: e["mode"] for m, e in costed.start_modes.items()}
    xplan.start_reasons = {m: e["why"] for m, e in costed.start_modes.items()}
    report["execution"] = xplan.as_dict()
    return Priced(report, physical, xplan, problem)


def _execution(plan, cplan, policy, physical: PhysicalPlan | None, off: set[str]) -> ExecutionPlan:
    """The execution plan: operators by planned start, LLM nodes on their placed devices, the planned
    model loads as residency steps."""
    if physical is None:
        return execution.build(plan, cplan, policy, disabled=off)
    placed = sorted(physical.placements, key=lambda p: (p.start, p.order))
    ops = {op.id: op for op in plan.nodes()}
    placement = {p.task: list(p.devices) for p in placed if p.task in ops and ops[p.task].kind == "llm"}
    residency = [
        execution.ModelStep(m.device, m.model, round(m.start, 4), tuple(m.evicted))
        for m in sorted(physical.loads, key=lambda m: (m.device, m.start))
    ]
    return execution.build(plan, cplan, policy, [p.task for p in placed], placement, residency, off)


def batched_estimate(
    cplan: ConsolidatedPlan,
    hardware,
    cal: Calibration,
    policy: BatchPolicy | None,
    fuse: bool = True,
    start_mode: str | None = None,
) -> tuple[CostedPlan, dict[str, Any]]:
    """Cost the plan under `policy`, or under the candidate policy whose LLM groups take least time."""
    if policy is not None:
        costed = estimate(cplan, hardware, cal, policy, fuse, start_mode)
        how = "given"
    else:
        tried = [estimate(cplan, hardware, cal, p, fuse, start_mode) for p in candidates()]
        llm = [sum(g.seconds for g in c.groups.values() if g.kind == "llm") for c in tried]
        best = min(range(len(tried)), key=lambda i: (round(llm[i], 3), i))  # ties: the smaller batch
        costed = tried[best]
        how = "chosen by predicted LLM time: " + ", ".join(
            f"{c.policy.max_batch}: {t:.2f} s" for c, t in zip(tried, llm, strict=True)
        )
    p = costed.policy
    return costed, {
        "max_batch": p.max_batch,
        "batch_tokens": p.batch_tokens,
        "text": f"Batching: up to {p.max_batch} requests and {p.batch_tokens:,} tokens per engine "
        f"call ({how})",
    }


def _annotate(report: dict[str, Any], cplan: ConsolidatedPlan, costed: CostedPlan) -> None:
    for node in report["nodes"]:
        g, c = cplan.groups[node["id"]], costed.groups[node["id"]]
        node["calls"] = g.calls
        node["merge"] = {
            "instances": g.instances,
            "calls": g.calls,
            "estimated": g.estimated,
            "ratio": g.calls / g.instances if g.instances else 1.0,
            "text": ""
            if g.op.side_effect
            else ("merge: " if g.calls < g.instances or g.estimated else "") + g.merge,
        }
        if g.prefix is not None:
            p = g.prefix
            node["prefix"] = {
                "shared_tokens": p.root.prefix_tokens,
                "groups": len(p.groups),
                "top": [
                    {
                        "prefix_tokens": x.prefix_tokens,
                        "members": len(x.members),
                        "saved_tokens": x.saved_tokens,
                    }
                    for x in p.groups[:TOP_PREFIX_GROUPS]
                ],
                "saved_tokens": p.saved_tokens,
                "text": "prefix: " + p.text,
            }
        node["estimate"] = {
            "seconds": c.seconds,
            "device": c.device,
            "prefill_tokens": c.prefill_tokens,
            "decode_tokens": c.decode_tokens,
            "prompt_tokens": c.prompt_tokens,
            "output_tokens": c.output_tokens,
            "kv_bytes": c.kv_bytes,
            "kv_reuse_bytes": c.kv_reuse_bytes,
            "breakdown": c.breakdown,
            "calibrated": c.calibrated,
            "defaults": c.defaults,
            "text": c.text,
        }
    report["rewrites"] = report.get("rewrites", []) + cplan.rewrites
    calls = sum(g.calls for g in cplan.groups.values())
    inst = sum(g.instances for g in cplan.groups.values())
    pre = sum(c.prefill_tokens for c in costed.groups.values())
    dec = sum(c.decode_tokens for c in costed.groups.values())
    report["totals"] = {
        "instances": inst,
        "calls": calls,
        "prefill_tokens": pre,
        "decode_tokens": dec,
        "seconds": costed.seconds,
        "device": costed.device,
        "text": f"Totals: {inst:,} operator instances -> {calls:,} calls; prefill {pre:,.0f} tok, "
        f"decode {dec:,.0f} tok; {costed.seconds:.2f} s if run one group at a time "
        f"(LLMs on one {costed.device})",
    }


def _placements(report: dict[str, Any], physical: PhysicalPlan) -> None:
    where = {p.task: p for p in physical.placements}
    for node in report["nodes"]:
        p = where.get(node["id"])
        if p is not None:
            node["placement"] = {
                "devices": p.devices,
                "start": p.start,
                "end": p.end,
                "order": p.order,
                "text": f"placement: {', '.join(p.devices)} [{p.start:.2f} s .. {p.end:.2f} s]"
                f" order {p.order}",
            }


def _optimizer_block(physical: PhysicalPlan) -> dict[str, Any]:
    gap = f", gap {physical.gap:.1%}" if physical.gap is not None else ""
    bound = f", bound {physical.bound:.2f} s" if physical.bound is not None else ""
    return {
        "method": physical.method,
        "status": physical.status,
        "objective": physical.objective,
        "makespan": physical.makespan,
        "cost_usd": physical.cost_usd,
        "bound": physical.bound,
        "gap": physical.gap,
        "solve_s": physical.solve_s,
        "notes": physical.notes,
        "loads": len(physical.loads),
        "text": f"Optimizer: {physical.method} ({physical.status}) makespan {physical.makespan:.2f} s"
        f"{bound}{gap}, ${physical.cost_usd:.4f}, {len(physical.loads)} model load(s), "
        f"solved in {physical.solve_s:.2f} s",
    }
