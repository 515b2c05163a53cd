"""Batches: JSONL, CSV and Parquet rows validated against a workflow's parameters; nothing dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from halo import batch
from halo.errors import HaloError
from halo.parser import parse

FIXTURES = Path(__file__).parent / "fixtures"
PARAMS = (
    parse(
        'workflow w(ticket: text, region: text = "eu", limit: int = 5, ratio: float = 0.5, '
        "urgent: bool = false, tags: text[] = [], extra: json = null) { return ticket }"
    )
    .workflows[0]
    .params
)


def lines(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_fixture():
    b = batch.load(FIXTURES / "inputs.jsonl", PARAMS)
    assert b.errors == []
    assert [n for n, _ in b.rows] == [1, 2, 3]
    assert b.rows[0][1] == {
        "ticket": "my order is late",
        "region": "us",
        "limit": 5,
        "ratio": 0.5,
        "urgent": False,
        "tags": [],
        "extra": None,
    }
    assert b.rows[2][1]["limit"] == 2 and b.rows[2][1]["tags"] == ["size"]


def test_csv_fixture_coerces_text_and_uses_defaults_for_empty_cells():
    b = batch.load(FIXTURES / "inputs.csv", PARAMS)
    assert b.errors == []
    assert b.rows[0] == (
        1,
        {
            "ticket": "late, again",
            "region": "eu",
            "limit": 3,
            "ratio": 0.5,
            "urgent": False,
            "tags": [],
            "extra": None,
        },
    )
    assert b.rows[1][1]["region"] == "eu" and b.rows[1][1]["limit"] == 5


def test_jsonl_bad_rows_are_reported_with_row_numbers(tmp_path):
    path = lines(
        tmp_path / "in.jsonl",
        [
            {"ticket": "ok"},
            "not json",
            "[1, 2]",
            {"ticket": "x", "zz": 1},
            {"ticket": 3},
            {"region": "us"},
            {"ticket": "x", "limit": "7"},
            {"ticket": "x", "limit": 7.5},
            {"ticket": "x", "limit": True},
            {"ticket": "x", "tags": ["a", 1]},
            {"ticket": "x", "tags": "a"},
            {"ticket": "x", "ratio": 2},
            {"ticket": "x", "extra": {"any": ["thing"]}},
            {"ticket": None},
        ],
    )
    b = batch.load(path, PARAMS)
    assert [n for n, _ in b.rows] == [1, 12, 13]
    assert b.rows[1][1]["ratio"] == 2.0 and isinstance(b.rows[1][1]["ratio"], float)
    reasons = {e.row: e.reason for e in b.errors}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14]
    assert reasons[2].startswith("not valid JSON")
    assert reasons[3] == "a row must be a JSON object"
    assert reasons[4].startswith("unknown field(s) zz")
    assert reasons[5] == "'ticket' must be text, got int 3"
    assert reasons[6] == "missing parameter 'ticket'"
    assert reasons[7] == "'limit' must be int, got text '7'"
    assert "'limit' must be int" in reasons[9]
    assert reasons[10] == "'tags[1]' must be text, got int 1"
    assert reasons[11] == "'tags' must be a list of text"
    assert reasons[14] == "'ticket' must be text, got null"
    assert len(b.rows) + len(b.errors) == 14  # nothing silently dropped


def test_jsonl_blank_lines_skipped_and_bom_tolerated(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('\ufeff{"ticket": "a"}\n\n   \n{"ticket": "b"}\n', encoding="utf-8")
    b = batch.load(path, PARAMS)
    assert b.errors == [] and [r["ticket"] for _, r in b.rows] == ["a", "b"]


def test_null_uses_the_default(tmp_path):
    path = lines(tmp_path / "in.jsonl", [{"ticket": "a", "region": None, "limit": None}])
    [(_, row)] = batch.load(path, PARAMS).rows
    assert row["region"] == "eu" and row["limit"] == 5


def test_csv_coercion_and_errors(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "ticket,limit,ratio,urgent,tags\n"
        'a,1,2.5,yes,"[""x""]"\n'
        "b,one,,,\n"
        "c,,x,,\n"
        "d,,,maybe,\n"
        "e,,,,[1]\n"
        "f,,,,notjson\n"
        "g,2,,FALSE,,extra\n"
        "h\n"
        '"multi\nline",3,,0,\n'
    )
    b = batch.load(path, PARAMS)
    rows = dict(b.rows)
    assert rows[1] == {
        "ticket": "a",
        "region": "eu",
        "limit": 1,
        "ratio": 2.5,
        "urgent": True,
        "tags": ["x"],
        "extra": None,
    }
    assert rows[8]["limit"] == 5
    assert rows[9]["ticket"] == "multi\nline" and rows[9]["urgent"] is False
    reasons = {e.row: e.reason for e in b.errors}
    assert reasons == {
        2: "'limit' must be int, got 'one'",
        3: "'ratio' must be float, got 'x'",
        4: "'urgent' must be bool, got 'maybe'",
        5: "'tags[0]' must be text, got int 1",
        6: "'tags' must be a JSON list",
        7: "more values than header columns",
    }
    assert len(b.rows) + len(b.errors) == 9


def test_csv_bom_header(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes("ticket,region\nhello,us\n".encode("utf-8-sig"))
    b = batch.load(path, PARAMS)
    assert b.errors == [] and b.rows[0][1]["ticket"] == "hello"


def test_csv_unknown_column_rejects_every_row(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("ticket,colour\na,red\nb,blue\n")
    b = batch.load(path, PARAMS)
    assert b.rows == [] and [e.row for e in b.errors] == [1, 2]
    assert b.errors[0].reason.startswith("unknown field(s) colour (parameters: extra, limit,")


def test_parquet(tmp_path):
    path = tmp_path / "in.parquet"
    table = pa.table(
        {
            "ticket": ["a", "b", None, "d"],
            "limit": pa.array([1, None, 3, 4], type=pa.int64()),
            "ratio": pa.array([1.5, 2.0, None, None], type=pa.float32()),
            "tags": [["x"], [], None, ["y", "z"]],
        }
    )
    pq.write_table(table, path)
    b = batch.load(path, PARAMS)
    rows = dict(b.rows)
    assert sorted(rows) == [1, 2, 4]
    assert rows[1]["limit"] == 1 and rows[1]["ratio"] == 1.5 and rows[1]["tags"] == ["x"]
    assert rows[2]["limit"] == 5  # null falls back to the default
    assert rows[4]["tags"] == ["y", "z"] and rows[4]["ratio"] == 0.5
    assert [(e.row, e.reason) for e in b.errors] == [(3, "'ticket' must be text, got null")]
    assert len(b.rows) + len(b.errors) == table.num_rows


def test_parquet_many_rows_keep_numbers(tmp_path):
    path = tmp_path / "in.pq"
    n = 10_000
    pq.write_table(pa.table({"ticket": [str(i) if i % 1000 else None for i in range(n)]}), path)
    b = batch.load(path, PARAMS)
    assert len(b.rows) + len(b.errors) == n
    assert [e.row for e in b.errors] == [i + 1 for i in range(0, n, 1000)]
    assert all(row["ticket"] == str(num - 1) for num, row in b.rows)


def test_limit_counts_valid_rows(tmp_path):
    path = lines(tmp_path / "in.jsonl", [{"ticket": "a"}, "bad", {"ticket": "b"}, {"ticket": "c"}])
    b = batch.load(path, PARAMS, limit=2)
    assert [r["ticket"] for _, r in b.rows] == ["a", "b"] and [e.row for e in b.errors] == [2]
    assert len(batch.load(path, PARAMS, limit=0)) == 0


@pytest.mark.parametrize(
    "name, words", [("in.txt", "unknown batch format '.txt'"), ("none.csv", "no such input file")]
)
def test_bad_paths(tmp_path, name, words):
    (tmp_path / "in.txt").write_text("x")
    with pytest.raises(HaloError, match=words):
        batch.load(tmp_path / name, PARAMS)


def test_validate_directly():
    assert batch.validate({"ticket": "x", "urgent": "TRUE"}, PARAMS, from_text=True)["urgent"] is True
    with pytest.raises(ValueError, match="'urgent' must be bool, got text 'TRUE'"):
        batch.validate({"ticket": "x", "urgent": "TRUE"}, PARAMS)
    with pytest.raises(ValueError, match="unknown field"):
        batch.validate({"ticket": "x", "nope": 1}, PARAMS)
