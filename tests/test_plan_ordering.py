"""Statements on one database keep their declared order around writes: ordering edges, EXPLAIN, real runs."""

from __future__ import annotations

import json

import duckdb
import pytest
from plans import split

from halo import api
from halo.explain import logical_report, render_dot, render_text
from halo.runtime.run import execute

SRC = """workflow w(item: int, label: text) {
  db shop = duckdb("shop.duckdb")
  db other = duckdb("other.duckdb")
  before = sql(shop, "SELECT count(*) AS n FROM items")
  ins = sql(shop, "INSERT INTO items VALUES (:id, :name)", id = item, name = label)
  got = sql(shop, "SELECT name FROM items WHERE id = :id", id = item)
  also = sql(shop, "SELECT count(*) AS n FROM items")
  elsewhere = sql(other, "SELECT 1 AS one")
  upd = sql(shop, "UPDATE items SET name = :name WHERE id = :id", id = item, name = got.name)
  last = sql(shop, "SELECT name FROM items WHERE id = :id", id = item)
  return n0 = before.n, got = got.name, n1 = also.n, one = elsewhere.one, last = last.name, changed = upd.rowcount
}
"""


def build(src: str, file: str):
    return api.compile(src, filename=file).plan


def order_edges(plan) -> dict[tuple[str, str], str]:
    return {(a, b): d["reason"] for a, b, d in plan.graph.edges(data=True) if d.get("order")}


def test_reads_and_writes_on_one_database_keep_their_declared_order(tmp_path):
    plan = build(SRC, str(tmp_path / "w.halo"))
    assert order_edges(plan) == {
        ("before", "ins"): "read before write on db shop",
        ("ins", "got"): "write before read on db shop",
        ("ins", "also"): "write before read on db shop",
        ("ins", "upd"): "write before write on db shop",
        ("also", "upd"): "read before write on db shop",
        ("upd", "last"): "write before read on db shop",
    }
    assert ("got", "upd") in plan.graph.edges and not plan.graph.edges["got", "upd"].get("order")  # data edge
    assert not any("elsewhere" in e for e in plan.graph.edges)  # another database: no ordering
    ids = [n.id for n in plan.nodes()]
    assert ids.index("before") < ids.index("ins") < ids.index("got") < ids.index("upd") < ids.index("last")


def test_explain_shows_ordering_edges_in_text_json_and_dot(tmp_path):
    report = logical_report(build(SRC, str(tmp_path / "w.halo")))
    got = next(n for n in report["nodes"] if n["id"] == "got")
    assert got["after"] == [{"id": "ins", "reason": "write before read on db shop"}]
    assert json.loads(json.dumps(report))["nodes"][0]["after"] == []
    assert "after: ins (write before read on db shop)" in render_text(report)
    assert '"ins" -> "got" [style=dashed, label="write before read on db shop"];' in render_dot(report)


def test_writes_on_other_targets_or_memory_kinds_are_separate_databases(tmp_path):
    src = (
        'workflow w(q: text) {\n db a = duckdb("a.duckdb")\n db b = duckdb("sub/../a.duckdb")\n'
        ' db c = duckdb("c.duckdb")\n'
        ' w1 = sql(a, "INSERT INTO t VALUES (:q)", q = q)\n r1 = sql(b, "SELECT 1 AS k")\n'
        ' r2 = sql(c, "SELECT 2 AS k")\n return r1.k, k2 = r2.k\n}'
    )
    edges = order_edges(build(src, str(tmp_path / "w.halo")))
    assert edges == {("w1", "r1"): "write before read on db b"}  # a and b are one file


@pytest.mark.parametrize("mode", ["halo", "naive", "opwise"])
def test_a_read_after_an_insert_sees_the_row_in_every_mode(tmp_path, mode):
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE items (id INTEGER, name TEXT)")
    con.close()
    src = """workflow w(item: int, label: text) {
      db shop = duckdb("shop.duckdb")
      ins = sql(shop, "INSERT INTO items VALUES (:id, :name) RETURNING id", id = item, name = label)
      got = sql(shop, "SELECT name FROM items WHERE id = :id", id = item)
      return got.name, id = ins.rows.id, n = ins.rowcount
    }"""
    plan = build(src, str(tmp_path / "w.halo"))
    rows = [(i + 1, {"item": i, "label": f"n{i}"}) for i in range(12)]
    out = tmp_path / "out.jsonl"
    x, options = split(plan, mode)
    execute(x, rows, out, f"fp-{mode}", options=options)
    records = {r["row"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(records) == 12 and all(r["error"] is None for r in records.values())
    assert {r["row"]: r["outputs"] for r in records.values()} == {
        i + 1: {"name": f"n{i}", "id": i, "n": 1} for i in range(12)
    }


def test_reads_of_a_written_database_never_merge_across_inputs(tmp_path):
    from halo.consolidate import call_key, never_merges

    plan = build(SRC, str(tmp_path / "w.halo"))
    ops = {op.id: op for op in plan.nodes()}
    env = {"item": 1, "label": "x"}
    for node in ("before", "got", "also", "last"):  # each input may see its own (or another's) writes
        assert "reads a database this workflow writes" in never_merges(ops[node])
        assert call_key(ops[node], {**env, "got": [{"name": "x"}]}) is None
    assert never_merges(ops["elsewhere"]) is None  # nothing writes `other`: merging stays safe
    assert call_key(ops["elsewhere"], env) == call_key(ops["elsewhere"], {"item": 2, "label": "y"})
