"""Batches of inputs from JSONL, CSV or Parquet, validated row by row against a workflow's parameters.

A file that cannot be read as a whole (unknown format, corrupt Parquet, an unterminated CSV quote) is refused
with a located `HaloError` before any row is yielded; a bad row becomes a `RowError` and the stream goes on.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halo import ast, types
from halo.errors import HaloError, Pos

FORMATS = ("jsonl", "csv", "parquet")

MAX_ROW_CHARS = 16 * 1024 * 1024  # one JSONL line or one CSV record (all its physical lines), in characters
MAX_RECORD_LINES = 1_000  # physical lines one CSV record may span (a quoted field with newlines)
MAX_DEPTH = 64  # nesting of objects and arrays in a row, the row's own object included
MAX_INT_DIGITS = 100  # digits of one integer in JSON text or in a CSV int cell

_CHUNK = 1024 * 1024  # characters read at a time from a long physical line
_SURROGATE = re.compile("[\ud800-\udfff]")
_SUSPECT = re.compile(r"\\u[dD][89a-fA-F]|NaN|Infinity|[eE][+]?\d{3}|\d{" + str(MAX_INT_DIGITS + 1) + "}")
_PARQUET_BATCH = 4096


@dataclass(frozen=True)
class RowError:
    row: int  # 1-based data row number: JSONL non-blank lines, CSV records after the header, Parquet rows
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
    """Stream validated rows; a bad row yields a RowError and the stream goes on.

    File-level checks run when this is called, before the first row: a bad file raises HaloError here.
    """
    path = Path(path)
    fmt = detect_format(path)
    raw = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}[fmt](path)
    next(raw)  # each reader yields None once its file-level checks have passed
    return _validated(raw, params, from_text=fmt == "csv")


def _validated(raw: Iterator, params: list[ast.Param], from_text: bool) -> Iterator:
    for number, row in raw:
        if isinstance(row, RowError):
            yield row
            continue
        try:
            yield number, validate(row, params, from_text=from_text)
        except ValueError as e:
            yield RowError(number, str(e))


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    fmt = {
        "jsonl": "jsonl",
        "ndjson": "jsonl",
        "json": "jsonl",
        "csv": "csv",
        "parquet": "parquet",
        "pq": "parquet",
    }.get(suffix)
    if fmt is None:
        raise HaloError.at(
            Pos(str(path), 1, 1), f"unknown batch format '.{suffix}' (use .jsonl, .csv or .parquet)"
        )
    if not path.exists():
        raise HaloError.at(Pos(str(path), 1, 1), "no such input file")
    if not path.is_file():
        raise HaloError.at(Pos(str(path), 1, 1), "not a regular file")
    return fmt


def validate(row: dict[str, Any], params: list[ast.Param], from_text: bool = False) -> dict[str, Any]:
    """Check a row against the parameters: required present, types match (CSV text is coerced), no extras."""
    known = {p.name for p in params}
    extra = sorted(k for k in row if k not in known)
    if extra:
        raise ValueError(
            f"unknown field(s) {', '.join(extra)} (parameters: {', '.join(sorted(known)) or 'none'})"
        )
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
                value = _loads(value, depth=1)
            except json.JSONDecodeError:
                raise ValueError(f"'{name}' must be a JSON list") from None
            except _Refused as e:
                raise ValueError(f"'{name}': {e}") from None
        if not isinstance(value, list):
            raise ValueError(f"'{name}' must be a list of {t.elem}")
        return [_coerce(f"{name}[{i}]", v, t.elem or types.JSON, from_text) for i, v in enumerate(value)]
    if from_text and isinstance(value, str):
        value = _from_text(name, value, t.kind)
    ok = {
        "text": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }[t.kind]
    if not ok:
        raise ValueError(f"'{name}' must be {t.kind}, got {_kind(value)} {value!r:.40}")
    return float(value) if t.kind == "float" else value


def _from_text(name: str, value: str, kind: str) -> Any:
    try:
        if kind == "int":
            return _int(value.strip())
        if kind == "float":
            return _finite(float(value), repr(value[:40]))
    except _Refused as e:
        raise ValueError(f"'{name}': {e}") from None
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
    return {
        str: "text",
        bool: "bool",
        int: "int",
        float: "float",
        list: "list",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# --- values: one set of limits for every format -------------------------------------------------------------


class _Refused(ValueError):
    """A value over a limit or one JSON cannot represent; the message is the reason as users see it."""


def _int(text: str) -> int:
    digits = len(text) - text.startswith(("-", "+"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"integer of {digits:,} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _finite(number: float, shown: str) -> float:
    if not math.isfinite(number):
        raise _Refused(
            f"{shown} is not a finite number (NaN, Infinity and numbers beyond ±1.8e308 are not JSON)"
        )
    return number


def _loads(text: str, depth: int = 0) -> Any:
    """Strict JSON for text nested `depth` levels inside a row: JSONDecodeError for bad syntax, _Refused over a limit.

    Text that cannot hold a problem (no long digit run, NaN, Infinity, big exponent, surrogate escape, deep
    nesting) skips the value walk.
    """
    suspect = _SUSPECT.search(text) is not None
    try:
        value = json.loads(text, parse_int=_int) if suspect else json.loads(text)
    except RecursionError:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels") from None
    if suspect or text.count("[") + text.count("{") > MAX_DEPTH - depth:
        _check_value(value, depth)
    return value


def _check_value(value: Any, depth: int = 0) -> None:
    """Refuse a decoded value nested over MAX_DEPTH, holding a lone surrogate or a non-finite number.

    Iterative, so any depth is safe; a problem under a row's field is reported with that field's name.
    """
    stack = [(value, depth + 1, "")]
    while stack:
        v, level, where = stack.pop()
        if isinstance(v, str):
            _check_text(v, where)
        elif isinstance(v, float) and not math.isfinite(v):
            _finite(v, where + {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(v)])
        elif isinstance(v, dict | list):
            if level > MAX_DEPTH:
                raise _Refused(f"{where}nested deeper than {MAX_DEPTH} levels")
            for k, x in v.items() if isinstance(v, dict) else enumerate(v):
                if isinstance(k, str):
                    _check_text(k, where, " in a key")
                stack.append(
                    (x, level + 1, where or (f"'{k}': " if level == 1 and isinstance(k, str) else ""))
                )


def _check_text(text: str, where: str, what: str = "") -> None:
    if not text.isascii() and (m := _SURROGATE.search(text)):
        raise _Refused(f"{where}not valid Unicode: lone surrogate \\u{ord(m.group()):04x}{what}")


def _bad_byte(text: str) -> tuple[int, int, int] | None:
    """(line offset, column, byte) of the first byte that was not UTF-8 (decoded with surrogateescape)."""
    if text.isascii() or not (m := _SURROGATE.search(text)):
        return None
    before = _NEWLINE.split(text[: m.start()])
    return len(before) - 1, len(before[-1]) + 1, ord(m.group()) - 0xDC00


def _open(path: Path, newline: str | None):
    """The file as text; bytes that are not UTF-8 become lone surrogates, so each row can be judged alone."""
    try:
        return path.open(encoding="utf-8-sig", errors="surrogateescape", newline=newline)
    except OSError as e:
        raise HaloError.at(Pos(str(path), 1, 1), f"cannot read the input file: {e.strerror}") from None


# --- JSONL ----------------------------------------------------------------------------------------------------


def _jsonl(path: Path):
    """Rows numbered by non-blank line; blank lines are skipped and not counted."""
    with _open(path, None) as f:
        yield None
        number = 0
        while line := f.readline(MAX_ROW_CHARS + 1):
            too_long = len(line) > MAX_ROW_CHARS and not line.endswith("\n")
            if not too_long and not line.strip():
                continue
            number += 1
            if too_long:
                while not line.endswith("\n") and (line := f.readline(_CHUNK)):
                    pass
                yield number, RowError(number, f"row longer than {MAX_ROW_CHARS:,} characters")
                continue
            yield number, _json_row(number, line)


def _json_row(number: int, line: str) -> dict[str, Any] | RowError:
    if bad := _bad_byte(line):
        return RowError(number, f"not valid UTF-8: byte 0x{bad[2]:02x} at column {bad[1]}")
    try:
        row = _loads(line)
    except json.JSONDecodeError as e:
        return RowError(number, f"not valid JSON: {e.msg} at column {e.colno}")
    except _Refused as e:
        return RowError(number, str(e))
    if not isinstance(row, dict):
        return RowError(number, "a row must be a JSON object")
    return row


# --- CSV ------------------------------------------------------------------------------------------------------

_START, _FIELD, _QUOTED, _QUOTE = range(4)  # at a field's start, in an unquoted field, in a quoted one, after
# a quote inside a quoted one (doubled or closing: the next char says)
_NEWLINE = re.compile("\r\n|\r|\n")


def _csv(path: Path):
    """Rows numbered by record after the header; blank lines are skipped and not counted."""
    csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_CHARS))  # records are capped before parsing
    names = _prescan(path)
    with _open(path, "") as f:
        records = (r for r in _records(f) if not r.blank)
        next(records, None)  # the header, checked by the pre-scan
        yield None
        for number, rec in enumerate(records, start=1):
            yield number, _csv_row(number, rec, names)


def _prescan(path: Path) -> list[str]:
    """One streaming pass before any row runs: refuse quotes that swallow rows; return the header's names."""
    names = None
    with _open(path, "") as f:
        for rec in _records(f):
            if rec.unclosed:
                raise HaloError.at(
                    Pos(str(path), *rec.unclosed),
                    "this quoted field is never closed (it would swallow every row after it)",
                )
            if rec.span > MAX_RECORD_LINES:
                raise HaloError.at(
                    Pos(str(path), *(rec.quote or (rec.line, 1))),  # span > 1: a quote is open
                    f"this quoted field runs over {rec.span:,} lines "
                    f"(a record may span at most {MAX_RECORD_LINES:,}): is a quote not closed?",
                )
            if names is None and not rec.blank:
                names = _header(path, rec)
    return names or []


