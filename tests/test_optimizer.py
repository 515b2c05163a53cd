"""Tests for halo.optimizer: validity of every plan, ILP optimality, heuristic quality, baselines, simulator."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from halo.optimizer import (
    Device,
    PhysicalPlan,
    PlanError,
    Problem,
    ProblemError,
    Task,
    gantt_text,
    heuristic,
    ilp,
    optimize,
    opwise,
    per_query,
    per_query_problem,
    round_robin,
    simulate,
)

GB = 10**9


def gpus(n: int, mem: int = 80 * GB) -> list[Device]:
    return [Device(f"gpu{i}", "gpu", mem) for i in range(n)]


def llm(tid: str, model: str, dur: float, deps=(), **kw) -> Task:
    return Task(tid, "llm", list(deps), {"gpu": dur}, model=model, mem_bytes=2 * GB, **kw)


def random_dag(
    n: int, g: int, seed: int, models: int = 3, cpu: bool = False, overlap: float = 0.3
) -> Problem:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        deps = [f"t{j}" for j in rng.sample(range(max(0, i - 8), i), min(i, rng.randint(0, 2)))]
        if cpu and rng.random() < 0.2:
            tasks.append(Task(f"t{i}", "sql", deps, {"cpu": rng.uniform(1, 5)}))
        else:
            tasks.append(
                llm(
                    f"t{i}",
                    f"m{rng.randrange(models)}",
                    rng.uniform(5, 30),
                    deps,
                    shardable=rng.random() < 0.3,
                )
            )
    devs = gpus(g) + ([Device("cpu0", "cpu", 0, slots=4)] if cpu else [])
    mb = {f"m{i}": (45 + 5 * i) * GB for i in range(models)}  # two never fit in 80 GB
    return Problem(tasks, devs, mb, {(m, "gpu"): 10.0 + 5 * i for i, m in enumerate(mb)}, overlap=overlap)


def two_models() -> Problem:
    """a1, a2 (model A, 20 s) and b1 (model B, 30 s) on 2 GPUs; loads 10 s; A and B never co-reside.

    By hand: A-tasks together on one GPU (10+20+20=50), B on the other (10+30=40) -> 50. Any split
    of the A-tasks puts a switch after b1 (>= 10+30+10+20=70). Optimum = 50.
    """
    return Problem(
        [llm("a1", "A", 20), llm("a2", "A", 20), llm("b1", "B", 30)],
        gpus(2),
        {"A": 50 * GB, "B": 50 * GB},
        {("A", "gpu"): 10.0, ("B", "gpu"): 10.0},
    )


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_ilp_proves_hand_optimum(solver):
    p = two_models()
    plan = ilp(p, time_limit_s=20, warm=heuristic(p, 0.05), solver=solver)
    plan.validate(p)
    assert plan.status == "optimal"
    assert plan.makespan == pytest.approx(50.0)
    assert plan.bound == pytest.approx(50.0) and plan.gap == pytest.approx(0.0, abs=1e-6)


def test_heuristic_close_to_ilp_on_small_random_dags():
    gaps = []
    for seed in range(6):
        p = random_dag(7, 2, seed)
        h = heuristic(p, 0.3, seed=seed)
        h.validate(p)
        opt = ilp(p, time_limit_s=20, warm=h, solver="highs")
        opt.validate(p)
        assert opt.status == "optimal"
        assert opt.makespan <= h.makespan + 1e-6
        gaps.append(h.makespan / opt.makespan - 1)
    assert max(gaps) < 0.10 and sum(gaps) / len(gaps) < 0.04


def test_switch_cost_and_count():
    p = Problem(
        [llm("a", "A", 5), llm("b", "B", 5, ["a"]), llm("c", "A", 5, ["b"])],
        gpus(1),
        {"A": 50 * GB, "B": 50 * GB},
        {("A", "gpu"): 10.0, ("B", "gpu"): 7.0},
    )
    plan = optimize(p, time_limit_s=5)
    plan.validate(p)
    assert [m.model for m in plan.loads] == ["A", "B", "A"]
    assert plan.makespan == pytest.approx(15 + 10 + 7 + 10)
    assert simulate(p, plan).switches == 2
    woken = replace(p, wake_s={("A", "gpu"): 1.0})
    plan = optimize(woken, time_limit_s=5)
    plan.validate(woken)
    assert plan.makespan == pytest.approx(15 + 10 + 7 + 1)
    short = plan.loads[-1]
    short.end = short.start + 0.5
    with pytest.raises(PlanError, match="load"):
        plan.validate(woken)


def test_heuristic_groups_same_model_tasks():
    tasks = [llm(f"t{i}", "AB"[i % 2], 5) for i in range(6)]
    p = Problem(tasks, gpus(1), {"A": 50 * GB, "B": 50 * GB}, {("A", "gpu"): 10.0, ("B", "gpu"): 10.0})
    plan = heuristic(p, 0.2)
    plan.validate(p)
    assert len(plan.loads) == 2 and plan.makespan == pytest.approx(50.0)


def test_multi_model_residency_when_memory_allows():
    tasks = [llm("a", "A", 5), llm("b", "B", 5, ["a"]), llm("c", "A", 5, ["b"])]
    p = Problem(tasks, gpus(1), {"A": 30 * GB, "B": 30 * GB}, {("A", "gpu"): 10.0, ("B", "gpu"): 10.0})
    plan = optimize(p, time_limit_s=5)
    plan.validate(p)
    assert len(plan.loads) == 2 and plan.status == "feasible"  # ILP is only a restriction here


def test_model_too_big_is_a_clear_error():
    p = Problem([llm("a", "huge", 5)], gpus(2), {"huge": 100 * GB}, {("huge", "gpu"): 10.0})
    with pytest.raises(ProblemError, match="infeasible.*huge"):
        optimize(p)


def test_memory_violation_is_caught():
    p = Problem(
        [llm("a", "A", 5), llm("b", "B", 5)],
        gpus(1),
        {"A": 50 * GB, "B": 50 * GB},
        {("A", "gpu"): 1.0, ("B", "gpu"): 1.0},
    )
    plan = heuristic(p, 0.05)
    plan.validate(p)
    plan.loads[1].evicted = []
    with pytest.raises(PlanError, match="memory"):
        plan.validate(p)


def test_sharding_shortens_makespan():
    base = Problem(
        [llm("big", "A", 100)],
        gpus(4),
        {"A": 20 * GB},
        {("A", "gpu"): 5.0},
        resident={f"gpu{i}": ["A"] for i in range(4)},
    )
    single = optimize(base, time_limit_s=5)
    sharded_p = replace(base, tasks=[llm("big", "A", 100, shardable=True)])
    sharded = optimize(sharded_p, time_limit_s=5)
    sharded.validate(sharded_p)
    assert single.makespan == pytest.approx(100.0)
    assert sharded.makespan == pytest.approx(25.0) and len(sharded.placements[0].devices) == 4


def fan_out(scale: float) -> Problem:
    """root(A) -> 12 branches over models B, C, D -> sink(A) -> sql; durations x scale; 4 GPUs."""
    tasks = [llm("root", "A", 1 * scale)]
    tasks += [llm(f"b{i}", "BCD"[i % 3], 2 * scale, ["root"], shardable=True) for i in range(12)]
    tasks += [llm("sink", "A", 1 * scale, [f"b{i}" for i in range(12)])]
    tasks += [Task("sql", "sql", ["sink"], {"cpu": 0.5 * scale})]
    devs = gpus(4) + [Device("cpu0", "cpu", 0, slots=8)]
    mb = {m: 45 * GB for m in "ABCD"}
    return Problem(tasks, devs, mb, {(m, "gpu"): 20.0 for m in "ABCD"}, overlap=0.2)


def test_baselines_valid_and_slower_than_optimized():
    n = 40
    batched = fan_out(scale=n * 0.5)  # consolidating a batch halves per-input work
    best = optimize(batched, time_limit_s=2)
    best.validate(batched)
    per_input = fan_out(scale=1.0)
    naive = per_query(per_input, n)
    naive.validate(per_query_problem(per_input, n))
    assert len(naive.placements) == n * len(per_input.tasks)
    for plan in (opwise(batched), round_robin(batched)):
        plan.validate(batched)
        assert simulate(batched, plan).makespan == pytest.approx(plan.makespan)
        assert plan.makespan > best.makespan * 1.05, plan.method
    assert naive.makespan > best.makespan * 1.05


def test_simulator_agrees_and_perturbs():
    p = random_dag(60, 3, seed=1, cpu=True)
    plan = optimize(p, method="heuristic", time_limit_s=1)
    plan.validate(p)
    sim = simulate(p, plan, n_inputs=1000)
    assert sim.label == "simulated"
    assert sim.makespan == pytest.approx(plan.makespan)
    for pl in plan.placements:
        assert sim.times[pl.task] == pytest.approx((pl.start, pl.end))
    assert sim.throughput == pytest.approx(1000 / plan.makespan)
    assert sim.switches == sum(1 for _ in plan.loads) - sum(1 for d in {m.device for m in plan.loads})
    assert all(0 <= u <= 1 + 1e-9 for u in sim.utilization.values())
    assert max(sim.mem_peak.values()) <= 80 * GB
    slow = simulate(p, plan, factor=1.5)
    assert slow.makespan > plan.makespan
    noisy = simulate(p, plan, jitter=0.2, seed=3)
    assert noisy.makespan > 0


def test_gap_reported_when_not_proven():
    p = random_dag(25, 4, seed=7)
    plan = optimize(p, method="ilp", time_limit_s=2)
    plan.validate(p)
    assert plan.solve_s <= 2.3
    assert plan.bound is not None and plan.bound <= plan.makespan + 1e-6
    assert plan.gap is not None and 0 <= plan.gap < 1
    if plan.status != "optimal":
        assert plan.gap > 0 or plan.status in ("time_limit", "feasible")
    assert any("bound" in n for n in plan.notes)


def test_cost_objective_prefers_cheap_device():
    t = Task("t", "llm", [], {"gpu": 10.0, "npu_pim": 20.0}, model="A")
    devs = [Device("gpu0", "gpu", 80 * GB), Device("pim0", "npu_pim", 80 * GB)]
    p = Problem([t], devs, {"A": 10 * GB}, {}, price_per_hour={"gpu": 4.0, "npu_pim": 0.5}, objective="cost")
    for plan in (heuristic(p, 0.05), optimize(p, time_limit_s=5)):
        plan.validate(p)
        assert plan.placements[0].devices == ["pim0"]
        assert plan.cost_usd == pytest.approx(20 * 0.5 / 3600)


def test_json_round_trip_and_gantt():
    p = random_dag(12, 2, seed=2, cpu=True)
    plan = optimize(p, time_limit_s=3)
    back = PhysicalPlan.from_json(plan.to_json())
    assert back == plan
    back.validate(p)
    text = gantt_text(p, plan, width=60)
    assert text.count("\n") == len(p.devices) + 1 and "gpu0" in text


def test_precedence_violation_is_caught():
    p = random_dag(10, 2, seed=4)
    plan = heuristic(p, 0.05)
    child = next(pl for pl in plan.placements if p.tasks[int(pl.task[1:])].deps)
    child.start, child.end = 0.0, child.end - child.start
    with pytest.raises(PlanError):
        plan.validate(p)


def test_heuristic_2000_tasks():
    p = random_dag(2000, 8, seed=0, cpu=True)
    plan = optimize(p, method="heuristic", time_limit_s=1)
    plan.validate(p)
    assert len(plan.placements) == 2000
