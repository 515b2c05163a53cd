"""The framework baseline (runtime/framework.py): each input on its own, K in flight, every LLM call its own
request to a real OpenAI-compatible server on loopback (Halo's, over the fake and the embedded engine)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from halo import batch as batches
from halo import plan as plans
from halo.check import check
from halo.cli import app
from halo.models import SMOLLM2_ID
from halo.program import load
from halo.runtime import framework
from halo.runtime.engines.fake import FakeEngine
from halo.runtime.engines.serve import build_server

WORKFLOW = """workflow shop(item: text, qty: text) {{
  model m = "Qwen/Qwen3-0.6B"
  db d = duckdb("{db}")
  price = sql(d, "SELECT price FROM prices WHERE item = :item", item = item)
  kw = py("halo.runtime.tools.builtins:search_keyword", text = item, pure = true)
  twice = sql(d, "SELECT CAST(:qty AS INTEGER) * 2 AS n", qty = qty)
  pitch = llm(m, system = "Sell it.", prompt = "{{kw}} at {{price}}, {{twice}} of them", max_tokens = 6)
  tag = llm(m, prompt = "Label {{item}}: {{pitch}}", max_tokens = 24) -> {{ label: text, score: int }}
  return pitch, label = tag.label, twice
}}
"""


def _workflow(tmp_path: Path, rows: list[dict]) -> tuple[Path, Path]:
    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE prices (item TEXT, price DOUBLE)")
        con.execute("INSERT INTO prices VALUES ('tea', 2.5), ('rice', 1.25), ('salt', 0.5)")
    wf = tmp_path / "shop.halo"
    wf.write_text(WORKFLOW.format(db=db))
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return wf, inputs


def _plan_rows(wf: Path, inputs: Path):
    plan = plans.build(check(load(wf)))
    batch = batches.load(inputs, plan.params)
    return plan, [*batch.rows, *batch.errors]


@pytest.fixture
def fake_server():
    """Halo's loopback server over a fake engine that records its batches; a long batch window, so requests
    that are in flight together arrive in one batch."""
    sent: list = []
    server = build_server(FakeEngine(batches=sent), batch_window=0.2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", sent
    server.shutdown()
    server.server_close()


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_records_as_halo_run(tmp_path, fake_server):
    url, _ = fake_server
    rows = [{"item": i, "qty": q} for i, q in [("tea", "4"), ("rice", "9"), ("tea", "4"), ("salt", "16")] * 3]
    wf, inputs = _workflow(tmp_path, rows)
    plan, items = _plan_rows(wf, inputs)
    stats = framework.run(plan, items, tmp_path / "fw.jsonl", {"Qwen/Qwen3-0.6B": url}, concurrency=4)
    got = _records(tmp_path / "fw.jsonl")
    res = CliRunner().invoke(
        app,
        ["run", str(wf), "-i", str(inputs), "--engine", "fake", "-o", str(tmp_path / "h.jsonl"), "--quiet"],
    )
    assert res.exit_code == 0, res.output
    want = _records(tmp_path / "h.jsonl")
    assert [(r["row"], r["outputs"], r["error"]) for r in got] == [
        (r["row"], r["outputs"], r["error"]) for r in want
    ]
    t = stats.totals()
    # Nothing is merged: every input calls every node, the repeats included.
    assert (t["inputs"], t["failed"], t["merged"]) == (12, 0, 0)
    assert all(stats.nodes[n].calls == 12 for n in ("price", "kw", "twice", "pitch", "tag"))
    assert stats.nodes["pitch"].prompt_tokens > 0 and stats.nodes["tag"].completion_tokens > 0


def test_k_inputs_in_flight_each_call_its_own_request(tmp_path, fake_server):
    url, sent = fake_server
    wf, inputs = _workflow(tmp_path, [{"item": "tea", "qty": str(q)} for q in range(1, 13)])
    plan, items = _plan_rows(wf, inputs)
    framework.run(plan, items, tmp_path / "fw.jsonl", {"Qwen/Qwen3-0.6B": url}, concurrency=4)
    sizes = [len(b) for b in sent]
    # 12 inputs x 2 LLM calls, each sent alone; the server sees at most K of them at once, and K together.
    assert sum(sizes) == 24 and max(sizes) == 4
    assert all(r.prefix_key is None for b in sent for r in b)


def test_failure_skips_dependents_only(tmp_path, fake_server):
    url, _ = fake_server
    wf, inputs = _workflow(
        tmp_path, [{"item": "tea", "qty": "4"}, {"item": "rice", "qty": "x"}, {"qty": "3"}]
    )
    plan, items = _plan_rows(wf, inputs)
    stats = framework.run(plan, items, tmp_path / "fw.jsonl", {"Qwen/Qwen3-0.6B": url})
    ok, bad, rejected = _records(tmp_path / "fw.jsonl")
    assert ok["error"] is None and ok["outputs"]["twice"] == [{"n": 8}]
    failed = {e["node"]: e["error"] for e in bad["error"]}
    assert set(failed) == {"twice", "pitch", "tag"} and "Conversion Error" in failed["twice"]
    assert failed["pitch"] == "skipped: depends on failed 'twice'"
    assert rejected["outputs"] is None and rejected["error"][0]["node"] == "input"
    assert (stats.inputs, stats.failed, stats.rejected) == (2, 1, 1)
    assert stats.nodes["price"].calls == stats.nodes["kw"].calls == 2  # the independent branches still ran


def test_unknown_model_server_is_refused(tmp_path):
    wf, inputs = _workflow(tmp_path, [{"item": "tea", "qty": "4"}])
    plan, items = _plan_rows(wf, inputs)
    with pytest.raises(ValueError, match="no server for model"):
        framework.run(plan, items, tmp_path / "fw.jsonl", {})


@pytest.mark.slow
def test_on_the_embedded_engine_through_halos_server(tmp_path):
    """The CPU tier: SmolLM2 behind Halo's loopback server, started and warmed by `serving`."""
    wf, inputs = _workflow(tmp_path, [{"item": i, "qty": "4"} for i in ("tea", "rice", "salt", "tea")])
    plan, items = _plan_rows(wf, inputs)
    opts = {"model_map": {"Qwen/Qwen3-0.6B": SMOLLM2_ID}}
    with framework.serving("hf", opts, ["Qwen/Qwen3-0.6B"], tmp_path) as served:
        assert set(served.servers) == {"Qwen/Qwen3-0.6B"} and served.model_map == {}
        stats = framework.run(plan, items, tmp_path / "fw.jsonl", served.servers, concurrency=2)
    t = stats.totals()
    assert t["inputs"] == 4 and t["calls"] >= 16
    assert stats.nodes["pitch"].completion_tokens > 0 and stats.nodes["pitch"].prompt_tokens > 20
    assert all(r["outputs"] is not None for r in _records(tmp_path / "fw.jsonl") if r["error"] is None)
