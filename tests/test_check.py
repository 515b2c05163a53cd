"""Checker: names, types, schemas, SQL and templates; every problem is a located diagnostic."""

from __future__ import annotations

from pathlib import Path

import pytest

from halo import types
from halo.check import check
from halo.errors import HaloError
from halo.program import load, load_source

FIXTURES = Path(__file__).parent / "fixtures"

HEAD = 'workflow w(q: text, n: int = 3) {\n  model m = "x"\n  db d = duckdb("a.db")\n'


def wf(body: str) -> str:
    """A workflow with a model `m` and a database `d` (both used, so no noise warnings); body from line 4."""
    return HEAD + body + '\n  _m = llm(m, "{q}")\n  _d = sql(d, "SELECT 1 AS one")\n  return _m, _d\n}\n'


def diagnostics(src: str, file: str = "t.halo"):
    result = check(load_source(src, file))
    return result, [(d.pos.line, d.pos.col, d.severity, d.message) for d in result.diagnostics]


def errors(src: str):
    return [(line, col, msg) for line, col, sev, msg in diagnostics(src)[1] if sev == "error"]


def warnings(src: str):
    return [(line, col, msg) for line, col, sev, msg in diagnostics(src)[1] if sev == "warning"]


def one_error(src: str):
    errs = errors(src)
    assert len(errs) == 1, errs
    return errs[0]


def test_good_fixture_is_clean():
    result = check(load(FIXTURES / "triage.halo"))
    assert result.diagnostics == []
    info = result.workflows["triage"]
    assert info.order == ["cls", "orders", "log", "s", "answer"]
    assert info.bindings["cls"].out == types.struct(
        [("label", types.TEXT), ("params", types.JSON), ("urgent", types.BOOL)]
    )
    assert info.bindings["log"].sql_write and not info.bindings["orders"].sql_write
    assert info.bindings["answer"].deps == ["orders", "s"]
    assert [f for f, _ in info.return_type.fields] == ["answer", "label", "urgent"]


def test_wrapper_itself_is_clean():
    assert diagnostics(wf(""))[1] == []