def _header(path: Path, rec: _Record) -> list[str]:
    if rec.text is None:
        raise HaloError.at(Pos(str(path), rec.line, 1), f"header longer than {MAX_ROW_CHARS:,} characters")
    text = "".join(rec.text)
    if bad := _bad_byte(text):
        raise HaloError.at(Pos(str(path), rec.line + bad[0], bad[1]), f"not valid UTF-8: byte 0x{bad[2]:02x}")
    names = next(csv.reader([text]))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise HaloError.at(
            Pos(str(path), rec.line, 1), f"duplicate column(s) {', '.join(map(repr, dup))} in the header"
        )
    return names


def _csv_row(number: int, rec: _Record, names: list[str]) -> dict[str, str] | RowError:
    if rec.text is None:
        return RowError(number, f"row longer than {MAX_ROW_CHARS:,} characters (line {rec.line})")
    text = "".join(rec.text)
    if bad := _bad_byte(text):
        return RowError(
            number, f"not valid UTF-8: byte 0x{bad[2]:02x} at line {rec.line + bad[0]}, column {bad[1]}"
        )
    try:
        values = next(csv.reader([text]))
    except csv.Error as e:
        return RowError(number, f"not valid CSV: {e}")
    if len(values) > len(names):
        return RowError(number, "more values than header columns")
    return dict(zip(names, values, strict=False))  # fewer values: those fields are missing


