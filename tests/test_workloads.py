"""Every workload checks, plans and explains over its committed batch with no rejected rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from halo import api
from halo import batch as batches
from halo import plan as plans
from halo.check import check
from halo.explain import logical_report
from halo.program import load

WORKLOADS = Path(__file__).resolve().parents[1] / "workloads"
FILES = sorted(WORKLOADS.glob("*.halo"))
SHAPES = {
    "demo",
    "tpch_trident",
    "tpch_fanout",
    "tpch_layered",
    "imdb_diamond",
    "imdb_triple_chain",
    "wiki_long_chain",
    "wiki_bridges",
    "llm_voting",
    "llm_debate",
    "llm_multiturn",
}


def test_every_shape_has_a_workload():
    assert SHAPES <= {f.stem for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_workload_checks_and_loads_its_batch(path: Path):
    checked = check(load(path))
    assert not checked.diagnostics, [d.render() for d in checked.diagnostics]
    plan = plans.build(checked)
    jsonl = path.with_suffix(".jsonl")
    assert jsonl.stat().st_size < 300_000
    batch = batches.load(jsonl, plan.params)
    assert not batch.errors, batch.errors[:3]
    assert len(batch) >= (20 if path.stem == "demo" else 1000)
    report = logical_report(plan, batch)
    assert report["batch"]["rejected"] == 0
    llms = [n for n in report["nodes"] if n["kind"] == "llm"]
    assert llms and all(n["max_tokens"] <= 96 for n in llms)
    if path.stem != "demo":
        assert len({n["model"] for n in llms}) >= 2, "workloads mix model sizes"


def test_demo_is_small_and_deterministic():
    plan = api.compile(WORKLOADS / "demo.halo").plan
    kinds = [op.kind for op in plan.nodes()]
    assert kinds.count("py") == 1 and kinds.count("sql") == 2 and kinds.count("llm") == 2
    llms = [op for op in plan.nodes() if op.kind == "llm"]
    assert {op.option("system") for op in llms} == {llms[0].option("system")}
    assert all(op.option("temperature") == 0 and op.option("max_tokens") <= 48 for op in llms)


def test_query_sets_are_reproducible():
    from workloads.make_queries import N_QUERIES, generate

    rows, _ = generate("tpch_trident", N_QUERIES)
    committed = (WORKLOADS / "tpch_trident.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in committed] == rows
