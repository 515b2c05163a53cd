"""Entry point: pick a planner within a planning-time budget."""

from __future__ import annotations

import time

from .heuristic import heuristic
from .ilp import ilp
from .physical import PhysicalPlan, score
from .problem import Problem

ILP_MAX_TASKS = 30
SAFETY = 0.15  # share of the budget kept free for model building and solver start/stop


def optimize(
    problem: Problem,
    method: str = "auto",
    time_limit_s: float = 10.0,
    solver: str = "cbc",
    ilp_max_tasks: int = ILP_MAX_TASKS,
) -> PhysicalPlan:
    """Plan ``problem`` with "heuristic", "ilp" or "auto" (ILP for <= ``ilp_max_tasks`` tasks).

    The ILP is warm-started from the heuristic plan and the better plan is returned; a plan not
    proven optimal says so in ``status``. Total planning time stays within ``time_limit_s``.
    """
    if method not in ("auto", "ilp", "heuristic"):
        raise ValueError(f"unknown method {method!r}")
    t0 = time.perf_counter()
    use_ilp = method == "ilp" or (method == "auto" and len(problem.tasks) <= ilp_max_tasks)
    share = 0.2 if use_ilp else 1.0 - SAFETY
    plan = heuristic(problem, time_budget_s=min(2.0, share * time_limit_s))
    left = time_limit_s * (1 - SAFETY) - (time.perf_counter() - t0)
    if use_ilp and left > 0.2:
        best = ilp(problem, time_limit_s=left, warm=plan, solver=solver)
        if (
            best is not plan
            and score(problem, plan.makespan, plan.cost_usd)
            < score(problem, best.makespan, best.cost_usd) - 1e-9
        ):
            plan.bound, plan.notes = (
                best.bound,
                plan.notes + ["ILP plan was worse; heuristic kept"] + best.notes,
            )
            value = score(problem, plan.makespan, plan.cost_usd)
            plan.gap = (
                max(0.0, (value - plan.bound) / value) if plan.bound is not None and value > 0 else None
            )
        else:
            plan = best
    elif use_ilp:
        plan.notes.append("no time left for the ILP")
    plan.solve_s = time.perf_counter() - t0
    return plan
