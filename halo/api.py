"""The library API: compile a workflow, plan a batch for some hardware, run it, analyze, bench, simulate,
calibrate. Each step is a function returning a typed result; `halo.cli` only parses options and renders.

    compiled = api.compile("workloads/demo.halo")
    planned = api.plan(compiled, "batch.jsonl", "4 x H100-SXM + cpu:16")   # hardware=None: this machine
    result = api.run(compiled, "batch.jsonl", "out.jsonl", planned=planned)

Errors: a workflow problem raises `HaloError` (located diagnostics); a bad hardware description, an
unknown model or a missing file raise the exceptions `halo.cli` reports as user errors.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halo import batch as batches
from halo import calibration as calib
from halo import plan as plans
from halo.batching import TOKENS_PER_REQUEST, BatchPolicy
from halo.check import check
from halo.errors import Diagnostic
from halo.execution import ExecutionPlan
from halo.plan import LogicalPlan
from halo.program import Program, load, load_source

Progress = Callable[[int], None] | None
RUN_PLANNING_S = 2.0  # the optimizer's budget when `run` plans its first window (explain: --time-limit)


@dataclass
class Compiled:
    """A checked workflow file and the logical plan of one of its workflows."""

    plan: LogicalPlan
    program: Program
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        """The text of every module, main file first: what identifies the workflow in a run's journal."""
        return [m.source for m in self.program.modules.values()]

    @property
    def name(self) -> str:
        """The main file's stem (`demo` for workloads/demo.halo)."""
        return Path(self.program.main.file).stem

    def render(self, d: Diagnostic) -> str:
        """A diagnostic as file:line:col with the source line and a caret."""
        return d.render(self.program.source(d.pos.file))


def compile(source: str | Path, workflow: str | None = None, *, filename: str | None = None) -> Compiled:  # noqa: A001
    """Load, check and build. `source` is a path, or (with `filename`) the workflow text itself.
    Raises HaloError with every located error; warnings are kept on the result."""
    if filename is None:
        program = load(source)
    elif isinstance(source, str):
        program = load_source(source, filename)
    else:
        raise TypeError("with filename=, source is the workflow text (a str), not a path")
    checked = check(program)
    return Compiled(plans.build(checked, workflow), program, checked.warnings)


@dataclass
class Planned:
    """A plan priced and placed for some hardware: the EXPLAIN report plus what the runtime follows."""

    report: dict[str, Any]
    batch: batches.Batch
    hardware: str
    detected: bool  # the hardware is this machine, found by detect_hardware
    execution: ExecutionPlan  # what the runtime executes (order, batches, placement, residency, rules)
    seconds: float  # planning time: consolidation, cost model, optimizer
    physical: Any = None  # the optimizer's PhysicalPlan (predicted timeline)
    problem: Any = None  # the optimizer's Problem it placed

    @property
    def policy(self) -> BatchPolicy:
        """The engine batches priced and run (requests and tokens per engine call)."""
        return self.execution.policy

    @property
    def order(self) -> list[str]:
        """Node ids by planned start: the executor's priority."""
        return self.execution.order

    @property
    def predicted_s(self) -> float | None:
        return (self.report.get("optimizer") or {}).get("makespan")


def load_batch(compiled: Compiled, path: str | Path, limit: int | None = None) -> batches.Batch:
    """The valid and rejected rows of a batch file, typed by the workflow's parameters."""
    return batches.load(path, compiled.plan.params, limit=limit)


def batch_policy(max_batch: int | None, batch_tokens: int | None = None) -> BatchPolicy | None:
    """The engine batching asked for (None when neither is given: the cost model chooses); the token
    budget grows with `max_batch` when not given. Raises ValueError for a policy that cannot be."""
    if max_batch is None and batch_tokens is None:
        return None
    size = max_batch or BatchPolicy.max_batch
    return BatchPolicy(size, batch_tokens or max(BatchPolicy.batch_tokens, size * TOKENS_PER_REQUEST))


