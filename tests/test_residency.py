"""Co-residency: the plan keeps models awake together when they fit, splits the memory by decode work,
and the runtime hands each engine its share; on one worker the models load once and never switch."""

from __future__ import annotations

import json

import pytest

from halo import api
from halo.execution import for_mode
from halo.runtime.run import device_options

WORKLOADS = "workloads"


def _voting(hardware: str, disabled=()):
    compiled = api.compile(f"{WORKLOADS}/llm_voting.halo")
    return api.plan(
        compiled,
        f"{WORKLOADS}/llm_voting.jsonl",
        hardware,
        optimizer="heuristic",
        limit=300,
        disabled=disabled,
    )


def test_models_that_fit_together_are_co_resident_with_shares_by_decode_work():
    planned = _voting("1 x H200")
    split = planned.execution.memory["gpu0"]
    assert len(split) == 3 and sum(split.values()) <= 0.9 + 1e-9
    problem, physical = planned.problem, planned.physical
    mem = next(d.mem_bytes for d in problem.devices if d.id == "gpu0")
    weight = {m: problem.model_bytes[m] / mem for m in split}
    assert all(split[m] > weight[m] for m in split), "every model keeps KV room beyond its weights"
    model_of = {t.id: t.model for t in problem.tasks}
    busy = {m: sum(p.end - p.start for p in physical.placements if model_of[p.task] == m) for m in split}
    kv = {m: split[m] - weight[m] for m in split}
    assert max(kv, key=kv.get) == max(busy, key=busy.get), "the busiest model gets the largest KV share"
    assert not any(step.evicted for step in planned.execution.residency)
    assert "co-resident: " in planned.report["execution"]["text"]


def test_models_that_do_not_fit_switch_and_get_no_split():
    planned = _voting("1 x H100-SXM")
    assert planned.execution.memory == {}
    assert any(step.evicted for step in planned.execution.residency)


def test_without_co_residency_one_model_is_awake_and_each_switch_pays_its_sleep():
    together = _voting("1 x H200")
    alone = _voting("1 x H200", disabled=["co_residency"])
    x, problem = alone.execution, alone.problem
    assert x.memory == {} and problem.max_resident == 1
    evicted = {m for step in x.residency for m in step.evicted}
    assert len(evicted) >= 2 and set(x.sleep_levels["gpu0"]) == evicted
    for load in alone.physical.loads:
        sleep = sum(problem.sleep_s[(m, "H200")] for m in load.evicted)
        if load.evicted:
            assert sleep > 0 and load.end - load.start >= sleep
    assert alone.physical.makespan > together.physical.makespan
    assert (
        "sleeps: " in alone.report["execution"]["text"]
        and "co-resident" not in alone.report["execution"]["text"]
    )
    assert together.execution.sleep_levels == {}


def test_the_sleep_level_is_the_cheaper_one_while_host_memory_holds_the_weight_copies():
    from halo.cost import sleep_levels

    gb = 10**9
    costs = {  # (model, kind) -> level -> (sleep s, wake s)
        ("small", "H200"): {1: (0.5, 0.2), 2: (0.1, 2.0)},  # level 1 is cheaper: 0.7 s against 2.1 s
        ("big", "H200"): {1: (1.0, 1.0), 2: (0.1, 9.0)},  # cheaper at level 1 too, but its copy is large
        ("slow", "H200"): {1: (30.0, 1.0), 2: (0.1, 4.0)},  # a slow offload: level 2
    }
    weights = {"small": 4 * gb, "big": 60 * gb, "slow": 8 * gb}
    assert sleep_levels(costs, weights, host_bytes=200 * gb) == {
        k: lv for k, lv in zip(costs, (1, 1, 2), strict=True)
    }
    assert sleep_levels(costs, weights, host_bytes=100 * gb) == {
        k: lv for k, lv in zip(costs, (1, 2, 2), strict=True)
    }


def test_a_vllm_engine_gets_the_sleep_levels_of_the_models_it_evicts():
    x = for_mode(api.compile(f"{WORKLOADS}/llm_voting.halo").plan, "halo")
    x.sleep_levels = {"gpu0": {"a": 2}}
    assert device_options(x, "gpu0", "vllm", {}) == {"sleep_levels": {"a": 2}}
    assert device_options(x, "gpu0", "hf", {}) == {}


def test_a_vllm_engine_gets_the_split_and_other_engines_do_not():
    x = for_mode(api.compile(f"{WORKLOADS}/llm_voting.halo").plan, "halo")
    x.memory = {"gpu0": {"a": 0.3, "b": 0.5}}
    assert device_options(x, "gpu0", "vllm", {"dummy_weights": True}) == {
        "dummy_weights": True,
        "memory_split": {"a": 0.3, "b": 0.5},
    }
    assert device_options(x, "gpu0", "hf", {}) == {}
    assert device_options(x, "gpu1", "vllm", {}) == {}
    assert device_options(x, "gpu0", "vllm", {"memory_split": {"a": 0.9}})["memory_split"] == {"a": 0.9}


TWO = """
workflow two(q: text) {
  model m = "Qwen/Qwen3-14B"
  model n = "Qwen/Qwen3-32B"
  a = llm(m, prompt = "One word about {q}.", max_tokens = 4, temperature = 0)
  b = llm(n, prompt = "A color for {q} and {a}.", max_tokens = 4, temperature = 0)
  c = llm(m, prompt = "Another word about {q} after {b}.", max_tokens = 4, temperature = 0)
  return a = a, b = b, c = c
}
"""


