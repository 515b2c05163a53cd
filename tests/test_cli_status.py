"""Exit statuses and option validation: 0 all inputs ok, 1 some input failed or was rejected, 2 usage error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from halo.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()

TOOLS_ONLY = """
workflow w(x: int) {
  r = py("halo.runtime.tools.builtins:regex_params", text = "q", pure = true) -> { region: text }
  return r
}
"""


def halo(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.stdout + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.mark.parametrize(
    "args, words",
    [
        (
            [
                "explain",
                FIXTURES / "triage.halo",
                "-i",
                FIXTURES / "inputs.jsonl",
                "-H",
                "cpu",
                "--optimizer",
                "magic",
            ],
            "'magic' is not one of auto, ilp, heuristic",
        ),
        (["explain", FIXTURES / "triage.halo", "-i", FIXTURES / "inputs.jsonl", "--limit", "-1"], "--limit"),
        (
            ["run", FIXTURES / "triage.halo", "-i", FIXTURES / "inputs.jsonl", "--engine", "nosuch"],
            "'nosuch' is not one of",
        ),
        (
            ["run", FIXTURES / "triage.halo", "-i", FIXTURES / "inputs.jsonl", "--mode", "fast"],
            "'fast' is not one of",
        ),
    ],
)
def test_bad_options_are_usage_errors(args, words):
    r = halo(*args)
    assert r.exit_code == 2, r.output
    assert words in r.stderr


def _run(tmp_path: Path, src: str, rows: list[str]):
    wf, inp = tmp_path / "w.halo", tmp_path / "in.jsonl"
    wf.write_text(src)
    inp.write_text("".join(r + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    r = halo("run", wf, "-i", inp, "-o", out, "-q")
    return r, [json.loads(line) for line in out.read_text().splitlines()]


def test_run_exit_0_when_every_input_succeeds(tmp_path):
    r, recs = _run(tmp_path, TOOLS_ONLY, ['{"x": 1}', '{"x": 2}'])
    assert r.exit_code == 0, r.stderr
    assert [rec["error"] for rec in recs] == [None, None]


def test_run_exit_1_when_an_input_is_rejected(tmp_path):
    r, recs = _run(tmp_path, TOOLS_ONLY, ['{"x": 1}', '{"x": "no"}'])
    assert r.exit_code == 1
    assert sum(rec["error"] is not None for rec in recs) == 1


def test_run_exit_1_when_every_input_fails(tmp_path):
    src = TOOLS_ONLY.replace(
        "halo.runtime.tools.builtins:regex_params", "halo.runtime.tools.builtins:no_such_fn"
    )
    r, recs = _run(tmp_path, src, ['{"x": 1}', '{"x": 2}'])
    assert r.exit_code == 1
    assert all(rec["error"] for rec in recs)


def test_model_map_naming_an_undeclared_model_is_a_usage_error(tmp_path):
    r = halo(
        "run",
        FIXTURES / "triage.halo",
        "-i",
        FIXTURES / "inputs.jsonl",
        "-o",
        tmp_path / "o.jsonl",
        "--model-map",
        "no/such-model=/tmp",
        "-q",
    )
    assert r.exit_code == 2
    assert "'no/such-model', which no workflow declares" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_refused_input_file_or_missing_database_touch_nothing(tmp_path):
    wf = tmp_path / "w.halo"
    wf.write_text(TOOLS_ONLY)
    bad = tmp_path / "in.csv"
    bad.write_text('x\n1\n"2\n3\n')  # a quote never closed
    out = tmp_path / "out.jsonl"
    r = halo("run", wf, "-i", bad, "-o", out, "-q")
    assert r.exit_code == 2 and "never closed" in r.stderr
    assert not out.exists() and not (tmp_path / "out.jsonl.journal").exists()
    wf.write_text(
        'workflow w(x: int) {\n  db d = duckdb("missing.duckdb")\n'
        '  r = sql(d, "SELECT :x AS y", x = x)\n  return r\n}\n'
    )
    good = tmp_path / "in.jsonl"
    good.write_text('{"x": 1}\n')
    r = halo("run", wf, "-i", good, "-o", out, "-q")
    assert r.exit_code == 2 and "w.halo:2:" in r.stderr and "does not exist" in r.stderr
    assert not out.exists() and not (tmp_path / "missing.duckdb").exists()


def test_resume_exit_status_counts_earlier_failures(tmp_path):
    r, _ = _run(tmp_path, TOOLS_ONLY, ['{"x": 1}', '{"x": "no"}'])
    assert r.exit_code == 1
    again = halo(
        "run",
        tmp_path / "w.halo",
        "-i",
        tmp_path / "in.jsonl",
        "-o",
        tmp_path / "out.jsonl",
        "-q",
        "--resume",
    )
    assert again.exit_code == 1  # the rejected row is still in the output
