"""bench/gpu/serve_h200.py end to end on this CPU: `halo serve` subprocesses in both modes against two
loopback OpenAI-compatible servers over the fake engine, at tiny sizes."""

from __future__ import annotations

import json
import threading

from bench.gpu.serve_h200 import ROOT, measure
from halo.runtime.engines.fake import FakeEngine
from halo.runtime.engines.serve import build_server

LLM_VOTING = ("llm_voting", ROOT / "workloads" / "llm_voting.halo", ROOT / "workloads" / "llm_voting.jsonl")


def test_measure_runs_both_modes_through_the_given_servers(tmp_path):
    seen: dict[str, list] = {k: [] for k in "ab"}
    servers = {k: build_server(FakeEngine(batches=seen[k])) for k in "ab"}
    url = {k: f"http://127.0.0.1:{srv.server_address[1]}/v1" for k, srv in servers.items()}
    for srv in servers.values():
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    routes = {"Qwen/Qwen3-14B": url["a"], "Qwen/Qwen3-32B": url["b"], "openai/gpt-oss-20b": url["b"]}
    out = tmp_path / "serve.md"
    try:
        result = measure([LLM_VOTING], routes, {}, out, saturate=10, fractions=(0.5,), duration_s=1.0)
        skipped = measure([LLM_VOTING], routes, {}, tmp_path / "none.md", budget_s=0)
    finally:
        for srv in servers.values():
            srv.shutdown()
            srv.server_close()
    rows = result["rows"]
    assert [(r["mode"], r["load"]) for r in rows] == [
        ("halo", "saturated"),
        ("naive", "saturated"),
        ("halo", "0.5 x halo"),
        ("naive", "0.5 x halo"),
    ]
    assert all(r["outcomes"] == {"ok": r["sent"]} and r["sent"] > 0 for r in rows)
    assert rows[0]["sent"] == rows[1]["sent"] == 10
    assert rows[2]["rate"] == round(rows[0]["throughput"] / 2, 2)
    json.dumps(result)  # a caller can save it
    table = [line for line in out.read_text().splitlines() if line.startswith("| llm_voting |")]
    assert [line.split(" | ")[1:3] for line in table] == [[r["mode"], r["load"]] for r in rows]
    received = {k: {r.model for batch in v for r in batch} for k, v in seen.items()}
    assert received == {"a": {"Qwen/Qwen3-14B"}, "b": {"Qwen/Qwen3-32B", "openai/gpt-oss-20b"}}
    assert [r["not_run"] for r in skipped["rows"]] == ["over the 0 s budget"] * 6
