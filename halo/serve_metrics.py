"""`halo serve`'s /metrics: Prometheus text exposition (format 0.0.4) of every served workflow's snapshot."""

from __future__ import annotations

from typing import Any

QUANTILES = (0.5, 0.9, 0.99)

# name -> (type, help, how to read it from a runner's snapshot)
_SERIES = {
    "halo_serve_up": (
        "gauge",
        "1 while the workflow is served, 0 after its executor failed",
        lambda s: int(s["up"]),
    ),
    "halo_serve_runs_accepted_total": (
        "counter",
        "Runs accepted (one per input of a request)",
        lambda s: s["counts"].get("accepted", 0),
    ),
    "halo_serve_runs_resumed_total": (
        "counter",
        "Unfinished runs found in the state directory at start",
        lambda s: s["counts"].get("resumed", 0),
    ),
    "halo_serve_runs_refused_total": (
        "counter",
        "Inputs refused with 429 (queue full)",
        lambda s: s["counts"].get("refused", 0),
    ),
    "halo_serve_runs_invalid_total": (
        "counter",
        "Inputs of requests refused with 422 (a bad input)",
        lambda s: s["counts"].get("invalid", 0),
    ),
    "halo_serve_queue_depth": (
        "gauge",
        "Accepted runs not yet admitted to the executor",
        lambda s: s["queued"],
    ),
    "halo_serve_in_flight": ("gauge", "Runs in the executor", lambda s: s["in_flight"]),
    "halo_serve_throughput_runs_per_second": (
        "gauge",
        "Runs finished per second over the last minute",
        lambda s: round(s["throughput"], 4),
    ),
    "halo_serve_windows_total": (
        "counter",
        "Arrival windows admitted",
        lambda s: s["counts"].get("windows", 0),
    ),
    "halo_serve_plans_total": (
        "counter",
        "Plans made (first window and re-plans)",
        lambda s: s["counts"].get("plans", 0),
    ),
    "halo_serve_executors_total": (
        "counter",
        "Executors started (plan generations; one per input in naive mode)",
        lambda s: s["counts"].get("executors", 0),
    ),
    "halo_serve_engine_batches_total": (
        "counter",
        "Engine calls (LLM batches)",
        lambda s: s["executor"].get("engine_calls", 0),
    ),
    "halo_serve_calls_total": (
        "counter",
        "Calls executed (LLM and tools)",
        lambda s: s["executor"].get("calls", 0),
    ),
    "halo_serve_operator_instances_total": (
        "counter",
        "Operator instances completed (one per input and operator)",
        lambda s: s["executor"].get("instances", 0),
    ),
    "halo_serve_cache_hits_total": (
        "counter",
        "Operator instances served by an identical call (memo, journal or joined in flight)",
        lambda s: s["executor"].get("merged", 0),
    ),
    "halo_serve_prompt_tokens_total": (
        "counter",
        "Prompt tokens sent",
        lambda s: s["executor"].get("prompt_tokens", 0),
    ),
    "halo_serve_cached_prompt_tokens_total": (
        "counter",
        "Prompt tokens served from the engine's prefix cache",
        lambda s: s["executor"].get("cached_tokens", 0),
    ),
}


def render(snapshots: dict[str, dict[str, Any]]) -> str:
    """The exposition of every workflow's snapshot (`Runner.snapshot()` plus `up`)."""
    lines: list[str] = []
    for name, (kind, text, read) in _SERIES.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{workflow="{_label(w)}"}} {read(s)}' for w, s in snapshots.items()]
    name = "halo_serve_finished_runs_total"
    lines += [f"# HELP {name} Runs finished, by outcome", f"# TYPE {name} counter"]
    for w, s in snapshots.items():
        for outcome in ("succeeded", "failed"):
            lines.append(
                f'{name}{{workflow="{_label(w)}",outcome="{outcome}"}} {s["counts"].get(outcome, 0)}'
            )
    name = "halo_serve_latency_seconds"
    lines += [
        f"# HELP {name} From acceptance to committed result (quantiles over the last runs)",
        f"# TYPE {name} summary",
    ]
    for w, s in snapshots.items():
        lat = s["latencies"]
        for q in QUANTILES:
            value = lat[min(len(lat) - 1, int(q * len(lat)))] if lat else "NaN"
            lines.append(f'{name}{{workflow="{_label(w)}",quantile="{q}"}} {value}')
        done = s["counts"].get("succeeded", 0) + s["counts"].get("failed", 0)
        lines.append(f'{name}_sum{{workflow="{_label(w)}"}} {round(s["counts"].get("latency_s", 0.0), 6)}')
        lines.append(f'{name}_count{{workflow="{_label(w)}"}} {done}')
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