def load_calibration(path: str | Path | None, create: bool = False) -> calib.Calibration:
    """The calibration at `path` (None: `.halo/calibration.json`, empty when missing); with `create`,
    a missing `path` starts an empty one to be saved there."""
    if create and path is not None and not Path(path).exists():
        return calib.Calibration(path=str(path))
    return calib.load(path)


def plan(
    compiled: Compiled,
    batch: batches.Batch | str | Path,
    hardware: str | None = None,
    *,
    optimizer: str = "auto",
    time_limit_s: float = 10.0,
    calibration: calib.Calibration | None = None,
    policy: BatchPolicy | None = None,
    simulate: bool = False,
    limit: int | None = None,
    disabled: Iterable[str] = (),
    start_mode: str | None = None,
) -> Planned:
    """Consolidate, cost and place the batch on `hardware` (None: this machine, detected).
    `policy` fixes the engine batching; None lets the cost model choose. `limit` applies to a path.
    `disabled`: rewrite rules switched off (`halo.rules.RULES`); `start_mode` pins every engine's start
    mode (`pinned_start_mode`), else the cost model picks one per model."""
    from halo.cost import detect_hardware
    from halo.pipeline import physical_plan

    if not isinstance(batch, batches.Batch):
        batch = load_batch(compiled, batch, limit)
    detected = hardware is None
    hw = detect_hardware() if hardware is None else hardware
    start = time.perf_counter()
    priced = physical_plan(
        compiled.plan,
        batch,
        hw,
        optimizer,
        calibration or calib.load(),
        time_limit_s,
        policy,
        simulate,
        disabled,
        start_mode,
    )
    seconds = time.perf_counter() - start
    priced.report["hardware"] = {
        "description": hw,
        "detected": detected,
        "planning_s": round(seconds, 4),
        "text": f"Hardware: {hw} ({'detected' if detected else 'given'}); planned in {seconds:.2f} s",
    }
    return Planned(
        priced.report, batch, hw, detected, priced.execution, seconds, priced.physical, priced.problem
    )


@dataclass
class RunResult:
    """What a run measured and where its records are; `planned` is the plan it followed (halo mode)."""

    stats: Any  # halo.runtime.stats.RunStats
    output: Path
    journal: Path
    failed_records: int
    planned: Planned | None = None


def stream_rows(
    compiled: Compiled,
    path: str | Path,
    limit: int | None = None,
    on_rejected: Callable[[batches.RowError], None] | None = None,
) -> Iterator:
    """Rows one at a time (memory stays bounded): valid ones, and rejected ones as RowErrors (each passed
    to `on_rejected`). The file-level checks run now, before anything is opened or run."""
    items = batches.iter_rows(path, compiled.plan.params)

    def rows():
        taken = 0
        for item in items:
            if isinstance(item, batches.RowError):
                if on_rejected:
                    on_rejected(item)
                yield item
                continue
            if limit is not None and taken >= limit:
                return
            taken += 1
            yield item

    return rows()


