"""Tool layer against real DuckDB, PostgreSQL and HTTP (no mocks); data generators."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from pg import postgres_dsn  # noqa: F401  (session fixture)

from halo.runtime.jsonhttp import JSONHandler
from halo.runtime.tools import py_tool
from halo.runtime.tools.builtins import regex_params, search_keyword
from halo.runtime.tools.duckdb_tool import DuckDBTool
from halo.runtime.tools.errors import ToolError
from halo.runtime.tools.http_tool import HttpTool
from halo.runtime.tools.postgres_tool import PostgresTool
from halo.sql import SqlError, SqlParseError, is_write, normalize, parse, placeholders, transpile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # workloads/ is not an installed package
from workloads.data import _build, imdb, postgres_load, tpch, wiki  # noqa: E402

EVIL = "x'; DROP TABLE t; --"


@pytest.fixture(scope="module")
def tpch_db(tmp_path_factory) -> DuckDBTool:
    path = tpch.generate(tmp_path_factory.mktemp("tpch") / "tpch.duckdb", sf=0.01)
    with DuckDBTool(str(path), read_only=True) as tool:
        yield tool


# ---- sql helpers -------------------------------------------------------------------------------


def test_placeholders_and_is_write():
    assert placeholders(parse("SELECT * FROM t WHERE a = :x AND b = :y OR a = :x")) == ["x", "y"]
    assert not is_write(parse("WITH c AS (SELECT 1) SELECT * FROM c UNION SELECT 2"))
    for sql in (
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "DROP TABLE t",
        "CREATE TABLE u AS SELECT 1",
        "ALTER TABLE t ADD COLUMN c int",
        "TRUNCATE t",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "SELECT * INTO u FROM t",
    ):
        assert is_write(parse(sql)), sql
    assert is_write("SELECT 1; DELETE FROM t")


def test_parse_error_has_position():
    with pytest.raises(SqlParseError) as err:
        parse("SELECT a\nFROM t WHERE a = = 1")
    assert (err.value.line, err.value.col) == (2, 18)  # the second "="
    with pytest.raises(SqlParseError):
        parse("SELECT 1; SELECT 2")


def test_normalize_merges_formatting_not_values():
    a = normalize(parse("select  A, b::date as d\nFROM T x -- note\nwhere x.A = :p and c = 'k'"))
    b = normalize(parse("SELECT a, CAST(b AS DATE) AS d FROM t AS x WHERE x.a = %(p)s AND c = 'k'"))
    c = normalize(parse("SELECT a, CAST(b AS DATE) AS d FROM t AS x WHERE x.a = %(p)s AND c = 'K'"))
    assert a == b != c
    assert normalize(parse('SELECT "A" FROM t')) != normalize(parse("SELECT A FROM t"))


def test_transpile_runs_on_duckdb_tpch(tpch_db):
    sql = parse(
        "SELECT c_name, o_totalprice FROM customer JOIN orders ON o_custkey = c_custkey "
        "WHERE o_custkey = :cust AND o_orderdate >= :since::date AND c_name ~* :pat "
        "AND c_name ILIKE '%' || :frag || '%' ORDER BY o_totalprice DESC"
    )
    text, order = transpile(sql, "duckdb")
    assert order == ["cust", "since", "pat", "frag"] and "$cust" in text
    result = tpch_db.run(sql, {"cust": 370, "since": "1990-01-01", "pat": "^customer#0+370$", "frag": "370"})
    assert result.rowcount == len(result.rows) > 0 and result.columns == ["c_name", "o_totalprice"]
    assert transpile(parse("SELECT '5%' || :a"), "postgres") == ("SELECT '5%%' || %(a)s", ["a"])
    with pytest.raises(SqlError):
        transpile(parse("SELECT $1"), "duckdb")


def test_duckdb_binds_errors_cost_timeout(tpch_db):
    assert tpch_db.run("SELECT * FROM nation WHERE n_name = :n", {"n": EVIL}).rows == []
    assert tpch_db.run("SELECT count(*) AS c FROM nation").rows == [{"c": 25}]
    with pytest.raises(SqlError, match="nosuch"):
        tpch_db.run("SELECT * FROM nosuch")
    with pytest.raises(SqlError, match="missing SQL parameter"):
        tpch_db.run("SELECT :a")
    narrow = tpch_db.explain_cost("SELECT * FROM lineitem WHERE l_orderkey = :k", {"k": 1})
    wide = tpch_db.explain_cost("SELECT * FROM lineitem l JOIN orders o ON l_orderkey = o_orderkey")
    assert 0 < narrow < wide
    with pytest.raises(SqlError, match="timed out"):
        tpch_db.run("SELECT count(*) FROM lineitem a, lineitem b, lineitem c", timeout_s=0.3)


def test_duckdb_threads_and_writes(tmp_path):
    with DuckDBTool(str(tmp_path / "w.duckdb")) as db:
        db.run("CREATE TABLE t (id INTEGER, name VARCHAR)")
        assert db.run("INSERT INTO t VALUES (:i, :n)", {"i": 1, "n": EVIL}).rowcount == 1
        threads = [
            threading.Thread(target=db.run, args=("INSERT INTO t VALUES (:i, 'x')", {"i": i}))
            for i in range(2, 6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert db.run("SELECT count(*) AS c FROM t").rows == [{"c": 5}]
        assert db.run("SELECT name FROM t WHERE id = 1").rows == [{"name": EVIL}]


# ---- postgres ----------------------------------------------------------------------------------


def test_postgres_run_cost_and_writes(postgres_dsn):  # noqa: F811
    with PostgresTool(postgres_dsn, pool_size=2) as db:
        db.run("CREATE TABLE t (id integer PRIMARY KEY, name text)")
        assert db.run("INSERT INTO t VALUES (:i, :n), (:j, :n)", {"i": 1, "j": 2, "n": "a%b"}).rowcount == 2
        assert db.run("SELECT id FROM t WHERE name = :n", {"n": EVIL}).rows == []
        assert db.run("SELECT count(*) AS c FROM t WHERE name LIKE '%' || :n", {"n": "%b"}).rows == [{"c": 2}]
        assert db.explain_cost("SELECT * FROM t WHERE id = :i", {"i": 1}) > 0
        with pytest.raises(SqlError, match="duplicate key"):  # the whole write rolls back
            db.run("INSERT INTO t VALUES (3, 'c'), (1, 'dup')")
        assert db.run("SELECT max(id) AS m FROM t").rows == [{"m": 2}]
        assert db.run("INSERT INTO t VALUES (3, 'c') RETURNING id").rows == [{"id": 3}]
        with pytest.raises(SqlError, match="statement timeout"):
            db.run("SELECT pg_sleep(2)", timeout_s=0.2)
        assert db.run("SELECT count(*) AS c FROM t").rows == [{"c": 3}]  # pool still healthy


def test_postgres_load_roundtrip(postgres_dsn, tmp_path):  # noqa: F811
    path = wiki.generate(tmp_path / "wiki.duckdb", scale=0.05)
    copied = postgres_load.load(path, postgres_dsn)
    assert copied["pages"] == _build.checksum(path)["pages"][0] > 0
    with PostgresTool(postgres_dsn) as db:
        row = db.run("INSERT INTO finewiki_answers (question) VALUES (:q) RETURNING id", {"q": "q"}).rows
        assert row == [{"id": 1}]
        hits = db.run(
            "SELECT page_id FROM pages WHERE to_tsvector('english', wikitext) "
            "@@ plainto_tsquery('english', :k)",
            {"k": "history"},
        )
        assert hits.rowcount > 0


# ---- http --------------------------------------------------------------------------------------


class _Handler(JSONHandler):
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802
        n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path.startswith("/flaky") and n == 1:
            return self.send_json(503, {"error": "busy"})
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        return self.send_json(200, {"path": self.path, "n": n})

    def do_POST(self):  # noqa: N802
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        return self.send_json(503, {"echo": body})


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_retries_get_not_post(server):
    with HttpTool(timeout_s=2, retries=2, backoff_s=0.01) as http:
        result = http.request("GET", f"{server}/flaky", query={"q": "a b"})
        assert result.status == 200 and result.body == {"path": "/flaky?q=a%20b", "n": 2}
        with pytest.raises(ToolError) as err:
            http.request("POST", f"{server}/post", body={"k": 1})
        assert err.value.status == 503 and "echo" in err.value.body
        assert _Handler.hits["/post"] == 1


def test_http_timeout(server):
    with HttpTool(retries=1, backoff_s=0.01) as http, pytest.raises(ToolError, match="timed out"):
        http.request("GET", f"{server}/slow", timeout_s=0.2)


# ---- python tools ------------------------------------------------------------------------------


def test_py_tool_call_and_errors():
    ref = "halo.runtime.tools.builtins:search_keyword"
    assert py_tool.call(ref, {"text": 'Who directed "The Dark Knight"?'}) == "The Dark Knight"
    with pytest.raises(ToolError, match="has no attribute"):
        py_tool.call("halo.runtime.tools.builtins:nope", {})
    with pytest.raises(ToolError, match="no module"):
        py_tool.call("halo.no_such_module:f", {})
    with pytest.raises(ToolError, match="TypeError"):
        py_tool.call(ref, {"wrong": 1})


def test_regex_params():
    params = regex_params(
        "Revenue for region: europe, segment machinery between 1995 and 1997 "
        "shipped by air reg after 1996/01/02, Brand#23, discount=0.06, qty < 30"
    )
    assert params["region"] == "EUROPE" and params["segment"] == "MACHINERY"
    assert (params["year"], params["year2"], params["date"]) == (1995, 1997, "1996-01-02")
    assert (params["shipmode"], params["brand"], params["discount_lo"], params["qty"]) == (
        "AIR REG",
        "Brand#23",
        0.06,
        30,
    )
    assert params["nation"] == "CANADA" and params["size"] == 15  # defaults
    assert search_keyword("Tell me about Christopher Nolan films") == "Christopher Nolan"


# ---- generators --------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [imdb, wiki])
def test_generators_deterministic(module, tmp_path):
    a = module.generate(tmp_path / "a.duckdb", scale=0.1, seed=3)
    b = module.generate(tmp_path / "b.duckdb", scale=0.1, seed=3)
    c = module.generate(tmp_path / "c.duckdb", scale=0.1, seed=4)
    data = [{k: v for k, v in _build.checksum(p).items() if k != _build.META_TABLE} for p in (a, b, c)]
    assert data[0] == data[1] != data[2]
    mtime = a.stat().st_mtime_ns
    module.generate(a, scale=0.1, seed=3)  # idempotent: kept as is
    assert a.stat().st_mtime_ns == mtime
