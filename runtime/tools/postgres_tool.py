"""PostgreSQL SQL tool: psycopg 3 with a small connection pool, parameters bound as ``%(name)s``."""

from __future__ import annotations

import json
import time
import weakref
from contextlib import nullcontext
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from sqlglot import exp

from halo.sql import SqlError, SqlResult, prepare

from .errors import ToolError
from .sqlbind import bind_scalars

__all__ = ["PostgresTool"]


class PostgresTool:
    """Runs statements on PostgreSQL from any number of threads (at most ``pool_size`` at once).

    Reads run in autocommit; writes run in their own transaction. Server-side binding keeps
    values out of the SQL text. ``explain_cost`` is the planner's total cost from
    ``EXPLAIN (FORMAT JSON)`` (PostgreSQL cost units; the statement is not executed).
    """

    def __init__(self, dsn: str, pool_size: int = 4, connect_timeout_s: float = 10.0):
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            open=False,
            name="halo-postgres",
            kwargs={"autocommit": True, "row_factory": dict_row},
        )
        # statement_timeout last set on each pooled connection, in ms (0 = none).
        self._timeouts: weakref.WeakKeyDictionary[psycopg.Connection, int] = weakref.WeakKeyDictionary()
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout as e:
            self._pool.close()
            raise ToolError(f"cannot connect to PostgreSQL: {e}") from None

    def _execute(self, text: str, args: dict[str, Any], write: bool, timeout_s: float | None):
        ms = 0 if timeout_s is None else max(1, round(timeout_s * 1000))
        try:
            with self._pool.connection() as con:
                if self._timeouts.get(con) != ms:
                    con.execute("SELECT set_config('statement_timeout', %s, false)", [str(ms)])
                    self._timeouts[con] = ms
                with con.transaction() if write else nullcontext(), con.cursor() as cur:
                    cur.execute(text, args)
                    if cur.description is None:
                        return [], [], max(cur.rowcount, 0)
                    rows = cur.fetchall()
                    return [c.name for c in cur.description], rows, len(rows)
        except psycopg.Error as e:
            raise SqlError(str(e).strip(), sql=text) from None

    def run(
        self, sql: exp.Expr | str, params: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> SqlResult:
        """Execute one statement with bound parameters; SqlError carries PostgreSQL's message."""
        start = time.perf_counter()
        prepared = prepare(sql, "postgres")
        args = bind_scalars(prepared.names, params)
        columns, rows, count = self._execute(prepared.text, args, prepared.write, timeout_s)
        return SqlResult(columns, rows, count, time.perf_counter() - start)

    def explain_cost(self, sql: exp.Expr | str, params: dict[str, Any] | None = None) -> float | None:
        """Planner total cost of the statement with these parameters."""
        prepared = prepare(sql, "postgres")
        args = bind_scalars(prepared.names, params)
        _, rows, _ = self._execute("EXPLAIN (FORMAT JSON) " + prepared.text, args, False, None)
        plan = rows[0]["QUERY PLAN"] if rows else None
        if isinstance(plan, str):
            plan = json.loads(plan)
        return float(plan[0]["Plan"]["Total Cost"]) if plan else None

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PostgresTool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