@dataclass
class _Record:
    """One CSV record as the csv module will read it: the physical lines it spans."""

    line: int  # physical line it starts on
    text: list[str] | None = field(default_factory=list)  # its text; None once over MAX_ROW_CHARS
    span: int = 1  # physical lines it covers
    quote: tuple[int, int] | None = None  # (line, column) of the quote whose field first ran past a line end
    unclosed: tuple[int, int] | None = None  # (line, column) of a quote still open at the end of the file

    @property
    def blank(self) -> bool:
        return self.span == 1 and self.text is not None and not "".join(self.text).strip("\r\n")


def _records(f) -> Iterator[_Record]:
    """Split a CSV text stream into records in one pass; memory is bounded by MAX_ROW_CHARS."""
    line, col, state, size, opened_at = 1, 0, _START, 0, None
    rec = _Record(1)
    while chunk := f.readline(_CHUNK):
        body = chunk.rstrip("\r\n")
        state, opened = _advance(body, state)
        if opened >= 0:
            opened_at = (line, col + opened + 1)
        size += len(chunk)
        if rec.text is not None:
            rec.text.append(chunk)
            if size > MAX_ROW_CHARS:
                rec.text = None
        if len(body) == len(chunk):  # a long line: it goes on in the next chunk
            col += len(chunk)
            continue
        line, col = line + 1, 0
        if state == _QUOTED:  # a newline inside a quoted field: the record goes on
            rec.quote = rec.quote or opened_at
            rec.span += 1
            continue
        yield rec
        state, size, rec = _START, 0, _Record(line)
    if size:
        rec.unclosed = opened_at if state == _QUOTED else None
        yield rec


