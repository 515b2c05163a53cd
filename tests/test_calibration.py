"""Calibration from measured engine batches: the batch-time law, and the cost model pricing with it."""

import json

import pytest

from halo import api, calibration
from halo.batching import BatchPolicy, fusion_sets
from halo.consolidate import consolidate
from halo.cost import estimate

LAW = {"batch_s": 0.05, "step_s": 0.02, "seq_step_s": 0.0004, "token_s": 2e-5}


def _rows(law, shapes, device="H100-SXM"):
    return [
        {
            "kind": "llm_batch",
            "model": "m",
            "device": device,
            "n": n,
            "steps": k,
            "prefill_tokens": p,
            "seconds": calibration.engine_seconds(law, n, k, p),
        }
        for n, k, p in shapes
    ]


SHAPES = [(1, 64, 300), (8, 64, 2400), (32, 96, 9000), (16, 32, 5000), (4, 128, 800), (64, 64, 20000)]


def test_the_fit_recovers_every_term_of_the_law():
    got = calibration.fit(_rows(LAW, SHAPES)).engine["m@H100-SXM"]
    for term, value in LAW.items():
        assert got[term] == pytest.approx(value, rel=1e-6)
    assert got["batches"] == len(SHAPES) and got["rms_s"] == pytest.approx(0, abs=1e-9)


def test_no_term_goes_negative_to_explain_noise():
    # A flat engine (cost per step only) measured with noise: the fit keeps every term >= 0.
    rows = _rows({"batch_s": 0.0, "step_s": 0.03, "seq_step_s": 0.0, "token_s": 0.0}, SHAPES)
    for r, noise in zip(rows, (0.9, 1.1, 0.95, 1.05, 1.0, 0.97), strict=True):
        r["seconds"] *= noise
    got = calibration.fit(rows).engine["m@H100-SXM"]
    assert all(got[t] >= 0 for t in calibration.ENGINE_TERMS)
    assert got["step_s"] == pytest.approx(0.03, rel=0.1)


def test_substituted_models_are_named_in_the_fit(tmp_path):
    rows = _rows(LAW, SHAPES)
    for r in rows:
        r["ran_as"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    path = tmp_path / "cal.json"
    calibration.save(calibration.fit(rows), path)
    again = calibration.load(path)
    assert again.engine["m@H100-SXM"]["ran_as"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert again.engine["m@H100-SXM"]["step_s"] == pytest.approx(0.02, rel=1e-6)


def test_a_retired_measurement_kind_is_a_clear_error(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"halo_calibration": 1, "measurements": [{"kind": "llm_steps"}]}))
    with pytest.raises(calibration.CalibrationError, match="unknown measurement kind 'llm_steps'"):
        calibration.load(path)


FANOUT = """
workflow w(q: text) {
  model m = "Qwen/Qwen2.5-1.5B-Instruct"
  a = llm(m, prompt = "A: {q}", max_tokens = 64, temperature = 0)
  b = llm(m, prompt = "B: {q}", max_tokens = 64, temperature = 0)
  c = llm(m, prompt = "C: {a} {b}", max_tokens = 32, temperature = 0)
  return r = c
}
"""


def plan_of(src):
    return api.compile(src, filename="t.halo").plan


def _costed(n, cal, policy):
    plan = plan_of(FANOUT)
    return estimate(
        consolidate(plan, [{"q": f"question {i}"} for i in range(n)], cal), "1 x H100-SXM", cal, policy
    )


def test_independent_nodes_that_decode_alike_are_priced_as_shared_batches():
    plan = plan_of(FANOUT)
    assert fusion_sets(plan) == [["a", "b"]]
    law = {**LAW, "seq_step_s": 0.0}
    cal = calibration.fit([{**r, "model": "Qwen/Qwen2.5-1.5B-Instruct"} for r in _rows(law, SHAPES)])
    costed = _costed(40, cal, BatchPolicy(max_batch=128, batch_tokens=1 << 20))
    a, b, c = (costed.groups[x] for x in "abc")
    # a and b: 80 calls in one batch of 64 steps, shared by calls; c: 40 calls, 32 steps.
    assert a.breakdown["engine_batches"] == [80] and a.breakdown["fused_with"] == ["b"]
    assert a.seconds + b.seconds == pytest.approx(0.05 + 64 * 0.02 + 2e-5 * 80 * a.prompt_tokens, rel=0.05)
    assert c.seconds == pytest.approx(0.05 + 32 * 0.02 + 2e-5 * 40 * c.prompt_tokens, rel=0.05)
    assert "engine law from 6 batches" in " ".join(a.calibrated)


