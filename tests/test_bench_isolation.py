"""`halo bench` runs each mode on its own copies of the DuckDB files the workflow writes, and refuses
side effects that no copy can isolate."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from halo import api
from halo.bench import MODES, isolate
from halo.cli import app

N = 16
WRITER = """workflow logger(q: text) {{
  model m = "Qwen/Qwen3-0.6B"
  db d = duckdb("{db}")
  a = llm(m, "Say {{q}}", max_tokens = 3)
  w = sql(d, "INSERT INTO log VALUES (:q, :a)", q = q, a = a)
  n = sql(d, "SELECT count(*) AS c FROM log WHERE q = :q", q = q)
  return a, n
}}
"""


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE log (q TEXT, a TEXT)")
        con.execute("INSERT INTO log VALUES ('seed', 'row')")
    wf = tmp_path / "logger.halo"
    wf.write_text(WRITER.format(db=db))
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"q": f"q{i % 4}"}) + "\n" for i in range(N)))
    return db, wf, inputs


def _bench(tmp_path: Path, wf: Path, inputs: Path, *extra: str):
    return CliRunner().invoke(
        app,
        [
            "bench",
            str(wf),
            "--input",
            str(inputs),
            "--engine",
            "fake",
            "--results",
            str(tmp_path / "results"),
            *extra,
        ],
    )


def test_each_mode_writes_its_own_copy(tmp_path, monkeypatch, dump_db):
    db, wf, inputs = _setup(tmp_path)
    before = dump_db(db)
    monkeypatch.chdir(tmp_path)
    res = _bench(tmp_path, wf, inputs)
    assert res.exit_code == 0, res.output
    assert dump_db(db) == before, "bench wrote to the workflow's own database"
    for mode in MODES:
        [copy] = (tmp_path / ".halo" / "bench" / "logger" / f"{mode}.db").glob("*.duckdb")
        rows = dump_db(copy)["main.log"]
        assert len(rows) == N + 1, (mode, len(rows))
        assert sorted(q for q, _ in rows if q != "seed") == sorted(f"q{i % 4}" for i in range(N))
        records = [
            json.loads(line) for line in (copy.parent.parent / f"{mode}.jsonl").read_text().splitlines()
        ]
        assert all(r["error"] is None for r in records), records[:2]


def test_a_second_bench_starts_from_the_original_again(tmp_path, monkeypatch, dump_db):
    db, wf, inputs = _setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert _bench(tmp_path, wf, inputs, "--modes", "halo").exit_code == 0
    [copy] = (tmp_path / ".halo" / "bench" / "logger" / "halo.db").glob("*.duckdb")
    assert len(dump_db(copy)["main.log"]) == N + 1


def test_a_database_the_run_creates_is_created_in_the_copy(tmp_path):
    target = tmp_path / "new.duckdb"
    src = f"""workflow mk(q: text) {{
  db d = duckdb("{target}")
  c = sql(d, "CREATE TABLE IF NOT EXISTS t (q TEXT)")
  return c
}}
"""
    plan = api.compile(src, filename=str(tmp_path / "mk.halo")).plan
    copy = isolate(plan, tmp_path / "work")
    [op] = copy.nodes()
    assert Path(op.db.target).parent == tmp_path / "work" and not Path(op.db.target).exists()
    assert plan.nodes()[0].db.target == str(target), "isolate changed the original plan"


@pytest.mark.parametrize(
    "binding, node, why",
    [
        ('x = py("tests.runtime_fixtures.diff_funcs:note", x = q)', "x", "impure py"),
        ('x = http("POST", "http://127.0.0.1:9/log", body = {q: q})', "x", "HTTP POST"),
        ('x = sql(pg, "INSERT INTO t VALUES (:q)", q = q)', "x", "postgres database 'pg'"),
    ],
)
def test_effects_that_cannot_be_copied_are_refused(tmp_path, monkeypatch, binding, node, why):
    wf = tmp_path / "fx.halo"
    wf.write_text(f"""workflow fx(q: text) {{
  db pg = postgres("postgresql://127.0.0.1:9/none")
  {binding}
  return x
}}
""")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"q": "a"}\n')
    monkeypatch.chdir(tmp_path)
    res = _bench(tmp_path, wf, inputs)
    assert res.exit_code == 2, res.output
    assert f"cannot isolate '{node}'" in res.output and why in res.output and "fx.halo:3:" in res.output
    assert not (tmp_path / ".halo").exists(), "bench ran something before refusing"
