"""Execution modes of a task: one device, or equal data-parallel shards over a group of devices.

Shard groups are aligned chunks of the task's eligible single-slot devices of one kind, sorted by id:
shard counts 2, 4, 8, ... and the whole pool (e.g. 6 GPUs -> groups of 2, of 4 (first four) and all 6).
Every planner uses the same modes, so a heuristic plan is always a feasible ILP warm start.
"""

from __future__ import annotations

from dataclasses import dataclass

from .problem import Device, Problem, Task, duration_on, fits


@dataclass(frozen=True)
class Mode:
    """``devices`` run the task together from start to start + ``duration`` (each does 1/k of it)."""

    devices: tuple[str, ...]
    duration: float


def shard_counts(n: int) -> list[int]:
    out, k = [], 2
    while k <= n:
        out.append(k)
        k *= 2
    if n >= 2 and n not in out:
        out.append(n)
    return out


def task_modes(problem: Problem, task: Task, devices: list[Device] | None = None) -> list[Mode]:
    """All modes of ``task`` (single devices first), restricted to devices where it is allowed and fits."""
    out: list[Mode] = []
    by_kind: dict[str, list[tuple[Device, float]]] = {}
    for d in devices if devices is not None else problem.devices:
        dur = duration_on(task, d)
        if dur is None or not fits(problem, task, d):
            continue
        out.append(Mode((d.id,), dur))
        if task.shardable and d.slots == 1:
            by_kind.setdefault(d.kind, []).append((d, dur))
    for pool in by_kind.values():
        pool.sort(key=lambda p: p[0].id)
        for k in shard_counts(len(pool)):
            for i in range(0, len(pool) - k + 1, k):
                group = pool[i : i + k]
                out.append(Mode(tuple(d.id for d, _ in group), max(dur for _, dur in group) / k))
    return out
