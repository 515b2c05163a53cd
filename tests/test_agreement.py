"""The plan is what runs: on the fake engine, the engine batches of every shipped workload are the ones
the cost model priced.

For each LLM node, the run's engine batches that hold its calls have the sizes the estimate lists
(`breakdown.engine_batches`: the sizes of the batches its fusion set shares), the nodes it shares them
with are its `fused_with`, and it runs the distinct calls the merge step counted. The run executes the
planned `ExecutionPlan`, as `halo run` does, and the executor's operator priority is the plan's order.

Operator order is not compared batch by batch: the runtime follows the plan's priority among the nodes
whose batches are ready at the same moment and otherwise runs what is ready (it never idles the
engine), and readiness depends on tool latencies, which the plan prices for real devices and real
engines, not for the fake engine's instant replies (wiki_long_chain: `rewrite` needs no tool and runs
first; the plan starts it late because its model's device is busy with the other chains).
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from halo import batch as batches
from halo.pipeline import physical_plan
from halo.runtime.run import execute
from tests.test_differential import WORKLOADS, _first_rows, _workload_plan, workload_dbs  # noqa: F401

ROWS = 8


def _priced(report: dict) -> dict[str, dict]:
    """Per LLM node: batch sizes, fused nodes and distinct calls as priced."""
    nodes = {n["id"]: n for n in report["nodes"]}
    priced = {
        nid: {
            "sizes": sorted(n["estimate"]["breakdown"]["engine_batches"]),
            "shares": set(n["estimate"]["breakdown"]["fused_with"]),
            "calls": n["merge"]["calls"],
            "estimated": n["merge"]["estimated"],
        }
        for nid, n in nodes.items()
        if n["kind"] == "llm"
    }
    return priced


def _ran(engine_batches: list[dict]) -> dict[str, dict]:
    """Per LLM node: the sizes of the engine batches holding its calls and the other nodes in them."""
    out: dict[str, dict] = defaultdict(lambda: {"sizes": [], "shares": set()})
    for b in engine_batches:
        for node in b["nodes"]:
            out[node]["sizes"].append(b["n"])
            out[node]["shares"] |= set(b["nodes"]) - {node}
    return {n: {**v, "sizes": sorted(v["sizes"])} for n, v in out.items()}


@pytest.mark.parametrize("path", sorted(WORKLOADS.glob("*.halo")), ids=lambda p: p.stem)
def test_engine_batches_are_the_priced_batches(path, workload_dbs, tmp_path):  # noqa: F811
    plan = _workload_plan(path, workload_dbs)
    rows = _first_rows(path, plan, ROWS)
    planned = physical_plan(
        plan, batches.Batch(rows=rows), hardware="H100", optimizer="heuristic", time_limit_s=1
    )
    priced, xplan = _priced(planned.report), planned.execution
    starts = [p.task for p in sorted(planned.physical.placements, key=lambda p: (p.start, p.order))]
    assert xplan.order == starts + [n for n in xplan.order if n not in starts]
    sent: list = []
    result = execute(
        xplan, rows, tmp_path / "out.jsonl", "fp", engine="fake", engine_options={"batches": sent}
    )
    ran = _ran(result.stats.engine_batches)
    assert [len(b) for b in sent] == [b["n"] for b in result.stats.engine_batches]
    for node, want in priced.items():
        calls = result.stats.nodes[node].calls
        if want["estimated"]:  # merges known only at run time: the priced count is an upper bound
            assert calls <= want["calls"], node
        else:
            assert calls == want["calls"], node
        got = ran.get(node, {"sizes": [], "shares": set()})
        assert (got["sizes"], got["shares"]) == (want["sizes"], want["shares"]), (
            f"{node}: ran {got}, priced {want}"
        )
