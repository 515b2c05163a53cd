"""`halo check` / `halo explain`: exit codes 0 and 2, located messages on stderr, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from halo.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


def halo(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.stdout + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_check_good_files():
    r = halo("check", FIXTURES / "triage.halo", FIXTURES / "lib.halo")
    assert r.exit_code == 0, r.stderr
    assert f"{FIXTURES / 'triage.halo'}: ok (triage; 0 warning(s))" in r.stdout
    assert r.stderr == ""


def test_check_warnings_do_not_fail():
    r = halo("check", FIXTURES / "warn.halo")
    assert r.exit_code == 0
    assert f"{FIXTURES / 'warn.halo'}:5:3: warning: 'unused' is never used" in r.stderr
    assert "'log'" not in r.stderr  # a side effect is never "unused"
    assert "ok (w; 1 warning(s))" in r.stdout


@pytest.mark.parametrize(
    "name, line, col, words",
    [
        ("syntax.halo", 4, 3, "unexpected 'return', expected ')' or ','"),
        ("undefined.halo", 3, 19, "undefined name 'qq'"),
        ("sql.halo", 3, 27, "SQL does not parse"),
        ("import_missing.halo", 1, 8, "cannot import 'nowhere.halo': no such file"),
        ("types.halo", 3, 37, "'max_tokens' must be int, got text"),
    ],
)
@pytest.mark.parametrize("command", ["check", "explain"])
def test_bad_files_exit_2_with_located_message(command, name, line, col, words):
    path = FIXTURES / "bad" / name
    r = halo(command, path)
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith(f"{path}:{line}:{col}: error: "))
    assert words in lines[i]
    source_line = path.read_text().splitlines()[line - 1]
    assert lines[i + 1] == "    " + source_line
    assert lines[i + 2] == "    " + " " * (col - 1) + "^"


def test_check_reports_every_file_and_keeps_going(tmp_path):
    r = halo(
        "check", FIXTURES / "bad" / "undefined.halo", FIXTURES / "triage.halo", tmp_path / "missing.halo"
    )
    assert r.exit_code == 2
    assert "undefined name 'qq'" in r.stderr and "1 error(s), 0 warning(s)" in r.stderr
    assert "triage.halo: ok" in r.stdout
    assert f"{tmp_path / 'missing.halo'}:1:1: error: cannot read file" in r.stderr


def test_explain_text_json_dot():
    text = halo("explain", FIXTURES / "triage.halo", "--input", FIXTURES / "inputs.csv")
    assert text.exit_code == 0 and text.stdout.startswith("Workflow triage(")
    assert "batch: 2 inputs" in text.stdout
    js = halo("explain", FIXTURES / "triage.halo", "-f", "json", "-i", FIXTURES / "inputs.jsonl")
    assert js.exit_code == 0
    report = json.loads(js.stdout)
    assert report["workflow"] == "triage" and report["batch"]["inputs"] == 3
    dot = halo("explain", FIXTURES / "triage.halo", "--format", "dot")
    assert dot.exit_code == 0 and dot.stdout.startswith('digraph "triage" {')
    assert '"cls" -> "log";' in dot.stdout


def test_explain_other_workflow_and_limit():
    r = halo("explain", FIXTURES / "triage.halo", "-w", "summarize")
    assert r.exit_code == 0 and r.stdout.startswith("Workflow summarize(text: text, n: int)")
    r = halo(
        "explain", FIXTURES / "triage.halo", "-i", FIXTURES / "inputs.jsonl", "--limit", "1", "-f", "json"
    )
    assert json.loads(r.stdout)["batch"]["inputs"] == 1


@pytest.mark.parametrize(
    "args, words",
    [
        (["-w", "nope"], "no workflow named 'nope' (known: summarize, triage)"),
        (["-i", "in.txt"], "unknown batch format '.txt'"),
        (["-i", "none.csv"], "no such input file"),
    ],
)
def test_explain_bad_options_exit_2(tmp_path, args, words):
    (tmp_path / "in.txt").write_text("x")
    args = [str(tmp_path / a) if a.endswith((".txt", ".csv")) else a for a in args]
    r = halo("explain", FIXTURES / "triage.halo", *args)
    assert r.exit_code == 2 and words in r.stderr and r.stdout == ""
    assert re.match(r"^\S+:\d+:\d+: error: ", r.stderr)


def test_explain_bad_format_is_a_usage_error():
    r = halo("explain", FIXTURES / "triage.halo", "-f", "xml")
    assert r.exit_code == 2 and "--format must be text, json or dot" in r.stderr


def test_explain_reports_rejected_rows(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"ticket": "a"}\n{"ticket": 3}\n')
    r = halo("explain", FIXTURES / "triage.halo", "-i", path)
    assert r.exit_code == 0
    assert "1 rejected" in r.stdout and "row 2: 'ticket' must be text, got int 3" in r.stdout


BAD_SOURCES = {
    "x = 3": "workflow w() {\n  x = 3\n}\n",
    "eof": "workflow w(",
    "nul": "\x00",
    "binary": None,
    "recursion": "workflow w(q: text) {\n  a = w(q = q)\n  return a\n}\n",
    "unknown type": "workflow w(q: txt) { return q }\n",
    "import cycle": 'import "case.halo"\nworkflow w(q: text) { return q }\n',
    "bad sql token": 'workflow w(q: text) {\n db d = duckdb("x")\n a = sql(d, "SELECT \'x")\n return a\n}\n',
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
@pytest.mark.parametrize("command", ["check", "explain"])
def test_bad_sources_never_traceback(tmp_path, command, case):
    path = tmp_path / "case.halo"
    if BAD_SOURCES[case] is None:
        path.write_bytes(b"\x80\x81workflow")
    else:
        path.write_text(BAD_SOURCES[case])
    r = halo(command, path)
    assert r.exit_code == 2
    assert re.search(rf"^{re.escape(str(path))}:\d+:\d+: error: ", r.stderr, re.M)


def test_installed_console_script(tmp_path):
    exe = Path(sys.executable).parent / "halo"
    if not exe.exists():
        pytest.skip("console script not installed")
    bad = tmp_path / "bad.halo"
    bad.write_text('workflow w() {\n  a = llm(m, "x"\n}\n')
    p = subprocess.run([str(exe), "check", str(bad)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"{bad}:3:1: error: unexpected '}}'")
    p = subprocess.run(
        [str(exe), "check", str(FIXTURES / "triage.halo")], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0 and "ok (triage" in p.stdout
