"""The runtime for real: DuckDB, loopback HTTP, Python tools and the embedded SmolLM2 engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest
from plans import split

from halo import api
from halo.runtime.run import execute

FIXTURES = Path(__file__).parent / "runtime_fixtures"
sys.path.insert(0, str(FIXTURES))


def build(src: str, tmp_path: Path):
    return api.compile(src, filename=str(tmp_path / "w.halo")).plan


def records(path: Path) -> dict[int, dict]:
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        assert rec["row"] not in out, f"row {rec['row']} written twice"
        out[rec["row"]] = rec
    return out


def run(plan, rows, tmp_path, name="out.jsonl", **opts):
    out = tmp_path / name
    x, options = split(plan, **opts)
    result = execute(x, rows, out, "fp", options=options)
    return result, records(out)


@pytest.fixture()
def shop(tmp_path):
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE items (id INTEGER, name TEXT, price DOUBLE)")
    con.execute("INSERT INTO items VALUES (1, 'apple', 0.5), (2, 'pear', 0.75), (3, 'fig', 2.0)")
    con.execute("CREATE TABLE log (row_id INTEGER, note TEXT)")
    con.close()
    return db


def test_tools_merge_identical_reads_and_never_merge_writes(tmp_path, shop):
    catalog = tmp_path / "catalog.duckdb"  # read only: its identical reads merge across inputs
    catalog.write_bytes(shop.read_bytes())
    plan = build(
        f'''
    workflow w(item: int) {{
      db shop = duckdb("{shop}")
      db catalog = duckdb("{catalog}")
      price = sql(catalog, "SELECT name, price FROM items WHERE id = :id", id = item)
      doubled = py("rtfuncs:slow_double", x = item, delay = 0.01, pure = true)
      note = sql(shop, "INSERT INTO log VALUES (:r, :n)", r = doubled, n = price.name)
      return price.name, doubled
    }}''',
        tmp_path,
    )
    rows = [(i + 1, {"item": item}) for i, item in enumerate([1, 2, 1, 1, 3, 2])]
    result, out = run(plan, rows, tmp_path)
    assert len(out) == 6 and all(r["error"] is None for r in out.values())
    assert out[4]["outputs"] == {"name": "apple", "doubled": 2}
    st = result.stats.nodes
    assert st["price"].calls == 3 and st["price"].memo_hits + st["price"].coalesced == 3
    assert st["doubled"].calls == 3
    assert st["note"].calls == 6  # a write runs once per input
    con = duckdb.connect(str(shop))
    assert con.execute("SELECT count(*) FROM log").fetchone()[0] == 6


def test_reads_of_a_database_the_workflow_writes_run_per_input(tmp_path, shop):
    plan = build(
        f'''
    workflow w(item: int) {{
      db shop = duckdb("{shop}")
      note = sql(shop, "INSERT INTO log VALUES (:r, 'x')", r = item)
      seen = sql(shop, "SELECT count(*) AS n FROM log WHERE row_id = :r", r = item)
      return seen.n
    }}''',
        tmp_path,
    )
    result, out = run(plan, [(i + 1, {"item": 7}) for i in range(4)], tmp_path)
    assert result.stats.nodes["seen"].calls == 4  # each input reads after its own write
    assert all(r["outputs"]["n"] >= 1 for r in out.values())  # never a result read before its own write


def test_failure_affects_only_dependent_inputs(tmp_path, shop):
    plan = build(
        f'''
    workflow w(item: int) {{
      db shop = duckdb("{shop}")
      checked = py("rtfuncs:fail_on", x = item, bad = 2, pure = true)
      price = sql(shop, "SELECT price FROM items WHERE id = :id", id = checked)
      also = sql(shop, "SELECT CAST(:v AS INTEGER) AS v", v = "not a number")
      return price.price, checked
    }}''',
        tmp_path,
    )
    result, out = run(plan, [(1, {"item": 1}), (2, {"item": 2}), (3, {"item": 0})], tmp_path)
    assert out[1]["outputs"]["price"] == 0.75  # item 1 -> checked 2 -> pear
    errs2 = {e["node"]: e["error"] for e in out[2]["error"]}
    assert "refusing 2" in errs2["checked"] and errs2["price"].startswith("skipped")
    assert all(
        "also" in {e["node"] for e in r["error"]} for r in out.values()
    )  # SQL error recorded per input
    assert out[3]["outputs"]["checked"] == 1
    assert result.stats.failed == 3


class _Flaky(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def do_GET(self):
        n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path.startswith("/broken"):
            self.send_response(500)
            self.end_headers()
            return
        if self.path.startswith("/flaky") and n == 1:
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps({"path": self.path, "hit": n}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_http_get_coalesced_retried_and_failures_recorded(tmp_path, server):
    _Flaky.hits.clear()
    plan = build(
        f'''
    workflow w(kind: text) {{
      r = http("GET", "{server}/{{kind}}/x")
      return r
    }}''',
        tmp_path,
    )
    rows = [(1, {"kind": "flaky"}), (2, {"kind": "ok"}), (3, {"kind": "broken"}), (4, {"kind": "ok"})]
    result, out = run(plan, rows, tmp_path)
    assert out[1]["outputs"]["r"]["hit"] == 2  # 503, then retried
    assert out[2]["outputs"] == out[4]["outputs"]  # one GET served both
    assert _Flaky.hits["/ok/x"] == 1
    assert "500" in out[3]["error"][0]["error"]


CRASH_WF = """
workflow w(item: int) {{
  db shop = duckdb("{db}")
  doubled = py("rtfuncs:slow_double", x = item, delay = 0.15, pure = true)
  note = sql(shop, "INSERT INTO log VALUES (:r, 'seen')", r = item)
  return doubled
}}
"""


def test_kill_9_then_resume_loses_nothing_and_repeats_no_write(tmp_path, shop):
    wf = tmp_path / "crash.halo"
    wf.write_text(CRASH_WF.format(db=shop))
    batch = tmp_path / "in.jsonl"
    batch.write_text("".join(json.dumps({"item": i}) + "\n" for i in range(1, 41)))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(FIXTURES)}
    cmd = [
        sys.executable,
        "-m",
        "halo",
        "run",
        str(wf),
        "-i",
        str(batch),
        "-o",
        str(out),
        "-q",
        "--window",
        "4",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        if out.exists() and len(out.read_text().splitlines()) >= 8:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(out.read_text().splitlines())
    assert 0 < partial < 40, "the run should have been killed midway"
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    got = records(out)
    assert sorted(got) == list(range(1, 41))
    assert all(r["outputs"]["doubled"] == 2 * r["inputs"]["item"] for r in got.values() if not r["error"])
    in_doubt = {r["row"] for r in got.values() if r["error"]}
    assert done.returncode == (1 if in_doubt else 0), done.stderr  # an input in doubt did not succeed
    assert len(in_doubt) <= 4 and all("crash" in got[r]["error"][0]["error"] for r in in_doubt)  # window 4
    con = duckdb.connect(str(shop))
    counts = dict(con.execute("SELECT row_id, count(*) FROM log GROUP BY row_id").fetchall())
    assert max(counts.values()) == 1  # no write repeated
    assert set(counts) >= set(range(1, 41)) - in_doubt


@pytest.mark.slow
def test_optimized_plan_gives_the_same_results_as_naive_per_input(tmp_path, shop):
    plan = build(
        f'''
    workflow w(item: int, style: text) {{
      model m = "HuggingFaceTB/SmolLM2-135M-Instruct"
      db shop = duckdb("{shop}")
      info = sql(shop, "SELECT name, price FROM items WHERE id = :id", id = item)
      pitch = llm(m, system = "You write one short product slogan.",
                  prompt = "Product: {{info.name}} at {{info.price}} dollars. Style: {{style}}.",
                  max_tokens = 12, temperature = 0)
      return pitch, info.name
    }}''',
        tmp_path,
    )
    rows = [
        (i + 1, p)
        for i, p in enumerate(
            [
                {"item": 1, "style": "fun"},
                {"item": 2, "style": "calm"},
                {"item": 1, "style": "fun"},
                {"item": 3, "style": "fun"},
                {"item": 2, "style": "calm"},
            ]
        )
    ]
    halo, fast = run(plan, rows, tmp_path, "halo.jsonl")
    naive, slow = run(
        plan, rows, tmp_path, "naive.jsonl", merge=False, prefix_keys=False, window=1, max_batch=1
    )
    assert {r: v["outputs"] for r, v in fast.items()} == {r: v["outputs"] for r, v in slow.items()}
    assert all(v["outputs"]["pitch"].strip() for v in fast.values())
    assert halo.stats.nodes["pitch"].calls == 3 and naive.stats.nodes["pitch"].calls == 5


def test_tool_server_sleep_and_declared_retries(tmp_path):
    from halo.runtime.tools.server import serve

    srv = serve(port=0)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        plan = build(
            f'''
        workflow w(k: text) {{
          a = http("GET", "{base}/sleep", query = {{s: 0.05, k: k}}, retries = 0)
          b = http("GET", "{base}/nope", retries = 0)
          return a, b
        }}''',
            tmp_path,
        )
        start = time.perf_counter()
        _, out = run(plan, [(1, {"k": "x"}), (2, {"k": "y"})], tmp_path)
        assert out[1]["outputs"]["a"] == {"status": "ok", "slept_s": 0.05, "query": {"k": "x"}}
        assert "404" in out[2]["error"][0]["error"]
        assert time.perf_counter() - start < 10
    finally:
        srv.shutdown()


def test_inputs_served_from_memory_alone_still_finish(tmp_path, shop):
    plan = build(
        f'''
    workflow w(item: int) {{
      db shop = duckdb("{shop}")
      price = sql(shop, "SELECT price FROM items WHERE id = :id", id = item)
      return price.price
    }}''',
        tmp_path,
    )
    rows = [(i + 1, {"item": 1 + i % 2}) for i in range(600)]
    result, out = run(plan, rows, tmp_path, window=16)
    assert len(out) == 600 and result.stats.nodes["price"].calls == 2
    assert {r["outputs"]["price"] for r in out.values()} == {0.5, 0.75}


@pytest.mark.slow
def test_llm_node_waits_for_its_stragglers_and_runs_one_full_batch(tmp_path):
    plan = build(
        """
    workflow w(x: int) {
      model m = "HuggingFaceTB/SmolLM2-135M-Instruct"
      d = py("rtfuncs:slow_double", x = x, delay = 0.2, pure = true)
      say = llm(m, prompt = "Say the number {d}.", max_tokens = 4, temperature = 0)
      return say
    }""",
        tmp_path,
    )
    result, out = run(plan, [(i + 1, {"x": i}) for i in range(12)], tmp_path, tool_workers=3)
    assert all(r["error"] is None for r in out.values())
    assert result.stats.nodes["say"].calls == 12 and result.stats.nodes["say"].batches == 1


@pytest.mark.slow
def test_independent_nodes_that_decode_alike_share_one_batch(tmp_path):
    plan = build(
        """
    workflow w(x: int) {
      model m = "HuggingFaceTB/SmolLM2-135M-Instruct"
      a = llm(m, prompt = "Count to {x}.", max_tokens = 4, temperature = 0)
      b = llm(m, prompt = "Name {x} colours.", max_tokens = 4, temperature = 0)
      c = llm(m, prompt = "Say {x}.", max_tokens = 6, temperature = 0)
      return a, b, c
    }""",
        tmp_path,
    )
    result, out = run(plan, [(i + 1, {"x": i}) for i in range(4)], tmp_path)
    st = result.stats.nodes
    assert all(r["error"] is None for r in out.values())
    assert st["a"].batches == st["b"].batches == 1 and st["a"].first_start == st["b"].first_start
    assert st["c"].first_start != st["a"].first_start  # another output length: its own batch


@pytest.mark.slow
def test_nodes_that_share_batches_wait_for_a_slower_sibling(tmp_path):
    # `a` is ready long before `b` (its tool is fast); the engine is idle, yet `a` waits so that both
    # run as one engine batch, as the cost model priced them.
    plan = build(
        """
    workflow w(x: int) {
      model m = "HuggingFaceTB/SmolLM2-135M-Instruct"
      fast = py("rtfuncs:slow_double", x = x, delay = 0.0, pure = true)
      slow = py("rtfuncs:slow_double", x = x, delay = 0.4, pure = true)
      a = llm(m, prompt = "Count to {fast}.", max_tokens = 4, temperature = 0)
      b = llm(m, prompt = "Name {slow} colours.", max_tokens = 4, temperature = 0)
      return a, b
    }""",
        tmp_path,
    )
    result, out = run(plan, [(i + 1, {"x": i}) for i in range(4)], tmp_path)
    assert all(r["error"] is None for r in out.values())
    assert [b["nodes"] for b in result.stats.engine_batches] == [{"a": 4, "b": 4}]
    baseline, _ = run(
        plan,
        [(i + 1, {"x": i}) for i in range(4)],
        tmp_path,
        name="opwise.jsonl",
        operator_at_a_time=True,
        merge=False,
    )
    assert len(baseline.stats.engine_batches) == 2  # the baseline has no plan: one operator at a time


def test_memory_stays_bounded_by_the_window(tmp_path, shop):
    from halo.execution import for_mode
    from halo.runtime.executor import Executor, RunOptions
    from halo.runtime.journal import Journal
    from halo.runtime.toolbox import Toolbox

    plan = build(
        f'''
    workflow w(item: int) {{
      db shop = duckdb("{shop}")
      d = py("rtfuncs:slow_double", x = item, delay = 0.001, pure = true)
      price = sql(shop, "SELECT price FROM items WHERE id = :id", id = d)
      return price.price
    }}''',
        tmp_path,
    )
    rows = ((i + 1, {"item": i % 50}) for i in range(3000))  # a generator: never materialised
    ex = Executor(
        for_mode(plan, "halo"),
        None,
        Toolbox(plan),
        Journal(tmp_path / "j", "fp", resume=False),
        RunOptions(window=32),
    )
    peak, seen = [0], [0]

    def sink(record):
        peak[0] = max(peak[0], len(ex.inputs))
        seen[0] += 1

    ex.run(rows, sink)
    assert seen[0] == 3000 and peak[0] <= 32
