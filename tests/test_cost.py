"""Cost model, calibration, the optimizer problem and the EXPLAIN report with costs (no LLM engine)."""

from __future__ import annotations

import copy
import json

import pytest

from halo import api
from halo import calibration as calib
from halo.batch import Batch
from halo.batching import BatchPolicy
from halo.consolidate import consolidate
from halo.cost import HARDWARE_ERRORS, estimate, group_costs, parse_hardware, reference_device, to_problem
from halo.explain import render_text
from halo.hw_models import hardware, roofline, specs
from halo.optimizer import optimize
from halo.optimizer.problem import check as check_problem
from halo.pipeline import explain_report, physical_plan
from halo.tokens import counter, output_tokens

SRC = """workflow w(q: text, doc: text, region: text) {{
  model m = "{model}"
  db d = duckdb(":memory:")
  x = llm(m, system = "You answer questions about documents. Be brief and exact.",
          prompt = "{{doc}}\\nQuestion: {{q}}", max_tokens = 64)
  r = sql(d, "select n_name from nation where r_name = :r", r = region)
  y = llm(m, prompt = "Answer {{x}} with data {{r}}", max_tokens = 32) -> {{ok: bool, why: text}}
  return y
}}
"""


def build(model: str = "Qwen/Qwen3-8B"):
    return api.compile(SRC.format(model=model), filename="t.halo").plan


def rows(n: int, doc_len: int = 200) -> list[dict]:
    return [
        {"q": f"question {i}", "doc": f"doc {i % 3} " + "text " * doc_len, "region": "ASIA"} for i in range(n)
    ]


def cost(model="Qwen/Qwen3-8B", n=50, doc_len=200, device="H100", cal=None, start_mode=None):
    return estimate(consolidate(build(model), rows(n, doc_len)), device, cal, start_mode=start_mode)


def test_estimates_have_breakdowns_and_provenance():
    c = cost()
    x, r = c.groups["x"], c.groups["r"]
    assert x.seconds > 0 and x.prefill_tokens > 0 and x.decode_tokens == 50 * 64 * 0.5
    assert {"prefill_s", "decode_s", "batch", "hw"} <= set(x.breakdown) and x.kv_bytes > 0
    assert x.defaults and not x.calibrated
    assert r.breakdown["calls"] == 1 and r.defaults
    assert "estimate:" in x.text and "default constants" in x.text


def test_more_tokens_and_bigger_models_cost_more():
    base = cost().groups["x"].seconds
    assert cost(doc_len=800).groups["x"].seconds > base
    assert cost(n=200).groups["x"].seconds > base
    assert cost(model="Qwen/Qwen3-32B").groups["x"].seconds > base


def test_prefix_reuse_reduces_prefill():
    cp = consolidate(build(), rows(50))
    g = cp.groups["x"]
    assert g.prefix.saved_tokens > 0
    with_reuse = group_costs(cp, specs.device("H100"), calib.Calibration(), BatchPolicy())["x"]
    g.prefix = None
    without = group_costs(cp, specs.device("H100"), calib.Calibration(), BatchPolicy())["x"]
    assert with_reuse.prefill_tokens < without.prefill_tokens
    assert with_reuse.breakdown["prefill_s"] < without.breakdown["prefill_s"]


def test_output_length_from_schema_text_and_history():
    plan = build()
    x, y = plan.node("x"), plan.node("y")
    assert output_tokens(x, "w.x") == (32.0, "default")
    n, source = output_tokens(y, "w.y")
    assert source == "schema" and 5 < n <= 32
    cal = calib.fit(
        [{"kind": "output", "node": "w.x", "tokens": 10}, {"kind": "output", "node": "w.x", "tokens": 20}]
    )
    assert output_tokens(x, "w.x", cal) == (15.0, "measured")


