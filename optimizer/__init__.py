"""Halo physical planner: place and order operator groups on devices with model-switch costs.

``optimize(problem)`` is the entry point; see ``problem.py`` for the input and ``SCHEMA.md`` for the
plan's JSON form.
"""

from .auto import optimize
from .baselines import opwise, per_query, per_query_problem, round_robin
from .gantt import gantt_text, save_gantt
from .heuristic import heuristic
from .ilp import ilp
from .physical import ModelLoad, PhysicalPlan, Placement, PlanError
from .problem import Device, Problem, ProblemError, Task
from .simulate import SimResult, simulate

__all__ = [
    "Device",
    "ModelLoad",
    "PhysicalPlan",
    "Placement",
    "PlanError",
    "Problem",
    "ProblemError",
    "SimResult",
    "Task",
    "gantt_text",
    "heuristic",
    "ilp",
    "optimize",
    "opwise",
    "per_query",
    "per_query_problem",
    "round_robin",
    "save_gantt",
    "simulate",
]