@pytest.mark.parametrize(
    "body, line, col, words",
    [
        # undefined names: in arguments and in template holes (the caret on the name inside the string)
        ("  a = llm(m, zz)", 4, 14, "undefined name 'zz'"),
        ('  a = llm(m, "hi {zz.y}")', 4, 19, "undefined name 'zz'"),
        (
            '  a = llm(m, "a cat {a2}")\n  a2 = llm(m, "x") -> {f: text}\n  b = llm(m, "a {a2.g}")',
            6,
            18,
            "'a2' has no field 'g' (fields: f)",
        ),
        ('  a = llm(m, """\n     hello\n       { zz }\n  """)', 6, 10, "undefined name 'zz'"),
        ('  a = py("m:f", x = [1, zz])', 4, 25, "undefined name 'zz'"),
        # a structured-output field the schema doesn't declare
        (
            '  a = llm(m, "x") -> {region: text}\n  b = llm(m, "{a.regin}")',
            5,
            16,
            "'a' has no field 'regin' (fields: region)",
        ),
        (
            '  a = llm(m, "x") -> {params: json}\n  b = py("m:f", x = a.params.deep.ok, y = a.parms)',
            5,
            43,
            "'a' has no field 'parms'",
        ),
        # unknown model / database
        ('  a = llm(mm, "x")', 4, 11, "unknown model 'mm' (models: m)"),
        ('  a = llm(q, "x")', 4, 11, "unknown model 'q'"),
        ('  a = sql(dd, "SELECT 1")', 4, 11, "unknown database 'dd' (databases: d)"),
        ('  a = sql(m, "SELECT 1")', 4, 11, "unknown database 'm'"),
        # SQL that does not parse: the caret inside the SQL
        ('  a = sql(d, "SELECT FROM WHERE")', 4, 27, "SQL does not parse"),
        ('  a = sql(d, """\n      SELECT a\n      FROM t WHERE (\n  """)', 6, 20, "SQL does not parse"),
        ('  a = sql(d, "SELECT \'abc")', 4, 22, "SQL does not parse"),
        ('  a = sql(d, "")', 4, 15, "empty SQL statement"),
        # one statement per call, as the SQL tools run it: the caret on the second statement
        ('  a = sql(d, "SELECT 1; SELECT 2")', 4, 25, "one SQL statement per sql() call"),
        (
            '  a = sql(d, """\n    SELECT 1;\n    DELETE FROM t\n  """)',
            6,
            5,
            "one SQL statement per sql() call",
        ),
        ("  a = sql(d, q)", 4, 14, "'query' must be a string literal"),
        # placeholders
        ('  a = sql(d, "SELECT * FROM t WHERE x = :x")', 4, 41, "SQL parameter ':x' is not bound"),
        ('  a = sql(d, "SELECT 1", x = q)', 4, 30, "'x' is bound but the SQL never uses ':x'"),
        # types visible statically
        ('  a = llm(m, "x", max_tokens = "a")', 4, 32, "'max_tokens' must be int, got text"),
        ('  a = llm(m, "x", max_tokens = -1)', 4, 32, "'max_tokens' must not be negative"),
        ('  a = llm(m, "x", temperature = q)', 4, 33, "'temperature' must be float, got text"),
        ('  a = llm(m, "x", seed = 1.5)', 4, 26, "'seed' must be int, got float"),
        (
            '  t = sql(d, "SELECT 1 AS y")\n  a = sql(d, "SELECT :x AS z", x = t)',
            5,
            36,
            "SQL parameter ':x' takes a scalar or a list of scalars, not a table",
        ),
        (
            '  s = llm(m, "x") -> {f: int}\n  a = sql(d, "SELECT :x AS z", x = s)',
            5,
            36,
            "SQL parameter ':x' takes a scalar or a list of scalars, not a record",
        ),
        ('  a = py("mod:f", x = m)', 4, 23, "a model cannot be passed as a value"),
        ('  a = py("mod:f", x = {k: d})', 4, 27, "a db cannot be passed as a value"),
        ("  a = llm(m, m)", 4, 14, "'m' is a model, not a value"),
        ('  a = llm(m, "x")\n  b = llm(m, "{a.foo}")', 5, 16, "'a' is text and has no fields"),
        ('  a = py("mod:f", x = q.len)', 4, 23, "'q' is text and has no fields"),
        ("  a = llm(m, 3)", 4, 14, "'prompt' must be a string"),
        ('  a = py("nocolon")', 4, 10, "py() needs 'module:function'"),
        ('  a = http("FETCH", "http://x")', 4, 12, "HTTP method must be one of"),
        ('  a = llm(m, "x", bogus = 1)', 4, 19, "llm() has no argument 'bogus'"),
        ('  a = llm(m, "x", prompt = "y")', 4, 19, "argument 'prompt' given twice"),
        ('  a = llm(m, "x", "y")', 4, 19, "llm() takes at most 2 positional argument(s)"),
        ("  a = llm(m)", 4, 7, "llm() needs argument 'prompt'"),
        ("  a = frobnicate(x = 1)", 4, 7, "unknown operator or workflow 'frobnicate'"),
        # templates
        ('  a = llm(m, "x {q y} z")', 4, 17, "malformed placeholder"),
        ('  a = llm(m, "x } y")', 4, 17, "unbalanced brace"),
        # unknown types
        ('  a = llm(m, "x") -> {f: strng}', 4, 26, "unknown type 'strng'"),
        ('  a = llm(m, "x") -> {f: text, f: int}', 4, 32, "duplicate field 'f' in output schema"),
        # duplicates and cycles
        ('  a = llm(m, "x")\n  a = llm(m, "y")', 5, 3, "duplicate name 'a' (already a binding at line 4)"),
        ('  q = llm(m, "x")', 4, 3, "duplicate name 'q' (already a parameter at line 1)"),
        ('  m = llm(m, "x")', 4, 3, "duplicate name 'm' (already a model at line 2)"),
        ('  a = llm(m, "{b}")\n  b = llm(m, "{a}")', 4, 3, "cycle between bindings: a -> b -> a"),
        ('  a = llm(m, "{a}")', 4, 3, "cycle between bindings: a -> a"),
    ],
)
def test_bad_bodies(body, line, col, words):
    got_line, got_col, msg = one_error(wf(body))
    assert words in msg
    assert (got_line, got_col) == (line, col), msg


