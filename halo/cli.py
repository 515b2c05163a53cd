"""The `halo` command line: check, explain, run, simulate, bench, import-yaml."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import typer

from halo import api
from halo.check import check as check_program
from halo.errors import HaloError
from halo.explain import logical_report, render_dot, render_text
from halo.program import load


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that report a user's mistake (bad option, missing engine), not a bug."""
    from halo.calibration import CalibrationError
    from halo.cost import HARDWARE_ERRORS
    from halo.importer import TemplateImportError
    from halo.runtime.engines.base import EngineUnavailable
    from halo.runtime.journal import JournalMismatch

    return (
        CalibrationError,
        *HARDWARE_ERRORS,
        EngineUnavailable,
        JournalMismatch,
        TemplateImportError,
        FileNotFoundError,
        typer.BadParameter,
    )


USER_ERRORS = _user_errors()


def _one_of(*allowed: str) -> Callable[[str | None], str | None]:
    """An option callback: the value must be one of `allowed` (a usage error, exit 2, otherwise)."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return check


def _engine_name(value: str) -> str:
    from halo.runtime.engines import ENGINE_NAMES

    _one_of(*ENGINE_NAMES)(value)
    return value


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Halo: a declarative query optimizer for batched agentic LLM workflows.",
)


def _guard(fn: Callable) -> Callable:
    """Located errors print as file:line:col with a caret and exit 2; no traceback for user mistakes."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HaloError as e:
            for d in e.diagnostics:
                typer.echo(d.render(), err=True)
            raise typer.Exit(2) from None
        except USER_ERRORS as e:
            typer.echo(f"halo: error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _compile(file: Path, workflow: str | None = None):
    """Compile the workflow and print its warnings (located, with the source line)."""
    compiled = api.compile(file, workflow)
    for d in compiled.warnings:
        typer.echo(compiled.render(d), err=True)
    return compiled


@app.command()
@_guard
def check(files: list[Path] = typer.Argument(..., help="Workflow files (.halo)")) -> None:
    """Parse and check workflow files; report every problem as file:line:col."""
    failed = False
    for file in files:
        try:
            program = load(file)
        except HaloError as e:
            for d in e.diagnostics:
                typer.echo(d.render(), err=True)
            failed = True
            continue
        result = check_program(program)
        for d in result.diagnostics:
            typer.echo(d.render(program.source(d.pos.file)), err=True)
        if result.errors:
            failed = True
            typer.echo(f"{file}: {len(result.errors)} error(s), {len(result.warnings)} warning(s)", err=True)
        else:
            names = ", ".join(w.name for w in program.main.workflows)
            typer.echo(f"{file}: ok ({names}; {len(result.warnings)} warning(s))")
    if failed:
        raise typer.Exit(2)


def _rules(names: list[str]) -> list[str]:
    from halo.rules import check_names

    try:
        check_names(names)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return names


DISABLE_RULE = typer.Option(
    [], "--disable-rule", callback=_rules, help="Switch a rewrite rule off (repeatable; see halo rules)"
)


@app.command()
def rules() -> None:
    """List the rewrite rules (each can be switched off with --disable-rule)."""
    from halo.rules import RULES

    for r in RULES.values():
        typer.echo(f"{r.name:<18} {r.summary}")


@app.command()
@_guard
def explain(
    file: Path = typer.Argument(..., help="Workflow file (.halo)"),
    input: Path | None = typer.Option(
        None, "--input", "-i", help="Batch of inputs: .jsonl, .csv or .parquet"
    ),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="Workflow name (default: the file's)"),
    fmt: str = typer.Option("text", "--format", "-f", help="text | json | dot"),
    limit: int | None = typer.Option(None, "--limit", min=0, help="Use only the first N valid inputs"),
    hardware: str | None = typer.Option(
        None,
        "--hardware",
        "-H",
        help='What the plan runs on, e.g. "2 x H100-SXM + cpu:16", or a TOML file '
        "(default: this machine, detected)",
    ),
    optimizer: str = typer.Option(
        "auto", "--optimizer", callback=_one_of("auto", "ilp", "heuristic"), help="auto | ilp | heuristic"
    ),
    time_limit: float = typer.Option(10.0, "--time-limit", help="Planning-time budget (s)"),
    simulate: bool = typer.Option(False, "--simulate", help="Run the physical plan in virtual time"),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="Calibration file (.halo/calibration.json)"
    ),
    analyze: bool = typer.Option(False, "--analyze", help="Run it for real and show predicted vs actual"),
    output: Path = typer.Option(Path(".halo/analyze.jsonl"), "--output", "-o", help="Results of --analyze"),
    engine: str = typer.Option("hf", "--engine", "-e", callback=_engine_name, help="Engine for --analyze"),
    model_map: list[str] = typer.Option([], "--model-map", help="DECLARED=ACTUAL model substitution"),
    engine_opt: list[str] = typer.Option(
        [], "--engine-opt", help="Engine option KEY=VALUE (e.g. random_weights=true)"
    ),
    max_batch: int | None = typer.Option(
        None, "--max-batch", help="LLM requests per engine call (default: chosen by the cost model)"
    ),
    batch_tokens: int | None = typer.Option(None, "--batch-tokens", help="Token budget per engine call"),
    disable_rule: list[str] = DISABLE_RULE,
    gantt: Path | None = typer.Option(
        None,
        "--gantt",
        help="Draw the predicted Gantt chart (.png/.svg); with --analyze the measured one beside it",
    ),
) -> None:
    """Show the plan Halo would run: rewrites, estimates, placement; with --analyze, run it and compare."""
    if fmt not in ("text", "json", "dot"):
        raise typer.BadParameter("--format must be text, json or dot")
    compiled = _compile(file, workflow)
    if input is None:
        if analyze:
            raise typer.BadParameter("--analyze needs --input")
        return _render(logical_report(compiled.plan), fmt)
    planned = api.plan(
        compiled,
        input,
        hardware,
        optimizer=optimizer,
        time_limit_s=time_limit,
        limit=limit,
        calibration=api.load_calibration(calibration, create=analyze),
        policy=_policy(max_batch, batch_tokens),
        simulate=simulate,
        disabled=disable_rule,
    )
    report = planned.report
    if analyze:
        options = _engine_options(model_map, engine_opt, compiled.plan)
        report = _with_progress(
            len(planned.batch),
            fmt != "text",
            lambda progress: api.analyze(
                compiled,
                planned,
                input,
                output,
                engine=engine,
                engine_options=options,
                calibration=calibration,
                gantt=gantt,
                progress=progress,
            ),
        )
    elif gantt is not None:
        report["gantt"] = api.gantt_charts(planned, None, gantt)
    _render(report, fmt)


