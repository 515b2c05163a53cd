"""DuckDB SQL tool: one database, a cursor per thread, parameters bound as ``$name``."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import duckdb
from sqlglot import exp

from halo.sql import SqlError, SqlResult, prepare

from .sqlbind import bind_scalars

__all__ = ["DuckDBTool", "in_memory"]


def in_memory(database: str) -> bool:
    """Whether a DuckDB database name denotes an in-memory database (nothing on disk)."""
    return database in ("", ":memory:") or database.startswith(":memory:")


class DuckDBTool:
    """Runs PostgreSQL-syntax statements on a DuckDB database from any number of threads.

    ``explain_cost`` is the sum of the optimizer's estimated cardinalities over all operators of
    the physical plan: a unitless "rows touched" estimate, comparable between queries on the same
    database only.
    """

    def __init__(self, database: str = ":memory:", read_only: bool = False):
        """Open `database` (read-only ignored for in-memory ones); SqlError when it cannot be opened."""
        try:
            self._con = duckdb.connect(database, read_only=read_only and not in_memory(database))
        except duckdb.Error as e:
            raise SqlError(f"cannot open DuckDB database {database}: {e}") from None
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._con.cursor()
                self._cursors.append(cur)
            self._local.cursor = cur
        return cur

    def _execute(self, text: str, args: dict[str, Any], timeout_s: float | None):
        cur = self._cursor()
        guard = threading.Lock()
        running = [True]

        def interrupt() -> None:  # only while this statement runs, never a later one on the cursor
            with guard:
                if running[0]:
                    cur.interrupt()

        timer = None if timeout_s is None else threading.Timer(timeout_s, interrupt)
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            cur.execute(text, args or None)
            if cur.description is None:
                return [], []
            return [d[0] for d in cur.description], cur.fetchall()
        except duckdb.InterruptException:
            raise SqlError(f"statement timed out after {timeout_s} s", sql=text) from None
        except duckdb.Error as e:
            raise SqlError(str(e), sql=text) from None
        finally:
            with guard:
                running[0] = False
            if timer is not None:
                timer.cancel()

    def run(
        self, sql: exp.Expr | str, params: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> SqlResult:
        """Execute one statement with bound parameters; SqlError carries DuckDB's message."""
        start = time.perf_counter()
        prepared = prepare(sql, "duckdb")
        columns, data = self._execute(prepared.text, bind_scalars(prepared.names, params), timeout_s)
        if prepared.write and prepared.expr.find(exp.Returning) is None and columns == ["Count"]:
            return SqlResult([], [], int(data[0][0]) if data else 0, time.perf_counter() - start)
        rows = [dict(zip(columns, row, strict=True)) for row in data]
        return SqlResult(columns, rows, len(rows), time.perf_counter() - start)

    def explain_cost(self, sql: exp.Expr | str, params: dict[str, Any] | None = None) -> float | None:
        """Sum of estimated cardinalities of the plan's operators; None if DuckDB gives none."""
        prepared = prepare(sql, "duckdb")
        args = bind_scalars(prepared.names, params)
        _, data = self._execute("EXPLAIN (FORMAT JSON) " + prepared.text, args, None)
        estimates = [float(v) for _, plan in data for v in _cardinalities(json.loads(plan))]
        return sum(estimates) if estimates else None

    def close(self) -> None:
        with self._lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        self._con.close()

    def __enter__(self) -> DuckDBTool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cardinalities(node: Any):
    """Yield every "Estimated Cardinality" value in a DuckDB JSON plan."""
    if isinstance(node, list):
        for child in node:
            yield from _cardinalities(child)
    elif isinstance(node, dict):
        value = node.get("extra_info", {}).get("Estimated Cardinality")
        if value is not None:
            yield value
        yield from _cardinalities(node.get("children", []))