@pytest.mark.parametrize(
    "src, line, col, words",
    [
        ("workflow w(q: txt) { return q }", 1, 15, "unknown type 'txt'"),
        ('workflow w(q: int = "a") { return q }', 1, 21, "default of 'q' is text, expected int"),
        ('workflow w(q: int[] = ["a"]) { return q }', 1, 23, "default of 'q' is text[], expected int[]"),
        ("workflow w(q: text = zz) { return q }", 1, 22, "default of 'q' must be a constant"),
        ("workflow w(q: json = [zz]) { return q }", 1, 22, "default of 'q' must be a constant"),
        ("workflow w(q: text, q: int) { return q }", 1, 21, "duplicate name 'q'"),
        ("workflow w(q: text) { return q, q }", 1, 33, "'q' is returned twice"),
        ("workflow w(q: text) { return 3 }", 1, 30, "name a returned constant"),
        ('workflow w(q: text) { model m = "x"\n return m }', 2, 9, "cannot return a model"),
        ("workflow w(q: text) { return zz }", 1, 30, "undefined name 'zz'"),
        ("workflow w(q: text) { }", 1, 10, "has no return statement"),
        ('workflow w(q: text) { db x = sqlite("f")\n return q }', 1, 26, "unknown database kind 'sqlite'"),
        # recursion
        ("workflow w(q: text) {\n  a = w(q = q)\n  return a\n}", 2, 7, "workflow 'w' calls itself"),
        (
            "workflow v(q: text) { a = w(q = q)\n return a }\nworkflow w(q: text) { a = v(q = q)\n return a }",
            3,
            27,
            "calls itself",
        ),
        # workflow calls
        (
            "workflow v(n: int) { return n }\nworkflow w(q: text) { a = v(n = q)\n return a }",
            2,
            33,
            "'n' expects int, got text",
        ),
        (
            'workflow v(n: int[]) { return n }\nworkflow w(q: text) { a = v(n = ["x"])\n return a }',
            2,
            33,
            "'n' expects int[], got text[]",
        ),
        (
            "workflow v(n: int) { return n }\nworkflow w(q: text) { a = v(n = 1, k = 2)\n return a }",
            2,
            36,
            "workflow 'v' has no parameter 'k'",
        ),
        (
            "workflow v(n: int) { return n }\nworkflow w(q: text) { a = v()\n return a }",
            2,
            27,
            "workflow 'v' needs argument 'n'",
        ),
        (
            "workflow v(n: int) { return n }\nworkflow w(q: text) { a = v(n = 1)\n b = v(n = a)\n return b }",
            3,
            12,
            "'n' expects int, got struct",
        ),
        (
            "workflow v(n: int) { return n }\nworkflow w(q: text) { a = v(n = 1) -> {x: text}\n return a }",
            2,
            40,
            "a workflow call takes its output type from the callee's return",
        ),
        (
            'workflow v(n: json) { return n }\nworkflow w(q: text) { model m = "x"\n a = v(n = m)\n return a }',
            3,
            12,
            "a model cannot be passed as a value",
        ),
        ('workflow w(q: text) { db d = duckdb("x")\n return k = {a: [d]} }', 2, 18, "cannot return a db"),
        (
            "workflow v(n: int) { return n }\nworkflow w(q: text) { a = v(n = 1)\n return z = a.nope }",
            3,
            13,
            "'a' has no field 'nope' (fields: n)",
        ),
    ],
)
def test_bad_programs(src, line, col, words):
    got_line, got_col, msg = one_error(src) if "calls itself" not in words else errors(src)[0]
    assert words in msg
    assert (got_line, got_col) == (line, col), msg


def test_positional_workflow_call_reports_both_problems():
    msgs = [
        m
        for _, _, m in errors("workflow v(n: int) { return n }\nworkflow w(q: text) { a = v(q)\n return a }")
    ]
    assert any("with named arguments" in m for m in msgs) and any("needs argument 'n'" in m for m in msgs)