def _render(report: dict, fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps(report, indent=2, default=str))
    elif fmt == "dot":
        typer.echo(render_dot(report))
    else:
        typer.echo(render_text(report))


@app.command()
@_guard
def data(
    kind: str = typer.Argument(..., help="tpch | imdb | wiki"),
    out: Path = typer.Option(..., "--out", help="DuckDB file to create"),
    scale: float | None = typer.Option(None, "--scale", help="TPC-H scale factor, or the generator's scale"),
) -> None:
    """Generate a benchmark database locally (TPC-H via DuckDB's dbgen; seeded IMDb-like and wiki-like)."""
    from halo.datagen import imdb, tpch, wiki

    gens = {
        "tpch": lambda: tpch.generate(out, sf=scale or 0.01),
        "imdb": lambda: imdb.generate(out, scale=scale or 1.0),
        "wiki": lambda: wiki.generate(out, scale=scale or 1.0),
    }
    if kind not in gens:
        raise typer.BadParameter("kind must be tpch, imdb or wiki")
    typer.echo(f"{gens[kind]()}")


def _policy(max_batch: int | None, batch_tokens: int | None):
    """The engine batching asked for (None: let the cost model choose); runs use what the plan priced."""
    try:
        return api.batch_policy(max_batch, batch_tokens)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _engine_options(
    model_map: list[str], engine_opt: list[str], plan=None, base_url: str | None = None
) -> dict:
    """--model-map, --engine-opt KEY=VALUE (VALUE read as JSON when it parses: true, 64, "x") and --base-url.
    With a plan, every mapped model must be one the plan declares."""
    opts: dict = {"model_map": _parse_map(model_map)}
    if plan is not None:
        from halo.runtime.engines import check_model_map

        check_model_map({op.model for op in plan.nodes() if op.kind == "llm"}, opts["model_map"])
    for item in engine_opt:
        if "=" not in item:
            raise typer.BadParameter(f"--engine-opt takes KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            opts[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            opts[k.strip()] = v
    if base_url:
        opts["base_url"] = base_url
    return opts


def _parse_map(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--model-map takes DECLARED=ACTUAL, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@app.command()
@_guard
def run(
    file: Path = typer.Argument(..., help="Workflow file (.halo)"),
    input: Path = typer.Option(..., "--input", "-i", help="Batch of inputs: .jsonl, .csv or .parquet"),
    output: Path = typer.Option(Path("results.jsonl"), "--output", "-o", help="One JSON record per input"),
    workflow: str | None = typer.Option(None, "--workflow", "-w"),
    engine: str = typer.Option(
        "hf", "--engine", "-e", callback=_engine_name, help="hf (embedded) | vllm | openai"
    ),
    model_map: list[str] = typer.Option([], "--model-map", help="DECLARED=ACTUAL model substitution"),
    engine_opt: list[str] = typer.Option(
        [], "--engine-opt", help="Engine option KEY=VALUE (e.g. random_weights=true)"
    ),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server (engine openai)"),
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted run from its journal"),
    retry_in_doubt: bool = typer.Option(
        False,
        "--retry-in-doubt",
        help="With --resume: run again side effects an interrupted run may have "
        "done (only for idempotent effects)",
    ),
    limit: int | None = typer.Option(None, "--limit", min=0, help="Use only the first N valid inputs"),
    mode: str = typer.Option(
        "halo",
        "--mode",
        callback=_one_of("halo", "naive", "opwise"),
        help="halo | naive | opwise (baselines)",
    ),
    max_batch: int | None = typer.Option(None, "--max-batch", help="LLM requests per engine call"),
    window: int | None = typer.Option(None, "--window", help="Inputs in flight"),
    hardware: str | None = typer.Option(
        None,
        "--hardware",
        "-H",
        help="Plan for this hardware (default: this machine, detected): batch "
        "size and operator order, planned on the first --window inputs",
    ),
    disable_rule: list[str] = DISABLE_RULE,
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster for the engine workers (default $RAY_ADDRESS; plans over 2+ devices start Ray here)",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar"),
) -> None:
    """Run a workflow over a batch on a real engine and real tools; results stream to --output.
    The Halo mode plans first, on the first --window inputs, for --hardware (default: this machine)."""
    compiled = api.compile(file, workflow)
    options = _engine_options(model_map, engine_opt, compiled.plan, base_url)
    total = _count_lines(input) if input.suffix.lower() in (".jsonl", ".ndjson", ".json") else None
    if limit is not None:
        total = min(total, limit) if total is not None else limit

    def rejected(e) -> None:
        typer.echo(f"{input}: row {e.row}: {e.reason} (recorded, not run)", err=True)

    result = _with_progress(
        total,
        quiet,
        lambda progress: api.run(
            compiled,
            input,
            output,
            mode=mode,
            engine=engine,
            engine_options=options,
            resume=resume,
            retry_in_doubt=retry_in_doubt,
            window=window,
            max_batch=max_batch,
            limit=limit,
            hardware=hardware,
            disabled=disable_rule,
            ray_address=ray_address,
            on_rejected=rejected,
            progress=progress,
        ),
    )
    _summary(result, output)
    if result.failed_records:  # exit status: 0 every input succeeded, 1 some failed or were rejected
        raise typer.Exit(1)


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _with_progress(total: int | None, quiet: bool, fn):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet:
        return fn(None)
    with Progress(
        TextColumn("[bold]halo run"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
        console=_stderr(),
    ) as bar:
        task = bar.add_task("inputs", total=total)
        return fn(lambda n: bar.advance(task, n))


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


def _workers_line(stats) -> str:
    """One engine worker per device: its batches, loads and restarts."""
    from halo.analyze import devices

    measured = devices({"nodes": []}, stats)["per_device"]
    parts = [
        f"{d} (pid {w['pid']}): {measured.get(d, {}).get('measured', {}).get('batches', 0)} batches, "
        f"{stats.worker_restarts.get(d, 0)} restart(s)"
        for d, w in stats.workers.items()
    ]
    return "engine workers on Ray: " + "; ".join(parts)


def _summary(result, output: Path) -> None:
    t, planned = result.stats.totals(), result.planned
    lines = (
        []
        if planned is None
        else [
            f"{planned.report['batching']['text']}; planned on {len(planned.batch):,} inputs for {planned.hardware} "
            f"({'detected' if planned.detected else 'given'}) in {planned.seconds:.2f} s"
        ]
    )
    lines += [
        f"{t['inputs']:,} inputs in {t['seconds']:.1f} s ({t['inputs_per_s']:.2f} inputs/s); "
        f"{t['failed']:,} failed, {t['rejected']:,} rejected, {t['resumed']:,} resumed from the journal",
        f"calls executed {t['calls']:,} for {t['instances']:,} operator instances "
        f"({t['merged']:,} merged); tokens: {t['prompt_tokens']:,} prompt "
        f"({t['cached_tokens']:,} from prefix cache), {t['completion_tokens']:,} generated; "
        f"model loads {t['model_loads']} ({t['load_seconds']:.1f} s)",
    ]
    if t["in_doubt"]:
        lines.append(
            f"{t['in_doubt']:,} inputs in doubt: a side effect may have run before the crash and was not "
            "repeated (--resume --retry-in-doubt runs it again, for idempotent effects)"
        )
    if result.stats.workers:
        lines.append(_workers_line(result.stats))
    if t["substitutions"]:
        lines.append(
            "models substituted on this engine: "
            + ", ".join(f"{k} -> {v}" for k, v in t["substitutions"].items())
        )
    lines.append(f"results: {output}")
    typer.echo("\n".join(lines), err=True)


@app.command()
@_guard
def bench(
    file: Path = typer.Argument(..., help="Workflow file (.halo)"),
    input: Path = typer.Option(..., "--input", "-i"),
    limit: int | None = typer.Option(None, "--limit", min=0, help="Use only the first N valid inputs"),
    modes: str = typer.Option(
        "naive,opwise,halo", "--modes", help="Comma-separated: naive, opwise, halo, framework, langgraph"
    ),
    engine: str = typer.Option("hf", "--engine", "-e", callback=_engine_name),
    model_map: list[str] = typer.Option([], "--model-map", help="DECLARED=ACTUAL model substitution"),
    engine_opt: list[str] = typer.Option(
        [], "--engine-opt", help="Engine option KEY=VALUE (e.g. random_weights=true)"
    ),
    hardware: str = typer.Option("cpu", "--hardware", "-H", help="Hardware the prediction is made for"),
    results: Path = typer.Option(Path("bench/results"), "--results", help="Folder for the markdown result"),
    note: str = typer.Option("", "--note", help="A line added to the result (e.g. what the engine is)"),
    max_batch: int | None = typer.Option(
        None,
        "--max-batch",
        help="LLM requests per engine call (batched modes; default: chosen by the cost model)",
    ),
    batch_tokens: int | None = typer.Option(
        None, "--batch-tokens", help="Token budget per engine call (default: grows with --max-batch)"
    ),
    disable_rule: list[str] = DISABLE_RULE,
) -> None:
    """Run a workload under the baselines and the Halo plan; print and save a markdown table."""
    from halo.bench import BENCH_MODES

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    bad = [m for m in chosen if m not in BENCH_MODES]
    if bad:
        raise typer.BadParameter(f"unknown mode(s) {', '.join(bad)}")
    compiled = api.compile(file)
    result = api.bench(
        compiled,
        input,
        chosen,
        engine=engine,
        hardware=hardware,
        limit=limit,
        results=results,
        engine_options=_engine_options(model_map, engine_opt, compiled.plan),
        policy=_policy(max_batch, batch_tokens),
        note=note,
        disabled=disable_rule,
    )
    typer.echo(result.markdown)
    typer.echo(f"saved {result.path} (+ .json with per-node figures and every engine batch)", err=True)


@app.command()
@_guard
def calibrate(
    models: list[str] = typer.Argument(..., help="Model ids as workflows declare them"),
    engine: str = typer.Option("hf", "--engine", "-e", callback=_engine_name),
    hardware: str = typer.Option(
        "cpu", "--hardware", "-H", help="What the engine runs on (names the device)"
    ),
    sizes: str = typer.Option("1,8,32", "--sizes", help="Batch sizes (requests per engine call)"),
    steps: str = typer.Option("16,64", "--steps", help="New tokens per request"),
    prompts: str = typer.Option("64,512", "--prompts", help="Prompt lengths in tokens"),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="Calibration file (.halo/calibration.json)"
    ),
    model_map: list[str] = typer.Option([], "--model-map", help="DECLARED=ACTUAL model substitution"),
    engine_opt: list[str] = typer.Option(
        [], "--engine-opt", help="Engine option KEY=VALUE (e.g. random_weights=true)"
    ),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server (engine openai)"),
) -> None:
    """Time a grid of synthetic batches on a real engine and fit its batch-time law into the calibration."""
    grid = {
        name: _int_list(name, value)
        for name, value in (("--sizes", sizes), ("--steps", steps), ("--prompts", prompts))
    }
    done = api.calibrate(
        models,
        engine=engine,
        engine_options=_engine_options(model_map, engine_opt, base_url=base_url),
        hardware=hardware,
        sizes=grid["--sizes"],
        steps=grid["--steps"],
        prompts=grid["--prompts"],
        calibration=calibration,
        log=lambda line: typer.echo(line, err=True),
    )
    for model, law in done.laws.items():
        ran_as = f" (ran as {law['ran_as']})" if law.get("ran_as") else ""
        typer.echo(
            f"{model}{ran_as} on {done.device} [{engine}]: batch ≈ {law['batch_s'] * 1e3:.1f} ms + steps x "
            f"({law['step_s'] * 1e3:.2f} ms + n x {law['seq_step_s'] * 1e3:.3f} ms) + prefill tokens x "
            f"{law['token_s'] * 1e6:.2f} us; rms error {law['rms_s'] * 1e3:.1f} ms over {law['batches']} "
            "batches"
        )
    typer.echo(f"saved {done.path}", err=True)


def _int_list(name: str, value: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{name} takes comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise typer.BadParameter(f"{name} takes positive integers, got {value!r}")
    return out


@app.command()
@_guard
def simulate(
    file: Path = typer.Argument(..., help="Workflow file (.halo)"),
    input: Path = typer.Option(..., "--input", "-i", help="Batch of inputs"),
    hardware: str = typer.Option(
        ..., "--hardware", "-H", help='e.g. "8 x H100-SXM + cpu:32" or "1 x NeuPIMs"'
    ),
    workflow: str | None = typer.Option(None, "--workflow", "-w"),
    limit: int | None = typer.Option(None, "--limit", min=0),
    optimizer: str = typer.Option(
        "auto", "--optimizer", callback=_one_of("auto", "ilp", "heuristic"), help="auto | ilp | heuristic"
    ),
    time_limit: float = typer.Option(10.0, "--time-limit"),
    gantt: Path | None = typer.Option(None, "--gantt", help="Also draw the Gantt chart to this .png or .svg"),
) -> None:
    """Run the optimized plan and the baseline plans in virtual time on the hardware (labelled simulated)."""
    from halo.optimizer import gantt_text, save_gantt

    compiled = _compile(file, workflow)
    sim = api.simulate(compiled, input, hardware, optimizer=optimizer, time_limit_s=time_limit, limit=limit)
    halo_s = sim.rows[0][1].makespan
    typer.echo(
        f"Simulated on {hardware}: {compiled.plan.name}, {sim.inputs:,} inputs "
        "(cost model estimates, not measured)"
    )
    typer.echo(sim.batching)
    typer.echo("| plan | makespan (s) | inputs/s | model switches | speedup of halo |")
    typer.echo("|---|---|---|---|---|")
    for name, r in sim.rows:
        typer.echo(
            f"| {name} | {r.makespan:.2f} | {r.throughput or 0:.2f} | {r.switches} | "
            f"{r.makespan / halo_s:.2f}x |"
        )
    best = sim.best
    typer.echo(
        f"\nOptimizer: {best.method} ({best.status}), gap "
        f"{'n/a' if best.gap is None else f'{best.gap:.1%}'}, solved in {best.solve_s:.2f} s"
    )
    typer.echo(gantt_text(sim.problem, best))
    if gantt is not None:
        save_gantt(sim.problem, best, str(gantt))
        typer.echo(f"wrote {gantt}", err=True)


@app.command()
@_guard
def serve(
    files: list[Path] = typer.Argument(..., help="Workflow files to serve (.halo); clients name workflows"),
    hardware: str | None = typer.Option(None, "--hardware", "-H", help="Plan for this (default: detected)"),
    engine: str = typer.Option(
        "hf", "--engine", "-e", callback=_engine_name, help="hf | vllm | openai | fake"
    ),
    model_map: list[str] = typer.Option([], "--model-map", help="DECLARED=ACTUAL model substitution"),
    engine_opt: list[str] = typer.Option([], "--engine-opt", help="Engine option KEY=VALUE"),
    window_ms: float = typer.Option(50.0, "--window-ms", help="Arrivals gathered this long, then admitted"),
    max_batch: int | None = typer.Option(None, "--max-batch", min=1, help="LLM requests per engine call"),
    host: str = typer.Option("127.0.0.1", "--host", help="Anything but loopback needs an API key"),
    port: int = typer.Option(8080, "--port", min=0, max=65535),
    api_key: str | None = typer.Option(None, "--api-key", envvar="HALO_API_KEY", help="Bearer token"),
    state: Path = typer.Option(Path(".halo/serve"), "--state", help="Accepted runs and journals"),
    max_queue: int = typer.Option(10_000, "--max-queue", min=1, help="Unfinished runs per workflow (429)"),
    replan_every: int = typer.Option(100, "--replan-every", min=0, help="Re-plan every N windows (0: off)"),
    mode: str = typer.Option("halo", "--mode", callback=_one_of("halo", "naive"), help="naive: the baseline"),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="naive mode: inputs running at once"),
) -> None:
    """Serve workflows over HTTP: runs arrive as requests, are admitted in windows, planned and executed
    on warm engines, journaled so that a restart loses and repeats nothing (see docs/serving.md)."""
    from halo.serve import ServeConfig, ServeError
    from halo.serve import serve as run_server

    options = _engine_options(model_map, engine_opt)
    config = ServeConfig(
        files, hardware, engine, options, window_ms, max_batch, host, port, api_key, state, max_queue
    )
    config.replan_every, config.mode, config.concurrency = replan_every, mode, concurrency
    try:
        run_server(config)
    except ServeError as e:
        raise typer.BadParameter(str(e)) from None


@app.command()
@_guard
def loadgen(
    url: str = typer.Option("http://127.0.0.1:8080", "--url", help="The halo serve server"),
    workflow: str = typer.Option(..., "--workflow", "-w", help="Served workflow name"),
    input: Path = typer.Option(..., "--input", "-i", help="JSONL inputs, one per request, in turn"),
    rate: float = typer.Option(..., "--rate", help="Mean arrivals per second"),
    arrival: str = typer.Option("poisson", "--arrival", callback=_one_of("poisson", "bursty")),
    duration: float | None = typer.Option(None, "--duration", help="Seconds of arrivals"),
    requests: int | None = typer.Option(None, "--requests", min=1, help="Number of requests"),
    slo_ms: float | None = typer.Option(None, "--slo-ms", help="Latency objective (ms)"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="HALO_API_KEY"),
    out: Path | None = typer.Option(None, "--out", help="Write the result as markdown (bench/results/...)"),
) -> None:
    """Open-loop load against halo serve: prints throughput, latency p50/p90/p99 and SLO attainment."""
    from halo import loadgen as lg

    try:
        inputs = lg.read_inputs(input)
        report = lg.run(
            url,
            workflow,
            inputs,
            rate,
            arrival=arrival,
            requests=requests,
            duration_s=duration,
            slo_ms=slo_ms,
            api_key=api_key,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(report.text())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.markdown(input))
        typer.echo(f"wrote {out}", err=True)


@app.command("serve-tools")
def serve_tools(
    port: int = typer.Option(8765, "--port"),
    gamma: bool = typer.Option(
        False, "--gamma", help="Gamma-distributed sleeps of mean s, like the prototype"
    ),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Serve the loopback tool endpoints (GET /sleep?s=N) that imported `_http` templates call."""
    import threading

    from halo.runtime.tools.server import serve

    server = serve(port, gamma=gamma, seed=seed)
    typer.echo(f"serving on http://127.0.0.1:{server.server_address[1]} (Ctrl-C to stop)", err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


@app.command("import-yaml")
@_guard
def import_yaml(
    template: Path = typer.Argument(..., help="A Halo reference-prototype YAML template"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the .halo file here (default: stdout)"),
    target: str = typer.Option("duckdb", "--target", help="duckdb | postgres"),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN when --target postgres"),
    tool_server: str = typer.Option(
        "http://127.0.0.1:8765",
        "--tool-server",
        help="Base URL whose /sleep?s=N stands in for the prototype's simulated tools",
    ),
) -> None:
    """Convert a reference-prototype YAML template into a .halo workflow; what cannot convert is reported."""
    from halo.importer import convert

    result = convert(template, target=target, dsn=dsn, tool_server=tool_server)
    for note in result.notes:
        typer.echo(f"{template}: note: {note}", err=True)
    if out is None:
        typer.echo(result.text)
    else:
        out.write_text(result.text)
        typer.echo(f"wrote {out}", err=True)


def main() -> None:
    try:
        app()
    except Exception:
        if os.environ.get("HALO_DEBUG"):
            raise
        typer.echo("halo: internal error (set HALO_DEBUG=1 for the traceback)", err=True)
        sys.exit(70)
