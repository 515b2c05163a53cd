"""Parser: every construct of the language becomes the right AST node at the right position."""

from __future__ import annotations

import os
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halo import ast
from halo.errors import HaloError, Pos
from halo.parser import _long_string_offsets, parse

FULL = '''\
# a comment
import "lib.halo"
// another comment

workflow triage(ticket: text, region: text = "eu", tags: text[] = ["a", "b"], n: int = -3,
                ratio: float = 1.5e3, flag: bool = true, extra: json = null, blob: json = {k: 1, "s t": [2]},) {
  model qwen = "Qwen/Qwen3-14B"   # trailing comment
  db shop = duckdb("shop.duckdb")
  db pg = postgres("postgresql://localhost/db")
  cls = llm(qwen, "Classify {ticket}", max_tokens = 64, temperature = 0.2,) -> { label: text, score: float, tags: text[], }
  rows = sql(shop, """
      SELECT id
      FROM t
      WHERE region = :region
  """, region = cls.label)
  return cls.label, rows = rows, k = {a: cls, b: [1, 2]},
}

workflow second() {
  return x = "y"
}
'''


def test_module_shape():
    mod = parse(FULL, "f.halo")
    assert mod.file == "f.halo" and mod.source == FULL
    assert [i.value for i in mod.imports] == ["lib.halo"]
    assert mod.imports[0].pos == Pos("f.halo", 2, 8)
    assert [w.name for w in mod.workflows] == ["triage", "second"]
    assert mod.workflows[1].params == [] and mod.workflows[1].has_return


def test_params_defaults_and_types():
    wf = parse(FULL, "f.halo").workflows[0]
    p = {p.name: p for p in wf.params}
    assert list(p) == ["ticket", "region", "tags", "n", "ratio", "flag", "extra", "blob"]
    assert p["ticket"].default is None and str(p["ticket"].type) == "text"
    assert p["region"].default == ast.Str("eu", Pos("f.halo", 5, 46))
    assert p["tags"].type.is_list and p["tags"].type.name == "text"
    assert ast.literal_value(p["tags"].default) == ["a", "b"]
    assert ast.literal_value(p["n"].default) == -3 and isinstance(p["n"].default.value, int)
    assert ast.literal_value(p["ratio"].default) == 1500.0 and isinstance(p["ratio"].default.value, float)
    assert ast.literal_value(p["flag"].default) is True
    assert isinstance(p["extra"].default, ast.Null)
    assert ast.literal_value(p["blob"].default) == {"k": 1, "s t": [2]}
    assert p["ticket"].pos == Pos("f.halo", 5, 17)
    assert p["ticket"].type.pos == Pos("f.halo", 5, 25)


def test_model_and_db_decls():
    wf = parse(FULL, "f.halo").workflows[0]
    assert [(m.name, m.model_id, m.pos.line, m.pos.col) for m in wf.models] == [
        ("qwen", "Qwen/Qwen3-14B", 7, 9)
    ]
    assert [(d.name, d.kind, d.target) for d in wf.dbs] == [
        ("shop", "duckdb", os.path.abspath("shop.duckdb")),
        ("pg", "postgres", "postgresql://localhost/db"),
    ]
    assert wf.dbs[0].pos == Pos("f.halo", 8, 6)


def test_binding_args_and_schema():
    wf = parse(FULL, "f.halo").workflows[0]
    cls, rows = wf.bindings
    assert cls.name == "cls" and cls.pos == Pos("f.halo", 10, 3)
    assert cls.call.func == "llm" and cls.call.pos == Pos("f.halo", 10, 9)
    assert [a.name for a in cls.call.args] == [None, None, "max_tokens", "temperature"]
    assert cls.call.positional()[0] == ast.Ref(("qwen",), Pos("f.halo", 10, 13))
    assert cls.call.kwargs()["max_tokens"].value == 64
    assert cls.call.args[2].pos == Pos("f.halo", 10, 40)
    assert [(f.name, str(f.type)) for f in cls.schema] == [
        ("label", "text"),
        ("score", "float"),
        ("tags", "text[]"),
    ]
    assert cls.schema[0].pos == Pos("f.halo", 10, 82)
    assert rows.schema is None
    q = rows.call.positional()[1]
    assert q.value == "SELECT id\nFROM t\nWHERE region = :region"
    assert rows.call.kwargs()["region"] == ast.Ref(("cls", "label"), Pos("f.halo", 15, 17))


def test_returns():
    wf = parse(FULL, "f.halo").workflows[0]
    keys = [r.key for r in wf.returns]
    assert keys == ["label", "rows", "k"]
    assert wf.returns[0].pos == Pos("f.halo", 16, 10)
    k = wf.returns[2].value
    assert isinstance(k, ast.DictExpr) and k.items[0] == ("a", ast.Ref(("cls",), k.items[0][1].pos))
    assert ast.refs_in(k) == [ast.Ref(("cls",), k.items[0][1].pos)]


def test_no_return_statement_is_recorded():
    wf = parse('workflow w() { model m = "x" }').workflows[0]
    assert not wf.has_return and wf.returns == []


