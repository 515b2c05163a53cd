"""The H200 benchmarks: Halo against its baselines on vLLM, three models of distinct shapes on one GPU, all
with random weights (``dummy_weights``: timing is real, text is not). Run on the GPU machine by h200.sh.

Each phase is its own process, so the GPU's memory is free again between them, and writes ``OUT/PHASE.json``
after every step (a phase stopped at its time limit keeps what it finished):

- ``offline``: the three engines side by side (``memory_split``), each started once (``keep_warm``); vLLM's
  batch law fitted (``halo.api.calibrate``, as ``halo calibrate --engine vllm``); then every workload under
  ``opwise`` and ``halo`` (and ``naive`` on a 300-input slice) through ``halo.api.bench``.
- ``switch``: the Halo plan with rule ``co_residency`` off (one model awake, the others asleep at the plan's
  sleep level) and operator at a time the same way, for co-resident against switching.
- ``serve``: one ``vllm serve`` per model with the same split and options; the framework baseline and the
  LangGraph peer against those servers (prefix caches emptied between runs); then ``halo serve`` over the
  same servers (``bench/gpu/serve_h200.py``), Halo's server against the per-request baseline.
- ``report``: the markdown tables from the phases' files (runs anywhere).

    python3 bench/gpu/h200.py offline OUT [--only tpch_trident,llm_voting] [--budget 520] [--calibration F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODELS = ["Qwen/Qwen3-14B", "Qwen/Qwen3-32B", "openai/gpt-oss-20b"]
# Smaller shapes of the same families stand in for the declared models (the lease is short): the 32B's role
# goes to the largest stand-in, gpt-oss-20b's (3.6B active) to the smallest. HALO_STAND_INS (JSON) overrides.
STAND_INS = {
    "Qwen/Qwen3-14B": "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen3-32B": "Qwen/Qwen3-4B",
    "openai/gpt-oss-20b": "Qwen/Qwen2.5-0.5B-Instruct",
}
SPLIT = {"Qwen/Qwen3-14B": 0.28, "Qwen/Qwen3-32B": 0.30, "openai/gpt-oss-20b": 0.28}
ENGINE = {"dummy_weights": True, "enforce_eager": True, "max_model_len": 4096, "seed": 0}
HARDWARE = "1 x H200 + cpu:16"
# (name, workflow, input, inputs, offline modes)
RUNS = [
    ("tpch_trident", "workloads/tpch_trident.halo", "workloads/tpch_trident.jsonl", 1200, ["opwise", "halo"]),
    ("llm_voting", "workloads/llm_voting.halo", "workloads/llm_voting.jsonl", 1200, ["opwise", "halo"]),
    (
        "llm_voting_distinct",
        "workloads/llm_voting.halo",
        "bench/gpu/llm_voting_distinct.jsonl",
        1200,
        ["opwise", "halo"],
    ),
    ("tpch_fanout", "workloads/tpch_fanout.halo", "workloads/tpch_fanout.jsonl", 1200, ["opwise", "halo"]),
    (
        "llm_voting_64",
        "workloads/llm_voting.halo",
        "workloads/llm_voting.jsonl",
        64,
        ["naive", "opwise", "halo"],
    ),
]
SWITCH_RUNS = {"llm_voting": ["opwise", "halo"], "tpch_trident": ["halo"]}
# (run, what) in order: the framework baseline or the LangGraph peer over the servers, or `serve`: halo serve
# (the servers' start takes 150-250 s of a 10-minute call: what only this phase measures goes first)
SERVE_STEPS = [
    ("llm_voting", "serve"),
    ("llm_voting", "framework"),
    ("llm_voting", "langgraph"),
    ("tpch_trident", "langgraph"),
]
LOADGEN_RUNS = [name for name, what in SERVE_STEPS if what == "serve"]
LOADGEN_BUDGET_S = 170.0


def stand_ins() -> dict[str, str]:
    return json.loads(os.environ["HALO_STAND_INS"]) if os.environ.get("HALO_STAND_INS") else dict(STAND_INS)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for pkg in ("vllm", "torch", "transformers", "langgraph", "langchain-openai", "xgrammar", "halo"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    try:
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        out["gpu"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["gpu"] = "unknown"
    out["cpus"] = str(os.cpu_count())
    return out


class Phase:
    """A phase's summary file, rewritten after every step; steps past the budget are recorded as not run."""

    def __init__(self, out: Path, name: str, budget: float):
        self.path = out / f"{name}.json"
        self.t0 = time.monotonic()
        self.budget = budget
        self.data = {"phase": name, "versions": versions(), "stand_ins": stand_ins(), "steps": {}}
        self.save()

    def over(self) -> bool:
        return time.monotonic() - self.t0 > self.budget

    def step(self, name: str, fn) -> None:
        if self.over():
            self.data["steps"][name] = {"skipped": f"phase budget of {self.budget:.0f} s spent"}
        else:
            start = time.monotonic()
            try:
                self.data["steps"][name] = {**fn(), "wall_s": round(time.monotonic() - start, 2)}
            except Exception as exc:  # a failed step is a result: the next steps still run
                self.data["steps"][name] = {"error": f"{type(exc).__name__}: {exc}"[:4000]}
        self.save()
        print(f"[{time.monotonic() - self.t0:6.1f} s] {name}: {json.dumps(self.data['steps'][name])[:300]}")

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def _run(name: str) -> tuple:
    return next(r for r in RUNS if r[0] == name)


