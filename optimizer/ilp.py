"""MILP planner (pulp; CBC bundled, HiGHS through highspy) with sequence-dependent model setups.

Formulation (pairwise disjunctive, chosen over immediate-predecessor arcs because it needs one
order binary per task pair instead of one arc per pair *per device*, and solved faster on our
instances):

* ``x[t,j]`` picks mode j of task t (one device lane, or an aligned shard group; a device with
  k slots is k lanes). ``D_t = sum_j dur_j x[t,j]``; ``s_t >= 0`` continuous; ``C >= s_t + D_t``.
* ``u[t,r] = sum of x[t,j]`` over modes using lane r. For every pair (i, j) that may share lane r:
  ``s_j >= s_i + D_i + setup(i,j,r) - M(1 - o_ij) - M(2 - u_ir - u_jr)`` and the mirror with
  ``o_ij``; ``o_ij`` is fixed when one task is an ancestor of the other.
  ``setup(i,j,r)`` = load seconds of j's model on r when i's model differs. Loads satisfy the
  triangle inequality, so pairwise setups on all pairs equal setups between immediate neighbours.
  First use: ``s_j >= load(model_j, r) u_jr`` unless the model is resident at t=0.
* Precedence with the overlap rule of :mod:`halo.optimizer.problem`.
* Memory: a mode is offered only where weights + task memory fit.
* Objective: ``C`` (makespan), busy dollars + one load per used (model, device) (cost), or the mix.

This prices every switch as a cold load with one resident model per device. The solution's modes and
start order are re-timed by :class:`Timeline` (LRU multi-model residency, wakes), which can only be
faster. The solver's bound is reported only when the MILP is exact for the problem (no ``wake_s``, no
device able to hold two of its models, no LLM on a multi-slot device, makespan objective); otherwise
the bound is the combinatorial one of :mod:`halo.optimizer.bounds`, and notes say which.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from typing import Any

import pulp

from .bounds import objective_lower_bound
from .heuristic import build
from .modes import Mode, task_modes
from .physical import PhysicalPlan, score
from .problem import Problem, ProblemError, check, pipelined, reload_s, topo_order

Lane = tuple[str, int]


def _highs_available() -> bool:
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


class _Model:
    """Sets, parameters and pulp variables of the MILP for one problem."""

    def __init__(self, problem: Problem, horizon: float):
        self.p = problem
        self.devs = {d.id: d for d in problem.devices}
        self.order = topo_order(problem)
        self.tasks = {t.id: t for t in self.order}
        self.modes = {t.id: task_modes(problem, t) for t in self.order}
        self.alts: dict[str, list[tuple[int, tuple[Lane, ...]]]] = {}
        for t in self.order:
            n_lanes = {d: min(self.devs[d].slots, len(self.order)) for d in self.devs}
            alts: list[tuple[int, tuple[Lane, ...]]] = []
            for j, m in enumerate(self.modes[t.id]):
                if len(m.devices) == 1 and n_lanes[m.devices[0]] > 1:
                    alts += [(j, ((m.devices[0], k),)) for k in range(n_lanes[m.devices[0]])]
                else:
                    alts.append((j, tuple((d, 0) for d in m.devices)))
            self.alts[t.id] = alts
        self.ancestors = self._ancestors()
        self.horizon = horizon
        self.first_vars: dict[tuple[str, str], pulp.LpVariable] = {}  # (model, device) loaded at least once
        self.first_uses: list[tuple[pulp.LpVariable, pulp.LpVariable]] = []

    def _ancestors(self) -> dict[str, set[str]]:
        anc: dict[str, set[str]] = {}
        for t in self.order:
            anc[t.id] = set(t.deps).union(*(anc[p] for p in t.deps)) if t.deps else set()
        return anc

    def setup(self, i: str, j: str, lane: Lane) -> float:
        mi, mj = self.tasks[i].model, self.tasks[j].model
        if mj is None or mi == mj:
            return 0.0
        return self.first_load(j, lane, seen_ok=True)

    def first_load(self, j: str, lane: Lane, seen_ok: bool = False) -> float:
        m = self.tasks[j].model
        if m is None:
            return 0.0
        resident = m in self.p.resident.get(lane[0], [])
        if resident and not seen_ok:
            return 0.0
        return reload_s(self.p, m, self.devs[lane[0]], resident)

    def exact(self) -> bool:
        """True when the MILP's switch model equals the Timeline's (see module docstring)."""
        if self.p.objective != "makespan" or self.p.wake_s or self.p.sleep_s:
            return False
        for d in self.devs.values():
            models = sorted(
                {t.model for t in self.order if t.model and any(d.id in m.devices for m in self.modes[t.id])}
            )
            if models and d.slots > 1:
                return False
            if len(models) > 1 and d.mem_bytes <= 0:
                return False
            mb = self.p.model_bytes
            kv: dict[str, int] = {}
            for t in self.order:
                if t.model in models and any(d.id in m.devices for m in self.modes[t.id]):
                    kv[t.model] = max(kv.get(t.model, 0), t.mem_bytes)
            for a in models:
                for b in models:
                    if a < b and mb[a] + mb[b] + min(kv[a], kv[b]) <= d.mem_bytes:
                        return False
        return True


def ilp(
    problem: Problem,
    time_limit_s: float = 10.0,
    warm: PhysicalPlan | None = None,
    solver: str = "cbc",
    threads: int | None = None,
) -> PhysicalPlan:
    """Solve the MILP within ``time_limit_s`` (solver: "cbc" or "highs"), warm-started from ``warm``.

    Returns the re-timed plan; ``status`` is "optimal" only when the MILP is exact and proven optimal.
    """
    t0 = time.perf_counter()
    check(problem)
    ms_bound = objective_lower_bound(problem)
    start_vals = None
    horizon = _serial_horizon(problem)
    model = _Model(problem, horizon)
    if warm is not None:
        start_vals = _warm_values(model, warm)
        if problem.objective == "makespan":
            horizon = min(horizon, max(s + d for s, d, _ in start_vals.values()))
            model.horizon = horizon
    lp, x, s, o, cvar = _formulate(model)
    if start_vals is not None:
        _set_warm(model, x, s, o, cvar, start_vals)
    remaining = max(0.1, time_limit_s - (time.perf_counter() - t0))
    status, obj, bound, solved = _solve(lp, solver, remaining, threads, warm=start_vals is not None)
    if not solved:
        if warm is not None:
            warm.notes.append(f"ilp found no solution ({status}); heuristic plan kept")
            return warm
        raise ProblemError(f"ILP found no feasible plan ({status})")
    starts, fixed = {}, {}
    for tid, alts in model.alts.items():
        j = max(range(len(alts)), key=lambda k: x[tid, k].value() or 0.0)
        fixed[tid] = alts[j][0]
        starts[tid] = s[tid].value() or 0.0
    idx = {t.id: i for i, t in enumerate(model.order)}
    keys = {tid: starts[tid] + 1e-9 * idx[tid] for tid in starts}
    tl, _ = build(problem, model.modes, keys, fixed)
    plan = tl.plan("ilp", "feasible", solve_s=time.perf_counter() - t0)
    exact = model.exact()
    value = score(problem, plan.makespan, plan.cost_usd)
    notes = [
        f"solver {solver}: {status}; MILP objective {obj:.6g}",
        f"MILP is {'exact' if exact else 'a restriction (cold-load switches, one model per device)'}",
    ]
    if exact and bound is not None:
        plan.bound = max(bound, ms_bound)
        notes.append(f"bound: solver best bound {bound:.6g} (combinatorial {ms_bound:.6g})")
    else:
        plan.bound = ms_bound
        notes.append(f"bound: combinatorial (critical path / work per slot) {ms_bound:.6g}")
    plan.gap = max(0.0, (value - plan.bound) / value) if value > 0 else 0.0
    if exact and status == "optimal":
        plan.status = "optimal"
    elif status == "time_limit":
        plan.status = "time_limit"
    plan.notes = notes
    return plan


def _serial_horizon(problem: Problem) -> float:
    """A horizon no optimal plan exceeds: everything run one after another with a cold load each."""
    total = 0.0
    for t in problem.tasks:
        modes = task_modes(problem, t)
        total += max(m.duration for m in modes)
        if t.model:
            total += max(problem.load_s.get((t.model, d.kind), 0.0) for d in problem.devices)
    return total + 1.0


def _formulate(m: _Model):
    p = m.p
    lp = pulp.LpProblem("halo_plan", pulp.LpMinimize)
    ids = [t.id for t in m.order]
    x = {
        (tid, k): lp.add_variable(f"x_{i}_{k}", cat="Binary")
        for i, tid in enumerate(ids)
        for k in range(len(m.alts[tid]))
    }
    s = {tid: lp.add_variable(f"s_{i}", 0, m.horizon) for i, tid in enumerate(ids)}
    cvar = lp.add_variable("C", 0, m.horizon)
    dur: dict[str, Any] = {}  # pulp expressions
    use: dict[str, dict[Lane, list[Any]]] = {}  # task -> lane -> its pulp binaries that use the lane
    for tid in ids:
        lp += pulp.lpSum(x[tid, k] for k in range(len(m.alts[tid]))) == 1, f"one_{tid}"
        dur[tid] = pulp.lpSum(m.modes[tid][j].duration * x[tid, k] for k, (j, _) in enumerate(m.alts[tid]))
        use[tid] = {}
        for k, (_, lanes) in enumerate(m.alts[tid]):
            for r in lanes:
                use[tid].setdefault(r, []).append(x[tid, k])
        lp += s[tid] + dur[tid] <= cvar, f"C_{tid}"
        for r, xs in use[tid].items():
            init = m.first_load(tid, r)
            if init > 0:
                lp += s[tid] >= init * pulp.lpSum(xs), f"init_{tid}_{r[0]}_{r[1]}"
        for pid in m.tasks[tid].deps:
            if pipelined(m.tasks[pid], m.tasks[tid]):
                lp += s[tid] >= s[pid] + p.overlap * dur[pid]
                lp += s[tid] + dur[tid] >= s[pid] + dur[pid]
            else:
                lp += s[tid] >= s[pid] + dur[pid]
    o = {}
    for a, i in enumerate(ids):
        for j in ids[a + 1 :]:
            shared = sorted(set(use[i]) & set(use[j]))
            if not shared:
                continue
            fixed = j in m.ancestors and i in m.ancestors[j]
            if not fixed:
                o[i, j] = lp.add_variable(f"o_{a}_{ids.index(j)}", cat="Binary")
            for r in shared:
                both = 2 - pulp.lpSum(use[i][r]) - pulp.lpSum(use[j][r])
                big = m.horizon + max(m.setup(i, j, r), m.setup(j, i, r))
                after = 0 if fixed else 1 - o[i, j]
                lp += s[j] >= s[i] + dur[i] + m.setup(i, j, r) - big * after - big * both
                if not fixed:
                    lp += s[i] >= s[j] + dur[j] + m.setup(j, i, r) - big * o[i, j] - big * both
    lp += _objective(m, lp, x, cvar)
    for z, xv in m.first_uses:
        lp += z >= xv
    return lp, x, s, o, cvar


def _objective(m: _Model, lp, x, cvar):
    p = m.p
    if p.objective == "makespan":
        return cvar
    price = {d: p.price_per_hour.get(m.devs[d].kind, 0.0) / 3600.0 for d in m.devs}
    usd = []
    for tid, alts in m.alts.items():
        for k, (j, lanes) in enumerate(alts):
            mode: Mode = m.modes[tid][j]
            usd.append(mode.duration * sum(price[d] for d in mode.devices) * x[tid, k])
            model = m.tasks[tid].model
            for d, _ in lanes:
                if model and model not in p.resident.get(d, []):
                    if (model, d) not in m.first_vars:
                        m.first_vars[model, d] = lp.add_variable(f"z_{len(m.first_vars)}", 0, 1)
                    z = m.first_vars[model, d]
                    m.first_uses.append((z, x[tid, k]))
    lp_usd = pulp.lpSum(usd) + pulp.lpSum(
        z * price[d] * reload_s(p, model, m.devs[d], False) for (model, d), z in m.first_vars.items()
    )
    if p.objective == "cost":
        return lp_usd
    prices = list(price.values())
    mean = sum(prices) / len(prices) if prices else 0.0
    return 0.5 * cvar + (0.5 / mean) * lp_usd if mean > 0 else cvar


def _warm_values(m: _Model, plan: PhysicalPlan) -> dict[str, tuple[float, float, int]]:
    """ILP-semantics times of ``plan``'s modes and order: task -> (start, duration, alt index)."""
    place = {pl.task: pl for pl in plan.placements}
    idx = {t.id: i for i, t in enumerate(m.order)}
    free: dict[Lane, tuple[float, str | None]] = {}
    out: dict[str, tuple[float, float, int]] = {}
    for tid in sorted(place, key=lambda t: (place[t].start, idx[t])):
        task, devs = m.tasks[tid], tuple(place[tid].devices)
        j = next(j for j, md in enumerate(m.modes[tid]) if md.devices == devs)
        cands = [k for k, (jj, _) in enumerate(m.alts[tid]) if jj == j]
        k = min(cands, key=lambda k: max(free.get(r, (0.0, None))[0] for r in m.alts[tid][k][1]))
        d = m.modes[tid][j].duration
        st = 0.0
        for pid in task.deps:
            ps, pd, _ = out[pid]
            if pipelined(m.tasks[pid], task):
                st = max(st, ps + m.p.overlap * pd, ps + pd - d)
            else:
                st = max(st, ps + pd)
        for r in m.alts[tid][k][1]:
            end, prev = free.get(r, (0.0, None))
            st = max(st, end + (m.setup(prev, tid, r) if prev else m.first_load(tid, r)))
        for r in m.alts[tid][k][1]:
            free[r] = (st + d, tid)
        out[tid] = (st, d, k)
    return out


