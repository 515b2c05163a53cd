"""Input limits: every pathological file ends in a located error, never an internal error or unbounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from halo import api, sql
from halo.check import MAX_CALL_DEPTH, check
from halo.errors import HaloError
from halo.parser import MAX_FILE_BYTES, MAX_NESTING, MAX_NUMBER_DIGITS, MAX_STRING_BYTES
from halo.plan import MAX_OPERATORS, build
from halo.program import MAX_IMPORT_DEPTH, load, load_source

ROOT = Path(__file__).resolve().parents[1]


def load_error(src: str, file: str = "t.halo") -> str:
    with pytest.raises(HaloError) as info:
        load_source(src, file)
    d = info.value.diagnostics[0]
    return f"{d.pos.line}:{d.pos.col}: {d.message}"


def check_errors(src: str) -> list[str]:
    return [f"{d.pos.line}:{d.pos.col}: {d.message}" for d in check(load_source(src, "t.halo")).errors]


def wf(body: str, params: str = "q: text") -> str:
    return f"workflow w({params}) {{\n{body}\n}}\n"


@pytest.mark.parametrize("src", ["", "   \n\n", "# only a comment\n// and another\n", 'import "lib.halo"\n'])
def test_a_file_without_a_workflow_is_a_located_error(src, tmp_path):
    (tmp_path / "lib.halo").write_text("workflow lib() { return x = 1 }")
    assert load_error(src, str(tmp_path / "t.halo")) == "1:1: no workflow in this file"


def test_an_imported_file_without_a_workflow_is_a_located_error(tmp_path):
    (tmp_path / "empty.halo").write_text("# nothing here\n")
    (tmp_path / "main.halo").write_text('import "empty.halo"\n' + wf("  return q"))
    with pytest.raises(HaloError) as info:
        load(tmp_path / "main.halo")
    d = info.value.diagnostics[0]
    assert (d.pos.file, d.pos.line, d.message) == (
        str(tmp_path / "empty.halo"),
        1,
        "no workflow in this file",
    )


def test_cli_check_reports_an_empty_file(tmp_path):
    (tmp_path / "e.halo").write_text("# empty\n")
    proc = subprocess.run(
        [sys.executable, "-m", "halo", "check", str(tmp_path / "e.halo")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert (
        proc.returncode == 2 and f"{tmp_path / 'e.halo'}:1:1: error: no workflow in this file" in proc.stderr
    )


@pytest.mark.parametrize("open_, close", [("[", "]"), ("{k: ", "}"), ("[{k: ", "}]")])
def test_nesting_deeper_than_the_limit_is_located(open_, close):
    deep = 490
    value = open_ * deep + "1" + close * deep
    msg = load_error(wf(f'  a = py("m:f", x = {value}, pure = true)\n  return a'))
    assert msg.startswith("2:") and msg.endswith(f"brackets nest more than {MAX_NESTING} levels deep")


def test_nesting_at_the_limit_checks_and_plans():
    depth = MAX_NESTING - 3  # the workflow's braces and the call's parentheses count
    value = "[" * depth + "1" + "]" * depth
    src = wf(f'  a = py("m:f", x = {value}, pure = true)\n  return a')
    plan = api.compile(src, filename="t.halo").plan
    assert plan.node("a").option("x") is not None


def test_brackets_inside_strings_and_comments_do_not_count():
    src = wf(f'  # {"[" * 100}\n  a = py("m:f", x = "{"{" * 100}", pure = true)\n  return a')
    assert check(load_source(src, "t.halo")).errors == []


def test_a_long_integer_literal_is_located():
    digits = "9" * 4301
    assert (
        load_error(wf("  return q", f"q: int = {digits}"))
        == f"1:21: number literal has 4,301 digits; the limit is {MAX_NUMBER_DIGITS}"
    )
    ok = "9" * MAX_NUMBER_DIGITS
    assert load_source(wf("  return q", f"q: int = {ok}"), "t.halo").workflows


def test_a_long_string_literal_is_located():
    big = "x" * MAX_STRING_BYTES
    msg = load_error(wf(f'  a = py("m:f", s = "{big}", pure = true)\n  return a'))
    assert (
        msg
        == f"2:21: string literal is {MAX_STRING_BYTES + 2:,} bytes; the limit is {MAX_STRING_BYTES:,} (256 KiB)"
    )


def test_a_file_over_the_size_limit_is_located(tmp_path):
    src = wf("  return q") + "#" * MAX_FILE_BYTES
    assert load_error(src) == f"1:1: file is {len(src):,} bytes; the limit is {MAX_FILE_BYTES:,} (1 MiB)"
    path = tmp_path / "big.halo"
    path.write_text(src)
    with pytest.raises(HaloError, match=r"cannot read file: [\d,]+ bytes; the limit is 1,048,576"):
        load(path)


@pytest.mark.parametrize(
    "target, words",
    [
        ("/dev/zero", "not a regular file"),
        (".", "not a regular file"),
        ("nope.halo", "no such file"),
        ("a\\u0000b", None),
    ],
)
def test_import_targets_must_be_regular_files(tmp_path, target, words):
    src = f'import "{target}"\n' + wf("  return q")
    if words is None:  # a NUL written into the path
        src = src.replace("\\u0000", "\x00")
        words = "an import path cannot contain a NUL character"
    main = tmp_path / "main.halo"
    main.write_text(src)
    with pytest.raises(HaloError) as info:
        load(main)
    d = info.value.diagnostics[0]
    assert (d.pos.line, d.pos.col) == (1, 8) and words in d.message


def test_an_oversized_import_is_rejected_before_it_is_read(tmp_path):
    (tmp_path / "big.halo").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    (tmp_path / "main.halo").write_text('import "big.halo"\n' + wf("  return q"))
    with pytest.raises(HaloError, match="cannot import 'big.halo': 1,048,577 bytes; the limit is 1,048,576"):
        load(tmp_path / "main.halo")


def test_import_chains_deeper_than_the_limit_are_located(tmp_path):
    n = MAX_IMPORT_DEPTH + 5
    for i in range(n):
        imp = f'import "f{i + 1}.halo"\n' if i + 1 < n else ""
        (tmp_path / f"f{i}.halo").write_text(imp + f"workflow w{i}() {{ return x = {i} }}\n")
    with pytest.raises(HaloError, match=f"imports nest more than {MAX_IMPORT_DEPTH} files deep"):
        load(tmp_path / "f0.halo")


def test_sql_parentheses_deeper_than_the_limit_are_located_before_sqlglot():
    query = "SELECT " + "(" * 46 + "1" + ")" * 46 + " AS x"
    errs = check_errors(wf(f'  db d = duckdb(":memory:")\n  a = sql(d, "{query}")\n  return a.x'))
    assert errs == [
        f"3:{14 + 1 + 7 + sql.MAX_PARENS}: SQL does not parse: parentheses nest more than "
        f"{sql.MAX_PARENS} levels deep"
    ]


def test_sql_that_exhausts_recursion_without_parentheses_is_located():
    query = "SELECT " + "NOT " * 3000 + "true AS x"
    assert check_errors(wf(f'  db d = duckdb(":memory:")\n  a = sql(d, "{query}")\n  return a.x')) == [
        f"3:14: SQL does not parse: {sql.TOO_DEEP}"
    ]


def test_workflow_calls_nested_deeper_than_the_limit_are_located():
    n = MAX_CALL_DEPTH + 3
    src = "".join(f"workflow w{i}() {{\n  a = w{i + 1}()\n  return a\n}}\n" for i in range(n))
    src += f"workflow w{n}() {{ return x = 1 }}\n"
    errs = check_errors(src)
    assert errs and all(e.endswith(f"workflow calls nest more than {MAX_CALL_DEPTH} deep") for e in errs)


def test_plans_that_inline_to_too_many_operators_are_located():
    src = 'workflow w0() {\n  a = py("m:f", pure = true)\n  return a\n}\n'
    for i in range(1, 16):  # each level calls the one below twice: 2^15 operators
        src += f"workflow w{i}() {{\n  a = w{i - 1}()\n  b = w{i - 1}()\n  return a, b\n}}\n"
    checked = check(load_source(src, "t.halo"))
    assert checked.errors == []
    with pytest.raises(HaloError, match=f"more than {MAX_OPERATORS:,} operators"):
        build(checked, "w15")


def test_database_paths_resolve_against_the_declaring_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = api.compile(ROOT / "workloads" / "demo.halo").plan
    targets = {op.db.target for op in plan.nodes() if op.kind == "sql"}
    assert targets == {str(ROOT / "data" / "tpch.duckdb")}
    mem = build(
        check(
            load_source(
                wf('  db d = duckdb(":memory:")\n  a = sql(d, "SELECT 1 AS k")\n  return a.k'),
                str(tmp_path / "sub" / "w.halo"),
            )
        )
    )
    assert mem.node("a").db.target == ":memory:"


def test_halo_explain_from_another_folder_shows_the_resolved_path(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "halo", "explain", str(ROOT / "workloads" / "demo.halo"), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert f'"db_target": "{ROOT / "data" / "tpch.duckdb"}"' in proc.stdout