def run(
    compiled: Compiled,
    input_path: str | Path,
    output: str | Path,
    *,
    planned: Planned | None = None,
    mode: str = "halo",
    engine: str = "hf",
    engine_options: dict | None = None,
    resume: bool = False,
    retry_in_doubt: bool = False,
    window: int | None = None,
    max_batch: int | None = None,
    limit: int | None = None,
    hardware: str | None = None,
    calibration: calib.Calibration | None = None,
    disabled: Iterable[str] = (),
    ray_address: str | None = None,
    on_rejected: Callable[[batches.RowError], None] | None = None,
    progress: Progress = None,
) -> RunResult:
    """Run the workflow over the batch file on a real engine; records stream to `output`.
    In halo mode without `planned`, the first window of inputs is planned first for `hardware`
    (None: this machine) with the rules not `disabled`, and the run executes that plan. The
    baselines (naive, opwise) run their own execution plans (`halo.execution.for_mode`). A plan over
    two or more devices, or `ray_address`, runs one engine worker per device on Ray."""
    from halo.execution import MODES, for_mode
    from halo.runtime.executor import RunOptions

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    rows = stream_rows(compiled, input_path, limit, on_rejected)
    opts = RunOptions(window=window or MODES[mode].get("window", 512), retry_in_doubt=retry_in_doubt)
    if mode != "halo":
        xplan = for_mode(compiled.plan, mode, batch_policy(max_batch))
    elif planned is None:
        sample = list(itertools.islice(rows, opts.window))
        rows = itertools.chain(sample, rows)
        valid = [r for r in sample if not isinstance(r, batches.RowError)]
        planned = plan(
            compiled,
            batches.Batch(rows=valid),
            hardware,
            calibration=calibration,
            policy=batch_policy(max_batch),
            time_limit_s=RUN_PLANNING_S,
            disabled=disabled,
            start_mode=pinned_start_mode(engine, engine_options or {}),
        )
    if planned is not None:
        xplan = planned.execution
    return _execute(
        compiled,
        rows,
        input_path,
        output,
        opts,
        xplan,
        engine,
        engine_options,
        resume,
        progress,
        planned,
        ray_address,
    )


def _execute(
    compiled: Compiled,
    rows: Iterable,
    input_path: str | Path,
    output: str | Path,
    opts,
    xplan: ExecutionPlan,
    engine: str,
    engine_options: dict | None,
    resume: bool,
    progress: Progress,
    planned: Planned | None = None,
    ray_address: str | None = None,
) -> RunResult:
    """Execute `rows` as `xplan` says, with `opts` (window, workers, retries)."""
    from halo.runtime.run import execute, fingerprint

    fp = fingerprint(compiled.plan, compiled.sources, input_path)
    result = execute(
        xplan,
        rows,
        output,
        fp,
        engine=engine,
        engine_options=engine_options,
        options=opts,
        resume=resume,
        progress=progress,
        ray_address=ray_address,
    )
    return RunResult(result.stats, result.output, result.journal, result.failed_records, planned)


def analyze(
    compiled: Compiled,
    planned: Planned,
    input_path: str | Path,
    output: str | Path,
    *,
    engine: str = "hf",
    engine_options: dict | None = None,
    calibration: str | Path | None = None,
    gantt: str | Path | None = None,
    progress: Progress = None,
) -> dict[str, Any]:
    """EXPLAIN ANALYZE: run the planned batch, put measured figures beside the estimates in the report,
    and add the run's measurements to the calibration (saved to `calibration`, or the default file).
    `gantt`: draw the predicted and the measured timelines there (see `gantt_charts`)."""
    from halo.analyze import annotate, measurements
    from halo.runtime.executor import RunOptions

    result = _execute(
        compiled,
        planned.batch.rows,
        input_path,
        output,
        RunOptions(),
        planned.execution,
        engine,
        engine_options,
        False,
        progress,
        planned,
    )
    report = annotate(planned.report, result.stats)
    cal = load_calibration(calibration, create=True)
    saved = calib.save(cal.add(*measurements(report, result.stats)), calibration)
    report["analyze"]["calibration"] = str(saved)
    report["analyze"]["text"] += f"\nCalibration updated: {saved}; results: {output}"
    if gantt is not None:
        report["gantt"] = gantt_charts(planned, result.stats, gantt)
    return report


def gantt_charts(planned: Planned, stats: Any, path: str | Path) -> dict[str, Any]:
    """Gantt charts per device: the predicted timeline to `path` (.png or .svg) and, given a run's
    stats, the measured one beside it (`NAME.measured.EXT`); the text charts form the report block."""
    from halo.analyze import measured_plan
    from halo.optimizer import gantt_text, save_gantt

    if planned.problem is None or planned.physical is None:
        raise ValueError("--gantt needs a placement (plan for some hardware)")
    path = Path(path)
    save_gantt(planned.problem, planned.physical, str(path))
    lines = ["Predicted:", gantt_text(planned.problem, planned.physical)]
    files = [str(path)]
    if stats is not None:
        measured = measured_plan(planned.problem, stats)
        other = path.with_suffix(".measured" + path.suffix)
        save_gantt(planned.problem, measured, str(other))
        lines += ["Measured:", gantt_text(planned.problem, measured)]
        files.append(str(other))
    return {"files": files, "text": "\n".join(lines + [f"Gantt charts: {', '.join(files)}"])}


