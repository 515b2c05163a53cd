"""Schema-constrained decoding on the real SmolLM2 engine: valid typed JSON from a 135M model, greedy
text unchanged for unconstrained rows, and a budget too small for the JSON reported as an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from halo import api
from halo.execution import for_mode
from halo.runtime.engines import SMOLLM2_ID, GenRequest, make_engine
from halo.runtime.engines.hf import _grammars
from halo.runtime.run import execute

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
VOTE = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "votes": {"type": "integer"}},
    "required": ["answer", "votes"],
}


@pytest.fixture(scope="module")
def engine():
    eng = make_engine("hf")
    eng.load(SMOLLM2_ID)
    yield eng
    eng.close()


def req(prompt: str, **kw) -> GenRequest:
    return GenRequest(model=SMOLLM2_ID, prompt=prompt, max_tokens=kw.pop("max_tokens", 24), **kw)


def test_schema_rows_are_valid_json_and_plain_rows_unchanged(engine):
    plain = req("What is SQL?", max_tokens=10)
    alone = engine.generate([plain])[0]
    mixed = engine.generate(
        [
            req("Write a long poem about the sea.", json_schema=VOTE),
            plain,
            req("Is 7 * 14 = 98? Vote.", json_schema=VOTE, temperature=0.8, seed=1),
        ]
    )
    assert mixed[1].error is None and mixed[1].text == alone.text
    for res in (mixed[0], mixed[2]):
        assert res.error is None, res.error
        value = json.loads(res.text)
        assert set(value) == {"answer", "votes"} and isinstance(value["answer"], str)
        assert isinstance(value["votes"], int) and not isinstance(value["votes"], bool)


def test_tight_budget_still_closes_the_json(engine):
    """The model would write a poem; the grammar plus the closing path fit the object in 16 tokens."""
    for temperature in (0.0, 1.0):
        res = engine.generate(
            [
                req(
                    "Write a long poem about the sea.",
                    json_schema=VOTE,
                    max_tokens=16,
                    temperature=temperature,
                    seed=3,
                )
            ]
        )[0]
        assert res.error is None and res.completion_tokens <= 16
        assert set(json.loads(res.text)) == {"answer", "votes"}


def test_budget_below_the_smallest_json_is_an_error(engine):
    res = engine.generate([req("Vote.", json_schema=VOTE, max_tokens=6), req("Hi", max_tokens=3)])
    assert res[0].error and "max_tokens=6 ran out before the JSON output was complete" in res[0].error
    assert res[1].error is None


def test_schema_compiles_once_and_bad_schema_fails_alone(engine):
    engine.generate(
        [req("a", json_schema=VOTE, max_tokens=16), req("b", json_schema=dict(VOTE), max_tokens=16)]
    )
    grammars = _grammars(engine._loaded[engine._declared[SMOLLM2_ID]])
    before = grammars.compiled_count()
    engine.generate([req("c", json_schema=VOTE, max_tokens=16)])
    assert grammars.compiled_count() == before
    bad, good = engine.generate([req("x", json_schema={"type": "no-such-type"}), req("y", max_tokens=3)])
    assert bad.error and bad.error.startswith("json_schema:") and good.error is None


def _run(plan, rows, tmp_path: Path) -> tuple[int, list[dict]]:
    out = tmp_path / "out.jsonl"
    result = execute(for_mode(plan, "halo"), rows, out, "fp")
    return result.stats.failed, [json.loads(line) for line in out.read_text().splitlines()]


def test_llm_voting_workload_has_no_failed_input(tmp_path):
    path = ROOT / "workloads" / "llm_voting.halo"
    plan = api.compile(path.read_text(), filename=str(path)).plan
    lines = (ROOT / "workloads" / "llm_voting.jsonl").read_text().splitlines()[:4]
    failed, records = _run(plan, [(i, json.loads(line)) for i, line in enumerate(lines)], tmp_path)
    assert failed == 0, records
    assert len(records) == 4
    for rec in records:
        assert isinstance(rec["outputs"]["answer"], str)
        assert isinstance(rec["outputs"]["votes"], int) and not isinstance(rec["outputs"]["votes"], bool)


def test_triage_struct_output_is_typed(tmp_path):
    src = """workflow triage(ticket: text) {
  model m = "HuggingFaceTB/SmolLM2-135M-Instruct"
  t = llm(m, system = "Classify the support ticket.", prompt = "Ticket: {ticket}", max_tokens = 24,
    temperature = 0) -> { category: text, urgent: bool, priority: int }
  return category = t.category, urgent = t.urgent, priority = t.priority
}
"""
    plan = api.compile(src, filename=str(tmp_path / "triage.halo")).plan
    tickets = [
        "My invoice is wrong, I was charged twice.",
        "The site is down for all our users!",
        "How do I change my password?",
        "Please add a dark mode.",
    ]
    failed, records = _run(plan, [(i, {"ticket": t}) for i, t in enumerate(tickets)], tmp_path)
    assert failed == 0, records
    for rec in records:
        out = rec["outputs"]
        assert isinstance(out["category"], str) and isinstance(out["urgent"], bool)
        assert isinstance(out["priority"], int) and not isinstance(out["priority"], bool)