def test_every_error_is_reported_not_just_the_first():
    errs = errors(
        wf('  a = llm(mm, "{zz}")\n  b = sql(d, "SELECT :x AS y")\n  c = llm(m, "x", max_tokens = "a")')
    )
    assert {m.split(" (")[0] for _, _, m in errs} >= {
        "unknown model 'mm'",
        "undefined name 'zz'",
        "SQL parameter ':x' is not bound",
        "'max_tokens' must be int, got text",
    }
    assert [(line, col) for line, col, _ in errs] == sorted((line, col) for line, col, _ in errs)


def test_declaration_order_does_not_matter():
    assert errors(wf('  b = llm(m, "{a.f}")\n  a = llm(m, "x") -> {f: text}\n  c = py("m:f", x = b)')) == []


def test_unused_binding_warnings_but_not_for_side_effects():
    src = (
        HEAD + '  a = llm(m, "{q}")\n  unused = llm(m, "x")\n'
        '  w1 = sql(d, "INSERT INTO t VALUES (:q)", q = q)\n'
        '  w2 = http("POST", "http://x/{q}")\n'
        '  w3 = py("mod:f", x = q)\n'
        '  r1 = sql(d, "SELECT 1 AS one")\n'
        '  r2 = http("GET", "http://x")\n'
        '  r3 = py("mod:f", pure = true)\n'
        "  return a\n}\n"
    )
    result, diags = diagnostics(src)
    assert result.errors == []
    assert [(line, col, msg) for line, col, _, msg in diags] == [
        (5, 3, "'unused' is never used"),
        (9, 3, "'r1' is never used"),
        (10, 3, "'r2' is never used"),
        (11, 3, "'r3' is never used"),
    ]
    result.raise_on_error()  # warnings alone do not raise


def test_unused_declarations_warn():
    src = 'workflow w(q: text) {\n  model m = "x"\n  db d = duckdb("a")\n  return q\n}'
    assert warnings(src) == [
        (2, 9, "'m' is declared but never used"),
        (3, 6, "'d' is declared but never used"),
    ]


def test_raise_on_error_carries_all_errors():
    result = check(load_source(wf('  a = llm(mm, "x")\n  b = llm(m, zz)'), "t.halo"))
    with pytest.raises(HaloError) as info:
        result.raise_on_error()
    assert len(info.value.diagnostics) == 2
    assert "t.halo:4:11: error: unknown model 'mm'" in str(info.value)


def test_sql_output_columns_become_fields():
    src = wf('  t = sql(d, "SELECT id, total AS amount FROM x")\n  a = py("m:f", x = t.amount, y = t.nope)')
    [(line, col, msg)] = errors(src)
    assert (line, col) == (5, 35) and "'t' has no field 'nope' (fields: id, amount)" in msg
    star = wf('  t = sql(d, "SELECT * FROM x")\n  a = py("m:f", x = t.anything)')
    assert errors(star) == []


def test_declared_sql_schema_is_trusted():
    src = wf('  t = sql(d, "SELECT * FROM x") -> {id: int}\n  a = py("m:f", x = t.idd)')
    assert "'t' has no field 'idd' (fields: id)" in one_error(src)[2]


def test_http_and_template_argument_forms():
    src = wf(
        '  a = http("http://x/{q}")\n  b = http(url = "http://y", method = "post", body = {k: a})\n'
        '  c = llm(m, a, system = "be {q}")\n  z = py("m:f", x = [b, c])'
    )
    assert errors(src) == []


# -- imports -------------------------------------------------------------------------------------------


def write(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)


def test_import_resolves_relative_and_checks_calls(tmp_path):
    write(
        tmp_path,
        {
            "main.halo": 'import "sub/lib.halo"\nworkflow main(q: text) {\n  r = helper(x = q)\n  return r\n}\n',
            "sub/lib.halo": 'import "../base.halo"\nworkflow helper(x: text, k: int = 2) {\n  b = base(x = x)\n  return b\n}\n',
            "base.halo": 'workflow base(x: text) {\n  model m = "x"\n  o = llm(m, "{x}")\n  return o\n}\n',
        },
    )
    program = load(tmp_path / "main.halo")
    assert sorted(program.workflows) == ["base", "helper", "main"]
    assert [w.name for w in program.main_workflows()] == ["main"]
    result = check(program)
    assert result.errors == []
    assert result.workflows["main"].return_type.field("r").field("b").field("o") == types.TEXT


