"""TPC-H into a DuckDB file through DuckDB's tpch extension (dbgen), offline.

python -m workloads.data.tpch PATH [SF]
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

import duckdb

from ._build import build

VERSION = 1


def extension_path() -> Path:
    """The tpch extension binary that ``duckdb-extension-tpch`` ships for this DuckDB."""
    path = resources.files("duckdb_extension_tpch") / "extensions" / f"v{duckdb.__version__}"
    path = Path(str(path / "tpch.duckdb_extension"))
    if not path.is_file():
        raise FileNotFoundError(f"no tpch extension for DuckDB {duckdb.__version__} at {path}")
    return path


def load_tpch(con: duckdb.DuckDBPyConnection) -> None:
    """Load the tpch extension from its file (no network); enables ``CALL dbgen(sf=...)``."""
    con.load_extension(str(extension_path()))


def generate(path: str | os.PathLike, sf: float = 0.01) -> Path:
    """Create TPC-H at scale factor ``sf`` (8 tables; sf=0.01 has 60,175 lineitems). Idempotent."""

    def fill(con: duckdb.DuckDBPyConnection) -> None:
        load_tpch(con)
        con.execute("CALL dbgen(sf = ?)", [sf])

    return build(
        path, {"generator": "tpch", "version": VERSION, "duckdb": duckdb.__version__, "sf": sf}, fill
    )


if __name__ == "__main__":
    print(generate(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.01))
