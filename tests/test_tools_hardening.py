"""Tool hardening on real tools: URL encoding, confined redirects, timeouts, read-only DuckDB, scalar binding."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import duckdb
import pytest
from pg import postgres_dsn  # noqa: F401  (session fixture)
from plans import split

from halo import api
from halo import plan as plans
from halo import urls as url
from halo.check import check
from halo.errors import HaloError
from halo.program import load_source
from halo.runtime.run import execute
from halo.runtime.toolbox import Toolbox
from halo.runtime.tools.duckdb_tool import DuckDBTool
from halo.sql import SqlError
from halo.template import Template

sys.path.insert(0, str(Path(__file__).parent / "runtime_fixtures"))


def build(src: str, tmp_path: Path):
    return api.compile(src, filename=str(tmp_path / "w.halo")).plan


def run(plan, rows, tmp_path: Path, **opts):
    out = tmp_path / "out.jsonl"
    x, options = split(plan, **opts)
    result = execute(x, rows, out, "fp", options=options)
    return result, {r["row"]: r for r in map(json.loads, out.read_text().splitlines())}


def errors_of(rec: dict) -> str:
    return " ".join(e["error"] for e in rec["error"] or [])


class _Site(BaseHTTPRequestHandler):
    """Echoes the raw path and the parsed query; /jump?to=URL answers 302 to URL."""

    def do_GET(self):
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/jump":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.end_headers()
            return
        body = json.dumps({"raw": self.path, "query": query, "port": self.server.server_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def sites():
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Site) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for s in servers:
        s.shutdown()


# -- URLs --------------------------------------------------------------------------------------------------


def test_url_values_are_encoded_and_stay_in_their_place(tmp_path, sites):
    plan = build(
        f'''workflow w(id: text, q: text) {{
      r = http("GET", "{sites[0]}/item/{{id}}?q={{q}}", query = {{extra: q}})
      return r
    }}''',
        tmp_path,
    )
    _, out = run(
        plan, [(1, {"id": "../admin", "q": "x&admin=1"}), (2, {"id": "a b/c?d#e", "q": "1+1=2#"})], tmp_path
    )
    first, second = out[1]["outputs"]["r"], out[2]["outputs"]["r"]
    assert first["raw"] == "/item/%2E%2E%2Fadmin?q=x%26admin%3D1&extra=x%26admin%3D1"
    assert first["query"] == {"q": ["x&admin=1"], "extra": ["x&admin=1"]}
    assert second["raw"].startswith("/item/a%20b%2Fc%3Fd%23e?")
    assert second["query"] == {"q": ["1+1=2#"], "extra": ["1+1=2#"]}


def test_constants_passed_to_a_sub_workflow_are_encoded_too(tmp_path, sites):
    plan = plans.build(
        check(
            load_source(
                f'''workflow get(id: text, q: text) {{
      r = http("GET", "{sites[0]}/item/{{id}}?q={{q}}")
      return r
    }}
    workflow w(x: int) {{
      a = get(id = "../admin", q = "x&admin=1")
      return a
    }}''',
                str(tmp_path / "w.halo"),
            )
        ),
        "w",
    )
    _, out = run(plan, [(1, {"x": 1})], tmp_path)
    assert out[1]["outputs"]["a"]["r"]["raw"] == "/item/%2E%2E%2Fadmin?q=x%26admin%3D1"


@pytest.mark.parametrize(
    "template, col",
    [('"http://127.0.0.1{port}/x"', 37), ('"{port}/x"', 21), ('"http://{port}/x"', 28), ("port", 19)],
)
def test_holes_in_scheme_host_or_port_are_located_check_errors(template, col):
    src = f'workflow w(port: text) {{\n  r = http("GET", {template})\n  return r\n}}\n'
    result = check(load_source(src, "t.halo"))
    assert [(d.pos.line, d.pos.col, d.message) for d in result.errors] == [(2, col, url.ORIGIN_LITERAL)]


def test_origin_hole_refused_at_run_time_too():
    with pytest.raises(url.UrlError, match="must be literal"):
        url.render(Template.parse("http://h{p}/x"), {"p": ":9999"})
    assert url.render(Template.parse("http://h:80/{p}"), {"p": "."}) == "http://h:80/%2E"


def test_follow_redirects_value_is_checked():
    src = 'workflow w() {\n  r = http("GET", "http://h/", follow_redirects = "all")\n  return r\n}\n'
    with pytest.raises(HaloError, match='follow_redirects must be one of "same-origin", "any", "none"'):
        check(load_source(src, "t.halo")).raise_on_error()


def test_redirects_confined_to_the_origin_unless_allowed(tmp_path, sites):
    home, other = sites
    plan = build(
        f'''workflow w(to: text) {{
      same = http("GET", "{home}/jump", query = {{to: to}})
      any = http("GET", "{home}/jump", query = {{to: to}}, follow_redirects = "any")
      none = http("GET", "{home}/jump", query = {{to: to}}, follow_redirects = "none")
      return same, any, none
    }}''',
        tmp_path,
    )
    _, out = run(plan, [(1, {"to": f"{home}/ok"}), (2, {"to": f"{other}/ok"})], tmp_path)
    errs = {e["node"]: e["error"] for e in out[1]["error"]}
    assert set(errs) == {"none"} and 'follow_redirects = "none"' in errs["none"]
    errs = {e["node"]: e["error"] for e in out[2]["error"]}
    assert set(errs) == {"same", "none"}
    assert "not followed" in errs["same"] and '"any" allows it' in errs["same"]
    # With "any", the other server answered; the error for one input left the others alone.
    result, out = run(
        build(
            f'''workflow w(to: text) {{
      r = http("GET", "{home}/jump", query = {{to: to}}, follow_redirects = "any")
      s = http("GET", "{home}/jump", query = {{to: to}})
      return r, s
    }}''',
            tmp_path,
        ),
        [(1, {"to": f"{home}/ok"}), (2, {"to": f"{other}/ok"})],
        tmp_path,
    )
    assert out[2]["outputs"]["r"]["port"] == int(other.rsplit(":", 1)[1])
    assert out[1]["outputs"]["s"]["raw"] == "/ok" and out[1]["outputs"]["r"]["raw"] == "/ok"


# -- timeouts ----------------------------------------------------------------------------------------------


def test_py_timeout_fails_only_its_input_and_the_run_ends(tmp_path):
    plan = build(
        """workflow w(x: int, d: float) {
      y = py("rtfuncs:slow_double", x = x, delay = d, timeout = 0.5)
      return y
    }""",
        tmp_path,
    )
    start = time.perf_counter()
    _, out = run(
        plan, [(1, {"x": 1, "d": 30.0}), (2, {"x": 2, "d": 0.0}), (3, {"x": 3, "d": 0.01})], tmp_path
    )
    assert time.perf_counter() - start < 10
    assert "timed out after 0.5 s" in errors_of(out[1])
    assert out[2]["outputs"] == {"y": 4} and out[3]["outputs"] == {"y": 6}


def test_timeout_must_be_positive():
    src = 'workflow w() {\n  r = py("m:f", timeout = 0)\n  return r\n}\n'
    with pytest.raises(HaloError, match="'timeout' must be a positive number"):
        check(load_source(src, "t.halo")).raise_on_error()


def test_duckdb_timeout_fails_only_its_input_and_the_connection_lives(tmp_path):
    db = tmp_path / "x.duckdb"
    duckdb.connect(str(db)).close()
    plan = build(
        f'''workflow w(n: int) {{
      db d = duckdb("{db}")
      c = sql(d, "SELECT count(*) AS c FROM range(CAST(:n AS BIGINT)) a, range(CAST(:n AS BIGINT)) b", n = n,
              timeout = 0.5)
      return c.c
    }}''',
        tmp_path,
    )
    start = time.perf_counter()
    _, out = run(plan, [(1, {"n": 10_000_000}), (2, {"n": 3}), (3, {"n": 4})], tmp_path, window=1)
    assert time.perf_counter() - start < 20
    assert "timed out after 0.5 s" in errors_of(out[1])
    assert out[2]["outputs"] == {"c": 9} and out[3]["outputs"] == {"c": 16}


def test_duckdb_tool_usable_after_an_interrupt(tmp_path):
    with DuckDBTool() as tool:
        with pytest.raises(SqlError, match="timed out"):
            tool.run("SELECT count(*) AS c FROM range(10000000) a, range(10000000) b", timeout_s=0.3)
        assert tool.run("SELECT 1 AS one", timeout_s=5).rows == [{"one": 1}]


@pytest.mark.postgres
def test_postgres_timeout_fails_only_its_input(tmp_path, postgres_dsn):  # noqa: F811
    plan = build(
        f'''workflow w(s: float) {{
      db pg = postgres("{postgres_dsn}")
      r = sql(pg, "SELECT pg_sleep(:s) AS slept", s = s, timeout = 0.3)
      return r
    }}''',
        tmp_path,
    )
    start = time.perf_counter()
    _, out = run(plan, [(1, {"s": 5.0}), (2, {"s": 0.0})], tmp_path)
    assert time.perf_counter() - start < 4
    assert "statement timeout" in errors_of(out[1])
    assert out[2]["error"] is None


# -- DuckDB files and binding ------------------------------------------------------------------------------


def test_missing_read_only_duckdb_reported_not_created(tmp_path):
    missing = tmp_path / "missing.duckdb"
    plan = build(
        f'''workflow w(q: int) {{
      db d = duckdb("{missing}")
      r = sql(d, "SELECT :q AS q", q = q)
      return r
    }}''',
        tmp_path,
    )
    [diag] = Toolbox(plan).check()
    assert diag.pos.line == 2 and "does not exist" in diag.message and "read-only" in diag.message
    with pytest.raises(HaloError, match="does not exist"):  # refused before anything runs
        run(plan, [(1, {"q": 1}), (2, {"q": 2})], tmp_path)
    assert not missing.exists() and not (tmp_path / "out.jsonl").exists()


def test_duckdb_opened_read_only_unless_the_plan_writes(tmp_path):
    db = tmp_path / "shop.duckdb"
    duckdb.connect(str(db)).execute("CREATE TABLE t (v INTEGER)").close()
    reader = build(
        f'workflow w() {{\n  db d = duckdb("{db}")\n  r = sql(d, "SELECT count(*) AS n FROM t")\n'
        "  return r\n}",
        tmp_path,
    )
    writer = build(
        f'workflow w() {{\n  db d = duckdb("{db}")\n  r = sql(d, "INSERT INTO t VALUES (1)")\n  return r\n}}',
        tmp_path,
    )
    new = tmp_path / "new.duckdb"
    creator = build(
        f'workflow w() {{\n  db d = duckdb("{new}")\n  r = sql(d, "CREATE TABLE t (v INTEGER)")\n'
        "  return r\n}",
        tmp_path,
    )
    for plan in (reader, writer, creator):
        assert Toolbox(plan).check() == []
    tools = Toolbox(reader)
    try:
        tools.run(reader.node("r"), {})
        assert tools._dbs[("duckdb", str(db))]._con.execute(
            "SELECT current_setting('access_mode')"
        ).fetchone() == ("read_only",)
    finally:
        tools.close()
    _, out = run(creator, [(1, {})], tmp_path)
    assert out[1]["error"] is None and new.exists()


def test_list_or_record_bound_to_sql_parameter_refused(tmp_path):
    plan = build(
        """workflow w(text: text) {
      db d = duckdb(":memory:")
      v = py("json:loads", s = text, pure = true)
      r = sql(d, "SELECT CAST(:v AS TEXT) AS v", v = v)
      return r.v
    }""",
        tmp_path,
    )
    _, out = run(plan, [(1, {"text": "[1, 2]"}), (2, {"text": '{"a": 1}'}), (3, {"text": '"ok"'})], tmp_path)
    assert "SQL parameter :v got a list" in errors_of(out[1])
    assert "SQL parameter :v got a record" in errors_of(out[2])
    assert out[3]["outputs"] == {"v": "ok"}