def _totals(stats, plan) -> dict:
    t = stats.totals()
    t["llm_calls"] = sum(stats.nodes[op.id].calls for op in plan.nodes() if op.kind == "llm")
    return t


def _starts(options: dict) -> dict:
    """Start (or wake) every model once in declared order; seconds each."""
    from halo.runtime.engines import make_engine

    with make_engine("vllm", **options) as eng:
        seconds = {m: round(eng.load(m), 2) for m in MODELS}
        return {"start_s": seconds, "substitutions": dict(eng.substitutions)}


def _bench(name: str, modes: list[str], options: dict, out: Path, note: str, disabled=()) -> dict:
    from halo import api

    _, wf, inputs, n, _ = _run(name)
    compiled = api.compile(REPO / wf)
    res = api.bench(
        compiled,
        REPO / inputs,
        modes,
        engine="vllm",
        engine_options=options,
        hardware=HARDWARE,
        limit=n,
        results=out / name,
        note=note,
        disabled=disabled,
    )
    x = res.planned.execution
    return {
        "residency": {"memory": x.memory, "sleep_levels": x.sleep_levels},
        "inputs": n,
        "input_file": inputs,
        "predicted_s": res.planned.predicted_s,
        "policy": {
            "max_batch": res.planned.policy.max_batch,
            "batch_tokens": res.planned.policy.batch_tokens,
        },
        "modes": {m: _totals(s, compiled.plan) for m, s in res.stats.items()},
    }


def offline(out: Path, only: list[str], budget: float, calibration: Path | None = None) -> None:

    phase = Phase(out, "offline", budget)
    opts = {**ENGINE, "model_map": stand_ins(), "memory_split": SPLIT, "keep_warm": True}
    phase.data["engine_options"] = opts
    phase.step("start", lambda: _starts(opts))
    if "error" in phase.data["steps"]["start"]:
        return  # no engine: nothing else can run
    if calibration is not None:  # a fit from an earlier lease on this machine kind: no probe grid
        Path(".halo").mkdir(exist_ok=True)
        Path(".halo/calibration.json").write_text(calibration.read_text())
        phase.data["calibration_reused"] = str(calibration)
    else:
        phase.step("calibrate", lambda: _calibrate(opts, out))
    note = (
        "vLLM 0.25.1 offline engines side by side (memory_split), random weights: timing is real, text is not"
    )
    for name, *_, modes in RUNS:
        if name in only:
            phase.step(name, lambda name=name, modes=modes: _bench(name, modes, opts, out, note))


