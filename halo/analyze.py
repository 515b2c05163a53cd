"""EXPLAIN ANALYZE: put what a run measured beside what the cost model predicted, and learn from it.

Adds to the report: per node `actual` (seconds, calls, instances, merged, tokens, cache hits, errors,
ratio to the estimate, text) and a report-level `analyze` block (predicted vs measured makespan).
`measurements` turns the run into calibration records for `halo.calibration`.
"""

from __future__ import annotations

from typing import Any

from halo.optimizer import ModelLoad, PhysicalPlan, Placement, Problem
from halo.runtime.stats import RunStats


def annotate(report: dict[str, Any], stats: RunStats) -> dict[str, Any]:
    """Add measured figures to every node and a predicted-vs-measured summary."""
    for node in report["nodes"]:
        st = stats.nodes.get(node["id"])
        if st is None:
            continue
        est = (node.get("estimate") or {}).get("seconds")
        merged = st.memo_hits + st.coalesced
        busy = st.engine_s if node["kind"] == "llm" and st.engine_s else st.seconds
        actual = {
            **st.as_dict(),
            "merged": merged,
            "estimate_s": est,
            "busy_s": busy,
            "ratio": round(busy / est, 3) if est else None,
        }
        parts = [
            f"actual: {busy:.2f} s busy over {actual['wall_seconds']:.2f} s",
            f"{st.calls:,} calls for {st.instances:,} instances ({merged:,} merged)",
        ]
        if st.prompt_tokens:
            parts.append(
                f"tokens {st.prompt_tokens:,} in ({st.cached_tokens:,} cached) / {st.completion_tokens:,} out"
            )
        if st.errors:
            parts.append(f"{st.errors:,} errors")
        if est:
            parts.append(f"estimate {est:.2f} s (x{busy / est:.2f})")
        actual["text"] = "; ".join(parts)
        node["actual"] = actual
    predicted = (report.get("optimizer") or {}).get("makespan") or (report.get("totals") or {}).get("seconds")
    t = stats.totals()
    block = {"measured_s": t["seconds"], "predicted_s": predicted, **t}
    text = f"Execution: {t['seconds']:.2f} s for {t['inputs']:,} inputs ({t['failed']:,} failed)"
    if predicted:
        err = (predicted - t["seconds"]) / t["seconds"] if t["seconds"] else 0.0
        block["error"] = round(err, 4)
        text += f"; predicted {predicted:.2f} s ({err:+.0%})"
    if t["substitutions"]:
        text += "\nModels substituted on this engine: " + ", ".join(
            f"{k} ran as {v}" for k, v in t["substitutions"].items()
        )
    block["text"] = text
    report["analyze"] = block
    report["devices"] = devices(report, stats)
    if report["devices"]["per_device"]:
        block["text"] += "\n" + report["devices"]["text"]
    return report


def devices(report: dict[str, Any], stats: RunStats) -> dict[str, Any]:
    """Per device of the placement: predicted busy seconds and model loads beside the measured ones
    (engine batches and loads the run recorded on that device's engine), and worker restarts."""
    predicted: dict[str, dict[str, float]] = {}
    for node in report["nodes"]:
        p = node.get("placement")
        if node["kind"] != "llm" or not p:
            continue
        for d in p["devices"]:
            predicted.setdefault(d, {"busy_s": 0.0, "loads": 0})["busy_s"] += p["end"] - p["start"]
    for step in (report.get("execution") or {}).get("residency", []):
        predicted.setdefault(step["device"], {"busy_s": 0.0, "loads": 0})["loads"] += 1
    measured: dict[str, dict[str, float]] = {}
    for b in stats.engine_batches:
        for d in str(b.get("device", "local")).split("+"):
            m = measured.setdefault(d, {"busy_s": 0.0, "batches": 0, "loads": 0})
            m["busy_s"] += b["seconds"]
            m["batches"] += 1
    for x in stats.loads:
        for d in str(x["device"]).split("+"):
            m = measured.setdefault(d, {"busy_s": 0.0, "batches": 0, "loads": 0})
            m["busy_s"] += x["end"] - x["start"]
            m["loads"] += 1
    rows, lines = {}, []
    for d in sorted(set(predicted) | set(measured)):
        p, m = predicted.get(d, {}), measured.get(d, {})
        restarts = stats.worker_restarts.get(d, 0)
        rows[d] = {"predicted": p, "measured": m, "restarts": restarts}
        lines.append(
            f"  {d}: busy {m.get('busy_s', 0.0):.2f} s measured / {p.get('busy_s', 0.0):.2f} s predicted; "
            f"{m.get('batches', 0)} batches; loads {m.get('loads', 0)} / {p.get('loads', 0)} planned"
            + (f"; {restarts} worker restart(s)" if restarts else "")
        )
    return {"per_device": rows, "text": "Devices (measured / predicted):\n" + "\n".join(lines)}