def test_a_gpu_plan_on_a_machine_without_gpus_fails_at_once():
    ray = pytest.importorskip("ray")
    from halo.runtime.workers import WorkerError, WorkerPool, WorkerSpec

    with pytest.raises(WorkerError, match="places work on 1 GPU"):
        WorkerPool([WorkerSpec("gpu0", "fake", gpu=True)])
    assert not ray.is_initialized()


@pytest.mark.slow
def test_a_two_model_co_resident_plan_on_one_worker_loads_each_model_once(tmp_path):
    pytest.importorskip("ray")
    compiled = api.compile(TWO, filename=str(tmp_path / "two.halo"))
    batch = tmp_path / "in.jsonl"
    batch.write_text("".join(json.dumps({"q": f"thing {i}"}) + "\n" for i in range(6)))
    planned = api.plan(compiled, batch, "cpu:2", optimizer="heuristic")
    assert set(planned.execution.memory["cpu-engine"]) == {"Qwen/Qwen3-14B", "Qwen/Qwen3-32B"}
    res = api.run(compiled, batch, tmp_path / "out.jsonl", planned=planned, engine="hf", ray_address="local")
    assert res.stats.failed == 0 and set(res.stats.workers) == {"cpu-engine"}
    models = [b["model"] for b in res.stats.engine_batches]
    assert models[:3] == ["Qwen/Qwen3-14B", "Qwen/Qwen3-32B", "Qwen/Qwen3-14B"], "the models alternate"
    assert res.stats.model_loads == 2, "each model loaded once: none was evicted and reloaded"


def test_halo_run_of_a_two_gpu_plan_here_is_a_clear_user_error(tmp_path):
    pytest.importorskip("ray")
    from typer.testing import CliRunner

    from halo.cli import app

    (tmp_path / "two.halo").write_text(TWO)
    (tmp_path / "in.jsonl").write_text('{"q": "x"}\n')
    res = CliRunner().invoke(
        app,
        ["run", str(tmp_path / "two.halo"), "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o.jsonl")]
        + ["--hardware", "2 x H100-SXM", "--engine", "fake", "-q"],
    )
    assert res.exit_code == 2 and "places work on 2 GPU(s); this machine has 0" in res.output


LONG = """
workflow long(q: text) {
  model m = "Qwen/Qwen3-14B"
  essay = llm(m, prompt = "Write at length about {q}.", max_tokens = TOKENS, temperature = 0)
  return essay = essay
}
"""


def _long_plan(tmp_path, rows: int, tokens: int = 4000, **kw):
    compiled = api.compile(LONG.replace("TOKENS", str(tokens)), filename=str(tmp_path / f"long{tokens}.halo"))
    batch = tmp_path / f"in{rows}.jsonl"
    batch.write_text("".join(json.dumps({"q": f"topic {i}"}) + "\n" for i in range(rows)))
    return api.plan(compiled, batch, "1 x H200", optimizer="heuristic", **kw)


def test_a_short_batch_starts_eager_and_a_long_one_compiled(tmp_path):
    short, long = _long_plan(tmp_path, 2, tokens=16), _long_plan(tmp_path, 2000)
    assert short.execution.start_modes == {"Qwen/Qwen3-14B": "eager"}
    assert long.execution.start_modes == {"Qwen/Qwen3-14B": "compiled"}
    assert "starts Qwen/Qwen3-14B compiled (" in long.report["execution"]["text"]
    # the compiled start is priced: its load is longer than the eager one by the compile cost
    load = {p.execution.start_modes["Qwen/Qwen3-14B"]: p.physical.loads[0] for p in (short, long)}
    assert load["compiled"].end - load["compiled"].start > load["eager"].end - load["eager"].start + 20


def test_start_modes_follow_the_laws_measured_in_each_mode(tmp_path):
    from halo.calibration import Calibration

    def law(step_s):
        return {
            "kind": "llm_batch",
            "model": "Qwen/Qwen3-14B",
            "device": "H200",
            "prefill_tokens": 100,
        }, step_s

    records = []
    for mode, step_s in (("eager", 0.020), ("compiled", 0.0199)):  # graphs barely help this engine
        for n, steps in ((1, 16), (16, 64), (64, 16), (64, 64)):
            records.append(
                {**law(step_s)[0], "n": n, "steps": steps, "seconds": 0.05 + steps * step_s, "mode": mode}
            )
    cal = Calibration().add(*records)
    assert _long_plan(tmp_path, 2000, calibration=cal).execution.start_modes["Qwen/Qwen3-14B"] == "eager"
    pinned = _long_plan(tmp_path, 2, calibration=cal, start_mode="compiled").execution
    assert (
        pinned.start_modes == {"Qwen/Qwen3-14B": "compiled"}
        and "pinned" in pinned.start_reasons["Qwen/Qwen3-14B"]
    )


def test_a_vllm_engine_gets_the_start_modes_unless_the_options_pin_them():
    x = for_mode(api.compile(f"{WORKLOADS}/llm_voting.halo").plan, "halo")
    x.start_modes = {"a": "compiled"}
    assert device_options(x, "gpu0", "vllm", {}) == {"start_modes": {"a": "compiled"}}
    assert device_options(x, "gpu0", "vllm", {"enforce_eager": True}) == {"enforce_eager": True}
    assert api.pinned_start_mode("vllm", {"enforce_eager": True}) == "eager"
    assert (
        api.pinned_start_mode("vllm", {}) is None
        and api.pinned_start_mode("hf", {"enforce_eager": True}) is None
    )
