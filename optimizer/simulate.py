"""Discrete-event replay of a physical plan in virtual time (results are labelled "simulated").

Each device dispatches its plan items (loads and task shards) in plan order, one per free slot. A
task starts once it heads the queue of every device it uses, its model's load has finished and the
precedence/overlap rule holds for the *simulated* times of its parents. Loads keep their planned
length; task durations can be perturbed (``factor`` and ``jitter``) to probe robustness.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from .physical import PhysicalPlan
from .problem import Problem, pipelined

EPS = 1e-9


@dataclass
class SimResult:
    makespan: float
    throughput: float | None  # inputs per second, when n_inputs is given
    utilization: dict[str, float]  # task busy seconds / makespan per device
    load_s: dict[str, float]  # seconds spent loading models per device
    mem_peak: dict[str, int]  # bytes: resident weights + running task memory
    switches: int  # loads other than a device's first load onto an empty device
    times: dict[str, tuple[float, float]] = field(default_factory=dict)
    label: str = "simulated"


def simulate(
    problem: Problem,
    plan: PhysicalPlan,
    n_inputs: int | None = None,
    factor: float | dict[str, float] = 1.0,
    jitter: float = 0.0,
    seed: int = 0,
    barrier: bool | None = None,
) -> SimResult:
    """Replay ``plan``; task time = planned time x factor (per task when a dict) x U(1-jitter, 1+jitter).

    ``barrier`` (default: on for operator-at-a-time plans) makes each task wait until every task of
    lower ``order`` has finished, as the opwise runtime does.
    """
    if barrier is None:
        barrier = plan.method == "opwise"
    by_order = sorted(plan.placements, key=lambda p: p.order)
    rng = random.Random(seed)
    tasks = {t.id: t for t in problem.tasks}
    devs = {d.id: d for d in problem.devices}
    dur = {}
    for p in plan.placements:
        f = factor.get(p.task, 1.0) if isinstance(factor, dict) else factor
        dur[p.task] = (p.end - p.start) * f * (rng.uniform(1 - jitter, 1 + jitter) if jitter else 1.0)
    queues: dict[str, list] = {d: [] for d in devs}
    items: list[tuple[float, int, int, str, Any]] = [
        (m.start, 0, i, "load", m) for i, m in enumerate(plan.loads)
    ]
    items += [(p.start, 1, p.order, "task", p) for p in plan.placements]
    for _, _, _, kind, obj in sorted(items, key=lambda it: it[:3]):
        for d in [obj.device] if kind == "load" else obj.devices:
            queues[d].append((kind, obj))
    head = dict.fromkeys(devs, 0)
    busy = dict.fromkeys(devs, 0)
    resident = {d: list(problem.resident.get(d, [])) for d in devs}
    has_run = {d: bool(resident[d]) for d in devs}
    usable: dict[tuple[str, str], float] = {}
    mem = dict.fromkeys(devs, 0)
    peak = dict.fromkeys(devs, 0)
    started: dict[str, tuple[float, float]] = {}
    util = dict.fromkeys(devs, 0.0)
    loading = dict.fromkeys(devs, 0.0)
    switches = 0
    events: list = []
    seq = 0
    now = 0.0

    def weights(d):
        return sum(problem.model_bytes.get(m, 0) for m in resident[d])

    def ready_at(tid: str) -> float | None:
        t, r = tasks[tid], 0.0
        for pid in t.deps:
            if pid not in started:
                return None
            ps, pe = started[pid]
            if pipelined(tasks[pid], t):
                r = max(r, ps + problem.overlap * (pe - ps), pe - dur[tid])
            else:
                r = max(r, pe)
        if t.model:
            r = max([r] + [usable.get((d, t.model), 0.0) for d in tasks_devices[tid]])
        if barrier:
            for q in by_order:
                if q.task == tid:
                    break
                if q.task not in started:
                    return None
                r = max(r, started[q.task][1])
        return r

    tasks_devices = {p.task: p.devices for p in plan.placements}
    done_items = 0
    total = sum(len(q) for q in queues.values())
    while True:
        progress = True
        while progress:
            progress = False
            for d in devs:
                while head[d] < len(queues[d]) and busy[d] < devs[d].slots:
                    kind, obj = queues[d][head[d]]
                    if kind == "load":
                        switches += has_run[d]
                        for e in obj.evicted:
                            resident[d].remove(e)
                        resident[d].append(obj.model)
                        has_run[d] = True
                        end = now + (obj.end - obj.start)
                        usable[(d, obj.model)] = end
                        loading[d] += end - now
                        busy[d] += 1
                        head[d] += 1
                        peak[d] = max(peak[d], weights(d) + mem[d])
                        heapq.heappush(events, (end, seq := seq + 1, "lend", d, None))
                        progress = True
                        continue
                    p = obj
                    if any(queues[x][head[x]][1] is not p or busy[x] >= devs[x].slots for x in p.devices):
                        break
                    r = ready_at(p.task)
                    if r is None:
                        break
                    if r > now + EPS:
                        heapq.heappush(events, (r, seq := seq + 1, "wake", d, None))
                        break
                    end = now + dur[p.task]
                    started[p.task] = (now, end)
                    for x in p.devices:
                        head[x] += 1
                        busy[x] += 1
                        has_run[x] = True
                        mem[x] += tasks[p.task].mem_bytes
                        util[x] += end - now
                        peak[x] = max(peak[x], weights(x) + mem[x])
                    heapq.heappush(events, (end, seq := seq + 1, "end", p.task, None))
                    progress = True
        if not events:
            break
        now, _, kind, key, _ = heapq.heappop(events)
        if kind == "lend":
            busy[key] -= 1
            done_items += 1
        elif kind == "end":
            for x in tasks_devices[key]:
                busy[x] -= 1
                mem[x] -= tasks[key].mem_bytes
            done_items += len(tasks_devices[key])
    if done_items != total:
        raise RuntimeError(f"simulation deadlocked: {total - done_items} plan items never ran")
    makespan = max((e for _, e in started.values()), default=0.0)
    return SimResult(
        makespan=makespan,
        throughput=n_inputs / makespan if n_inputs and makespan > 0 else None,
        utilization={d: (u / makespan if makespan > 0 else 0.0) for d, u in util.items()},
        load_s=loading,
        mem_peak=peak,
        switches=switches,
        times=started,
    )
