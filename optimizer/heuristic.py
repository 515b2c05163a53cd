"""List scheduling with setup times (HEFT-like) followed by a time-boxed local search.

1. Upward rank: mean duration over allowed devices plus the largest child rank.
2. Tasks are taken by priority among those whose parents are placed; each goes to the mode (device
   or shard group) with the best objective increment (earliest finish for makespan), counting model
   loads/wakes and LRU residency via :class:`Timeline`. Four greedy passes (priority = rank, or rank
   bands with same-model tasks adjacent; with/without a charge for consumed device-seconds, which
   stops needless wide shards and loads) plus a round-robin assignment; the best one is kept. A task prefers the device of an already placed
   member of its ``prefix_group`` when that costs at most 2% more.
3. Local search until the budget runs out: move a critical-path task to another mode, swap the modes
   of two tasks, or pull a task next to a same-model task on its device (fewer switches); improving
   moves are kept. Each candidate is re-timed from scratch, O(n log n).
"""

from __future__ import annotations

import heapq
import random
import time

from .modes import Mode, task_modes
from .physical import PhysicalPlan, score
from .problem import Problem, ProblemError, Task, check, children_of, topo_order
from .timeline import Slot, Timeline

PREFIX_SLACK = 0.02
SPREADS = (0.0, 1.0)  # greedy passes: pure earliest finish, and finish + consumed device-seconds


def upward_rank(problem: Problem, modes: dict[str, list[Mode]]) -> dict[str, float]:
    kids = children_of(problem)
    rank: dict[str, float] = {}
    for t in reversed(topo_order(problem)):
        mean = sum(m.duration for m in modes[t.id]) / len(modes[t.id])
        rank[t.id] = mean + max((rank[c] for c in kids[t.id]), default=0.0)
    return rank


def _mean_price_per_s(problem: Problem) -> float:
    prices = [problem.price_per_hour.get(d.kind, 0.0) for d in problem.devices]
    return sum(prices) / len(prices) / 3600.0 if prices else 0.0


class _Scorer:
    """Objective increment of placing a slot (lower is better)."""

    def __init__(self, problem: Problem, spread: float = 0.0):
        self.spread = spread / len(problem.devices)
        self.kind = {d.id: d.kind for d in problem.devices}
        self.price = problem.price_per_hour
        self.objective = problem.objective
        self.mean = _mean_price_per_s(problem)

    def __call__(self, slot: Slot) -> tuple[float, float]:
        used = slot.mode.duration * len(slot.mode.devices) + sum(ld.end - ld.start for ld in slot.loads)
        end = slot.end + self.spread * used
        usd = sum(self.price.get(self.kind[d], 0.0) for d in slot.mode.devices) * slot.mode.duration
        usd += sum(self.price.get(self.kind[ld.device], 0.0) * (ld.end - ld.start) for ld in slot.loads)
        usd /= 3600.0
        if self.objective == "cost":
            return (usd, end)
        if self.objective == "mix" and self.mean > 0:
            return (0.5 * end + 0.5 * usd / self.mean, end)
        return (end, usd)


def build(
    problem: Problem,
    modes: dict[str, list[Mode]],
    keys: dict[str, float],
    fixed: dict[str, int] | None = None,
    spread: float = 0.0,
) -> tuple[Timeline, dict[str, int]]:
    """Schedule tasks in key order among those whose parents are placed.

    With ``fixed`` (task -> mode index) modes are given; otherwise each task picks its best mode,
    charging ``spread`` x (device-seconds it consumes, loads included) / devices on top of its finish.
    """
    tl, scorer = Timeline(problem), _Scorer(problem, spread)
    kids = children_of(problem)
    tasks = {t.id: t for t in problem.tasks}
    waiting = {t.id: len(t.deps) for t in problem.tasks}
    heap = [(keys[t], t) for t, n in waiting.items() if n == 0]
    heapq.heapify(heap)
    chosen: dict[str, int] = {}
    group_dev: dict[str, str] = {}
    while heap:
        _, tid = heapq.heappop(heap)
        task = tasks[tid]
        if fixed is not None:
            slot = tl.probe(task, modes[tid][fixed[tid]])
            idx = fixed[tid]
        else:
            slot, idx = _best(tl, task, modes[tid], scorer, group_dev.get(task.prefix_group or ""))
        if slot is None:
            raise ProblemError(f"task {tid!r}: its model cannot be made resident on any allowed device")
        tl.commit(slot)
        chosen[tid] = idx
        if task.prefix_group and len(slot.mode.devices) == 1:
            group_dev.setdefault(task.prefix_group, slot.mode.devices[0])
        for c in kids[tid]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(heap, (keys[c], c))
    return tl, chosen


