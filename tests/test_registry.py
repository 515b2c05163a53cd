"""One source of truth each: the operator-kind registry and its defaults, the decoding key, the prefix
identity, the expected output tokens and the engine batch-time law."""

from __future__ import annotations

import pytest

from halo import api, calibration
from halo.batching import decoding_key, fusion_sets
from halo.consolidate import call_key, consolidate, never_merges
from halo.cost import estimate, to_problem
from halo.prefix import prefix_key
from halo.runtime.engines.base import GenRequest
from halo.runtime.llm_requests import build_request
from halo.tokens import P90_AFTER, expected_output_tokens
from halo.types import OPS

MODEL = "Qwen/Qwen3-8B"
HEAD = f'''workflow w(q: text, n: int, t: float) {{
  model m = "{MODEL}"
  db d = duckdb(":memory:")
'''


def build(body: str, ret: str = "k = 1"):
    return api.compile(HEAD + body + f"\n  return {ret}\n}}\n", filename="t.halo").plan


def test_options_left_out_resolve_to_the_registry_defaults():
    p = build(
        'a = llm(m, prompt = "A {q}")\n  h = http("https://h/{q}")\n'
        '  s = sql(d, "select 1 as x")\n  f = py("m:f", x = q)'
    )
    a, h, s, f = (p.node(n) for n in "ahsf")
    assert (a.option("max_tokens"), a.option("temperature"), a.option("top_p"), a.option("seed")) == (
        256,
        0.0,
        None,
        None,
    )
    assert (h.option("method"), h.option("timeout"), h.option("retries"), h.option("follow_redirects")) == (
        "GET",
        30.0,
        2,
        "same-origin",
    )
    assert (s.option("timeout"), f.option("timeout"), f.option("pure")) == (60.0, 60.0, False)
    assert a.option("max_tokens", 7) == 7  # an explicit default still wins
    assert GenRequest("m", "p").max_tokens == OPS["llm"].defaults["max_tokens"]


def test_given_options_win_over_the_defaults():
    p = build('a = llm(m, prompt = "A", max_tokens = 9, temperature = t)')
    assert p.node("a").option("max_tokens") == 9
    assert p.node("a").option("temperature") == 0.0  # not a constant: the default


def test_labels_and_tool_kinds_come_from_the_registry():
    assert {k: (s.label, s.tool) for k, s in OPS.items()} == {
        "llm": ("LLM", False),
        "sql": ("SQL", True),
        "http": ("HTTP", True),
        "py": ("Python", True),
    }


def test_llm_calls_that_decode_alike_fuse_whether_or_not_the_default_is_written():
    p = build(
        'a = llm(m, prompt = "A {q}")\n  b = llm(m, prompt = "B {q}", max_tokens = 256, temperature = 0)\n'
        '  c = llm(m, prompt = "C {q}", max_tokens = 64)'
    )
    assert decoding_key(p.node("a")) == decoding_key(p.node("b")) != decoding_key(p.node("c"))
    assert fusion_sets(p) == [["a", "b"]]


def test_an_option_that_varies_per_input_never_fuses():
    p = build('a = llm(m, prompt = "A {q}")\n  b = llm(m, prompt = "B {q}", temperature = t)')
    assert decoding_key(p.node("a")) != decoding_key(p.node("b"))
    assert fusion_sets(p) == []


def test_written_defaults_do_not_split_one_call():
    p = build(
        'a = llm(m, prompt = "A {q}")\n  b = llm(m, prompt = "A {q}", max_tokens = 256, temperature = 0)'
    )
    env = {"q": "x", "n": 1, "t": 0.0}
    assert call_key(p.node("a"), env) == call_key(p.node("b"), env) is not None


@pytest.mark.parametrize(
    ("method", "effect"),
    [("GET", False), ("HEAD", False), ("OPTIONS", False), ("POST", True), ("PUT", True), ("DELETE", True)],
)
def test_side_effect_and_merging_follow_one_http_rule(method, effect):
    op = build(f'h = http("{method}", "https://h/{{q}}")').node("h")
    assert op.side_effect is effect
    assert (never_merges(op) is None) is not effect


def test_the_cost_models_prefix_group_is_the_requests_prefix_key():
    p = build(
        'a = llm(m, system = "You are terse.", prompt = "Q: {q}")\n'
        '  b = llm(m, system = "You are terse.", prompt = "Q: {q} again")\n'
        '  c = llm(m, system = "Context {q}", prompt = "Q: {q}")\n'
        '  e = llm(m, system = "Same {n}", prompt = "Q")'
    )
    rows = [{"q": f"q{i}", "n": 1, "t": 0.0} for i in range(4)]
    tasks = {t.id: t for t in to_problem(estimate(consolidate(p, rows)), "1 x H100-SXM + cpu:4").tasks}
    for node in ("a", "b", "e"):
        keys = {build_request(p.node(node), r, True, None).prefix_key for r in rows}
        assert keys == {tasks[node].prefix_group}
        assert keys == {prefix_key(p.node(node), build_request(p.node(node), rows[0], True, None).system)}
    assert tasks["a"].prefix_group == tasks["b"].prefix_group != tasks["e"].prefix_group
    assert tasks["c"].prefix_group is None  # the system text differs per call


def test_a_prompt_with_no_shared_text_has_no_prefix_group():
    p = build('a = llm(m, prompt = "{q}")')
    rows = [{"q": f"q{i}", "n": 1, "t": 0.0} for i in range(3)]
    assert consolidate(p, rows).groups["a"].prefix_key is None


def test_expected_output_tokens_is_max_tokens_then_the_p90():
    op = build('a = llm(m, prompt = "A", max_tokens = 100)').node("a")
    assert expected_output_tokens(op) == expected_output_tokens(op, [5] * (P90_AFTER - 1)) == 100
    assert expected_output_tokens(op, list(range(1, 11))) == 9
    assert expected_output_tokens(build('a = llm(m, prompt = "A")').node("a")) == 256


def test_the_cost_model_prices_engine_batches_with_the_one_law():
    law = {"batch_s": 0.05, "step_s": 0.02, "seq_step_s": 0.0004, "token_s": 2e-5}
    shapes = [(1, 64, 300), (8, 64, 2400), (32, 96, 9000), (16, 32, 5000), (4, 128, 800)]
    cal = calibration.fit(
        [
            {
                "kind": "llm_batch",
                "model": MODEL,
                "device": "H100-SXM",
                "n": n,
                "steps": k,
                "prefill_tokens": t,
                "seconds": calibration.engine_seconds(law, n, k, t),
            }
            for n, k, t in shapes
        ]
    )
    p = build('a = llm(m, system = "Be brief.", prompt = "Q: {q}", max_tokens = 40)')
    g = estimate(
        consolidate(p, [{"q": f"q{i}", "n": 1, "t": 0.0} for i in range(70)]), calibration=cal
    ).groups["a"]
    b = g.breakdown
    fitted = cal.engine[f"{MODEL}@H100-SXM"]
    phases = [
        calibration.engine_phases(fitted, n, b["steps"], n * (g.prompt_tokens - b["cached_prefix_tokens"]))
        for n in b["engine_batches"]
    ]
    assert len(b["engine_batches"]) > 1
    assert b["prefill_s"] == pytest.approx(sum(x for x, _ in phases))
    assert b["decode_s"] == pytest.approx(sum(y for _, y in phases))
    assert g.seconds == pytest.approx(
        sum(
            calibration.engine_seconds(
                fitted, n, b["steps"], n * (g.prompt_tokens - b["cached_prefix_tokens"])
            )
            for n in b["engine_batches"]
        )
    )
