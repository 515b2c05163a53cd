"""Executor: coalescing across nodes, bounded memory, operator-at-a-time dispatch, row order, valid JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb
import pytest

from halo.batch import RowError
from halo.execution import for_mode
from halo.runtime.records import dumps
from halo.runtime.run import execute

sys.path.insert(0, str(Path(__file__).parent))
from test_runtime import FIXTURES, build, run  # noqa: E402

sys.path.insert(0, str(FIXTURES))
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_identical_llm_nodes_and_a_workflow_called_twice_finish(tmp_path):
    # Twins: two bindings with the same model, prompt and options, so one call key. Before the fix the
    # second node waited on the first's call and never finished: "executor stalled".
    plan = build(
        f'''
    workflow w(x: int) {{
      model m = "{SMOL}"
      a = llm(m, prompt = "Say {{x}}.", max_tokens = 2, temperature = 0)
      b = llm(m, prompt = "Say {{x}}.", max_tokens = 2, temperature = 0)
      s1 = say(x = x)
      s2 = say(x = x)
      return a, b, one = s1.out, two = s2.out
    }}
    workflow say(x: int) {{
      model m = "{SMOL}"
      out = llm(m, prompt = "Say {{x}}.", max_tokens = 2, temperature = 0)
      return out
    }}''',
        tmp_path,
    )
    result, out = run(plan, [(1, {"x": 1}), (2, {"x": 2}), (3, {"x": 1})], tmp_path)
    assert sorted(out) == [1, 2, 3] and all(r["error"] is None for r in out.values())
    for r in out.values():
        o = r["outputs"]
        assert o["a"] == o["b"] == o["one"] == o["two"] and o["a"].strip()
    st = result.stats.nodes
    assert sum(st[n].calls for n in st) == 2  # one engine request per distinct prompt
    assert sum(st[n].instances for n in st) == 12


def test_memo_is_bounded_by_bytes_and_evicted_results_come_from_the_journal(tmp_path):
    plan = build(
        """
    workflow w(k: text) {
      big = py("halo.runtime.tools.builtins:regex_params", text = k, pure = true) -> { region: text }
      return big
    }""",
        tmp_path,
    )
    rows = [(i + 1, {"k": f"region {i % 20}"}) for i in range(200)]
    result, out = run(plan, rows, tmp_path, memo_bytes=2000, window=4)  # a few entries
    assert len(out) == 200 and all(r["error"] is None for r in out.values())
    st = result.stats.nodes["big"]
    assert st.calls == 20 and st.memo_hits + st.coalesced == 180  # evicted results: read back, not re-run
    assert out[1]["outputs"] == out[21]["outputs"]


def test_memo_eviction_keeps_the_byte_total():
    from halo.runtime.call_cache import ENTRY_BYTES, Memo

    memo = Memo(3 * (ENTRY_BYTES + 33) + 10)
    for i in range(50):
        memo.put(f"k{i:02}", json.dumps("x" * 28), None)  # 3 + 30 characters each
    assert memo.size == 3 * (ENTRY_BYTES + 33) and len(memo.items) == 3
    assert memo.get("k49") == ("x" * 28, None) and memo.get("k00") is None
    memo.put("k50", None, "e" * 800)  # larger than the bound: nothing stays
    assert memo.size == 0 and not memo.items


def test_stats_lists_stay_bounded():
    from halo.runtime.stats import ENGINE_RECORDS, NodeStats, RunStats

    stats, node = RunStats(), NodeStats()
    for i in range(5 * ENGINE_RECORDS):
        stats.record_batch({"n": i})
        node.output_tokens.append(i)
    assert len(stats.engine_batches) < 2 * ENGINE_RECORDS and stats.engine_calls == 5 * ENGINE_RECORDS
    assert stats.engine_batches[-1] == {"n": 5 * ENGINE_RECORDS - 1} and len(node.output_tokens) == 256


def test_operator_at_a_time_keeps_its_barrier(tmp_path):
    plan = build(
        """
    workflow w(x: int) {
      a = py("rtfuncs:slow_double", x = x, delay = 0.0, pure = true)
      b = py("rtfuncs:slow_double", x = a, delay = 0.0, pure = true)
      c = py("rtfuncs:slow_double", x = b, delay = 0.0, pure = true)
      return c
    }""",
        tmp_path,
    )
    result, out = run(
        plan, [(i + 1, {"x": i}) for i in range(300)], tmp_path, operator_at_a_time=True, merge=False
    )
    assert [out[i + 1]["outputs"]["c"] for i in range(300)] == [8 * i for i in range(300)]
    st = result.stats.nodes
    assert st["a"].last_end <= st["b"].first_start and st["b"].last_end <= st["c"].first_start


def test_records_are_in_input_order_with_rejected_rows_in_place(tmp_path):
    # Later rows finish first (shorter delays); row 3 was rejected by validation.
    plan = build(
        """
    workflow w(d: float) {
      x = py("rtfuncs:slow_double", x = 1, delay = d, pure = false)
      return x
    }""",
        tmp_path,
    )
    rows = [
        (1, {"d": 0.3}),
        (2, {"d": 0.2}),
        RowError(3, "missing parameter 'd'"),
        (4, {"d": 0.1}),
        (5, {"d": 0.0}),
    ]
    result, out = run(plan, rows, tmp_path, tool_workers=4)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["row"] for r in lines] == [1, 2, 3, 4, 5]
    assert lines[2]["error"] == [{"node": "input", "error": "missing parameter 'd'"}]
    assert result.stats.rejected == 1 and result.stats.inputs == 4
    assert result.stats.totals()["rejected"] == 1


def test_nan_infinity_and_lone_surrogates_give_valid_json(tmp_path):
    db = tmp_path / "f.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t (k INTEGER, v DOUBLE, s TEXT)")
    con.execute(
        "INSERT INTO t VALUES (1, 'nan'::DOUBLE, 'a'), (2, 'inf'::DOUBLE, 'b'), (3, '-inf'::DOUBLE, 'c')"
    )
    con.close()
    plan = build(
        f'''
    workflow w(k: int, s: text) {{
      db f = duckdb("{db}")
      r = sql(f, "SELECT v FROM t WHERE k = :k", k = k)
      echo = py("halo.runtime.tools.builtins:regex_params", text = s, pure = true) -> {{ region: text }}
      return v = r.v, s
    }}''',
        tmp_path,
    )
    rows = [(1, {"k": 1, "s": "x\ud800y"}), (2, {"k": 2, "s": "ok"}), (3, {"k": 3, "s": "\udfff"})]
    out = tmp_path / "out.jsonl"
    execute(for_mode(plan, "halo"), rows, out, "fp")
    text = out.read_text(encoding="utf-8")
    got = [json.loads(line) for line in text.splitlines()]  # strict: json.loads rejects nothing here...
    assert "NaN" not in text and "Infinity" not in text  # ...so check the literals are absent
    assert [g["outputs"]["v"] for g in got] == [None, None, None]
    assert got[0]["inputs"]["s"] == "x\ufffdy" and got[2]["inputs"]["s"] == "\ufffd"


def test_dumps_rules():
    assert dumps({"a": float("nan"), "b": [float("-inf"), 1.5]}) == '{"a": null, "b": [null, 1.5]}'
    assert dumps("\ud83d\ude00") == '"😀"'  # a surrogate pair is the character it encodes
    assert dumps(["\ud800"]) == '["\ufffd"]'
    json.loads(dumps({"x": float("inf")}))
