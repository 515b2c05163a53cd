"""Execution plans for tests that run a logical plan directly: a mode's plan with some parts changed."""

from __future__ import annotations

from halo.batching import BatchPolicy
from halo.execution import MODES, ExecutionPlan, for_mode
from halo.runtime.executor import RunOptions

RULE_OF = {"merge": "merge", "prefix_keys": "prefix_grouping", "kv": "kv_retention", "fusion": "fusion"}


def split(plan, mode: str = "halo", **opts) -> tuple[ExecutionPlan, RunOptions]:
    """The execution plan of `mode` (its rules; `merge=False`, `prefix_keys=False`, `kv=False`,
    `fusion=False` switch one off; `operator_at_a_time`, `max_batch`, `batch_tokens`, `priority` set the
    barrier, the batches and the order) and the RunOptions of the remaining keyword arguments."""
    from halo import execution

    off = set(MODES[mode].get("disabled", ())) | {RULE_OF[k] for k in RULE_OF if opts.pop(k, True) is False}
    base = for_mode(plan, mode)
    size, tokens = opts.pop("max_batch", None), opts.pop("batch_tokens", None)
    policy = BatchPolicy(size or base.policy.max_batch, tokens or base.policy.batch_tokens)
    x = execution.build(plan, None, policy, opts.pop("priority", None), disabled=off)
    x.barrier = opts.pop("operator_at_a_time", base.barrier)
    if "window" not in opts and "window" in MODES[mode]:
        opts["window"] = MODES[mode]["window"]
    return x, RunOptions(**opts)
