"""The library API: compile, plan, run through `halo.api` with real parts (fake engine, real files)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import halo
from halo import api
from halo.cli import app
from halo.cost import detect_hardware, gpu_spec_name, parse_hardware
from halo.errors import HaloError

SRC = """workflow w(x: int) {
  model m = "HuggingFaceTB/SmolLM2-135M-Instruct"
  d = py("halo.runtime.tools.builtins:regex_params", text = "year 1994", pure = true) -> { year: int }
  say = llm(m, prompt = "Say {x} and {d.year}.", max_tokens = 4, temperature = 0)
  return say
}
"""


@pytest.fixture
def batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no calibration file: default constants
    path = tmp_path / "b.jsonl"
    path.write_text("".join(f'{{"x": {i % 3}}}\n' for i in range(8)))
    return path


def test_the_package_exports_the_api():
    assert halo.api is api and callable(halo.api.compile)


def test_compile_a_path_or_source_text(tmp_path):
    path = tmp_path / "w.halo"
    path.write_text(SRC)
    from_path, from_text = api.compile(path), api.compile(SRC, filename="t.halo")
    assert [n.id for n in from_path.plan.nodes()] == [n.id for n in from_text.plan.nodes()] == ["d", "say"]
    assert from_path.sources == [SRC] and from_path.name == "w"


def test_compile_raises_located_errors():
    with pytest.raises(HaloError) as e:
        api.compile(SRC.replace("{x}", "{nope}"), filename="bad.halo")
    assert e.value.diagnostics[0].pos.file == "bad.halo"


def test_plan_gives_the_policy_order_and_planning_time(batch):
    planned = api.plan(api.compile(SRC, filename="t.halo"), batch, "2 x H100-SXM + cpu:4")
    assert len(planned.batch) == 8 and not planned.detected
    assert (planned.policy.max_batch, planned.policy.batch_tokens) == (
        planned.report["batching"]["max_batch"],
        planned.report["batching"]["batch_tokens"],
    )
    assert planned.order.index("d") < planned.order.index("say")  # the dependency starts first
    assert 0 < planned.seconds < 30 and planned.report["hardware"]["description"] == "2 x H100-SXM + cpu:4"


def test_plan_without_hardware_is_for_this_machine(batch):
    planned = api.plan(api.compile(SRC, filename="t.halo"), batch)
    assert planned.detected and planned.hardware == detect_hardware()
    assert "(detected)" in planned.report["hardware"]["text"]
    parse_hardware(planned.hardware)  # the detected description is one the cost model reads


@pytest.mark.parametrize(
    ("name", "memory", "spec"),
    [
        ("NVIDIA H100 80GB HBM3", 85e9, "H100-SXM"),
        ("NVIDIA H100 PCIe", 85e9, "H100-PCIe"),
        ("NVIDIA H200", 150e9, "H200"),
        ("NVIDIA A100-SXM4-40GB", 42e9, "A100-40GB"),
        ("NVIDIA A10", 24e9, "A10"),
        ("NVIDIA GeForce RTX 4090", 24e9, "H100-SXM"),
    ],
)
def test_a_cuda_device_maps_to_the_closest_spec(name, memory, spec):
    assert gpu_spec_name(name, memory) == spec


def test_run_plans_on_the_first_window_then_runs_every_input(batch, tmp_path):
    compiled = api.compile(SRC, filename="t.halo")
    result = api.run(compiled, batch, tmp_path / "out.jsonl", engine="fake", window=5)
    assert result.planned is not None and len(result.planned.batch) == 5 and result.planned.detected
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["row"] for r in records] == list(range(1, 9)) and result.failed_records == 0


def test_baseline_modes_run_unplanned(batch, tmp_path):
    result = api.run(
        api.compile(SRC, filename="t.halo"), batch, tmp_path / "o.jsonl", engine="fake", mode="naive"
    )
    assert result.planned is None and result.stats.totals()["inputs"] == 8


def test_a_refused_batch_file_raises_before_the_output_is_created(tmp_path):
    bad = tmp_path / "b.txt"
    bad.write_text("x\n1\n")
    with pytest.raises(HaloError):
        api.run(api.compile(SRC, filename="t.halo"), bad, tmp_path / "o.jsonl", engine="fake")
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_run_shows_the_detected_hardware_and_planning_time(batch, tmp_path):
    wf = tmp_path / "w.halo"
    wf.write_text(SRC)
    res = CliRunner().invoke(
        app, ["run", str(wf), "-i", str(batch), "-o", str(tmp_path / "o.jsonl"), "-q", "-e", "fake"]
    )
    assert res.exit_code == 0, res.output
    assert f"planned on 8 inputs for {detect_hardware()} (detected) in " in res.output


def test_cli_explain_shows_the_detected_hardware(batch, tmp_path):
    wf = tmp_path / "w.halo"
    wf.write_text(SRC)
    res = CliRunner().invoke(app, ["explain", str(wf), "-i", str(batch), "-f", "json"])
    assert res.exit_code == 0, res.output
    hw = json.loads(res.output)["hardware"]
    assert hw["detected"] is True and hw["description"] == detect_hardware()
