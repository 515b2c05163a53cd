"""An LLM node's call as an engine request, what it is expected to cost in a batch, and whether a failed
request is worth sending again."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from halo.plan import OpNode
from halo.prefix import prefix_key
from halo.runtime import structured
from halo.runtime.engines.base import GenRequest, invalid, json_cut_error
from halo.tokens import expected_output_tokens


def build_request(op: OpNode, env: dict[str, Any], prefix_keys: bool, retain_s: float | None) -> GenRequest:
    """The request for `op` on one input's values; `prefix_keys` names the shared prefix for the engine."""
    system = op.templates["system"].render(env) if "system" in op.templates else None
    top_p = op.option("top_p")
    return GenRequest(
        model=op.llm_model(),
        prompt=op.templates["prompt"].render(env),
        system=system,
        max_tokens=int(op.option("max_tokens")),
        temperature=float(op.option("temperature")),
        seed=op.option("seed"),
        json_schema=structured.json_schema(op.out),
        prefix_key=prefix_key(op, system) if prefix_keys else None,
        retain_s=retain_s,
        top_p=None if top_p is None else float(top_p),
    )


def expected_tokens(op: OpNode, req: GenRequest, seen: Collection[int]) -> int:
    """What `req` takes of a batch's token budget: prompt tokens (≈ chars/4) plus the output tokens
    `halo.tokens.expected_output_tokens` budgets from the node's output lengths `seen`."""
    return (len(req.prompt) + len(req.system or "")) // 4 + expected_output_tokens(op, list(seen))


def retryable(req: GenRequest, error: str) -> bool:
    """Whether a failed request may succeed if sent again: not when the request itself is invalid, nor when
    greedy decoding cut its JSON at max_tokens (the same request gets the same reply)."""
    if invalid(req, error):
        return False
    return not (req.temperature == 0 and error.startswith(json_cut_error(req.max_tokens)))