def _set_warm(m: _Model, x, s, o, cvar, vals) -> None:
    for (tid, k), var in x.items():
        var.setInitialValue(1 if vals[tid][2] == k else 0)
    for tid, var in s.items():
        var.setInitialValue(vals[tid][0])
    for (i, j), var in o.items():
        var.setInitialValue(1 if (vals[i][0], vals[i][1] > 0) <= (vals[j][0], vals[j][1] > 0) else 0)
    cvar.setInitialValue(max(st + d for st, d, _ in vals.values()))
    for (model, d), z in m.first_vars.items():
        used = any(
            m.tasks[t].model == model and any(r[0] == d for r in m.alts[t][vals[t][2]][1]) for t in vals
        )
        z.setInitialValue(1 if used else 0)


def _solve(lp, solver: str, limit: float, threads: int | None, warm: bool):
    """Run the solver; returns (status word, objective, best bound or None, has solution)."""
    if solver == "highs":
        if not _highs_available():
            raise ProblemError("solver='highs' needs highspy installed")
        return _solve_highs(lp, limit, threads, warm)
    fd, log = tempfile.mkstemp(suffix=".log")
    os.close(fd)
    try:
        cmd = pulp.PULP_CBC_CMD(msg=False, timeLimit=limit, warmStart=warm, threads=threads, logPath=log)
        lp.solve(cmd)
        with open(log) as fh:
            text = fh.read()
    finally:
        os.remove(log)
    solved = lp.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
    obj = pulp.value(lp.objective) if solved else float("nan")
    if "Optimal solution found" in text:
        return "optimal", obj, obj, solved
    found = re.search(r"Lower bound:\s*([-\d.eE+]+)", text)
    bound = float(found.group(1)) if found else None
    word = "time_limit" if "time limit" in text.lower() else pulp.LpStatus[lp.status].lower()
    return word, obj, bound, solved


