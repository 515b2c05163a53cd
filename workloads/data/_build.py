"""Shared plumbing for the generators: idempotent atomic builds, checksums, Zipf sampling."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

META_TABLE = "halo_meta"


def build(
    path: str | os.PathLike, marker: dict[str, Any], fill: Callable[[duckdb.DuckDBPyConnection], None]
) -> Path:
    """Create the DuckDB file ``path`` with ``fill`` unless it already carries ``marker``.

    The file is built under a temporary name and renamed, so a crash never leaves a file that
    looks complete. A file with another marker (other generator, version, seed or scale) is rebuilt.
    """
    path = Path(path)
    text = json.dumps(marker, sort_keys=True)
    if path.exists() and read_marker(path) == text:
        return path
    tmp = path.with_name(path.name + ".tmp")
    for stale in (tmp, Path(f"{tmp}.wal")):
        stale.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(tmp)) as con:
        fill(con)
        con.execute(f"CREATE TABLE {META_TABLE} AS SELECT ? AS marker", [text])
        con.execute("CHECKPOINT")
    os.replace(tmp, path)
    Path(f"{path}.wal").unlink(missing_ok=True)
    return path


def read_marker(path: str | os.PathLike) -> str | None:
    """The generator marker stored in a DuckDB file, or None."""
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            row = con.execute(f"SELECT marker FROM {META_TABLE}").fetchone()
    except duckdb.Error:
        return None
    return row[0] if row else None


def checksum(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Per table (row count, order-independent content hash), to compare two builds."""
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
            ).fetchall()
        ]
        return {t: _count_and_hash(con, t) for t in tables}


def _count_and_hash(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, int]:
    row = con.execute(f'SELECT count(*), sum(hash("{table}")) FROM "{table}"').fetchone()
    assert row is not None  # an aggregate query returns one row
    count, digest = row
    return int(count or 0), int(digest or 0)


def zipf_weights(n: int, s: float) -> np.ndarray:
    """Probabilities proportional to 1 / rank**s for ranks 1..n."""
    w = 1.0 / np.arange(1, n + 1, dtype=float) ** s
    return w / w.sum()
