"""Runs the tool operators of a plan (sql, http, py) on real tools, one instance at a time."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from halo.plan import LogicalPlan, OpNode, evaluate
from halo.runtime.tools import py_tool
from halo.runtime.tools.duckdb_tool import DuckDBTool
from halo.runtime.tools.http_tool import HttpTool


class Toolbox:
    """One connection (pool) per declared database, one HTTP client; thread-safe."""

    def __init__(self, plan: LogicalPlan, http_timeout_s: float = 30.0):
        self._dbs: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.http_timeout_s = http_timeout_s
        self._http: dict[int, HttpTool] = {}
        self.plan = plan

    def _db(self, op: OpNode):
        key = (op.db.kind, op.db.target)
        with self._lock:
            tool = self._dbs.get(key)
            if tool is None:
                if op.db.kind == "duckdb":
                    tool = DuckDBTool(op.db.target)
                else:
                    from halo.runtime.tools.postgres_tool import PostgresTool
                    tool = PostgresTool(op.db.target)
                self._dbs[key] = tool
        return tool

    def run(self, op: OpNode, env: dict[str, Any]) -> tuple[Any, float]:
        """Execute one instance; returns (value, seconds). Tool failures raise ToolError."""
        start = time.perf_counter()
        if op.kind == "sql":
            params = {k: evaluate(v, env) for k, v in op.bound_args().items()}
            result = self._db(op).run(op.option("query"), params)
            value: Any = result.rows if not op.sql_write else {"rowcount": result.rowcount, "rows": result.rows}
        elif op.kind == "http":
            method = str(op.option("method", "GET")).upper()
            url = op.templates["url"].render(env)
            query = evaluate(op.args["query"], env) if "query" in op.args else None
            if isinstance(query, dict):   # records and lists travel as JSON text, not Python reprs
                query = {k: v if isinstance(v, str | int | float | bool) or v is None else json.dumps(v, default=str)
                         for k, v in query.items()}
            body = evaluate(op.args["body"], env) if "body" in op.args else None
            headers = evaluate(op.args["headers"], env) if "headers" in op.args else None
            value = self._client(op.option("retries", 2)).request(
                method, url, query=query, body=body, headers=headers, timeout_s=op.option("timeout")).body
        elif op.kind == "py":
            kwargs = {k: evaluate(v, env) for k, v in op.bound_args().items()}
            value = py_tool.call(op.option("function"), kwargs)
        else:
            raise ValueError(f"not a tool operator: {op.kind}")
        return value, time.perf_counter() - start

    def _client(self, retries: int) -> HttpTool:
        """One HTTP client per retry policy (the `retries` argument of http())."""
        with self._lock:
            if retries not in self._http:
                self._http[retries] = HttpTool(timeout_s=self.http_timeout_s, retries=retries)
            return self._http[retries]

    def close(self) -> None:
        for client in self._http.values():
            client.close()
        for tool in self._dbs.values():
            tool.close()