@pytest.mark.parametrize(
    "src, value",
    [
        (r'"a\nb"', "a\nb"),
        (r'"tab\there"', "tab\there"),
        (r'"q\"uote"', 'q"uote'),
        (r'"back\\slash"', "back\\slash"),
        (r'"cr\r"', "cr\r"),
        (r'"unknown \q kept"', "unknown \\q kept"),
        ('"# not a comment // either"', "# not a comment // either"),
        ('""', ""),
        ('"""\n    one\n      two\n    """', "one\n  two"),
        ('"""inline"""', "inline"),
        ('"""  keep "quotes" inside\n"""', 'keep "quotes" inside'),
        ('"""\n\n   a\n\n   b   \n   """', "\na\n\nb"),
    ],
)
def test_string_literals(src, value):
    wf = parse(f"workflow w() {{ return s = {src} }}").workflows[0]
    assert wf.returns[0].value.value == value


def test_comments_anywhere():
    src = "// head\nworkflow w( # c1\n  q: text // c2\n) { # c3\n  return q // c4\n}\n# tail"
    wf = parse(src).workflows[0]
    assert [p.name for p in wf.params] == ["q"] and wf.returns[0].key == "q"


def test_positions_after_multiline_string():
    src = 'workflow w() {\n  model m = "x"\n  a = llm(m, """\n    x\n  """)\n  b = llm(m, "y")\n  return b\n}'
    b = parse(src).workflows[0].bindings[1]
    assert b.pos == Pos("<string>", 6, 3)


def test_pos_at_maps_string_offsets_to_file():
    src = 'workflow w() {\n  return s = "a\\"b {x}", t = """\n      one\n        {y}\n  """\n}'
    ret = parse(src, "f").workflows[0].returns
    s, t = ret[0].value, ret[1].value
    assert s.value == 'a"b {x}'
    assert s.pos_at(s.value.index("x")) == Pos("f", 2, 21)
    assert t.value == "one\n  {y}"
    assert t.pos_at(t.value.index("y")) == Pos("f", 4, 10)
    assert t.pos_at(0) == Pos("f", 3, 7)


def test_empty_source_is_empty_module():
    mod = parse("  # nothing\n")
    assert mod.workflows == [] and mod.imports == []


@pytest.mark.parametrize(
    "src, line, col, words",
    [
        ('workflow w() {\n  a = llm(m, "abc\n  return a\n}', 2, 14, "unterminated string"),
        ('workflow w() {\n  a = llm(m, """abc\n  return a\n}', 2, 14, 'unterminated """string"""'),
        ('workflow w() {\n  a = llm(m, "x"\n  return a\n}', 3, 3, "unexpected 'return', expected ')' or ','"),
        ('workflow w() {\n  a = llm(m, "x"))\n}', 2, 18, "unexpected ')'"),
        ('workflow w() {\n  a = llm(m, "x")', 2, 18, "unexpected end of file"),
        ("workflow", 1, 9, "unexpected end of file, expected a name"),
        ("workflow w() { @ }", 1, 16, "unexpected character '@'"),
        ("workflow w() {\n  x = 3\n}", 2, 7, "expected an operator call after '='"),
        ('workflow w() {\n  x = "s"\n}', 2, 7, "expected an operator call after '='"),
        ("workflow w() {\n  x = llm\n}", 3, 1, "expected '(' after 'llm'"),
        ("workflow w() {\n  return\n}", 3, 1, "expected a value"),
        ("workflow 3() {}", 1, 10, "expected a name"),
        ("workflow w(q: int[][]) {}", 1, 20, "unexpected '[]'"),
        ("workflow w() { db d = 3 }", 1, 23, "expected a name"),
        ("import lib\n", 1, 8, "expected a string"),
        ("workflow w() {\x00}", 1, 15, "unexpected character '\\x00'"),
    ],
)
def test_syntax_errors_are_located(src, line, col, words):
    with pytest.raises(HaloError) as info:
        parse(src, "bad.halo")
    [d] = info.value.diagnostics
    assert (d.pos.file, d.pos.line, d.pos.col) == ("bad.halo", line, col), d.message
    assert words in d.message
    rendered = d.render(src)
    assert rendered.startswith(f"bad.halo:{line}:{col}: error: ")
    assert rendered.splitlines()[-1] == "    " + " " * (col - 1) + "^"


def test_error_message_never_shows_internal_terminal_names():
    with pytest.raises(HaloError) as info:
        parse('workflow w() { a = llm(m, "x") -> }')
    msg = info.value.diagnostics[0].message
    assert "__ANON" not in msg and "RBRACE" not in msg


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=' \t\n\rab{}"', max_size=40))
def test_long_string_matches_textwrap_dedent(body):
    raw = '"""' + body.replace('"', "x") + '"""'
    value, offsets = _long_string_offsets(raw)
    expected = textwrap.dedent(raw[3:-3])
    if expected.startswith("\n"):
        expected = expected[1:]
    assert value == expected.rstrip()
    assert len(offsets) == len(value)
    assert all(raw[o] == c for o, c in zip(offsets, value, strict=True))
    assert list(offsets) == sorted(set(offsets))