def test_calibration_changes_estimates_and_is_reported(tmp_path):
    key = dict(model="Qwen/Qwen3-8B", device="H100-SXM")
    cal = calib.fit(
        [
            {"kind": "llm", **key, "phase": "prefill", "tokens": 1000, "seconds": 1.0},
            {"kind": "llm", **key, "phase": "decode", "tokens": 10, "seconds": 2.0, "predicted_s": 1.0},
            {"kind": "tool", "tool": "sql", "seconds": 0.5},
        ]
    )
    assert cal.llm_rate["Qwen/Qwen3-8B@H100-SXM:prefill"] == 1000.0
    assert cal.llm_factor["Qwen/Qwen3-8B@H100-SXM:decode"] == 2.0
    plain, tuned = cost(start_mode="compiled"), cost(cal=cal, start_mode="compiled")  # the roofline as is
    x0, x1 = plain.groups["x"], tuned.groups["x"]
    eager = cost(start_mode="eager").groups["x"]  # no CUDA graphs: each decode iteration costs more
    iterations = eager.breakdown["iterations"]
    assert iterations > 0 and eager.breakdown["decode_s"] == pytest.approx(
        x0.breakdown["decode_s"] + iterations * roofline.start_mode_costs("H100")[1]
    )
    assert cost(cal=cal, start_mode="eager").groups["x"].breakdown["decode_s"] == pytest.approx(
        x1.breakdown["decode_s"]
    )  # a measured factor already holds the mode it was measured in
    assert x1.breakdown["prefill_s"] == pytest.approx(x1.prefill_tokens / 1000.0)
    assert x1.breakdown["decode_s"] == pytest.approx(2 * x0.breakdown["decode_s"])
    assert x1.calibrated and "calibrated" in x1.text
    assert tuned.groups["r"].seconds == 0.5 and tuned.groups["r"].calibrated
    assert counter("Qwen/Qwen3-8B", cal).source == "default"
    whole = cal.add(
        {
            "kind": "llm",
            **key,
            "phase": "group",
            "tokens": 1,
            "seconds": 3.0,
            "predicted_s": x0.breakdown["roofline_s"],
        }
    )
    assert cost(cal=whole).groups["x"].seconds == pytest.approx(3.0)
    chars = cal.add({"kind": "chars", "chars": 500, "tokens": 100})
    assert counter("Qwen/Qwen3-8B", chars).chars_per_token == 5.0
    assert cost(cal=chars).groups["x"].prefill_tokens < x1.prefill_tokens
    path = calib.save(cal, tmp_path / "cal.json")
    again = calib.load(path)
    assert again.llm_factor == cal.llm_factor and again.path == str(path)
    assert calib.load(path).add({"kind": "tool", "tool": "sql", "seconds": 1.5}).tool_s["sql"] == 1.0


def test_missing_default_calibration_is_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert calib.load().measurements == []
    with pytest.raises(FileNotFoundError):
        calib.load(tmp_path / "nope.json")


def test_reference_device_is_the_first_accelerator():
    assert reference_device(hardware.parse("cpu:16 + 2xH200")).name == "H200"
    assert reference_device(hardware.parse("cpu:4")).name == "cpu"


def test_to_problem_is_valid_and_optimizable():
    c = cost()
    problem = to_problem(c, "2xH100 + H200 + NeuPIMs + cpu:8")
    check_problem(problem)
    tasks = {t.id: t for t in problem.tasks}
    assert set(tasks["x"].duration) == {"H100-SXM", "H200", "NeuPIMs"}
    assert [d.slots for d in problem.devices if d.kind == "cpu"] == [8]
    assert set(tasks["r"].duration) == {"cpu"} and sorted(tasks["y"].deps) == ["r", "x"]
    assert tasks["x"].shardable and problem.model_bytes["Qwen/Qwen3-8B"] > 1e10
    assert problem.load_s[("Qwen/Qwen3-8B", "H100-SXM")] > problem.wake_s[("Qwen/Qwen3-8B", "H100-SXM")]
    plan = optimize(problem, method="heuristic", time_limit_s=1.0)
    plan.validate(problem)


def test_cpu_only_hardware_runs_llms_on_the_cpu():
    problem = to_problem(cost(model="HuggingFaceTB/SmolLM2-135M-Instruct", n=5), "cpu:2")
    check_problem(problem)
    assert {t.id: set(t.duration) for t in problem.tasks}["x"] == {"cpu-engine"}  # one engine on the host
    engine = next(d for d in problem.devices if d.kind == "cpu-engine")
    assert engine.slots == 1  # LLM groups run one after another, beside the tool pool


def test_explain_report_has_the_new_keys():
    plan = build()
    batch = Batch(rows=list(enumerate(rows(30), start=1)))
    report = explain_report(
        plan, batch, hardware="2xH100", optimizer="heuristic", simulate=True, time_limit_s=0.5
    )
    json.dumps(report)
    for node in report["nodes"]:
        assert {"calls", "merge", "estimate", "placement"} <= set(node)
        assert node["estimate"]["text"] and "breakdown" in node["estimate"]
    x = next(n for n in report["nodes"] if n["id"] == "x")
    assert x["prefix"]["saved_tokens"] > 0
    assert {"rewrites", "totals", "optimizer", "simulation", "calibration"} <= set(report)
    assert report["optimizer"]["method"] and report["optimizer"]["text"]
    text = render_text(copy.deepcopy(report))
    assert (
        "estimate:" in text and "Optimizer:" in text and "Rewrite: merged 30 SQL calls of `r` into 1" in text
    )
    no_hw = explain_report(plan, batch)
    assert "optimizer" not in no_hw and no_hw["totals"]["device"] == "H100-SXM"
    priced = physical_plan(plan, batch, "H100", optimizer="heuristic", time_limit_s=1.0)
    assert {p.task for p in priced.physical.placements} == {"x", "r", "y"}
    assert priced.execution.placement == {"x": ["gpu0"], "y": ["gpu0"]}  # LLM nodes, where placed


@pytest.mark.parametrize(("text", "message"), [("2 x", "cannot parse"), ("3 x Foo", "unknown device 'Foo'")])
def test_a_wrong_hardware_description_raises_one_of_the_hardware_errors(text, message):
    with pytest.raises(HARDWARE_ERRORS, match=message):
        parse_hardware(text)
