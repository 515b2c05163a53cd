"""Physical plan: where and when every task runs, which models load where, and a validator.

JSON schema ``halo.physical_plan/1`` is documented in ``optimizer/SCHEMA.md``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .problem import Device, Problem, Task, duration_on, pipelined, switch_s

SCHEMA = "halo.physical_plan/1"
EPS = 1e-6


class PlanError(ValueError):
    """A plan violates the problem's constraints; the message names the task/device and the rule."""


@dataclass
class Placement:
    """Task ``task`` occupies one slot of each of ``devices`` during [start, end]; ``order`` = dispatch rank."""

    task: str
    devices: list[str]
    start: float
    end: float
    order: int


@dataclass
class ModelLoad:
    """``model`` is loaded onto ``device`` during [start, end] after evicting ``evicted``; counts from ``start``."""

    device: str
    model: str
    start: float
    end: float
    evicted: list[str] = field(default_factory=list)


@dataclass
class PhysicalPlan:
    placements: list[Placement]
    loads: list[ModelLoad]
    makespan: float
    cost_usd: float
    method: str
    status: str
    objective: str = "makespan"
    bound: float | None = None
    gap: float | None = None
    solve_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps({"schema": SCHEMA, **d}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> PhysicalPlan:
        d = json.loads(text)
        if d.pop("schema", None) != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document")
        d["placements"] = [Placement(**p) for p in d["placements"]]
        d["loads"] = [ModelLoad(**m) for m in d["loads"]]
        return cls(**d)

    def device_sequences(self) -> dict[str, list[Placement]]:
        """Placements per device in start order."""
        out: dict[str, list[Placement]] = {}
        for p in sorted(self.placements, key=lambda p: (p.start, p.order)):
            for d in p.devices:
                out.setdefault(d, []).append(p)
        return out

    def validate(self, problem: Problem) -> None:
        """Raise :class:`PlanError` unless the plan satisfies every rule of ``problem`` (see SCHEMA.md)."""
        validate(self, problem)


def busy_cost(problem: Problem, placements: list[Placement], loads: list[ModelLoad]) -> float:
    """Dollars: price of each device kind times its busy seconds (task shards and loads)."""
    kind = {d.id: d.kind for d in problem.devices}
    total = 0.0
    for p in placements:
        total += sum(problem.price_per_hour.get(kind[d], 0.0) for d in p.devices) * (p.end - p.start)
    for m in loads:
        total += problem.price_per_hour.get(kind[m.device], 0.0) * (m.end - m.start)
    return total / 3600.0


def score(problem: Problem, makespan: float, cost_usd: float) -> float:
    """The value ``problem.objective`` minimises (seconds for makespan and mix, dollars for cost)."""
    if problem.objective == "cost":
        return cost_usd
    if problem.objective == "mix":
        prices = [problem.price_per_hour.get(d.kind, 0.0) for d in problem.devices]
        mean_per_s = sum(prices) / len(prices) / 3600.0 if prices else 0.0
        return 0.5 * makespan + (0.5 * cost_usd / mean_per_s if mean_per_s > 0 else 0.0)
    return makespan


def required_duration(task: Task, devices: list[Device]) -> float:
    """Wall seconds of ``task`` split equally over ``devices`` (the slowest shard decides)."""
    return max(duration_on(task, d) or 0.0 for d in devices) / len(devices)


def validate(plan: PhysicalPlan, problem: Problem) -> None:
    tasks = {t.id: t for t in problem.tasks}
    devs = {d.id: d for d in problem.devices}
    where: dict[str, Placement] = {}
    for p in plan.placements:
        if p.task not in tasks:
            raise PlanError(f"placement of unknown task {p.task!r}")
        if p.task in where:
            raise PlanError(f"task {p.task!r} placed more than once")
        where[p.task] = p
        t = tasks[p.task]
        if not p.devices or len(set(p.devices)) != len(p.devices):
            raise PlanError(f"task {p.task!r}: empty or repeated device list {p.devices}")
        for d in p.devices:
            if d not in devs:
                raise PlanError(f"task {p.task!r} on unknown device {d!r}")
            if duration_on(t, devs[d]) is None:
                raise PlanError(f"task {p.task!r} is not allowed on {d} (kind {devs[d].kind})")
        if len(p.devices) > 1:
            if not t.shardable:
                raise PlanError(f"task {p.task!r} is split over {p.devices} but is not shardable")
            if len({devs[d].kind for d in p.devices}) != 1:
                raise PlanError(f"task {p.task!r}: shards must use devices of one kind, got {p.devices}")
        need = required_duration(t, [devs[d] for d in p.devices])
        if p.end - p.start < need - EPS:
            raise PlanError(
                f"task {p.task!r} on {p.devices}: runs {p.end - p.start:.6g}s < required {need:.6g}s"
            )
        if p.start < -EPS:
            raise PlanError(f"task {p.task!r} starts before 0")
    missing = set(tasks) - set(where)
    if missing:
        raise PlanError(f"tasks not placed: {sorted(missing)[:10]}")
    for t in problem.tasks:
        c = where[t.id]
        for pid in t.deps:
            p = where[pid]
            if pipelined(tasks[pid], t):
                ok = c.start >= p.start + problem.overlap * (p.end - p.start) - EPS and c.end >= p.end - EPS
                rule = f"start >= start+{problem.overlap}*dur and end >= end of {pid!r}"
            else:
                ok = c.start >= p.end - EPS
                rule = f"start >= end of {pid!r}"
            if not ok:
                raise PlanError(
                    f"precedence violated: task {t.id!r} [{c.start:.6g}, {c.end:.6g}] needs {rule} "
                    f"[{p.start:.6g}, {p.end:.6g}]"
                )
    if abs(plan.makespan - max((p.end for p in plan.placements), default=0.0)) > 1e-4:
        raise PlanError(f"makespan {plan.makespan} differs from the last task end")
    for did, dev in devs.items():
        _check_device(
            problem,
            dev,
            [p for p in plan.placements if did in p.devices],
            [m for m in plan.loads if m.device == did],
            tasks,
        )
    for m in plan.loads:
        if m.device not in devs:
            raise PlanError(f"load on unknown device {m.device!r}")


def _check_device(problem, dev, places, loads, tasks) -> None:
    """Sweep one device's timeline: slots, load durations, residency and memory."""
    resident = list(problem.resident.get(dev.id, []))
    seen = set(resident)
    events = []  # (time, rank, kind, obj): ends before loads before starts at equal times
    for p in places:
        events.append((round(p.end, 6), 0, "end", p))
        events.append((round(p.start, 6), 2, "start", p))
    for m in loads:
        events.append((round(m.end, 6), 0, "lend", m))
        events.append((round(m.start, 6), 1, "load", m))
    events.sort(key=lambda e: (e[0], e[1]))
    busy = mem = 0
    running: dict[str, int] = {}
    for time, _, kind, obj in events:
        if kind in ("end", "lend"):
            busy -= 1
            if kind == "end":
                t = tasks[obj.task]
                mem -= t.mem_bytes
                if t.model:
                    running[t.model] -= 1
            continue
        busy += 1
        if busy > dev.slots:
            raise PlanError(f"device {dev.id}: more than {dev.slots} concurrent task(s)/load(s) at t={time}")
        if kind == "load":
            for e in obj.evicted:
                if e not in resident:
                    raise PlanError(f"device {dev.id}: evicts {e!r} at t={time} but it is not resident")
                if running.get(e, 0):
                    raise PlanError(f"device {dev.id}: evicts {e!r} at t={time} while a task uses it")
                resident.remove(e)
            if obj.model in resident:
                raise PlanError(
                    f"device {dev.id}: loads {obj.model!r} at t={time} but it is already resident"
                )
            need = switch_s(problem, obj.model, dev, obj.model in seen, obj.evicted)
            if obj.end - obj.start < need - EPS:
                raise PlanError(
                    f"device {dev.id}: load of {obj.model!r} takes {obj.end - obj.start:.6g}s "
                    f"< required {need:.6g}s"
                )
            resident.append(obj.model)
            seen.add(obj.model)
            if 0 < problem.max_resident < len(resident):
                raise PlanError(
                    f"device {dev.id}: {len(resident)} models awake at t={time}, at most {problem.max_resident}"
                )
        else:
            t = tasks[obj.task]
            if t.model:
                if t.model not in resident:
                    raise PlanError(
                        f"task {t.id!r} runs on {dev.id} at t={time} but model {t.model!r} "
                        f"is not resident there"
                    )
                ready = [m.end for m in loads if m.model == t.model and m.start <= obj.start + EPS]
                if ready and max(ready) > obj.start + EPS:
                    raise PlanError(f"task {t.id!r} starts on {dev.id} before its model load ends")
                running[t.model] = running.get(t.model, 0) + 1
            mem += t.mem_bytes
        used = sum(problem.model_bytes.get(m, 0) for m in resident) + mem
        if dev.mem_bytes > 0 and used > dev.mem_bytes:
            raise PlanError(
                f"device {dev.id}: memory {used} bytes (resident {resident} + running tasks) "
                f"exceeds capacity {dev.mem_bytes} at t={time}"
            )
