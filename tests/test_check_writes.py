"""The static type of an SQL write is its run-time value {rowcount, rows}; SQL parameters take one value."""

from __future__ import annotations

import pytest

from halo import types
from halo.check import check
from halo.program import load_source

HEAD = 'workflow w(q: text, n: int) {\n  db d = duckdb(":memory:")\n'


def diagnostics(body: str) -> list[str]:
    result = check(load_source(HEAD + body + "\n}", "t.halo"))
    return [f"{d.pos.line}:{d.pos.col}: {d.message}" for d in result.errors]


def binding_type(body: str, name: str) -> types.Type:
    result = check(load_source(HEAD + body + "\n}", "t.halo"))
    assert result.errors == []
    return result.workflows["w"].bindings[name].out


def test_a_write_is_typed_as_rowcount_and_returning_rows():
    t = binding_type(
        '  ins = sql(d, "INSERT INTO t VALUES (:q) RETURNING id, q AS label", q = q)\n'
        "  return c = ins.rowcount, r = ins.rows",
        "ins",
    )
    rows = types.Type("table", (("id", types.JSON), ("label", types.JSON)))
    assert t == types.struct([("rowcount", types.INT), ("rows", rows)])


def test_a_returning_column_of_the_first_row_reads_like_a_table_column():
    assert diagnostics(
        '  ins = sql(d, "INSERT INTO t VALUES (:q) RETURNING id", q = q)\n'
        "  return x = ins.rows.id, y = ins.rows.nope"
    ) == ["4:31: 'ins.rows' has no field 'nope' (fields: id)"]


def test_a_write_without_returning_has_rows_of_no_columns_and_star_is_unknown():
    plain = binding_type('  u = sql(d, "UPDATE t SET a = :q", q = q)\n  return c = u.rowcount', "u")
    assert plain.field("rows") == types.Type("table", ())
    star = binding_type(
        '  i = sql(d, "INSERT INTO t VALUES (:q) RETURNING *", q = q)\n  return r = i.rows', "i"
    )
    assert star.field("rows") == types.Type("table")


def test_a_declared_schema_types_the_returning_rows():
    t = binding_type(
        '  i = sql(d, "INSERT INTO t VALUES (:q) RETURNING id", q = q) -> {id: int}\n  return r = i.rows', "i"
    )
    assert t.field("rows") == types.Type("table", (("id", types.INT),))


def test_a_returning_column_read_off_the_write_is_a_located_error_with_a_hint():
    assert diagnostics(
        '  ins = sql(d, "INSERT INTO t VALUES (:q) RETURNING id", q = q)\n  return x = ins.id'
    ) == [
        "4:14: 'ins' has no field 'id' (fields: rowcount, rows); a write's value is {rowcount, rows}, "
        "its RETURNING columns are in ins.rows (use ins.rows.id)"
    ]


def test_the_hint_also_applies_when_the_use_comes_before_the_write():
    errs = diagnostics(
        '  r = sql(d, "SELECT * FROM t WHERE id = :id", id = ins.id)\n'
        '  ins = sql(d, "INSERT INTO t VALUES (:q) RETURNING id", q = q)\n  return r'
    )
    assert (
        len(errs) == 1
        and errs[0].startswith("3:53: 'ins' has no field 'id'")
        and "use ins.rows.id" in errs[0]
    )


@pytest.mark.parametrize(
    "value, line_col, shape",
    [
        ("ins.rows", "4:47", "table"),
        ("[{a: q}]", "4:47", "list of records"),
        ("{a: q}", "4:47", "record"),
        ("ins", "4:47", "record"),
        ("tab", "4:47", "table"),
    ],
)
def test_a_list_record_or_table_bound_to_an_sql_parameter_is_a_located_error(value, line_col, shape):
    body = (
        '  ins = sql(d, "INSERT INTO t VALUES (:q) RETURNING id", q = q)\n'
        f'  b = sql(d, "INSERT INTO u VALUES (:v)", v = {value})\n'
        '  tab = sql(d, "SELECT a FROM t")\n  return c = b.rowcount, a = tab.a'
    )
    errs = diagnostics(body)
    assert errs == [f"{line_col}: SQL parameter ':v' takes a scalar or a list of scalars, not a {shape}"]


def test_scalars_lists_of_scalars_and_read_field_access_still_bind():
    assert (
        diagnostics(
            '  ins = sql(d, "INSERT INTO t VALUES (:q) RETURNING id", q = q)\n'
            '  r = sql(d, "SELECT a, b FROM t WHERE x = :x AND y = :y", x = ins.rowcount,'
            " y = ins.rows.id)\n"
            '  s = sql(d, "SELECT a FROM t WHERE a = :a AND n = :n", a = r.a, n = n)\n'
            '  u = sql(d, "SELECT a FROM t WHERE a = ANY(:ids)", ids = [q, "x"])\n'
            "  return s.a, b = r.b, c = u.a"
        )
        == []
    )


def test_read_field_access_rules_are_unchanged():
    assert diagnostics('  r = sql(d, "SELECT a FROM t")\n  return x = r.zz') == [
        "4:14: 'r' has no field 'zz' (fields: a)"
    ]
    assert binding_type('  r = sql(d, "SELECT * FROM t")\n  return x = r.anything', "r") == types.Type(
        "table"
    )
    assert binding_type('  r = sql(d, "SELECT a FROM t") -> {a: int}\n  return x = r.a', "r") == types.Type(
        "table", (("a", types.INT),)
    )