@dataclass
class BenchResult:
    markdown: str
    path: Path  # the markdown file; the per-node figures are beside it as .json
    stats: dict[str, Any]  # RunStats by mode
    planned: Planned


def bench(
    compiled: Compiled,
    input_path: str | Path,
    modes: list[str],
    *,
    engine: str = "hf",
    engine_options: dict | None = None,
    hardware: str | None = "cpu",
    policy: BatchPolicy | None = None,
    limit: int | None = None,
    results: str | Path = "bench/results",
    note: str = "",
    disabled: Iterable[str] = (),
) -> BenchResult:
    """Run the batch under each mode on its own copies of the databases it writes; save a markdown table
    and a .json of per-node figures and engine batches under `results`. `disabled`: rules switched off
    in the Halo plan (the baselines have their own)."""
    import datetime as dt
    import json

    from halo.bench import BENCH_MODES, check_isolable, run_modes, table
    from halo.runtime.run import fingerprint

    bad = [m for m in modes if m not in BENCH_MODES]
    if bad:
        raise ValueError(f"unknown mode(s) {', '.join(bad)}")
    check_isolable(compiled.plan)
    batch = load_batch(compiled, input_path, limit)
    planned = plan(
        compiled,
        batch,
        hardware,
        policy=policy,
        disabled=disabled,
        start_mode=pinned_start_mode(engine, engine_options or {}),
    )
    fp = fingerprint(compiled.plan, compiled.sources, input_path)
    batching = {"max_batch": planned.policy.max_batch, "batch_tokens": planned.policy.batch_tokens}
    stats = run_modes(
        planned.execution,
        batch.rows,
        Path(".halo") / "bench" / compiled.plan.name,
        fp,
        engine,
        engine_options or {},
        modes,
    )
    md = table(
        f"{compiled.name} ({compiled.plan.name})", len(batch), stats, planned.predicted_s, engine, note
    )
    path = Path(results) / f"{compiled.name}_{engine}_{dt.date.today().isoformat()}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(md)
    detail = {
        "workload": compiled.name,
        "inputs": len(batch),
        "engine": engine,
        "predicted_s": planned.predicted_s,
        "policy": batching,
        "modes": {
            m: {
                "totals": s.totals(),
                "nodes": {n: ns.as_dict() for n, ns in s.nodes.items()},
                "engine_batches": s.engine_batches,
            }
            for m, s in stats.items()
        },
    }
    path.with_suffix(".json").write_text(json.dumps(detail, indent=1))
    return BenchResult(md, path, stats, planned)


@dataclass
class Simulation:
    """The Halo plan and the baseline plans replayed in virtual time (cost-model estimates)."""

    hardware: str
    inputs: int
    batching: str  # the batching line of the report
    rows: list[tuple[str, Any]]  # (plan name, SimResult), halo first
    problem: Any  # the optimizer's Problem of the Halo plan
    best: Any  # its PhysicalPlan