class _WarmHiGHS(pulp.HiGHS):
    """pulp's highspy interface plus a MIP start taken from the variables' initial values."""

    def callSolver(self, lp):
        import highspy

        if self.optionsDict.get("_warm"):
            sol = highspy.HighsSolution()
            sol.col_value = [v.varValue if v.varValue is not None else 0.0 for v in lp.variables()]
            sol.value_valid = True
            lp.solverModel.setSolution(sol)
        lp.solverModel.run()

    def createAndConfigureSolver(self, lp):
        warm = self.optionsDict.pop("_warm", False)
        super().createAndConfigureSolver(lp)
        self.optionsDict["_warm"] = warm


@contextlib.contextmanager
def _quiet_stdout():
    """Silence the banner highspy prints from C++ before options apply."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _solve_highs(lp, limit, threads, warm):
    cmd = _WarmHiGHS(msg=False, timeLimit=limit, threads=threads, _warm=warm)
    with _quiet_stdout():
        lp.solve(cmd)
    h = lp.solverModel
    info = h.getInfo()
    solved = lp.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
    obj = pulp.value(lp.objective) if solved else float("nan")
    status = h.modelStatusToString(h.getModelStatus()).lower()
    word = "optimal" if status == "optimal" else ("time_limit" if "time" in status else status)
    return word, obj, float(info.mip_dual_bound), solved