def _calibrate(opts: dict, out: Path) -> dict:
    """vLLM's batch law fitted over a probe grid (``halo calibrate --engine vllm``)."""
    from halo import api

    lines: list[str] = []

    cal = api.calibrate(
        MODELS,
        engine="vllm",
        engine_options=opts,
        hardware=HARDWARE,
        sizes=(1, 16, 64, 256),
        steps=(16, 64),
        prompts=(128, 512),
        log=lines.append,
    )
    (out / "calibrate.txt").write_text("\n".join(lines) + "\n")
    (out / "calibration.json").write_text(Path(cal.path).read_text())
    return {"device": cal.device, "laws": cal.laws}


def switch(out: Path, only: list[str], budget: float, calibration: Path | None = None) -> None:
    phase = Phase(out, "switch", budget)
    opts = {**ENGINE, "model_map": stand_ins(), "keep_warm": True}  # one engine awake at a time, sleep mode
    phase.data["engine_options"] = opts
    phase.step("start", lambda: _starts(opts))
    if "error" in phase.data["steps"]["start"]:
        return
    if calibration is not None:
        Path(".halo").mkdir(exist_ok=True)
        Path(".halo/calibration.json").write_text(calibration.read_text())
    note = "vLLM 0.25.1 offline, one engine awake at a time (rule co_residency off), random weights"
    for name, modes in SWITCH_RUNS.items():
        if name in only:
            phase.step(
                name,
                lambda name=name, modes=modes: _bench(
                    name, modes, opts, out, note, disabled=["co_residency"]
                ),
            )


START_MODEL = "openai/gpt-oss-20b"  # its stand-in is the smallest shape: the cheapest starts to repeat
START_RUNS = [("eager", True), ("compiled", False), ("compiled again", False)]


def starts(out: Path, budget: float) -> None:
    """Engine starts eager against compiled (torch.compile and CUDA graphs), the second compiled start with
    the compile cache filled by the first, each with its batch law (``halo calibrate`` per mode)."""
    from halo import api

    phase = Phase(out, "starts", budget)
    for i, (label, eager) in enumerate(START_RUNS):
        opts = {**ENGINE, "model_map": stand_ins(), "enforce_eager": eager, "seed": 100 + i}
        opts |= {"gpu_memory_utilization": 0.25, "keep_warm": True}  # a new engine each (no shutdowns)

        def one(opts=opts, label=label) -> dict:
            cal = api.calibrate(
                [START_MODEL],
                engine="vllm",
                engine_options=opts,
                hardware=HARDWARE,
                sizes=(1, 16, 64, 256),
                steps=(16, 64),
                prompts=(128,),
                calibration=out / f"starts_{label.replace(' ', '_')}.json",
            )
            loads = [m["seconds"] for m in cal.calibration.measurements if m.get("kind") == "load"]
            return {"mode": label, "start_s": loads[0] if loads else None, "law": cal.laws[START_MODEL]}

        phase.step(label, one)


def serve(out: Path, only: list[str], budget: float) -> None:
    from bench.peers import langgraph_peer
    from halo import api
    from halo.runtime import framework
    from halo.runtime.engines.vllm import reset_prefix_caches
    from halo.runtime.engines.vllm import serve as vllm_serve

    phase = Phase(out, "serve", budget)
    opts = {**ENGINE, "model_map": stand_ins(), "memory_split": SPLIT}
    phase.data["engine_options"] = opts
    start = time.monotonic()
    runners = {"framework": framework.run, "langgraph": langgraph_peer.run}
    with vllm_serve(MODELS, opts, out / "servers") as urls:
        phase.data["servers_start_s"] = round(time.monotonic() - start, 2)
        for name, what in SERVE_STEPS:
            if name not in only:
                continue
            if what == "serve":
                phase.step(f"{name}/serve", lambda name=name: _loadgen(name, urls, out, phase))
                continue
            _, wf, inputs, n, _ = _run(name)
            compiled = api.compile(REPO / wf)
            rows = api.load_batch(compiled, REPO / inputs, n).rows

            def one(runner=runners[what], mode=what, name=name, rows=rows, compiled=compiled, inputs=inputs):
                reset_prefix_caches(urls)
                stats = runner(compiled.plan, rows, out / name / f"{mode}.jsonl", urls, concurrency=64)
                return {
                    "inputs": len(rows),
                    "input_file": inputs,
                    "concurrency": 64,
                    "modes": {mode: _totals(stats, compiled.plan)},
                }

            phase.step(f"{name}/{what}", one)


