"""Gantt charts of a physical plan: plain-text rows and matplotlib PNG/SVG (imported lazily)."""

from __future__ import annotations

import string

from .physical import PhysicalPlan
from .problem import Problem

SYMBOLS = string.ascii_uppercase + string.ascii_lowercase + string.digits


def _symbols(problem: Problem) -> dict[str | None, str]:
    models = sorted({t.model for t in problem.tasks if t.model})
    out: dict[str | None, str] = {m: SYMBOLS[i % len(SYMBOLS)] for i, m in enumerate(models)}
    out[None] = "#"
    return out


def gantt_text(problem: Problem, plan: PhysicalPlan, width: int = 80) -> str:
    """One row per device, ``width`` columns over [0, makespan]: a letter per model, ``#`` tool task,
    ``~`` model load, ``.`` idle; a legend follows."""
    sym = _symbols(problem)
    model = {t.id: t.model for t in problem.tasks}
    span = plan.makespan or 1.0
    rows = {d.id: ["."] * width for d in problem.devices}

    def paint(dev: str, start: float, end: float, ch: str) -> None:
        a = min(width - 1, int(start / span * width))
        b = max(a + 1, min(width, int(round(end / span * width))))
        for i in range(a, b):
            rows[dev][i] = ch

    for m in plan.loads:
        paint(m.device, m.start, m.end, "~")
    for p in plan.placements:
        for d in p.devices:
            paint(d, p.start, p.end, sym[model[p.task]])
    pad = max(len(d) for d in rows)
    lines = [f"{d.ljust(pad)} |{''.join(r)}|" for d, r in rows.items()]
    lines.append(f"{' ' * pad}  0{f'{span:.1f}s'.rjust(width - 1)}")
    legend = ", ".join(f"{s}={m}" for m, s in sym.items() if m is not None)
    lines.append(f"{plan.method} ({plan.status}) makespan {plan.makespan:.2f}s; {legend}; #=tool, ~=load")
    return "\n".join(lines)


def save_gantt(problem: Problem, plan: PhysicalPlan, path: str) -> None:
    """Write a PNG or SVG chart (by the file extension); needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devs = [d.id for d in problem.devices]
    model = {t.id: t.model for t in problem.tasks}
    models = sorted({m for m in model.values() if m})
    cmap = plt.get_cmap("tab10")
    color = {m: cmap(i % 10) for i, m in enumerate(models)}
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(devs) + 1.5))
    for p in plan.placements:
        for d in p.devices:
            ax.broken_barh(
                [(p.start, p.end - p.start)],
                (devs.index(d) - 0.4, 0.8),
                facecolors=color.get(model[p.task] or "", "grey"),
                edgecolors="black",
                linewidth=0.3,
            )
    for m in plan.loads:
        ax.broken_barh(
            [(m.start, m.end - m.start)],
            (devs.index(m.device) - 0.4, 0.8),
            facecolors="white",
            edgecolors="red",
            hatch="//",
            linewidth=0.5,
        )
    ax.set_yticks(range(len(devs)), devs)
    ax.set_xlabel("seconds")
    ax.set_title(f"{plan.method} ({plan.status}): makespan {plan.makespan:.2f}s")
    handles = [plt.Rectangle((0, 0), 1, 1, color=color[m]) for m in models]
    if handles:
        ax.legend(handles, models, loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
