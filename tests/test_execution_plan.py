"""The executor runs the ExecutionPlan it is given: its order, its placement per device, its row source."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from halo import api
from halo.execution import for_mode
from halo.runtime.engines.fake import FakeEngine
from halo.runtime.executor import WAIT, Executor
from halo.runtime.journal import Journal
from halo.runtime.toolbox import Toolbox

TWO = """
workflow two(q: text) {
  model m = "Qwen/Qwen3-14B"
  model n = "Qwen/Qwen3-32B"
  a = llm(m, prompt = "A {q}", max_tokens = 8)
  b = llm(n, prompt = "B {q}", max_tokens = 8)
  return a = a, b = b
}
"""


def _run(tmp_path, xplan, engines, rows, name="j"):
    journal = Journal(tmp_path / name, "fp", resume=False)
    out: list[str] = []
    try:
        stats = Executor(xplan, engines, Toolbox(xplan.logical), journal).run(rows, out.append)
    finally:
        journal.close()
    return stats, out


def _plan(tmp_path):
    return api.compile(TWO, filename=str(tmp_path / "two.halo")).plan


def test_each_llm_node_runs_on_the_engine_of_its_device(tmp_path):
    x = replace(for_mode(_plan(tmp_path), "halo"), placement={"a": ["gpu0"], "b": ["gpu1"]})
    e0, e1 = FakeEngine(), FakeEngine()
    stats, out = _run(tmp_path, x, {"gpu0": e0, "gpu1": e1}, [(i, {"q": f"q{i}"}) for i in range(1, 21)])
    assert len(out) == 20 and stats.failed == 0
    assert {r.model for b in e0.batches for r in b} == {"Qwen/Qwen3-14B"}
    assert {r.model for b in e1.batches for r in b} == {"Qwen/Qwen3-32B"}
    assert {b["device"] for b in stats.engine_batches} == {"gpu0", "gpu1"}


def test_a_node_placed_on_two_devices_splits_its_batches_between_them(tmp_path):
    x = replace(for_mode(_plan(tmp_path), "halo"), placement={"a": ["gpu0", "gpu1"], "b": ["gpu1"]})
    e0, e1 = FakeEngine(), FakeEngine()
    rows = [(i, {"q": f"q{i}"}) for i in range(1, 201)]
    stats, out = _run(tmp_path, x, {"gpu0": e0, "gpu1": e1}, rows)
    assert len(out) == 200
    on0 = sum(len(b) for b in e0.batches)
    on1_a = sum(1 for b in e1.batches for r in b if r.model == "Qwen/Qwen3-14B")
    assert on0 + on1_a == 200 and on0 > 0
    assert all(r.model == "Qwen/Qwen3-14B" for b in e0.batches for r in b)


def test_one_engine_for_every_device_runs_everything(tmp_path):
    x = replace(for_mode(_plan(tmp_path), "halo"), placement={"a": ["gpu0"], "b": ["gpu1"]})
    e = FakeEngine()
    stats, out = _run(tmp_path, x, {"gpu0": e, "gpu1": e}, [(1, {"q": "x"})])
    assert len(out) == 1 and sum(len(b) for b in e.batches) == 2


def test_the_plans_order_decides_which_ready_node_goes_first(tmp_path):
    plan = _plan(tmp_path)
    firsts = []
    for order in (["a", "b"], ["b", "a"]):
        e = FakeEngine()
        _run(tmp_path, replace(for_mode(plan, "halo"), order=order), e, [(1, {"q": "x"})], "-".join(order))
        firsts.append(e.batches[0][0].prompt[0])
    assert firsts == ["A", "B"]


def test_a_row_source_that_waits_gets_every_row_run(tmp_path):
    def rows():
        for i in range(1, 6):
            yield WAIT
            yield WAIT
            yield (i, {"q": f"q{i}"})

    stats, out = _run(tmp_path, for_mode(_plan(tmp_path), "halo"), FakeEngine(), rows())
    assert len(out) == 5 and stats.inputs == 5 and stats.failed == 0


class _SlowLoad(FakeEngine):
    """A fake engine whose first load of each model takes `seconds`."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def load(self, model: str) -> float:
        if model in self.resident_models():
            return 0.0
        time.sleep(self.seconds)
        super().load(model)
        return self.seconds


def test_an_idle_engine_loads_its_next_model_while_tools_run(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "runtime_fixtures"))
    src = """
    workflow slow(x: int) {
      model m = "Qwen/Qwen3-14B"
      d = py("rtfuncs:slow_double", x = x, delay = 0.5, pure = true)
      a = llm(m, prompt = "double is {d}", max_tokens = 4)
      return a = a
    }
    """
    plan = api.compile(src, filename=str(tmp_path / "slow.halo")).plan
    stats, out = _run(tmp_path, for_mode(plan, "halo"), _SlowLoad(0.3), [(1, {"x": 2})])
    assert len(out) == 1 and stats.failed == 0
    [load] = stats.loads
    assert load["preload"] and load["start"] < stats.nodes["d"].last_end  # begun while the tool ran
    assert [b["load_s"] for b in stats.engine_batches] == [0.0]


def test_analyze_reports_each_device_and_draws_both_timelines(tmp_path):
    compiled = api.compile(TWO, filename=str(tmp_path / "two.halo"))
    batch = tmp_path / "in.jsonl"
    batch.write_text("".join(f'{{"q": "q{i}"}}\n' for i in range(8)))
    planned = api.plan(compiled, batch, "1 x H100-SXM + cpu:2", optimizer="heuristic")
    report = api.analyze(
        compiled,
        planned,
        batch,
        tmp_path / "out.jsonl",
        engine="fake",
        calibration=tmp_path / "cal.json",
        gantt=tmp_path / "g.svg",
    )
    [(device, row)] = report["devices"]["per_device"].items()
    assert device == "gpu0" and row["measured"]["batches"] >= 2 and row["predicted"]["busy_s"] > 0
    assert (tmp_path / "g.svg").exists() and (tmp_path / "g.measured.svg").exists()
    text = report["gantt"]["text"]
    assert text.index("Predicted:") < text.index("Measured:") and "gpu0" in text.split("Measured:")[1]