def _best(tl: Timeline, task: Task, modes: list[Mode], scorer: _Scorer, mate: str | None):
    best = None
    probed = []
    for i, m in enumerate(modes):
        slot = tl.probe(task, m)
        if slot is None:
            continue
        s = scorer(slot)
        probed.append((slot, i, s))
        if best is None or s < best[2]:
            best = (slot, i, s)
    if best is None:
        return None, -1
    if mate is not None:
        for slot, i, s in probed:
            if slot.mode.devices == (mate,) and s[0] <= best[2][0] * (1 + PREFIX_SLACK) + 1e-9:
                return slot, i
    return best[0], best[1]


def _critical(tl: Timeline) -> list[str]:
    """Task ids on the chain that ends last: at each step the parent or device predecessor ending latest."""
    prev: dict[tuple[str, str], Slot] = {}
    by_dev: dict[str, list[Slot]] = {}
    for s in tl.done.values():
        for d in s.mode.devices:
            by_dev.setdefault(d, []).append(s)
    for d, seq in by_dev.items():
        seq.sort(key=lambda s: s.start)
        for a, b in zip(seq, seq[1:], strict=False):
            prev[(d, b.task.id)] = a
    cur = max(tl.done.values(), key=lambda s: s.end)
    chain, seen = [cur.task.id], {cur.task.id}
    while True:
        cands = [tl.done[p] for p in cur.task.deps]
        cands += [prev[(d, cur.task.id)] for d in cur.mode.devices if (d, cur.task.id) in prev]
        cands = [s for s in cands if s.task.id not in seen]
        if not cands:
            return chain
        cur = max(cands, key=lambda s: s.end)
        chain.append(cur.task.id)
        seen.add(cur.task.id)


STALL_TRIES = 200  # local-search neighbours in a row without improvement before it stops


def heuristic(problem: Problem, time_budget_s: float = 1.0, seed: int = 0) -> PhysicalPlan:
    """Plan with list scheduling plus local search; the search stops after ``STALL_TRIES`` neighbours in
    a row bring no improvement, and never runs much past ``time_budget_s``."""
    t0 = time.perf_counter()
    check(problem)
    modes = {t.id: task_modes(problem, t) for t in problem.tasks}
    rank = upward_rank(problem, modes)
    best: tuple[float, Timeline, dict[str, int], dict[str, float]] | None = None
    tl: Timeline | None
    for keys in _key_variants(problem, rank):
        for spread in SPREADS:
            tl, chosen = build(problem, modes, keys, spread=spread)
            val = score(problem, *_ms_cost(tl))
            if best is None or val < best[0] - 1e-9:
                best = (val, tl, chosen, keys)
    assert best is not None  # SPREADS and the key variants are never empty
    keys = _key_variants(problem, rank)[0]
    try:
        tl, chosen = build(problem, modes, keys, _round_robin_modes(problem, modes))
    except ProblemError:  # a pinned device could not make a model resident
        tl = None
    if tl is not None and score(problem, *_ms_cost(tl)) < best[0] - 1e-9:
        best = (score(problem, *_ms_cost(tl)), tl, chosen, keys)
    greedy_score, crit = best[0], _critical(best[1])
    tries = improved = stale = 0
    rng = random.Random(seed)
    deadline = t0 + time_budget_s
    while time.perf_counter() < deadline and len(problem.tasks) > 1 and stale < STALL_TRIES:
        cand = _neighbour(rng, problem, modes, best[1], best[2], best[3], crit)
        if cand is None:
            continue
        fixed, keys2 = cand
        tries += 1
        stale += 1
        try:
            tl2, _ = build(problem, modes, keys2, fixed)
        except ProblemError:
            continue
        val = score(problem, *_ms_cost(tl2))
        if val < best[0] - 1e-9:
            best = (val, tl2, fixed, keys2)
            crit = _critical(tl2)
            improved += 1
            stale = 0
    notes = [
        f"list scheduling objective {greedy_score:.6g}; local search {tries} tries, {improved} improvements"
    ]
    return best[1].plan("heuristic", "heuristic", solve_s=time.perf_counter() - t0, notes=notes)