def test_a_plan_without_fusion_prices_every_group_alone():
    law = {**LAW, "seq_step_s": 0.0}
    cal = calibration.fit([{**r, "model": "Qwen/Qwen2.5-1.5B-Instruct"} for r in _rows(law, SHAPES)])
    policy = BatchPolicy(max_batch=128, batch_tokens=1 << 20)
    fused = _costed(40, cal, policy).groups
    plan = plan_of(FANOUT)
    alone = estimate(
        consolidate(plan, [{"q": f"question {i}"} for i in range(40)], cal),
        "1 x H100-SXM",
        cal,
        policy,
        fuse=False,
    ).groups
    assert alone["a"].breakdown["fused_with"] == [] and alone["a"].breakdown["engine_batches"] == [40]
    # two batches of 64 steps instead of one: about one more batch's fixed and per-step cost
    extra = (alone["a"].seconds + alone["b"].seconds) - (fused["a"].seconds + fused["b"].seconds)
    assert extra == pytest.approx(0.05 + 64 * 0.02, rel=0.05)


def test_the_batch_policy_sets_how_many_batches_are_priced():
    cal = calibration.fit([{**r, "model": "Qwen/Qwen2.5-1.5B-Instruct"} for r in _rows(LAW, SHAPES)])
    small = _costed(40, cal, BatchPolicy(max_batch=8, batch_tokens=1 << 20)).groups["c"]
    large = _costed(40, cal, BatchPolicy(max_batch=64, batch_tokens=1 << 20)).groups["c"]
    assert small.breakdown["engine_batches"] == [8] * 5 and large.breakdown["engine_batches"] == [40]
    assert small.seconds > 3 * large.seconds  # five times the fixed and per-step costs


def test_policy_sizes_balance_batches_within_both_limits():
    assert BatchPolicy(32, 1 << 20).sizes(70, 100) == [24, 23, 23]
    assert BatchPolicy(32, 1000).sizes(10, 300) == [3, 3, 2, 2]  # three 300-token calls per 1,000 tokens
    assert BatchPolicy(32, 100).sizes(2, 300) == [1, 1]  # an oversized call still runs alone
    assert BatchPolicy().sizes(0, 10) == []
    with pytest.raises(ValueError):
        BatchPolicy(max_batch=0)


def test_explain_chooses_the_batch_size_the_engine_law_favours():
    from halo.batch import Batch
    from halo.pipeline import explain_report

    # A flat engine (cost per step, not per request): the biggest batch wins; it is what the run gets.
    flat = calibration.fit(
        [{**r, "model": "Qwen/Qwen2.5-1.5B-Instruct"} for r in _rows({**LAW, "seq_step_s": 0.0}, SHAPES)]
    )
    rows = Batch(rows=[(i, {"q": f"question {i}"}) for i in range(200)])
    report = explain_report(plan_of(FANOUT), rows, "1 x H100-SXM", calibration=flat)
    assert (
        report["batching"]["max_batch"] == 256
        and "chosen by predicted LLM time" in report["batching"]["text"]
    )
    given = explain_report(
        plan_of(FANOUT), rows, "1 x H100-SXM", calibration=flat, policy=BatchPolicy(16, 8192)
    )
    assert given["batching"]["max_batch"] == 16 and "(given)" in given["batching"]["text"]

    def llm_s(r):
        return sum(n["estimate"]["seconds"] for n in r["nodes"] if n["kind"] == "llm")

    assert llm_s(given) > 5 * llm_s(report)  # 38 batches of <= 16 against 3 of <= 256
