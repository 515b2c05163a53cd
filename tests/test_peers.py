"""The LangGraph peer (bench/peers): its hand-written graphs follow the workflows' data flow, and against the
same loopback server it gives the framework baseline's records."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import networkx as nx
import pytest

pytest.importorskip("langgraph")  # the `peers` extra (make setup installs it; the vLLM tier does not)

from langgraph.graph import END, START  # noqa: E402

from bench.peers import langgraph_peer  # noqa: E402
from halo import batch as batches  # noqa: E402
from halo.models import SMOLLM2_ID  # noqa: E402
from halo.runtime import framework  # noqa: E402
from halo.runtime.engines.fake import FakeEngine  # noqa: E402
from halo.runtime.engines.serve import build_server  # noqa: E402
from tests.test_differential import _workload_plan  # noqa: E402

WORKLOADS = Path(__file__).resolve().parents[1] / "workloads"


@pytest.fixture(scope="module")
def tpch_db(tmp_path_factory) -> dict[str, Path]:
    from halo.datagen import tpch

    path = tmp_path_factory.mktemp("tpch") / "tpch.duckdb"
    tpch.generate(path, sf=0.01)
    return {"tpch": path}


def _edges(name: str) -> nx.DiGraph:
    g = nx.DiGraph()
    for start, end in langgraph_peer.GRAPHS[name]:
        for s in [start] if isinstance(start, str) else start:
            g.add_edge(s, end)
    return g


@pytest.mark.parametrize("name", sorted(langgraph_peer.GRAPHS))
def test_graph_follows_the_workflows_data_flow(name, tpch_db):
    plan = _workload_plan(WORKLOADS / f"{name}.halo", tpch_db)
    g = _edges(name)
    assert set(g) - {START, END} == set(plan.graph)
    for u, v in plan.graph.edges:  # every dependency is ordered by the graph's edges
        assert nx.has_path(g, u, v), f"{name}: {v} can start before {u}"
    assert all(nx.has_path(g, START, n) and nx.has_path(g, n, END) for n in plan.graph)


def test_unknown_workflow_is_refused(tpch_db):
    plan = _workload_plan(WORKLOADS / "tpch_layered.halo", tpch_db)
    with pytest.raises(ValueError, match="no LangGraph graph for workflow 'tpch_layered'"):
        langgraph_peer.run(plan, [], "unused.jsonl", {})


@pytest.fixture
def fake_server():
    server = build_server(FakeEngine())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _records(path: Path) -> list[tuple]:
    return [(r["row"], r["outputs"]) for r in map(json.loads, path.read_text().splitlines())]


@pytest.mark.parametrize("name", ["llm_voting", "tpch_trident"])
def test_same_records_as_the_framework_baseline(name, tpch_db, fake_server, tmp_path):
    plan = _workload_plan(WORKLOADS / f"{name}.halo", tpch_db)
    rows = batches.load(WORKLOADS / f"{name}.jsonl", plan.params, limit=12).rows
    servers = {op.model: fake_server for op in plan.nodes() if op.kind == "llm"}
    lg = langgraph_peer.run(plan, rows, tmp_path / "lg.jsonl", servers, concurrency=4)
    fw = framework.run(plan, rows, tmp_path / "fw.jsonl", servers, concurrency=4)
    assert _records(tmp_path / "lg.jsonl") == _records(tmp_path / "fw.jsonl")
    assert (lg.inputs, lg.failed) == (fw.inputs, fw.failed) == (12, 0)
    for node, st in fw.nodes.items():  # the same calls, one each per input, and the same tokens
        got = lg.nodes[node]
        assert (got.calls, got.instances, got.prompt_tokens, got.completion_tokens) == (
            st.calls,
            st.instances,
            st.prompt_tokens,
            st.completion_tokens,
        ), node


@pytest.mark.slow
def test_langgraph_on_the_embedded_engine(tmp_path):
    """The CPU tier: LangGraph and langchain-openai against Halo's server over SmolLM2."""
    plan = _workload_plan(WORKLOADS / "llm_voting.halo", {})
    rows = batches.load(WORKLOADS / "llm_voting.jsonl", plan.params, limit=3).rows
    models = sorted({op.model for op in plan.nodes() if op.kind == "llm"})
    opts = {"model_map": dict.fromkeys(models, SMOLLM2_ID)}
    with framework.serving("hf", opts, models, tmp_path) as served:
        stats = langgraph_peer.run(plan, rows, tmp_path / "lg.jsonl", served.servers, concurrency=3)
    assert stats.inputs == 3 and stats.nodes["v1"].calls == 3
    assert stats.nodes["v2"].completion_tokens > 0 and stats.nodes["vote"].prompt_tokens > 0


def test_halo_bench_runs_the_peer_modes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from halo.cli import app

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # bench/peers is found from the checkout
    res = CliRunner().invoke(
        app,
        [
            "bench",
            str(WORKLOADS / "llm_voting.halo"),
            "-i",
            str(WORKLOADS / "llm_voting.jsonl"),
            "--limit",
            "16",
            "--engine",
            "fake",
            "--modes",
            "halo,framework,langgraph",
            "--results",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {
        line.split("|")[1].strip(): line.split("|")
        for line in res.output.splitlines()
        if line.startswith("| ")
    }
    assert {"halo", "framework", "langgraph"} <= set(rows)
    # 16 inputs x 4 LLM calls, none merged by the peers; Halo merges the repeated questions.
    assert rows["framework"][4].strip() == rows["langgraph"][4].strip() == "64"
    assert int(rows["halo"][5].replace(",", "")) > 0 and rows["framework"][5].strip() == "0"