def simulate(
    compiled: Compiled,
    batch: batches.Batch | str | Path,
    hardware: str,
    *,
    optimizer: str = "auto",
    time_limit_s: float = 10.0,
    limit: int | None = None,
    calibration: calib.Calibration | None = None,
) -> Simulation:
    """Replay the optimized plan, operator-at-a-time, round-robin and naive per-input on `hardware`."""
    from halo.consolidate import consolidate
    from halo.cost import estimate, to_problem
    from halo.optimizer import optimize, opwise, per_query, per_query_problem, round_robin
    from halo.optimizer import simulate as replay
    from halo.pipeline import batched_estimate

    if not isinstance(batch, batches.Batch):
        batch = load_batch(compiled, batch, limit)
    cal, n = calibration or calib.load(), len(batch)
    cplan = consolidate(compiled.plan, batch, cal)
    costed, batching = batched_estimate(cplan, hardware, cal, None)
    problem = to_problem(costed, hardware)
    unfused = to_problem(estimate(cplan, hardware, cal, costed.policy, fuse=False), hardware)
    best = optimize(problem, method=optimizer, time_limit_s=time_limit_s)
    one = consolidate(compiled.plan, batches.Batch(rows=batch.rows[:1]), cal)
    per_input = to_problem(estimate(one, hardware, cal, costed.policy), hardware)
    plans_ = [
        ("halo", problem, best),
        ("operator-at-a-time", unfused, opwise(unfused)),
        ("round-robin", unfused, round_robin(unfused)),
        ("naive per-input", per_query_problem(per_input, n), per_query(per_input, n)),
    ]
    rows = [(name, replay(prob, phys, n_inputs=n)) for name, prob, phys in plans_]
    return Simulation(hardware, n, batching["text"], rows, problem, best)


@dataclass
class Calibrated:
    calibration: calib.Calibration
    path: Path
    device: str
    laws: dict[str, dict[str, Any]]  # declared model -> its fitted engine law


def calibrate(
    models: list[str],
    *,
    engine: str = "hf",
    engine_options: dict | None = None,
    hardware: str = "cpu",
    sizes: Sequence[int] = (1, 8, 32),
    steps: Sequence[int] = (16, 64),
    prompts: Sequence[int] = (64, 512),
    calibration: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> Calibrated:
    """Time a grid of synthetic batches per model on a real engine and fit its batch-time law into the
    calibration (saved to `calibration`, or the default file). Declared ids that run as the same model
    share its records. `log` gets one line per model and per batch probed."""
    from halo.calibration import engine_key
    from halo.cost import parse_hardware, reference_device
    from halo.probe import probe
    from halo.runtime.engines import make_engine

    say = log or (lambda _line: None)
    device = reference_device(parse_hardware(hardware)).name
    mode = engine_mode(engine, engine_options or {})
    cal = load_calibration(calibration, create=True)  # a damaged file is refused before probing
    records: list[dict] = []
    probed: dict[str, str] = {}  # actual model -> the declared id whose records it already has
    with make_engine(engine, **(engine_options or {})) as eng:
        for model in models:
            start_s = eng.load(model)  # the engine's start (0 for one already warm)
            actual = eng.substitutions.get(model)
            if actual and actual in probed:  # another declared id runs as the same model: same law
                records += [{**r, "model": model} for r in records if r["model"] == probed[actual]]
                continue
            say(f"probing {model}{f' (runs as {actual})' if actual else ''}")
            records += probe(
                eng,
                model,
                device,
                list(sizes),
                list(steps),
                list(prompts),
                start_s,
                lambda r: say(
                    f"n={r['n']:>4} steps={r['steps']:>4} prefill={r['prefill_tokens']:>7,} tok  {r['seconds']:8.3f} s"
                ),
            )
            if actual:
                probed[actual] = model
    if mode:
        records = [{**r, "mode": mode} for r in records]
    cal = cal.add(*records)
    path = calib.save(cal, calibration)
    key = (lambda m: f"{engine_key(m, device)}:{mode}") if mode else (lambda m: engine_key(m, device))
    return Calibrated(cal, Path(path), device, {m: cal.engine[key(m)] for m in models})


def pinned_start_mode(engine: str, options: dict) -> str | None:
    """The start mode engine options fix (vLLM's `enforce_eager` given), else None: the plan's choice."""
    return engine_mode(engine, options) if "enforce_eager" in options else None


def engine_mode(engine: str, options: dict) -> str | None:
    """How a vLLM engine runs: `eager` (no CUDA graphs) or `compiled`; None for other engines."""
    if engine != "vllm":
        return None
    return "eager" if options.get("enforce_eager") else "compiled"
