"""Runs the tool operators of a plan (sql, http, py) on real tools, one instance at a time."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from halo import ast
from halo.consolidate import tool_args
from halo.errors import Diagnostic
from halo.plan import LogicalPlan, OpNode, evaluate
from halo.runtime.tools import py_tool
from halo.runtime.tools.duckdb_tool import DuckDBTool, in_memory
from halo.runtime.tools.errors import ToolError
from halo.runtime.tools.http_tool import HttpTool
from halo.sql import SqlError
from halo.types import DEFAULT_TIMEOUT_S, REDIRECT_POLICIES


class Toolbox:
    """One connection (pool) per declared database, one HTTP client per retry policy; thread-safe.

    A DuckDB database that no operator of the plan writes to is opened read-only, so a missing file is
    reported instead of created. Every call runs under its `timeout` (DEFAULT_TIMEOUT_S when not given).
    """

    def __init__(self, plan: LogicalPlan):
        self._dbs: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._http: dict[int, HttpTool] = {}
        self.plan = plan
        self._written = {_db_key(op.db) for op in plan.nodes() if op.kind == "sql" and op.db and op.sql_write}

    def check(self) -> list[Diagnostic]:
        """What must stop the run before anything runs: each read-only DuckDB database whose file is missing,
        located at its declaration."""
        found: dict[tuple[str, str], Diagnostic] = {}
        for op in self.plan.nodes():
            if op.kind == "sql" and op.db is not None and _db_key(op.db) not in found:
                problem = self._missing(op.db)
                if problem:
                    found[_db_key(op.db)] = Diagnostic(op.db.pos, problem)
        return list(found.values())

    def _missing(self, db: ast.DbDecl) -> str | None:
        """Why a read-only DuckDB database cannot be opened (its file does not exist), or None."""
        if db.kind != "duckdb" or _db_key(db) in self._written or in_memory(db.target):
            return None
        if os.path.exists(db.target):
            return None
        return (
            f"database '{db.name}': {db.target} does not exist (the workflow only reads it, so it is "
            "opened read-only and never created)"
        )

    def _db(self, op: OpNode):
        db = op.db
        assert db is not None, f"sql node {op.id} has no db"  # check makes every sql() call name a db
        key = _db_key(db)
        with self._lock:
            tool = self._dbs.get(key)
            if tool is None:
                if db.kind == "duckdb":
                    problem = self._missing(db)
                    if problem:
                        raise SqlError(problem)
                    tool = DuckDBTool(db.target, read_only=key not in self._written)
                else:
                    from halo.runtime.tools.postgres_tool import PostgresTool

                    tool = PostgresTool(db.target)
                self._dbs[key] = tool
        return tool

    def run(self, op: OpNode, env: dict[str, Any]) -> tuple[Any, float]:
        """Execute one instance; returns (value, seconds). Tool failures raise ToolError or SqlError."""
        start = time.perf_counter()
        if op.kind not in DEFAULT_TIMEOUT_S:
            raise ValueError(f"not a tool operator: {op.kind}")
        timeout = _timeout(op, env)
        args = tool_args(op, env)
        if op.kind == "sql":
            result = self._db(op).run(op.option("query"), args, timeout_s=timeout)
            value: Any = (
                result.rows if not op.sql_write else {"rowcount": result.rowcount, "rows": result.rows}
            )
        elif op.kind == "http":
            value = (
                self._client(op.option("retries", 2))
                .request(
                    args["method"],
                    args["url"],
                    body=args["body"],
                    headers=args["headers"],
                    timeout_s=timeout,
                    follow_redirects=op.option("follow_redirects", REDIRECT_POLICIES[0]),
                )
                .body
            )
        else:
            value = py_tool.call(op.option("function"), args, timeout_s=timeout)
        return value, time.perf_counter() - start

    def _client(self, retries: int) -> HttpTool:
        """One HTTP client per retry policy (the `retries` argument of http())."""
        with self._lock:
            if retries not in self._http:
                self._http[retries] = HttpTool(retries=retries)
            return self._http[retries]

    def close(self) -> None:
        for client in self._http.values():
            client.close()
        for tool in self._dbs.values():
            tool.close()


def _timeout(op: OpNode, env: dict[str, Any]) -> float:
    """The call's `timeout` in seconds (its operator's default when not given); ToolError unless positive."""
    expr = op.args.get("timeout")
    value = DEFAULT_TIMEOUT_S[op.kind] if expr is None else evaluate(expr, env)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ToolError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _db_key(db: ast.DbDecl) -> tuple[str, str]:
    return db.kind, db.target
