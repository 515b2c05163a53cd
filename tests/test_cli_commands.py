"""The planning commands end to end through the CLI: simulate, import-yaml, data."""

from pathlib import Path

from typer.testing import CliRunner

from halo.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_simulate_compares_the_halo_plan_with_every_baseline(tmp_path):
    batch = tmp_path / "b.jsonl"
    batch.write_text("".join(f'{{"question": "revenue in ASIA in {1992 + i % 3}"}}\n' for i in range(30)))
    res = runner.invoke(
        app,
        [
            "simulate",
            str(ROOT / "workloads/demo.halo"),
            "-i",
            str(batch),
            "-H",
            "2 x H100-SXM + cpu:4",
            "--time-limit",
            "2",
            "--gantt",
            str(tmp_path / "g.svg"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {
        line.split("|")[1].strip(): float(line.split("|")[2])
        for line in res.output.splitlines()
        if line.startswith("| ") and not line.startswith("| plan")
    }
    assert set(rows) == {"halo", "operator-at-a-time", "round-robin", "naive per-input"}
    assert rows["halo"] <= min(rows.values()) + 1e-6
    assert "simulated" in res.output.lower() or "not measured" in res.output
    assert (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")


def test_import_yaml_reports_bad_templates_cleanly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("graph: [unclosed\n")
    res = runner.invoke(app, ["import-yaml", str(bad)])
    assert res.exit_code == 2
    assert "not valid YAML" in res.output and "Traceback" not in res.output


def test_unknown_hardware_is_a_user_error(tmp_path):
    batch = tmp_path / "b.jsonl"
    batch.write_text('{"question": "q"}\n')
    res = runner.invoke(
        app, ["explain", str(ROOT / "workloads/demo.halo"), "-i", str(batch), "-H", "3 x Foo"]
    )
    assert res.exit_code == 2 and "unknown device 'Foo'" in res.output


def test_run_with_hardware_plans_on_a_sample_then_streams_the_batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no calibration file: default constants
    wf = tmp_path / "w.halo"
    wf.write_text("""workflow w(x: int) {
  model m = "HuggingFaceTB/SmolLM2-135M-Instruct"
  d = py("halo.runtime.tools.builtins:regex_params", text = "year 1994", pure = true) -> { year: int }
  say = llm(m, prompt = "Say {x} and {d.year}.", max_tokens = 4, temperature = 0)
  return say
}
""")
    batch = tmp_path / "b.jsonl"
    batch.write_text("".join(f'{{"x": {i % 4}}}\n' for i in range(10)))
    out = tmp_path / "out.jsonl"
    res = runner.invoke(
        app, ["run", str(wf), "-i", str(batch), "-o", str(out), "-q", "-H", "cpu", "--window", "6"]
    )
    assert res.exit_code == 0, res.output
    assert "Batching: up to" in res.output and "planned on 6 inputs" in res.output
    records = [line for line in out.read_text().splitlines() if line.strip()]
    assert len(records) == 10  # the sample and the rest of the stream, each once