def _loadgen(name: str, urls: dict[str, str], out: Path, phase: Phase) -> dict:
    """`halo serve` (Halo's plan, then the per-request baseline) over the running vLLM servers."""
    from bench.gpu import serve_h200
    from halo.runtime.engines.vllm import reset_prefix_caches

    _, wf, inputs, *_ = _run(name)
    reset_prefix_caches(urls)
    left = min(LOADGEN_BUDGET_S, phase.budget - (time.monotonic() - phase.t0))
    return serve_h200.measure(
        [(name, REPO / wf, REPO / inputs)],
        urls,
        {},
        out / f"serve_{name}.md",
        saturate=600,
        fractions=(0.5, 0.9),
        duration_s=20.0,
        concurrency=64,
        budget_s=left,
    )


# ---- report -------------------------------------------------------------------------------------------------


def _load(folder: Path, phase: str) -> dict:
    path = folder / f"{phase}.json"
    return json.loads(path.read_text()) if path.exists() else {"steps": {}}


def report(folder: Path, out: Path) -> None:
    """Write the markdown result from the phases' files in `folder`."""
    off, sw, srv, st = (_load(folder, p) for p in ("offline", "switch", "serve", "starts"))
    v = off.get("versions") or srv.get("versions") or {}
    ins = off.get("stand_ins") or STAND_INS
    lines = [
        "# Halo on vLLM, one H200: baselines, LangGraph, co-resident models",
        "",
        f"- date: {v.get('date', '?')}; GPU: {v.get('gpu', '?')}; {v.get('cpus', '?')} CPU cores",
        f"- Python {v.get('python')}, vLLM {v.get('vllm')}, torch {v.get('torch')}, transformers "
        f"{v.get('transformers')}, LangGraph {v.get('langgraph')}, langchain-openai {v.get('langchain-openai')}",
        '- models: random weights (`dummy_weights`, vLLM `load_format="dummy"`): timing is real, text is '
        "meaningless. Smaller shapes stand in for the declared models: "
        + ", ".join(f"{k} as {val}" for k, val in ins.items()),
        "- engine: enforce_eager (no CUDA graphs: shorter starts), max_model_len 4096, prefix caching on, the "
        "same options for the offline engines and `vllm serve`; "
        "GPU memory split 0.28 / 0.30 / 0.28 between the three models (co-resident) unless said otherwise",
        "- makespans exclude engine and server starts (listed below); every run starts with an empty prefix cache",
        "",
    ]
    for name, *_ in RUNS:
        rows = _rows(name, off, srv)
        if not rows:
            continue
        step = off["steps"].get(name, {})
        lines += [f"## {name} ({step.get('inputs') or _n(srv, name)} inputs, {_input(off, srv, name)})", ""]
        lines += _table(rows)
        if step.get("predicted_s") and "halo" in step.get("modes", {}):
            m = step["modes"]["halo"]["seconds"]
            p = step["predicted_s"]
            lines.append(f"Halo plan predicted {p:.1f} s, measured {m:.1f} s ({(p - m) / m:+.0%}).")
        lines.append("")
    lines += _switch_table(off, sw, folder)
    lines += _serve_section(folder, srv)
    lines += _starts_table(off, sw, srv)
    lines += _start_modes_table(st)
    lines += _not_run(off, sw, srv, st)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def _n(srv: dict, name: str):
    return next((s.get("inputs") for k, s in srv["steps"].items() if k.startswith(name + "/")), "?")


