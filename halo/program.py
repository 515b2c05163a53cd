"""Load a workflow file and the files it imports into one program."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from halo import ast
from halo.errors import HaloError, Pos
from halo.parser import parse


@dataclass
class Program:
    """All modules reachable from the main file, and every workflow by name."""

    main: ast.Module
    modules: dict[str, ast.Module] = field(default_factory=dict)
    workflows: dict[str, ast.Workflow] = field(default_factory=dict)

    def source(self, file: str) -> str | None:
        mod = self.modules.get(file)
        return mod.source if mod else None

    def main_workflows(self) -> list[ast.Workflow]:
        return self.main.workflows

    def workflow(self, name: str | None) -> ast.Workflow:
        """The named workflow, or the main file's only (or first) workflow when no name is given."""
        if name is None:
            if not self.main.workflows:
                raise HaloError.at(Pos(self.main.file, 1, 1), "file defines no workflow")
            return self.main.workflows[-1] if len(self.main.workflows) == 1 else self.main.workflows[0]
        if name not in self.workflows:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise HaloError.at(Pos(self.main.file, 1, 1), f"no workflow named '{name}' (known: {known})")
        return self.workflows[name]


def load(path: str | Path) -> Program:
    """Parse `path` and, recursively, its imports (relative to the importing file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HaloError.at(Pos(str(path), 1, 1), f"cannot read file: {e}") from None
    return load_source(text, str(path))


def load_source(text: str, file: str) -> Program:
    main = parse(text, file)
    program = Program(main)
    _add(program, main, [])
    return program


def _add(program: Program, module: ast.Module, stack: list[str]) -> None:
    program.modules[module.file] = module
    for imp in module.imports:
        target = (Path(module.file).parent / imp.value).resolve()
        key = str(target)
        if key in stack or key == str(Path(module.file).resolve()):
            raise HaloError.at(imp.pos, f"import cycle through '{imp.value}'")
        if any(str(Path(f).resolve()) == key for f in program.modules):
            continue
        try:
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise HaloError.at(imp.pos, f"cannot import '{imp.value}': no such file") from None
        _add(program, parse(text, str(target)), [*stack, str(Path(module.file).resolve())])
    for wf in module.workflows:
        if wf.name in program.workflows:
            prev = program.workflows[wf.name].pos
            raise HaloError.at(wf.pos, f"workflow '{wf.name}' is already defined at {prev}")
        program.workflows[wf.name] = wf