def _advance(text: str, state: int) -> tuple[int, int]:
    """The scan state after `text` (a line without its ending) and the index of the last quote opening a field.

    The csv module's default dialect: a quote opens a field only at its start; inside, a doubled quote is a
    quote and a single one closes it; any other quote is an ordinary character.
    """
    pos, opened, n = 0, -1, len(text)
    while pos < n:
        if state == _QUOTE:
            state, pos = (_QUOTED, pos + 1) if text[pos] == '"' else (_FIELD, pos)
        elif state == _QUOTED:
            j = text.find('"', pos)
            if j < 0:
                return _QUOTED, opened
            state, pos = _QUOTE, j + 1
        else:
            j = text.find('"', pos)
            if j < 0:
                return (_START if text[-1] == "," else _FIELD), opened
            if (j == pos and state == _START) or (j > pos and text[j - 1] == ","):
                state, pos, opened = _QUOTED, j + 1, j
            else:
                state, pos = _FIELD, j + 1
    return state, opened


# --- Parquet --------------------------------------------------------------------------------------------------


def _parquet(path: Path):
    """Rows numbered from 1; the whole file is decoded once first, so a damaged file is refused up front."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)  # checked where the writer stored sums
    except Exception as e:  # pyarrow reports a damaged file with several exception types
        raise HaloError.at(Pos(str(path), 1, 1), f"not a readable Parquet file: {e}") from None
    try:
        try:
            for _ in pf.iter_batches(batch_size=_PARQUET_BATCH):
                pass
        except Exception as e:
            raise HaloError.at(Pos(str(path), 1, 1), f"not a readable Parquet file: {e}") from None
        yield None
        number = 0
        try:
            for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
                for row in _parquet_rows(batch):
                    number += 1
                    yield number, row if isinstance(row, dict) else RowError(number, row)
        except Exception as e:  # the file changed after the check: every row left gets its record
            for n in range(number + 1, pf.metadata.num_rows + 1):
                yield n, RowError(n, f"not readable from the Parquet file: {e}")
    finally:
        pf.close()


def _parquet_rows(batch) -> Iterator[dict[str, Any] | str]:
    """The batch's rows as dicts, or the reason a row cannot be one (bad UTF-8 text, a non-finite float...)."""
    import pyarrow as pa

    try:
        rows = batch.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):
        rows = None  # one bad value: convert row by row to find its row
    for i in range(batch.num_rows):
        try:
            row = rows[i] if rows is not None else batch.slice(i, 1).to_pylist()[0]
            _check_value(row)
        except _Refused as e:
            yield str(e)
        except (ValueError, OverflowError, pa.ArrowException) as e:
            yield f"not readable: {e}"
        else:
            yield row
