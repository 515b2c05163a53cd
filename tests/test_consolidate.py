"""Consolidation merges exactly what is safe; prefix groups and their order."""

from __future__ import annotations

import pytest

from halo import api
from halo.consolidate import call_key, consolidate
from halo.prefix import lcp, prefix_groups
from halo.tokens import TokenCounter

HEAD = """workflow w(q: text, n: int, doc: text = "") {
  model m = "Qwen/Qwen3-8B"
  db d = duckdb(":memory:")
"""


def build(body: str, ret: str = "k = 1"):
    src = HEAD + body + f"\n  return {ret}\n}}\n"
    return api.compile(src, filename="t.halo").plan


def groups(body: str, rows: list[dict], ret: str = "k = 1"):
    return consolidate(build(body, ret), rows).groups


ROWS = [{"q": "a", "n": 1}, {"q": "a", "n": 1}, {"q": "b", "n": 2}, {"q": "a", "n": 1}]


def test_llm_temperature_zero_merges_duplicated_inputs():
    g = groups('x = llm(m, prompt = "Q: {q}", temperature = 0)', ROWS)["x"]
    assert (g.instances, g.calls, g.estimated) == (4, 2, False)
    assert g.row_call == [0, 0, 1, 0]


def test_llm_sampling_without_seed_never_merges_with_seed_merges():
    g = groups('x = llm(m, prompt = "Q: {q}", temperature = 0.7)', ROWS)["x"]
    assert g.calls == 4 and "seed" in g.merge
    plan = build('x = llm(m, prompt = "Q: {q}", temperature = 0.7)')
    assert call_key(plan.node("x"), {"q": "a", "n": 1}) is None
    g = groups('x = llm(m, prompt = "Q: {q}", temperature = 0.7, seed = 7)', ROWS)["x"]
    assert g.calls == 2


def test_llm_key_depends_on_model_prompt_and_options():
    a = build('x = llm(m, prompt = "Q: {q}", max_tokens = 10)').node("x")
    b = build('x = llm(m, prompt = "Q: {q}", max_tokens = 20)').node("x")
    c = build('x = llm(m, system = "S", prompt = "Q: {q}", max_tokens = 10)').node("x")
    env = {"q": "a", "n": 1}
    keys = {call_key(a, env), call_key(b, env), call_key(c, env)}
    assert len(keys) == 3 and call_key(a, env) == call_key(a, dict(env))


def test_sql_reads_merge_on_normalized_query_and_params():
    body = (
        'x = sql(d, "SELECT  n_name FROM nation\\n  WHERE n_key = :k", k = n)\n'
        '  y = sql(d, "select n_name from nation where n_key = :k", k = n)'
    )
    plan = build(body)
    env = {"q": "a", "n": 1}
    assert call_key(plan.node("x"), env) == call_key(plan.node("y"), env)
    assert call_key(plan.node("x"), env) != call_key(plan.node("x"), {"q": "a", "n": 2})
    g = consolidate(plan, ROWS).groups["x"]
    assert (g.calls, g.estimated) == (2, False)


def test_sql_writes_never_merge_and_keep_order():
    plan = build(
        'a = sql(d, "INSERT INTO t VALUES (:q)", q = q)\n  b = sql(d, "DELETE FROM t WHERE x = :q", q = q)'
    )
    cp = consolidate(plan, ROWS)
    assert cp.groups["a"].calls == 4 and cp.groups["a"].row_call == [0, 1, 2, 3]
    assert call_key(plan.node("a"), ROWS[0]) is None
    assert cp.graph.has_edge("a", "b")  # declared order kept


def test_http_get_merges_post_does_not():
    g = groups('x = http("GET", "https://h/{q}", query = {n: n})', ROWS)["x"]
    assert g.calls == 2
    g = groups('x = http("POST", "https://h/{q}", body = {n: n})', ROWS)["x"]
    assert g.calls == 4 and "not merged" in g.merge


def test_py_merges_only_when_pure():
    assert groups('x = py("m:f", pure = true, a = q)', ROWS)["x"].calls == 2
    assert groups('x = py("m:f", a = q)', ROWS)["x"].calls == 4


def test_downstream_of_llm_is_estimated():
    body = 'x = llm(m, prompt = "Q: {q}")\n  y = llm(m, prompt = "Check: {x} for {n}")\n  z = py("m:f", pure = true, a = x)'
    gs = groups(body, ROWS)
    assert gs["y"].estimated and gs["y"].calls == 2 and "estimated" in gs["y"].merge
    assert gs["z"].estimated and gs["z"].calls == 2
    assert gs["y"].upstream_holes == ["x"]


def test_estimate_uses_only_plan_time_known_inputs():
    rows = [{"q": "a", "n": i} for i in range(5)]
    gs = groups('x = llm(m, prompt = "Q: {q}")\n  y = llm(m, prompt = "{x} {n}")', rows)
    assert gs["x"].calls == 1 and gs["y"].calls == 5


def test_rewrites_are_reported():
    cp = consolidate(build('x = sql(d, "select 1 where :q = :q", q = q)'), ROWS)
    assert any("merged 4 SQL calls of `x` into 2" in r for r in cp.rewrites)


# -- prefix groups ------------------------------------------------------------------------------------------

CPT = TokenCounter(None, "default", 4.0)


def test_lcp():
    assert lcp("abcd", "abxy") == 2 and lcp("abc", "abc") == 3 and lcp("", "a") == 0


def test_shared_system_prompt_forms_a_root_group():
    sys = "You are a meticulous assistant who answers briefly. " * 4
    rows = [{"q": f"question {i}", "n": i} for i in range(6)]
    g = groups(f'x = llm(m, system = "{sys}", prompt = "{{q}}")', rows)["x"]
    assert g.prefix.root.prefix_chars >= len(sys)
    assert g.prefix.saved_tokens == g.prefix.root.prefix_tokens * 5


def test_member_order_puts_shared_contexts_together():
    docs = ["D" * 300, "E" * 300]
    texts = [f"sys\n{docs[i % 2]} q{i}" for i in range(6)]
    plan = prefix_groups(texts, CPT)
    assert {tuple(sorted(g.members)) for g in plan.groups} == {(0, 2, 4), (1, 3, 5)}
    runs = [texts[i][:304] for i in plan.order]
    assert runs == sorted(runs)  # members of a group are adjacent in run order
    unsorted = sum(lcp(texts[a], texts[b]) for a, b in zip(range(5), range(1, 6), strict=True))
    ordered = sum(lcp(texts[a], texts[b]) for a, b in zip(plan.order, plan.order[1:], strict=False))
    assert ordered > unsorted


def test_prefix_of_downstream_prompt_stops_at_upstream_hole():
    rows = [{"q": "a", "n": 1, "doc": "X" * 400}, {"q": "b", "n": 2, "doc": "X" * 400}]
    g = groups('x = llm(m, prompt = "{q}")\n  y = llm(m, prompt = "{doc} then {x} and {q}")', rows)["y"]
    assert all(lead == "X" * 400 + " then " for lead in g.leads)
    assert g.prefix.root.prefix_chars == len(g.leads[0])


@pytest.mark.parametrize("n", [0, 1])
def test_small_batches(n):
    g = groups('x = llm(m, prompt = "{q}")', ROWS[:n])["x"]
    assert g.calls == n
