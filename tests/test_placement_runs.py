"""The placement runs: a plan over two devices runs one engine worker per device on Ray, with the same
records and database writes as one engine, across the nodes of a cluster, and through a worker's death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from halo import api  # noqa: E402

TWO_MODELS = """
workflow two(q: text) {{
  model m = "Qwen/Qwen3-14B"
  model n = "Qwen/Qwen3-32B"
  db d = duckdb("{db}")
  a = llm(m, prompt = "Say one word about {{q}}.", max_tokens = {tokens}, temperature = 0)
  b = llm(n, prompt = "Name a color for {{q}}.", max_tokens = {tokens}, temperature = 0)
  w = sql(d, "INSERT INTO log VALUES (:q, :a, :b)", q = q, a = a, b = b)
  return a = a, b = b
}}
"""


def _setup(folder: Path, inputs: int, tokens: int = 4) -> tuple[api.Compiled, Path]:
    folder.mkdir()
    db = folder / "log.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE log (q TEXT, a TEXT, b TEXT)")
    con.close()
    batch = folder / "in.jsonl"
    batch.write_text("".join(json.dumps({"q": f"thing {i}"}) + "\n" for i in range(inputs)))
    return api.compile(TWO_MODELS.format(db=db, tokens=tokens), filename=str(folder / "two.halo")), batch


def _records(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({r["row"] for r in rows}) == len(rows), "a row written twice"
    return [{k: r[k] for k in ("row", "outputs", "error")} for r in rows]


def _log(folder: Path) -> list[tuple]:
    con = duckdb.connect(str(folder / "log.duckdb"), read_only=True)
    try:
        return sorted(con.execute("SELECT * FROM log").fetchall())
    finally:
        con.close()


@pytest.mark.slow
def test_two_cpu_workers_run_the_placement_with_the_records_of_one(tmp_path):
    one_c, one_in = _setup(tmp_path / "one", 12)
    two_c, two_in = _setup(tmp_path / "two", 12)
    one = api.run(one_c, one_in, tmp_path / "one.jsonl", hardware="cpu:1", engine="hf")
    two = api.run(two_c, two_in, tmp_path / "two.jsonl", hardware="2 x cpu:1", engine="hf")
    placement = two.planned.execution.placement
    assert set().union(*placement.values()) == {"cpu-engine0", "cpu-engine1"}
    assert set(two.stats.workers) == {"cpu-engine0", "cpu-engine1"} and not one.stats.workers
    busy = {b["device"] for b in two.stats.engine_batches}
    assert busy == {"cpu-engine0", "cpu-engine1"}, "both workers ran batches"
    assert _records(tmp_path / "one.jsonl") == _records(tmp_path / "two.jsonl")
    assert _log(tmp_path / "one") == _log(tmp_path / "two") and len(_log(tmp_path / "two")) == 12
    loaded = {(x["device"], x["model"]) for x in two.stats.loads}
    planned = {(d, op) for op, ds in placement.items() for d in ds}
    models = {op.id: op.model for op in two_c.plan.nodes() if op.kind == "llm"}
    assert loaded == {(d, models[op]) for d, op in planned}, "each worker loaded the models placed on it"
    assert not ray.is_initialized()


def test_a_run_spreads_its_workers_over_the_nodes_of_a_cluster(tmp_path):
    node = {"num_cpus": 1, "object_store_memory": 100 * 2**20, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        compiled, batch = _setup(tmp_path / "c", 6)
        res = api.run(
            compiled,
            batch,
            tmp_path / "c.jsonl",
            hardware="2 x cpu:1",
            engine="fake",
            ray_address=cluster.address,
        )
        assert res.stats.inputs == 6 and res.stats.failed == 0
        nodes = {d: w["node_id"] for d, w in res.stats.workers.items()}
        assert len(nodes) == 2 and len(set(nodes.values())) == 2, nodes
        assert len(_log(tmp_path / "c")) == 6
    finally:
        ray.shutdown()
        cluster.shutdown()


def _worker_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ray::_Worker"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_killing_a_worker_mid_run_loses_nothing_and_repeats_no_write(tmp_path):
    compiled, batch = _setup(tmp_path / "k", 48, tokens=12)
    out = tmp_path / "k.jsonl"
    box: dict = {}
    runner = threading.Thread(
        target=lambda: box.setdefault("res", api.run(compiled, batch, out, hardware="2 x cpu:1", window=16)),
        daemon=True,
    )
    runner.start()
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and runner.is_alive():
        pids = _worker_pids()
        if len(pids) >= 2 and out.exists() and out.read_text().count("\n") >= 4:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    runner.join(300)
    assert killed is not None, "the run ended before a worker could be killed"
    res = box["res"]
    records = _records(out)
    assert len(records) == 48 and all(r["error"] is None for r in records), records[:2]
    assert sum(res.stats.worker_restarts.values()) >= 1
    log = _log(tmp_path / "k")
    assert len(log) == 48 and len({q for q, _, _ in log}) == 48, "every write once"
