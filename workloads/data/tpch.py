"""TPC-H into a DuckDB file through DuckDB's tpch extension (dbgen), offline.

    python -m workloads.data.tpch PATH [SF]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb

from halo.runtime.tools.duckdb_tool import load_tpch

from ._build import build

VERSION = 1


def generate(path: str | os.PathLike, sf: float = 0.01) -> Path:
    """Create TPC-H at scale factor ``sf`` (8 tables; sf=0.01 has 60,175 lineitems). Idempotent."""

    def fill(con: duckdb.DuckDBPyConnection) -> None:
        load_tpch(con)
        con.execute("CALL dbgen(sf = ?)", [sf])

    return build(path, {"generator": "tpch", "version": VERSION, "duckdb": duckdb.__version__, "sf": sf}, fill)


if __name__ == "__main__":
    print(generate(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.01))
