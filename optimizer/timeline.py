"""Timeline builder: turns (task, mode) decisions taken in a topological order into exact times.

It is the single source of plan timing for every planner: it keeps per-slot free times, LRU model
residency under the memory cap, reload vs wake costs, and the precedence/overlap rule. A model load
starts as soon as the device is idle (it overlaps waiting for parents), so the task starts at
``max(ready, free + load)``. A device keeps a set S of models while
``weights(S) + max task memory of S's models`` fits, so any later task of a resident model fits too;
loading evicts least-recently-used models until it holds. Devices with several slots never evict and
start their tasks in placement order (what the simulator replays).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from .modes import Mode
from .physical import ModelLoad, PhysicalPlan, Placement, busy_cost
from .problem import Problem, Task, duration_on, fits, pipelined, switch_s

INF = float("inf")


@dataclass
class Slot:
    """Where a task would run: times, lanes used per device and the loads it needs."""

    task: Task
    mode: Mode
    start: float
    end: float
    lanes: list[int]
    loads: list[ModelLoad] = field(default_factory=list)


class Timeline:
    def __init__(self, problem: Problem):
        self.problem = problem
        self.devs = {d.id: d for d in problem.devices}
        self.free = {d.id: [0.0] * max(1, d.slots) for d in problem.devices}
        self.resident: dict[str, OrderedDict[str, None]] = {
            d.id: OrderedDict((m, None) for m in problem.resident.get(d.id, [])) for d in problem.devices
        }
        self.seen = {d: set(r) for d, r in self.resident.items()}
        self.usable_at: dict[tuple[str, str], float] = {}  # (device, model) -> end of its last load
        self.done: dict[str, Slot] = {}
        self.last_start = dict.fromkeys(self.devs, 0.0)  # multi-slot devices dispatch in placement order
        self.loads: list[ModelLoad] = []
        self.running: dict[str, list[tuple[float, float, int]]] = {d.id: [] for d in problem.devices}
        self.kv: dict[tuple[str, str | None], int] = {}  # (device, model) -> largest task memory there
        for t in problem.tasks:
            for d in problem.devices:
                if duration_on(t, d) is not None and fits(problem, t, d):
                    key = (d.id, t.model)
                    self.kv[key] = max(self.kv.get(key, 0), t.mem_bytes)

    def _need(self, did: str, models) -> int:
        """Bytes a residency set needs so that any task of a resident model can still run."""
        mb = self.problem.model_bytes
        return sum(mb.get(m, 0) for m in models) + max((self.kv.get((did, m), 0) for m in models), default=0)

    def ready(self, task: Task, dur: float) -> float:
        """Earliest start allowed by the parents (all must be placed) for a run of ``dur`` seconds."""
        r = 0.0
        for pid in task.deps:
            p = self.done[pid]
            if pipelined(p.task, task):
                r = max(r, p.start + self.problem.overlap * (p.end - p.start), p.end - dur)
            else:
                r = max(r, p.end)
        return r

    def probe(self, task: Task, mode: Mode, not_before: float = 0.0) -> Slot | None:
        """Where ``task`` would run in ``mode`` now; None when its model cannot be made resident."""
        start = max(not_before, self.ready(task, mode.duration))
        lanes, loads = [], []
        for did in mode.devices:
            free = self.free[did]
            lane = min(range(len(free)), key=free.__getitem__)
            lanes.append(lane)
            t0 = max(free[lane], self.last_start[did])
            if not task.model:
                dev = self.devs[did]
                if (
                    dev.slots == 1
                    and dev.mem_bytes > 0
                    and (
                        sum(self.problem.model_bytes.get(m, 0) for m in self.resident[did]) + task.mem_bytes
                        > dev.mem_bytes
                    )
                ):
                    return None
            else:
                load = self._load(task.model, did, t0)
                if load is False:
                    return None
                if load is not None:
                    loads.append(load)
                    t0 = load.end
                else:
                    t0 = max(t0, self.usable_at.get((did, task.model), 0.0))
            start = max(start, t0)
        start = self._fit_memory(task, mode, start)
        return Slot(task, mode, start, start + mode.duration, lanes, loads)

    def _load(self, model: str, did: str, t0: float) -> ModelLoad | None | Literal[False]:
        """The load a task's ``model`` needs on ``did`` (None: resident; False: cannot fit)."""
        dev = self.devs[did]
        res = self.resident[did]
        if model in res:
            return None
        evicted: list[str] = []
        if dev.mem_bytes > 0:
            keep = list(res)
            cap = self.problem.max_resident
            while keep and (self._need(did, keep + [model]) > dev.mem_bytes or 0 < cap <= len(keep)):
                if dev.slots > 1:
                    return False
                evicted.append(keep.pop(0))
        dur = switch_s(self.problem, model, dev, model in self.seen[did], evicted)
        return ModelLoad(did, model, t0, t0 + dur, evicted)

    def _fit_memory(self, task: Task, mode: Mode, start: float) -> float:
        """Delay a task on a multi-slot device with finite memory until running tasks leave room."""
        for did in mode.devices:
            dev = self.devs[did]
            if dev.slots == 1 or dev.mem_bytes <= 0:
                continue
            weights = sum(self.problem.model_bytes.get(m, 0) for m in self.resident[did])
            if task.model and task.model not in self.resident[did]:
                weights += self.problem.model_bytes.get(task.model, 0)
            while True:
                end = start + mode.duration
                over = [(e, m) for s, e, m in self.running[did] if s < end and e > start]
                if weights + task.mem_bytes + sum(m for _, m in over) <= dev.mem_bytes:
                    break
                start = min(e for e, _ in over)
        return start

    def commit(self, slot: Slot) -> None:
        for did, lane in zip(slot.mode.devices, slot.lanes, strict=True):
            self.free[did][lane] = slot.end
            if self.devs[did].slots > 1:
                self.running[did].append((slot.start, slot.end, slot.task.mem_bytes))
                self.last_start[did] = slot.start
            if slot.task.model:
                self.resident[did][slot.task.model] = None
                self.resident[did].move_to_end(slot.task.model)
        for ld in slot.loads:
            res = self.resident[ld.device]
            for m in ld.evicted:
                del res[m]
            res[ld.model] = None
            self.seen[ld.device].add(ld.model)
            self.usable_at[(ld.device, ld.model)] = ld.end
            self.loads.append(ld)
        self.done[slot.task.id] = slot

    def plan(self, method: str, status: str, **kw) -> PhysicalPlan:
        """The committed schedule as a :class:`PhysicalPlan` (order = rank by start time)."""
        seq = {tid: i for i, tid in enumerate(self.done)}  # commit order breaks start-time ties
        slots = sorted(self.done.values(), key=lambda s: (s.start, seq[s.task.id]))
        placements = [
            Placement(s.task.id, list(s.mode.devices), s.start, s.end, i) for i, s in enumerate(slots)
        ]
        makespan = max((p.end for p in placements), default=0.0)
        loads = sorted(self.loads, key=lambda m: (m.start, m.device))
        return PhysicalPlan(
            placements,
            loads,
            makespan,
            busy_cost(self.problem, placements, loads),
            method,
            status,
            self.problem.objective,
            **kw,
        )
