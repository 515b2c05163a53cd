"""The executor's parts on plain data: batch formation, request building and the retry rule, the call
cache; and the retry rule through the executor on the fake engine."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from halo import api
from halo.batch import Batch
from halo.execution import for_mode
from halo.prefix import prefix_key
from halo.runtime.batch_formation import BatchFormation
from halo.runtime.call_cache import Call, CallCache
from halo.runtime.engines.base import GenRequest, GenResult, json_cut_error
from halo.runtime.engines.fake import FakeEngine
from halo.runtime.executor import Executor, RunOptions
from halo.runtime.journal import Journal
from halo.runtime.llm_requests import build_request, expected_tokens, retryable
from halo.runtime.toolbox import Toolbox


@dataclass
class _Q:
    node: str
    request: GenRequest


def _q(node: str, prompt: str, prefix: str | None = None, max_tokens: int = 10) -> _Q:
    return _Q(node, GenRequest("m", prompt, max_tokens=max_tokens, prefix_key=prefix))


def _formation(max_batch=4, batch_tokens=1000, siblings=None, models=None) -> BatchFormation:
    nodes = ["a", "b", "c"]
    return BatchFormation(
        max_batch,
        batch_tokens,
        siblings or {},
        {n: i for i, n in enumerate(nodes)},
        models or dict.fromkeys(nodes, "m"),
        _cost,
    )


def _cost(c: _Q) -> int:
    return len(c.request.prompt) // 4 + c.request.max_tokens


# -- batch formation ------------------------------------------------------------------------------------


def test_a_node_waits_until_its_batch_is_full_or_nothing_is_upstream():
    f = _formation(max_batch=3)
    f.add(_q("a", "p1"))
    f.add(_q("a", "p2"))
    assert not f.ready("a", {"a": 5})
    assert f.next_batch({"a": 5}, resident=[], idle=False) == []  # other work is in flight: wait
    assert len(f.next_batch({"a": 5}, resident=[], idle=True)) == 2  # nothing in flight: go anyway
    f.add(_q("a", "p3"))
    assert f.ready("a", {"a": 0})  # nothing upstream
    for p in ("p4", "p5", "p6"):
        f.add(_q("a", p))
    assert f.ready("a", {"a": 9}) and len(f.next_batch({"a": 9}, [], idle=False)) == 3  # a full batch


def test_online_a_queued_call_waits_at_most_max_wait_s_for_its_batch_to_fill():
    f = _formation(max_batch=3)
    f.max_wait_s = 0.05
    f.add(_q("a", "p1"))
    assert not f.ready("a", {"a": 5})  # upstream never drains when requests keep arriving
    f.since["a"] -= 0.06  # the oldest call has waited longer than the bound
    assert f.ready("a", {"a": 5}) and len(f.next_batch({"a": 5}, [], idle=False)) == 1
    f.add(_q("a", "p2"))
    assert not f.ready("a", {"a": 5})  # a new oldest call waits afresh


def test_siblings_wait_for_each_other_and_fuse():
    f = _formation(max_batch=8, siblings={"a": ["b"], "b": ["a"]})
    f.add(_q("a", "p1"))
    assert not f.ready("a", {"a": 0, "b": 2})  # b's instances are still upstream
    f.add(_q("b", "q1"))
    f.add(_q("b", "q2"))
    batch = f.next_batch({"a": 0, "b": 0}, [], idle=False)
    assert [c.node for c in batch] == ["a", "b", "b"]  # plan rank first, the sibling joins


def test_only_siblings_share_a_batch():
    # Before: any ready nodes that decoded alike fused, also ones the cost model does not price together
    # (llm_debate's pro1 and pro2, on one path): batches of 8 and 4 where the plan priced 6 and 6.
    f = _formation(siblings={"a": ["c"], "c": ["a"]})
    for n in "abc":
        f.add(_q(n, n))
    unstarted = dict.fromkeys("abc", 0)
    assert [c.node for c in f.next_batch(unstarted, [], False)] == ["a", "c"]
    assert [c.node for c in f.next_batch(unstarted, [], False)] == ["b"]


def test_the_resident_model_goes_before_plan_rank():
    f = _formation(models={"a": "m1", "b": "m2", "c": "m1"})
    for n in "ab":
        f.add(_q(n, n))
    assert [c.node for c in f.next_batch({"a": 0, "b": 0}, ["m2"], False)] == ["b"]


def test_a_batch_keeps_prefix_groups_together_short_prompts_first_within_budgets():
    f = _formation(max_batch=3, batch_tokens=45)
    for prompt, prefix in [("x" * 40, "k2"), ("y" * 8, "k2"), ("z" * 80, "k1"), ("w" * 4, "k1")]:
        f.add(_q("a", prompt, prefix))
    first = f.next_batch({"a": 0}, [], False)  # costs 11 + 30, then 12 would pass 45
    assert [c.request.prompt for c in first] == ["w" * 4, "z" * 80]
    assert [c.request.prompt for c in f.next_batch({"a": 0}, [], False)] == ["y" * 8, "x" * 40]
    f.add(_q("a", "v" * 4000))  # over the budget alone: goes alone
    assert len(f.next_batch({"a": 0}, [], False)) == 1


# -- requests -------------------------------------------------------------------------------------------


def _llm_plan(tmp_path, args: str, out: str = ""):
    src = f'''workflow w(q: text) {{
  model m = "m"
  a = llm(m, "Answer: {{q}}", system = "Be brief about {{q}}."{args}){out}
  return a
}}'''
    return api.compile(src, filename=str(tmp_path / "w.halo")).plan


def test_build_request_renders_and_keys_the_prefix(tmp_path):
    op = _llm_plan(
        tmp_path, ", max_tokens = 7, temperature = 0.5, seed = 3, top_p = 0.9", " -> { label: text }"
    ).node("a")
    req = build_request(op, {"q": "ants"}, prefix_keys=True, retain_s=2.0)
    assert (req.prompt, req.system) == ("Answer: ants", "Be brief about ants.")
    assert (req.max_tokens, req.temperature, req.seed, req.top_p, req.retain_s) == (7, 0.5, 3, 0.9, 2.0)
    assert req.json_schema["properties"] == {"label": {"type": "string"}}
    assert req.prefix_key == prefix_key(op, "Be brief about ants.") != prefix_key(op, "Be brief about bees.")
    assert build_request(op, {"q": "ants"}, prefix_keys=False, retain_s=None).prefix_key is None
    plain = build_request(_llm_plan(tmp_path, "").node("a"), {"q": "x"}, True, None)
    assert (plain.max_tokens, plain.temperature, plain.seed, plain.top_p, plain.json_schema) == (
        256,
        0.0,
        None,
        None,
        None,
    )


def test_expected_tokens_use_max_tokens_then_the_p90_of_seen_outputs(tmp_path):
    op = _llm_plan(tmp_path, ", max_tokens = 100").node("a")
    req = GenRequest("m", "p" * 40, system="s" * 8, max_tokens=100)
    assert expected_tokens(op, req, [5] * 7) == 12 + 100
    assert expected_tokens(op, req, list(range(1, 11))) == 12 + 9


def test_only_failures_that_may_pass_are_retried():
    greedy = GenRequest("m", "p", max_tokens=5000, json_schema={"type": "object"})
    assert not retryable(greedy, "max_tokens=5000 exceeds the limit of 4096")
    bad = GenRequest("m", "p", temperature=-1.0)
    assert not retryable(bad, "temperature must be >= 0, got -1.0")
    cut = GenRequest("m", "p", max_tokens=8, json_schema={"type": "object"})
    assert not retryable(cut, f"{json_cut_error(8)}; reply was '{{\"a'")
    assert retryable(GenRequest("m", "p", max_tokens=8, temperature=0.7), json_cut_error(8))  # sampled
    assert retryable(cut, "generate: CUDA error: out of memory")
    assert retryable(cut, "ReadTimeout: timed out (after 3 attempts)")


# -- the call cache -------------------------------------------------------------------------------------


def test_call_cache_serves_memo_then_journal_and_joins_calls_in_flight(tmp_path):
    journal = Journal(tmp_path / "j", "fp", resume=False)
    try:
        cache = CallCache(journal, memo_bytes=1)  # every entry is evicted at once
        call = Call("n", "k", [(1, "n")])
        assert cache.finished("k") is None and not cache.join("k", 2, "n")
        cache.open(call)
        assert cache.join("k", 2, "n") and call.waiters == [(1, "n"), (2, "n")]
        cache.close(call, {"v": 1}, None, sampled=False)
        assert not cache.inflight and not cache.memo.items  # evicted ...
        assert cache.finished("k") == ({"v": 1}, None)  # ... and read back from the journal
        sampled = Call("s", None, [(3, "s")])
        cache.close(sampled, "text", None, sampled=True)
        assert cache.replay("s", 3, retry_in_doubt=False) == ("text", None, False)
        journal.intent("e", 4)
        value, error, in_doubt = cache.replay("e", 4, retry_in_doubt=False)
        assert in_doubt and "may have run" in error
        assert cache.replay("e", 4, retry_in_doubt=True) is None
        assert cache.replay("e", 5, retry_in_doubt=False) is None
    finally:
        journal.close()


# -- retries through the executor ------------------------------------------------------------------------


class _Flaky(FakeEngine):
    """The fake engine whose first `fail` generate() calls raise (a transient engine failure)."""

    def __init__(self, fail: int):
        super().__init__()
        self.fail = fail

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if self.fail:
            self.fail -= 1
            with self._lock:
                self.batches.append(list(requests))
            raise RuntimeError("engine lost its device")
        return super().generate(requests)


def _execute(tmp_path, plan, engine, rows, retries: int, xplan=None) -> list[str]:
    """The records of `rows` run under `xplan` (default: the plan's Halo execution without a batch)."""
    journal = Journal(tmp_path / "j", "fp", resume=False)
    out: list[str] = []
    try:
        x = xplan or for_mode(plan, "halo")
        Executor(x, engine, Toolbox(plan), journal, RunOptions(llm_retries=retries)).run(rows, out.append)
    finally:
        journal.close()
    return out


def test_a_deterministic_failure_is_sent_once_and_a_transient_one_again(tmp_path):
    plan = _llm_plan(tmp_path, ", max_tokens = 5000")  # the fake engine's limit is 4096
    engine = FakeEngine()
    out = _execute(tmp_path / "1", plan, engine, [(1, {"q": "a"}), (2, {"q": "b"})], retries=3)
    assert engine.batch_sizes() == [2]  # before the fix: [2, 2, 2, 2]
    assert all("exceeds the limit" in line for line in out)
    flaky = _Flaky(fail=2)
    out = _execute(
        tmp_path / "2", _llm_plan(tmp_path, ", max_tokens = 4"), flaky, [(1, {"q": "a"})], retries=3
    )
    assert flaky.batch_sizes() == [1, 1, 1] and '"error": null' in out[0]
    gone = _Flaky(fail=9)
    out = _execute(
        tmp_path / "3", _llm_plan(tmp_path, ", max_tokens = 4"), gone, [(1, {"q": "a"})], retries=1
    )
    assert gone.batch_sizes() == [1, 1] and "engine lost its device" in out[0]


class _Servers(FakeEngine):
    """A client of one server per model (`thread_safe`): generate() returns only once batches of two
    models are in flight together."""

    thread_safe = True

    def __init__(self):
        super().__init__()
        self.together = threading.Barrier(2, timeout=10)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        self.together.wait()  # breaks (and fails the requests) when the batches run one after another
        return super().generate(requests)


def test_a_thread_safe_engine_gets_the_models_batches_side_by_side(tmp_path):
    src = """
workflow two(q: text) {
  model a = "Qwen/Qwen3-14B"
  model b = "Qwen/Qwen3-32B"
  x = llm(a, prompt = "{q}", max_tokens = 4, temperature = 0)
  y = llm(b, prompt = "{q}!", max_tokens = 4, temperature = 0)
  return x = x, y = y
}
"""
    plan = api.compile(src, filename=str(tmp_path / "two.halo")).plan
    engine = _Servers()
    out = _execute(tmp_path, plan, engine, [(1, {"q": "a"}), (2, {"q": "b"})], retries=0)
    assert [json.loads(line)["error"] for line in out] == [None, None]  # the barrier held: side by side
    models = sorted(sorted({r.model for r in batch}) for batch in engine.batches)
    assert models == [["Qwen/Qwen3-14B"], ["Qwen/Qwen3-32B"]]


class _Continuous(FakeEngine):
    """A client of a server that batches continuously (`thread_safe`, `max_in_flight` requests of a model
    at once): generate() returns only once `together` batches are in flight; `peak` is the most requests
    that were."""

    thread_safe = True

    def __init__(self, max_in_flight: int, together: int):
        super().__init__()
        self.max_in_flight, self.together = max_in_flight, threading.Barrier(together, timeout=10)
        self.out = self.peak = 0

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        with self._lock:
            self.out += len(requests)
            self.peak = max(self.peak, self.out)
        self.together.wait()  # breaks when a batch of the model waits for the last one to come back
        with self._lock:
            self.out -= len(requests)
        return super().generate(requests)


def test_the_engine_batches_are_the_ones_the_plan_priced_over_its_whole_batch(tmp_path):
    src = """workflow w(q: text) {
  model m = "Qwen/Qwen3-14B"
  a = llm(m, "Answer: {q}", max_tokens = 4, temperature = 0)
  return a
}"""
    compiled = api.compile(src, filename=str(tmp_path / "w.halo"))
    rows = [(i, {"q": f"q{i}"}) for i in range(600)]  # more than the default window of 512
    planned = api.plan(compiled, Batch(rows=rows), "1 x H100", policy=api.batch_policy(600, 10**7))
    assert planned.execution.inputs == 600
    engine = FakeEngine()
    out = _execute(tmp_path, compiled.plan, engine, rows, retries=1, xplan=planned.execution)
    assert len(out) == 600 and engine.batch_sizes() == [600]  # before the fix: [512, 88]


def test_a_thread_safe_engine_gets_batches_of_one_model_while_it_has_room(tmp_path):
    plan = _llm_plan(tmp_path, ", max_tokens = 4")
    engine = _Continuous(max_in_flight=2, together=2)
    rows = [(i, {"q": f"q{i}"}) for i in range(4)]
    out = _execute(tmp_path, plan, engine, rows, retries=0, xplan=for_mode(plan, "halo", api.batch_policy(1)))
    assert [json.loads(line)["error"] for line in out] == [None] * 4  # the barrier held: two at once
    assert engine.batch_sizes() == [1, 1, 1, 1] and engine.peak == 2  # never more than its room


class _SlowListing(FakeEngine):
    """A client of servers (`thread_safe`) whose model listing hangs until `answer` is set, as a round trip
    to a busy server does (one per server and dispatch, it held every arrival behind it)."""

    thread_safe = True

    def __init__(self):
        super().__init__()
        self.answer = threading.Event()
        self.asked = 0

    def resident_models(self) -> list[str]:
        self.asked += 1
        self.answer.wait()
        return super().resident_models()


def test_the_loop_never_waits_on_a_thread_safe_engines_model_listing(tmp_path):
    plan = _llm_plan(tmp_path, ", max_tokens = 4")
    engine = _SlowListing()
    out: list[str] = []
    runner = threading.Thread(
        target=lambda: out.extend(_execute(tmp_path, plan, engine, [(1, {"q": "a"}), (2, {"q": "b"})], 0))
    )
    runner.start()
    try:
        runner.join(30)  # before the fix: blocked in resident_models() until the listing answers
        assert not runner.is_alive() and engine.asked == 0
    finally:
        engine.answer.set()
        runner.join()
    assert [json.loads(line)["error"] for line in out] == [None, None]