def _input(off: dict, srv: dict, name: str) -> str:
    step = off["steps"].get(name) or next(
        (s for k, s in srv["steps"].items() if k.startswith(name + "/")), {}
    )
    return f"`{step.get('input_file', '?')}`"


def _rows(name: str, off: dict, srv: dict) -> dict[str, dict]:
    rows = dict(off["steps"].get(name, {}).get("modes", {}))
    for mode in ("framework", "langgraph"):
        step = srv["steps"].get(f"{name}/{mode}", {})
        if "modes" in step:
            rows[mode] = step["modes"][mode]
    return rows


def _table(rows: dict[str, dict]) -> list[str]:
    halo = rows.get("halo", {}).get("seconds")
    out = [
        "| mode | makespan (s) | inputs/s | LLM calls | merged | prompt tok | cached (hit %) | generated tok | "
        "failed | Halo speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("halo", "opwise", "framework", "langgraph", "naive"):
        t = rows.get(mode)
        if not t:
            continue
        hit = 100 * t["cached_tokens"] / t["prompt_tokens"] if t["prompt_tokens"] else 0
        cached = f"{t['cached_tokens']:,} ({hit:.0f}%)"
        if mode in ("framework", "langgraph") and not t["cached_tokens"]:
            cached = (
                "not reported"  # vllm serve reports cached tokens only with --enable-prompt-tokens-details
            )
        speed = f"{t['seconds'] / halo:.2f}x" if halo and mode != "halo" else "-"
        out.append(
            f"| {mode} | {t['seconds']:.1f} | {t['inputs_per_s']:.1f} | {t['llm_calls']:,} | {t['merged']:,} | "
            f"{t['prompt_tokens']:,} | {cached} | {t['completion_tokens']:,} | "
            f"{t['failed']:,} | {speed} |"
        )
    fw, lg = rows.get("framework"), rows.get("langgraph")
    if fw and lg:
        out += ["", f"LangGraph / framework makespan: {lg['seconds'] / fw['seconds']:.2f}."]
    return out + [""]


def _switch_table(off: dict, sw: dict, folder: Path) -> list[str]:
    rows = []
    for name in SWITCH_RUNS:
        for mode in ("halo", "opwise"):
            a = off["steps"].get(name, {}).get("modes", {}).get(mode)
            b = sw["steps"].get(name, {}).get("modes", {}).get(mode)
            if not b:
                continue
            co = f"{a['seconds']:.1f} s" if a else "-"
            loads = f"{b['model_loads']} ({b['load_seconds']:.1f} s, {b['load_seconds'] / b['seconds']:.0%})"
            levels = sw["steps"][name].get("residency", {}).get("sleep_levels", {})
            lv = (
                "; ".join(f"{m} L{v}" for d in levels.values() for m, v in d.items())
                if mode == "halo"
                else ""
            )
            rows.append(f"| {name} | {mode} | {co} | {b['seconds']:.1f} s | {loads} | {lv} |")
    if not rows:
        return []
    out = ["## Three models on one GPU: co-resident against one at a time", ""]
    out += [
        "| workload | mode | co-resident (memory_split) | one awake (sleep mode) | loads and wakes "
        "(one awake; share of makespan) | sleep levels (plan) |"
    ]
    out += ["|---|---|---|---|---|---|", *rows, ""]
    log = folder / "switch.log"
    if log.exists():
        errors = [ln for ln in log.read_text(errors="replace").splitlines() if "CUDA Error" in ln]
        out += [f"`cumem_allocator` CUDA errors printed during the one-awake runs: {len(errors)}."]
        out += [f"    {ln.strip()[:200]}" for ln in errors[:3]] + [""]
    return out


def _serve_section(folder: Path, srv: dict) -> list[str]:
    """`halo serve` over the same vLLM servers (bench/gpu/serve_h200.py wrote the tables)."""
    out = []
    for name in LOADGEN_RUNS:
        md = folder / f"serve_{name}.md"
        step = srv["steps"].get(f"{name}/serve", {})
        if md.exists():
            out += [f"## halo serve, {name}: Halo's server against the per-request baseline", ""]
            out += [ln for ln in md.read_text().splitlines() if not ln.startswith("# ")] + [""]
        elif step:
            out += [f"## halo serve, {name}", "", f"- {step.get('error') or step.get('skipped')}", ""]
    return out


def _starts_table(off: dict, sw: dict, srv: dict) -> list[str]:
    out = ["## Engine starts (seconds, off the measured makespans)", ""]
    for label, phase in (("offline, co-resident", off), ("offline, switching", sw)):
        start = phase["steps"].get("start", {}).get("start_s")
        if start:
            out.append(f"- {label}: " + ", ".join(f"{m} {s:.1f}" for m, s in start.items()))
    if "servers_start_s" in srv:
        out.append(f"- three `vllm serve` processes, one after another: {srv['servers_start_s']:.1f}")
    cal = off["steps"].get("calibrate", {})
    if "laws" in cal:
        out += ["", "vLLM batch law fitted by `halo calibrate --engine vllm` (seconds):", ""]
        out += ["| model | runs as | per batch | per step | per request-step | per prefill token | rms |"]
        out += ["|---|---|---|---|---|---|---|"]
        out += [
            f"| {m} | {law.get('ran_as', m).split(' shape')[0]} | {law['batch_s']:.3f} | {law['step_s'] * 1e3:.2f} ms | "
            f"{law['seq_step_s'] * 1e6:.1f} µs | {law['token_s'] * 1e6:.2f} µs | {law['rms_s']:.3f} |"
            for m, law in cal["laws"].items()
        ]
    return out + [""]


def _start_modes_table(st: dict) -> list[str]:
    rows = [
        f"| {name} | {step['start_s']:.1f} | {step['law']['step_s'] * 1e3:.2f} ms | "
        f"{step['law']['seq_step_s'] * 1e6:.1f} µs | {step['law']['batch_s']:.3f} |"
        for name, step in st["steps"].items()
        if "law" in step and step.get("start_s") is not None
    ]
    if not rows:
        return []
    out = [f"## Engine starts, eager against compiled ({START_MODEL} as {stand_ins()[START_MODEL]})", ""]
    out += [
        "| start | seconds | per step | per request-step | per batch |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    return out


def _not_run(*phases: dict) -> list[str]:
    out = []
    for phase in phases:
        for step, s in phase["steps"].items():
            if "skipped" in s or "error" in s:
                out.append(f"- {phase.get('phase')} {step}: {s.get('skipped') or s.get('error')[:300]}")
    return ["## Not run or failed", "", *(out or ["- nothing"]), ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=["offline", "switch", "serve", "starts", "report"])
    ap.add_argument("out", type=Path, help="results folder (report: the phases' folder)")
    ap.add_argument("--only", default=",".join(r[0] for r in RUNS), help="comma-separated run names")
    ap.add_argument("--budget", type=float, default=520.0, help="seconds after which no step starts")
    ap.add_argument("--md", type=Path, help="report: the markdown file to write")
    ap.add_argument("--calibration", type=Path, help="offline, switch: reuse this calibration file")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase == "report":
        report(args.out, args.md or args.out / "h200.md")
        return 0
    only = args.only.split(",")
    if args.phase == "serve":
        serve(args.out, only, args.budget)
    elif args.phase == "starts":
        starts(args.out, args.budget)
    else:
        {"offline": offline, "switch": switch}[args.phase](args.out, only, args.budget, args.calibration)
    sys.stdout.flush()
    import multiprocessing

    for child in multiprocessing.active_children():  # vLLM's engine processes hold the log pipe open
        child.kill()
    os._exit(0)  # everything is saved: skip vLLM's teardown of the warm engines (minutes at exit, measured)


if __name__ == "__main__":
    sys.exit(main())
