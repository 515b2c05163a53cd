"""Retained KV across a tool call (Continuum's time-to-live): the hf engine's store and the executor's rule."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
from plans import split

from halo import api
from halo.execution import for_mode
from halo.kv_retention import kv_retention
from halo.runtime.engines import SMOLLM2_ID, GenRequest, make_engine
from halo.runtime.run import execute

pytestmark = pytest.mark.slow

SYSTEM = (
    "You are a careful data analyst for an online shop. The orders table has the columns order_id, "
    "customer_id, order_date and total; the customers table has customer_id, name and country."
)
FIRST = [
    "User: Which table holds the order totals?\nAssistant:",
    "User: Name one column of customers.\nAssistant:",
]
TURN = "<|im_end|>\n<|im_start|>assistant\n{reply}<|im_end|>\n<|im_start|>user\n"  # SmolLM2's chat format


def req(prompt: str, **kw) -> GenRequest:
    return GenRequest(
        model=SMOLLM2_ID, prompt=prompt, system=SYSTEM, max_tokens=kw.pop("max_tokens", 6), **kw
    )


@pytest.fixture(scope="module")
def fresh():
    """An engine that never retains nor reuses: the reference output."""
    eng = make_engine("hf", prefix_reuse=False, retain_entries=0)
    eng.load(SMOLLM2_ID)
    yield eng
    eng.close()


@pytest.fixture()
def engine():
    eng = make_engine("hf")
    eng.load(SMOLLM2_ID)
    yield eng
    eng.close()


def test_follow_up_reuses_the_whole_first_conversation(engine, fresh):
    firsts = engine.generate([req(p, retain_s=30) for p in FIRST])  # one batch, two retained rows
    assert all(r.error is None for r in firsts) and engine.retained_stats()["entries"] == 2
    # the follow-up is the first turn, its reply and a new user turn: its tokens extend the retained ones
    follow = [
        req(p + TURN.format(reply=r.text) + "And which column is the date?", max_tokens=6)
        for p, r in zip(FIRST, firsts, strict=True)
    ]
    other = GenRequest(model=SMOLLM2_ID, prompt="What is SQL?", max_tokens=6)  # shares nothing: plain
    reused = engine.generate([*follow, other])  # one generate call: two retained heads and a plain row
    expected = fresh.generate([*follow, other])
    assert [r.text for r in reused] == [r.text for r in expected]
    for first, r in zip(firsts, reused[:2], strict=True):
        assert r.cached_tokens >= first.prompt_tokens + first.completion_tokens - 1
        assert r.cached_tokens < r.prompt_tokens
    assert reused[2].cached_tokens == 0


def test_text_continuation_reuses_the_first_prompt(engine, fresh):
    first = engine.generate([req(FIRST[0], retain_s=30)])[0]
    follow = req(f"{FIRST[0]} {first.text}\nUser: And the date column?\nAssistant:")
    reused, expected = engine.generate([follow])[0], fresh.generate([follow])[0]
    assert reused.text == expected.text
    assert reused.cached_tokens >= fresh.count_tokens(SMOLLM2_ID, SYSTEM + FIRST[0]) - 2


def test_ttl_expiry_drops_the_kv(engine):
    engine.generate([req(FIRST[0], retain_s=0.3)])
    assert engine.retained_stats()["entries"] == 1
    time.sleep(0.4)
    assert engine.retained_stats() == {"entries": 0, "bytes": 0}
    assert engine.generate([req(FIRST[0] + " Tables are")])[0].cached_tokens == 0


def test_memory_and_count_bounds():
    eng = make_engine("hf", retain_entries=2)
    eng.generate([req(f"Question {i}: {FIRST[0]}", retain_s=30) for i in range(3)])
    one = eng.retained_stats()["bytes"] // 2
    assert eng.retained_stats()["entries"] == 2
    eng.retain_bytes = int(one * 1.5)
    eng.generate([req(f"Question 9: {FIRST[1]}", retain_s=30)])
    stats = eng.retained_stats()
    assert stats["entries"] == 1 and 0 < stats["bytes"] <= eng.retain_bytes
    eng.retain_bytes = 1000  # smaller than any entry: nothing is kept
    eng.generate([req(FIRST[1], retain_s=30)])
    assert eng.retained_stats()["entries"] == 0
    eng.close()


def test_top_p_sampling_is_reproducible(engine):
    a, b = (
        engine.generate([req("Tell me a story.", temperature=0.9, top_p=0.5, seed=3)])[0] for _ in range(2)
    )
    assert a.error is None and a.text == b.text
    assert engine.generate([req("x", top_p=1.5)])[0].error.startswith("top_p")


# ---- executor -------------------------------------------------------------------------------------

WORKFLOW = """
workflow w(q: text) {{
  model m = "{model}"
  db shop = duckdb("{db}")
  a = llm(m, system = "{system}", prompt = "User: {{q}}\\nAssistant:", max_tokens = 6, temperature = 0)
  t = sql(shop, "SELECT count(*) AS n FROM items WHERE length(:a) > 0", a = a)
  b = llm(m, system = "{system}",
    prompt = "User: {{q}}\\nAssistant: {{a}}\\nTool: {{t.n}} items.\\nUser: Say it shorter.\\nAssistant:",
    max_tokens = 6, temperature = 0)
  c = llm(m, system = "Another system.", prompt = "{{a}} Summarize.", max_tokens = 4)
  return a, b, c
}}"""


def build(tmp_path: Path):
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE items (id INTEGER)")
    con.execute("INSERT INTO items VALUES (1), (2)")
    con.close()
    src = WORKFLOW.format(model=SMOLLM2_ID, db=db, system=SYSTEM)
    return api.compile(src, filename=str(tmp_path / "w.halo")).plan


def test_rule_fires_for_a_then_tool_then_b(tmp_path):
    plan = build(tmp_path)
    assert kv_retention(plan, 30) == {"a": 30.0}
    assert kv_retention(plan, None) == {} and kv_retention(plan, 0) == {}


def test_executor_retains_across_the_sql_call(tmp_path):
    plan = build(tmp_path)
    rows = [(1, {"q": "Which table holds order totals?"}), (2, {"q": "Name a customer column."})]
    on = execute(for_mode(plan, "halo"), rows, tmp_path / "on.jsonl", "fp")
    off = execute(split(plan, kv=False)[0], rows, tmp_path / "off.jsonl", "fp")
    cached_on, cached_off = on.stats.nodes["b"].cached_tokens, off.stats.nodes["b"].cached_tokens
    assert cached_off > 0  # the prefix-key group already shares the system prompt
    assert cached_on >= cached_off + 2 * 8  # retention adds each input's own first prompt (>= 8 tokens)
    assert (tmp_path / "on.jsonl").read_text() == (tmp_path / "off.jsonl").read_text()