def _round_robin_modes(problem: Problem, modes: dict[str, list[Mode]]) -> dict[str, int]:
    """Single-device modes dealt round-robin in topological order (a spread-out starting point)."""
    out, turn = {}, 0
    ids = [d.id for d in problem.devices]
    for t in topo_order(problem):
        for k in range(len(ids)):
            dev = ids[(turn + k) % len(ids)]
            hit = [i for i, m in enumerate(modes[t.id]) if m.devices == (dev,)]
            if hit:
                out[t.id], turn = hit[0], (turn + k + 1) % len(ids)
                break
        else:
            out[t.id] = 0
    return out


def _key_variants(problem: Problem, rank: dict[str, float]) -> list[dict[str, float]]:
    """Priority keys: upward rank; and rank rounded to 10% bands with same-model tasks adjacent."""
    order = {t.id: i for i, t in enumerate(topo_order(problem))}
    models = {m: i for i, m in enumerate(sorted({t.model or "" for t in problem.tasks}))}
    top = max(rank.values(), default=1.0) or 1.0
    plain = {tid: -rank[tid] + 1e-9 * order[tid] for tid in rank}
    banded = {
        t.id: -round(10 * rank[t.id] / top)
        + 0.01 * models[t.model or ""] / len(models)
        - 1e-6 * rank[t.id] / top
        + 1e-12 * order[t.id]
        for t in problem.tasks
    }
    return [plain, banded]


def _ms_cost(tl: Timeline) -> tuple[float, float]:
    plan = tl.plan("", "")
    return plan.makespan, plan.cost_usd


def _neighbour(rng, problem, modes, tl, chosen, keys, crit):
    """One random local-search move: (modes, keys) or None when the move does not apply."""
    fixed, keys2 = dict(chosen), dict(keys)
    move = rng.random()
    if move < 0.5:
        tid = rng.choice(crit)
        if len(modes[tid]) < 2:
            return None
        fixed[tid] = rng.choice([i for i in range(len(modes[tid])) if i != chosen[tid]])
    elif move < 0.75:
        a = rng.choice(crit)
        b = rng.choice(problem.tasks).id
        ma, mb = modes[a][chosen[a]], modes[b][chosen[b]]
        ia = [i for i, m in enumerate(modes[a]) if m.devices == mb.devices]
        ib = [i for i, m in enumerate(modes[b]) if m.devices == ma.devices]
        if a == b or not ia or not ib:
            return None
        fixed[a], fixed[b] = ia[0], ib[0]
    else:
        tid = rng.choice(crit)
        task = tl.done[tid].task
        devs = tl.done[tid].mode.devices
        mates = [
            s
            for s in tl.done.values()
            if s.task.id != tid and s.task.model == task.model and s.mode.devices == devs
        ]
        if not task.model or not mates:
            return None
        keys2[tid] = keys[rng.choice(mates).task.id] + rng.choice((-1e-7, 1e-7))
    return fixed, keys2
