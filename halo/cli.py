"""The `halo` command line: check, explain, run, simulate, bench, import-yaml."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import typer

from halo import batch as batches
from halo import plan as plans
from halo.check import check as check_program
from halo.errors import HaloError
from halo.explain import logical_report, render_dot, render_text
from halo.program import load

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Halo: a declarative query optimizer for batched agentic LLM workflows.")


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
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
    return wrapper


def _load_plan(file: Path, workflow: str | None):
    program = load(file)
    checked = check_program(program)
    for d in checked.warnings:
        typer.echo(d.render(program.source(d.pos.file)), err=True)
    return plans.build(checked, workflow)


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


@app.command()
@_guard
def explain(
    file: Path = typer.Argument(..., help="Workflow file (.halo)"),
    input: Path | None = typer.Option(None, "--input", "-i", help="Batch of inputs: .jsonl, .csv or .parquet"),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="Workflow name (default: the file's)"),
    fmt: str = typer.Option("text", "--format", "-f", help="text | json | dot"),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N valid inputs"),
) -> None:
    """Show the plan Halo would run: operators, inputs, instances; JSON and Graphviz on request."""
    plan = _load_plan(file, workflow)
    batch = batches.load(input, plan.params, limit=limit) if input else None
    report = logical_report(plan, batch)
    if fmt == "json":
        typer.echo(json.dumps(report, indent=2, default=str))
    elif fmt == "dot":
        typer.echo(render_dot(report))
    elif fmt == "text":
        typer.echo(render_text(report))
    else:
        raise typer.BadParameter("--format must be text, json or dot")


def main() -> None:
    try:
        app()
    except Exception:
        if os.environ.get("HALO_DEBUG"):
            raise
        typer.echo("halo: internal error (set HALO_DEBUG=1 for the traceback)", err=True)
        sys.exit(70)
