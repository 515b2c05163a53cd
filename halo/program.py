"""Load a workflow file and the files it imports into one program."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

from halo import ast
from halo.errors import HaloError, Pos
from halo.parser import MAX_FILE_BYTES, parse

MAX_IMPORT_DEPTH = 32  # files in one chain of imports, the main file included
MAX_FILES = 256  # files in one program, the main file included


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
    return load_source(_read(path, Pos(str(path), 1, 1), "cannot read file"), str(path))


def _read(path: Path, pos: Pos, what: str) -> str:
    """The text of a workflow file: a regular file of at most MAX_FILE_BYTES, checked before reading."""
    if "\x00" in str(path):
        raise HaloError.at(pos, f"{what}: the path contains a NUL character")
    try:
        st = path.stat()
    except OSError as e:
        raise HaloError.at(pos, f"{what}: {(e.strerror or str(e)).lower()}") from None
    if not stat.S_ISREG(st.st_mode):
        raise HaloError.at(pos, f"{what}: not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise HaloError.at(pos, f"{what}: {st.st_size:,} bytes; the limit is {MAX_FILE_BYTES:,} (1 MiB)")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise HaloError.at(pos, f"{what}: more than {MAX_FILE_BYTES:,} bytes (1 MiB)")
        return data.decode("utf-8")
    except OSError as e:
        raise HaloError.at(pos, f"{what}: {(e.strerror or str(e)).lower()}") from None
    except UnicodeDecodeError as e:
        raise HaloError.at(pos, f"{what}: not UTF-8 ({e.reason} at byte {e.start})") from None


def load_source(text: str, file: str) -> Program:
    main = parse(text, file)
    program = Program(main)
    _add(program, main, [])
    return program


def _add(program: Program, module: ast.Module, stack: list[str]) -> None:
    program.modules[module.file] = module
    if not module.workflows:
        raise HaloError.at(Pos(module.file, 1, 1), "no workflow in this file")
    here = str(Path(module.file).resolve())
    for imp in module.imports:
        if "\x00" in imp.value:
            raise HaloError.at(imp.pos, "an import path cannot contain a NUL character")
        target = (Path(module.file).parent / imp.value).resolve()
        key = str(target)
        if key in stack or key == here:
            raise HaloError.at(imp.pos, f"import cycle through '{imp.value}'")
        if any(str(Path(f).resolve()) == key for f in program.modules):
            continue
        if len(stack) + 2 > MAX_IMPORT_DEPTH:
            raise HaloError.at(imp.pos, f"imports nest more than {MAX_IMPORT_DEPTH} files deep")
        if len(program.modules) >= MAX_FILES:
            raise HaloError.at(imp.pos, f"a program holds at most {MAX_FILES} files")
        text = _read(target, imp.pos, f"cannot import '{imp.value}'")
        _add(program, parse(text, str(target)), [*stack, here])
    for wf in module.workflows:
        if wf.name in program.workflows:
            prev = program.workflows[wf.name].pos
            raise HaloError.at(wf.pos, f"workflow '{wf.name}' is already defined at {prev}")
        program.workflows[wf.name] = wf
