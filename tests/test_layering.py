"""The package's layers: every import inside `halo` goes along the pipeline, never against it.

Each module of the installed namespace belongs to exactly one layer; a layer may import only the layers
listed in `MAY_IMPORT` (always itself). Imports are read with `ast`, at module level and inside functions,
with relative imports resolved, so a deferred import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> folder, as in pyproject.toml's `package-dir`.
PACKAGE_DIRS = {
    "halo": "halo",
    "halo.grammar": "grammar",
    "halo.optimizer": "optimizer",
    "halo.runtime": "runtime",
    "halo.runtime.engines": "runtime/engines",
    "halo.runtime.tools": "runtime/tools",
    "halo.hw_models": "hw_models",
    "halo.datagen": "workloads/data",
}

# Top-level `halo.*` modules by layer; sub-packages are placed whole in `PACKAGE_LAYERS`.
MODULE_LAYERS = {
    "base": {
        "halo.errors",
        "halo.ast",
        "halo.types",
        "halo.template",
        "halo.sql",
        "halo.urls",
        "halo.models",
    },
    "front end": {"halo.parser", "halo.program", "halo.check", "halo.plan", "halo.batch"},
    "logical": {
        "halo.consolidate",
        "halo.prefix",
        "halo.tokens",
        "halo.batching",
        "halo.calibration",
        "halo.kv_retention",
        "halo.rules",
        "halo.execution",
    },
    "cost": {"halo.cost", "halo.residency"},
    # `halo` itself is top: its namespace exports the library API (`halo.api`).
    "top": {
        "halo",
        "halo.api",
        "halo.pipeline",
        "halo.explain",
        "halo.analyze",
        "halo.bench",
        "halo.probe",
        "halo.importer",
        "halo.cli",
        "halo.serve",
        "halo.serve_runner",
        "halo.serve_store",
        "halo.serve_metrics",
        "halo.loadgen",
        "halo.__main__",
    },
}
PACKAGE_LAYERS = {
    "halo.grammar": "base",
    "halo.hw_models": "hardware models",
    "halo.optimizer": "optimizer",
    "halo.runtime": "runtime",
    "halo.datagen": "datagen",
}

_BELOW_COST = {"base", "front end", "logical"}
MAY_IMPORT = {
    "base": {"base"},
    "front end": {"base", "front end"},
    "logical": {"base", "front end", "logical"},
    # Self-contained libraries: the cost model feeds them, they know nothing of Halo's plans.
    "hardware models": {"hardware models"},
    "optimizer": {"optimizer"},
    # The only door to the hardware models; it builds the optimizer's `Problem`.
    "cost": _BELOW_COST | {"cost", "hardware models", "optimizer"},
    # Runs the plan: knows the logical plan (call keys, batches), never how it was priced or placed.
    "runtime": _BELOW_COST | {"runtime"},
    "datagen": {"datagen", "base"},
    # Everything but the hardware models, which are reached through `halo.cost` only.
    "top": (set(MODULE_LAYERS) | set(PACKAGE_LAYERS.values())) - {"hardware models"},
}


def modules() -> dict[str, Path]:
    """Every module of the namespace, by dotted name."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


MODULES = modules()


def layer_of(module: str) -> str | None:
    """The layer of a module; None if it is in none."""
    for layer, names in MODULE_LAYERS.items():
        if module in names:
            return layer
    owners = [p for p in PACKAGE_LAYERS if module == p or module.startswith(p + ".")]
    return PACKAGE_LAYERS[max(owners, key=len)] if owners else None


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, target module) of each `halo` import in a file, relative imports resolved."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            # `from halo import cost` imports the module halo.cost, not the package halo.
            found += [
                (node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
                for a in node.names
            ]
    return [(line, target) for line, target in found if target == "halo" or target.startswith("halo.")]


def violations(mods: dict[str, Path]) -> list[str]:
    """One line per import that goes against the layers."""
    bad = []
    for module, path in mods.items():
        layer = layer_of(module)
        for line, target in sorted(set(imports(module, path))):
            to = layer_of(target)
            if to not in MAY_IMPORT.get(layer, ()):
                bad.append(f"{module}:{line} imports {target} (layer {layer} may not import layer {to})")
    return bad


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer_of(m) is None] == []


def test_every_placed_module_exists():
    placed = set().union(*MODULE_LAYERS.values()) | set(PACKAGE_LAYERS)
    assert sorted(placed - set(MODULES)) == []


def test_layer_names_are_consistent():
    known = set(MODULE_LAYERS) | set(PACKAGE_LAYERS.values())
    assert set(MAY_IMPORT) == known
    assert all(allowed <= known and layer in allowed for layer, allowed in MAY_IMPORT.items())


def test_imports_follow_the_pipeline():
    bad = violations(MODULES)
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "def f():\n    from halo.runtime.engines import model_cache\n",
            "halo.tokens:2 imports halo.runtime.engines.model_cache (layer logical may not import layer runtime)",
        ),
        (
            "from halo import cost\n",
            "halo.tokens:1 imports halo.cost (layer logical may not import layer cost)",
        ),
        (
            "import halo.cli as cli\n",
            "halo.tokens:1 imports halo.cli (layer logical may not import layer top)",
        ),
    ],
)
def test_a_backward_import_is_reported(tmp_path, source, expected):
    path = tmp_path / "tokens.py"
    path.write_text(source)
    assert violations({"halo.tokens": path}) == [expected]


def test_only_cost_reaches_the_hardware_models(tmp_path):
    path = tmp_path / "cli.py"
    path.write_text("from halo.hw_models import hardware\nfrom halo.cost import parse_hardware\n")
    assert violations({"halo.cli": path}) == [
        "halo.cli:1 imports halo.hw_models.hardware (layer top may not import layer hardware models)"
    ]


def test_relative_imports_are_resolved(tmp_path):
    path = tmp_path / "hf.py"
    path.write_text("from ..structured import parse\nfrom . import base\n")
    assert imports("halo.runtime.engines.hf", path) == [
        (1, "halo.runtime.structured"),
        (2, "halo.runtime.engines.base"),
    ]