def measurements(report: dict[str, Any], stats: RunStats) -> list[dict[str, Any]]:
    """Calibration records from a run: engine batches, LLM factors, tool latencies, output lengths."""
    out: list[dict[str, Any]] = []
    llm = [n for n in report["nodes"] if n["kind"] == "llm"]
    device = {n["model"]: (n.get("estimate") or {}).get("device", "cpu") for n in llm}
    if stats.model_loads and len(device) == 1:  # one model: every load was that model's
        model = next(iter(device))
        out.append(
            {
                "kind": "load",
                "model": model,
                "device": device[model],
                "seconds": stats.load_seconds / stats.model_loads,
            }
        )
    longest: dict[str, list[int]] = {}
    for b in stats.engine_batches:
        if b["model"] not in device or b["seconds"] <= 0:
            continue
        ran_as = stats.substitutions.get(b["model"])
        out.append(
            {
                "kind": "llm_batch",
                "model": b["model"],
                "device": device[b["model"]],
                "n": b["n"],
                "prefill_tokens": b["prompt_tokens"] - b["cached_tokens"],
                "steps": b["steps"],
                "seconds": b["seconds"],
                **({"ran_as": ran_as} if ran_as else {}),
            }
        )
        for node, steps in b["node_steps"].items():
            longest.setdefault(node, []).append(steps)
    for node in report["nodes"]:
        st = stats.nodes.get(node["id"])
        if st is None or st.calls == 0 or st.seconds <= 0:
            continue
        est = node.get("estimate") or {}
        if node["kind"] == "llm":
            predicted = (est.get("breakdown") or {}).get("roofline_s")
            out.append(
                {
                    "kind": "llm",
                    "model": node["model"],
                    "device": est.get("device", "cpu"),
                    "phase": "group",
                    "tokens": st.completion_tokens,
                    "seconds": st.seconds,
                    **({"predicted_s": predicted} if predicted else {}),
                }
            )
            record = {
                "kind": "output",
                "node": f"{report['workflow']}.{node['id']}",
                "tokens": st.completion_tokens / st.calls,
            }
            if longest.get(node["id"]):
                record["batch_max"] = sum(longest[node["id"]]) / len(longest[node["id"]])
            out.append(record)
        else:
            out.append(
                {"kind": "tool", "tool": node["kind"], "key": node["id"], "seconds": st.seconds / st.calls}
            )
    return out


def measured_plan(problem: Problem, stats: RunStats) -> PhysicalPlan:
    """The run's timeline in the optimizer's terms, to draw beside the predicted one: each engine batch
    on its device (as its first node), each node's tool calls over their span, each model load."""
    llm_devices = {d.id for d in problem.devices}  # engine records name the devices they ran for
    placements = []
    for i, b in enumerate(stats.engine_batches):
        node = next(iter(b["nodes"]))
        end = b.get("end")
        if end is None:
            continue
        for d in str(b.get("device", "")).split("+"):
            if d in llm_devices:
                placements.append(Placement(node, [d], end - b["seconds"], end, i))
    tool_kinds = {k for t in problem.tasks if t.kind != "llm" for k in t.duration}
    tool_device = next((d.id for d in problem.devices if d.kind in tool_kinds), None)
    for t in problem.tasks:
        st = stats.nodes.get(t.id)
        if t.kind != "llm" and st is not None and st.first_start is not None and tool_device:
            placements.append(
                Placement(t.id, [tool_device], st.first_start, st.last_end or st.first_start, 0)
            )
    loads = [
        ModelLoad(d, x["model"], x["start"], x["end"])
        for x in stats.loads
        for d in str(x["device"]).split("+")
        if d in llm_devices
    ]
    return PhysicalPlan(placements, loads, stats.seconds, 0.0, "measured", "run")