@pytest.mark.parametrize(
    "files, file, line, col, words",
    [
        (
            {"a.halo": 'import "nope.halo"\nworkflow a(x: text) { return x }'},
            "a.halo",
            1,
            8,
            "cannot import 'nope.halo': no such file",
        ),
        (
            {
                "a.halo": 'import "b.halo"\nworkflow a(x: text) { return x }',
                "b.halo": 'import "a.halo"\nworkflow b(x: text) { return x }',
            },
            "b.halo",
            1,
            8,
            "import cycle through 'a.halo'",
        ),
        ({"a.halo": 'import "a.halo"\nworkflow a(x: text) { return x }'}, "a.halo", 1, 8, "import cycle"),
        (
            {
                "a.halo": 'import "b.halo"\nworkflow a(x: text) { return x }',
                "b.halo": "workflow a(x: text) { return x }",
            },
            "a.halo",
            2,
            10,
            "workflow 'a' is already defined at",
        ),
        (
            {"a.halo": "workflow a(x: text) { return x }\nworkflow a(y: int) { return y }"},
            "a.halo",
            2,
            10,
            "workflow 'a' is already defined",
        ),
        (
            {
                "a.halo": 'import "b.halo"\nworkflow a(x: text) { return x }',
                "b.halo": "workflow b(x: text) { return x ",
            },
            "b.halo",
            1,
            31,
            "unexpected end of file",
        ),
        (
            {"a.halo": 'import "sub"\nworkflow a(x: text) { return x }', "sub/x.halo": ""},
            "a.halo",
            1,
            8,
            "cannot import 'sub'",
        ),
    ],
)
def test_import_errors(tmp_path, files, file, line, col, words):
    write(tmp_path, files)
    with pytest.raises(HaloError) as info:
        load(tmp_path / "a.halo")
    [d] = info.value.diagnostics
    assert Path(d.pos.file).resolve() == (tmp_path / file).resolve()
    assert (d.pos.line, d.pos.col) == (line, col) and words in d.message
    assert d.render().splitlines()[-1].strip() == "^"


def test_unreadable_main_file(tmp_path):
    (tmp_path / "bin.halo").write_bytes(b"\xff\xfe\x00workflow")
    for path in (tmp_path / "bin.halo", tmp_path / "missing.halo"):
        with pytest.raises(HaloError) as info:
            load(path)
        assert "cannot read file" in info.value.diagnostics[0].message


def test_program_workflow_selection():
    program = load_source("workflow a() { return x = 1 }\nworkflow b() { return x = 2 }", "t.halo")
    assert program.workflow(None).name == "a" and program.workflow("b").name == "b"
    with pytest.raises(HaloError, match="no workflow named 'c' \\(known: a, b\\)"):
        program.workflow("c")
    with pytest.raises(HaloError, match="no workflow in this file"):
        load_source("# empty", "t.halo")


# -- templates -----------------------------------------------------------------------------------------


def test_template_escaped_braces_next_to_holes():
    from halo.template import Template, TemplateError

    t = Template.parse("http://x/{q}?a={{b}} {{{c.d}}}")
    assert t.render({"q": "Q", "c": {"d": 1}}) == "http://x/Q?a={b} {1}"
    assert [h.parts for h in t.holes()] == [("q",), ("c", "d")]
    assert t.static_prefix() == "http://x/"
    for bad, offset in (("a}b", 1), ("x { y", 2), ("{ {a} }", 0), ("{a b}", 0)):
        with pytest.raises(TemplateError) as info:
            Template.parse(bad)
        assert info.value.offset == offset
    assert errors(wf('  a = http("GET", "http://x/{q}?a={{b}}")\n  z = py("m:f", x = a)')) == []
