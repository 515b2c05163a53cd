"""Batches of inputs from JSONL, CSV or Parquet, validated row by row against a workflow's parameters."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halo import ast, types
from halo.errors import HaloError, Pos

FORMATS = ("jsonl", "csv", "parquet")


@dataclass(frozen=True)
class RowError:
    row: int          # 1-based row number in the file (data rows, header excluded)
    reason: str


@dataclass
class Batch:
    """Valid rows (with their row numbers) and the rows rejected, each with a reason."""

    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def load(path: str | Path, params: list[ast.Param], limit: int | None = None) -> Batch:
    batch = Batch()
    if limit is not None and limit <= 0:
        detect_format(Path(path))
        return batch
    for item in iter_rows(path, params):
        if isinstance(item, RowError):
            batch.errors.append(item)
        else:
            batch.rows.append(item)
        if limit is not None and len(batch.rows) >= limit:
            break
    return batch


def iter_rows(path: str | Path, params: list[ast.Param]) -> Iterator[tuple[int, dict[str, Any]] | RowError]:
    """Stream validated rows; a bad row yields a RowError and the stream goes on."""
    path = Path(path)
    fmt = detect_format(path)
    raw = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}[fmt](path)
    for number, row in raw:
        if isinstance(row, RowError):
            yield row
            continue
        try:
            yield number, validate(row, params, from_text=fmt == "csv")
        except ValueError as e:
            yield RowError(number, str(e))


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    fmt = {"jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl", "csv": "csv", "parquet": "parquet",
           "pq": "parquet"}.get(suffix)
    if fmt is None:
        raise HaloError.at(Pos(str(path), 1, 1), f"unknown batch format '.{suffix}' (use .jsonl, .csv or .parquet)")
    if not path.exists():
        raise HaloError.at(Pos(str(path), 1, 1), "no such input file")
    return fmt


def validate(row: dict[str, Any], params: list[ast.Param], from_text: bool = False) -> dict[str, Any]:
    """Check a row against the parameters: required present, types match (CSV text is coerced), no extras."""
    known = {p.name for p in params}
    extra = sorted(k for k in row if k not in known)
    if extra:
        raise ValueError(f"unknown field(s) {', '.join(extra)} (parameters: {', '.join(sorted(known)) or 'none'})")
    out: dict[str, Any] = {}
    for p in params:
        t = types.from_ref(p.type) or types.JSON
        missing = p.name not in row or (row[p.name] is None and p.default is not None)
        if missing or (from_text and row[p.name] == "" and p.default is not None):
            if p.default is None:
                raise ValueError(f"missing parameter '{p.name}'")
            out[p.name] = ast.literal_value(p.default)
            continue
        out[p.name] = _coerce(p.name, row[p.name], t, from_text)
    return out


def _coerce(name: str, value: Any, t: types.Type, from_text: bool) -> Any:
    if t.kind == "json":
        return value
    if value is None:
        raise ValueError(f"'{name}' must be {t}, got null")
    if t.kind == "list":
        if from_text and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"'{name}' must be a JSON list") from None
        if not isinstance(value, list):
            raise ValueError(f"'{name}' must be a list of {t.elem}")
        return [_coerce(f"{name}[{i}]", v, t.elem or types.JSON, from_text) for i, v in enumerate(value)]
    if from_text and isinstance(value, str):
        value = _from_text(name, value, t.kind)
    ok = {"text": isinstance(value, str),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool)}[t.kind]
    if not ok:
        raise ValueError(f"'{name}' must be {t.kind}, got {_kind(value)} {value!r:.40}")
    return float(value) if t.kind == "float" else value


def _from_text(name: str, value: str, kind: str) -> Any:
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise ValueError(f"'{name}' must be {kind}, got {value!r:.40}") from None
    if kind == "bool":
        low = value.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"'{name}' must be bool, got {value!r:.40}")
    return value


def _kind(value: Any) -> str:
    return {str: "text", bool: "bool", int: "int", float: "float", list: "list", dict: "object", type(None): "null"}.get(
        type(value), type(value).__name__)


def _jsonl(path: Path):
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        number = 0
        for line in f:
            if not line.strip():
                continue
            number += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, RowError(number, f"not valid JSON: {e.msg} at column {e.colno}")
                continue
            if not isinstance(row, dict):
                yield number, RowError(number, "a row must be a JSON object")
                continue
            yield number, row


def _csv(path: Path):
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        for number, row in enumerate(reader, start=1):
            if None in row:
                yield number, RowError(number, "more values than header columns")
                continue
            yield number, {k: v for k, v in row.items() if v is not None}


def _parquet(path: Path):
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield number, row
