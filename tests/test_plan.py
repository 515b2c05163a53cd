"""Logical plans: DAG edges, side-effect order, inlined workflow calls, rewritten returns, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest

from halo import api, ast
from halo.check import check
from halo.errors import HaloError, Pos
from halo.plan import build, evaluate
from halo.program import load_source

FIXTURES = Path(__file__).parent / "fixtures"


def plan_of(src: str, workflow: str | None = None):
    return api.compile(src, workflow, filename="t.halo").plan


def test_fixture_plan_edges_and_inlining():
    plan = api.compile(FIXTURES / "triage.halo").plan
    assert plan.name == "triage"
    assert [n.id for n in plan.nodes()] == ["cls", "orders", "log", "s/out", "answer"]
    edges = set(plan.graph.edges)
    assert edges == {
        ("cls", "log"),
        ("cls", "s/out"),
        ("orders", "answer"),
        ("s/out", "answer"),
        ("orders", "log"),
    }
    assert plan.graph.edges["orders", "log"] == {"order": True, "reason": "read before write on db shop"}
    assert nx.is_directed_acyclic_graph(plan.graph)
    out = plan.node("s/out")
    assert out.model == "Qwen/Qwen3-0.6B" and out.model_name == "m"
    # the callee's default n = 3 is inlined as text; its `text` parameter becomes the caller's cls.label
    assert out.templates["prompt"].pieces == ("Summarize in 3 words: ", out.templates["prompt"].pieces[1])
    assert out.templates["prompt"].holes()[0].parts == ("cls", "label")
    log = plan.node("log")
    assert log.side_effect and log.sql_write and log.db.name == "shop" and log.db.kind == "duckdb"
    assert log.bound_args() == {"label": ast.Ref(("cls", "label"), log.bound_args()["label"].pos)}
    answer = plan.node("answer")
    assert answer.deps == ["orders", "s/out"]
    assert {".".join(h.parts) for h in answer.templates["prompt"].holes()} == {"ticket", "orders", "s/out"}
    assert [k for k, _ in plan.returns] == ["answer", "label", "urgent"]


def test_template_holes_make_edges():
    plan = plan_of(
        'workflow w(q: text) {\n model m = "x"\n a = llm(m, "{q}")\n b = llm(m, "{q}")\n'
        ' c = llm(m, "{a} {b}", system = "{a}")\n return c\n}'
    )
    assert set(plan.graph.edges) == {("a", "c"), ("b", "c")}
    assert plan.node("a").deps == [] and plan.node("c").deps == ["a", "b"]


def test_argument_refs_make_edges():
    plan = plan_of(
        'workflow w(q: text) {\n db d = duckdb("x")\n a = sql(d, "SELECT 1 AS k")\n'
        ' b = py("m:f", x = {k: [a.k]}, pure = true)\n return b\n}'
    )
    assert set(plan.graph.edges) == {("a", "b")}
    assert plan.node("b").bound_args()["x"].items[0][1].items[0].parts == ("a", "k")


def test_side_effects_are_chained_in_declared_order():
    plan = plan_of(
        'workflow w(q: text) {\n db d = duckdb("x")\n'
        ' w1 = sql(d, "INSERT INTO t VALUES (:q)", q = q)\n'
        ' r = sql(d, "SELECT 1 AS one")\n'
        ' w2 = sql(d, "UPDATE t SET a = 1")\n'
        ' w3 = http("POST", "http://x/{q}")\n'
        ' w4 = py("m:f")\n'
        " return r\n}"
    )
    order_edges = {(a, b) for a, b, data in plan.graph.edges(data=True) if data.get("order")}
    assert order_edges == {("w1", "r"), ("r", "w2"), ("w1", "w2"), ("w2", "w3"), ("w3", "w4")}
    assert [n.id for n in plan.nodes() if n.side_effect] == ["w1", "w2", "w3", "w4"]
    assert not plan.node("r").side_effect


def test_side_effects_against_data_flow_is_an_error():
    src = (
        'workflow w(q: text) {\n db d = duckdb("x")\n'
        ' w1 = sql(d, "INSERT INTO t VALUES (:v)", v = w2.rowcount)\n'
        ' w2 = sql(d, "INSERT INTO t VALUES (1) RETURNING 1 AS k")\n'
        " return w1\n}"
    )
    checked = check(load_source(src, "t.halo"))
    assert checked.errors == []
    with pytest.raises(HaloError, match="contradicts the data flow") as info:
        build(checked)
    assert info.value.diagnostics[0].pos.line == 1


def test_side_effect_order_follows_source_not_topological_order():
    src = (
        'workflow sub(v: text) {\n db d = duckdb("x")\n s1 = sql(d, "INSERT INTO t VALUES (:v)", v = v)\n'
        " return v = v\n}\n"
        'workflow w(q: text) {\n db d = duckdb("x")\n'
        ' w1 = sql(d, "INSERT INTO t VALUES (1)")\n'
        " c = sub(v = q)\n"
        ' w2 = sql(d, "INSERT INTO t VALUES (2)")\n'
        " return q = q\n}"
    )
    plan = plan_of(src, "w")
    order_edges = {(a, b) for a, b, data in plan.graph.edges(data=True) if data.get("order")}
    assert order_edges == {("w1", "c/s1"), ("c/s1", "w2")}


def test_workflow_calls_are_inlined_with_prefixes_and_defaults():
    src = (
        'workflow inner(x: text, k: int = 7, tags: text[] = ["a"]) {\n model m = "small"\n'
        ' o = llm(m, "{x} {k} {tags}", max_tokens = 5)\n return o, k = k\n}\n'
        'workflow outer(q: text) {\n model m = "big"\n'
        " a = inner(x = q)\n b = inner(x = a.o, k = 2)\n"
        ' c = llm(m, "{b.o} / {a.k}")\n return c, first = a, kb = b.k\n}'
    )
    plan = plan_of(src, "outer")
    assert [n.id for n in plan.nodes()] == ["a/o", "b/o", "c"]
    assert set(plan.graph.edges) == {("a/o", "b/o"), ("b/o", "c")}
    a_tpl = plan.node("a/o").templates["prompt"]
    assert [p if isinstance(p, str) else p.parts for p in a_tpl.pieces] == [("q",), ' 7 ["a"]']
    b_tpl = plan.node("b/o").templates["prompt"]
    assert [p if isinstance(p, str) else p.parts for p in b_tpl.pieces] == [("a/o",), ' 2 ["a"]']
    c_tpl = plan.node("c").templates["prompt"]
    assert [p if isinstance(p, str) else p.parts for p in c_tpl.pieces] == [("b/o",), " / 7"]
    assert plan.node("a/o").model == "small" and plan.node("c").model == "big"
    returns = dict(plan.returns)
    assert returns["c"] == ast.Ref(("c",), returns["c"].pos)
    assert isinstance(returns["first"], ast.DictExpr)
    assert evaluate(returns["kb"], {}) == 2
    env = {"q": "hi", "a/o": "A", "b/o": "B", "c": "C"}
    assert plan.evaluate_returns(env) == {"c": "C", "first": {"o": "A", "k": 7}, "kb": 2}


def test_nested_calls_get_nested_prefixes():
    src = (
        'workflow leaf(x: text) {\n model m = "x"\n o = llm(m, "{x}")\n return o\n}\n'
        "workflow mid(x: text) {\n l = leaf(x = x)\n return l\n}\n"
        "workflow top(q: text) {\n r = mid(x = q)\n return r\n}"
    )
    plan = plan_of(src, "top")
    assert [n.id for n in plan.nodes()] == ["r/l/o"]
    assert plan.evaluate_returns({"r/l/o": "v"}) == {"r": {"l": {"o": "v"}}}


def test_whole_record_in_template_keeps_its_edge_and_renders_as_json():
    src = (
        'workflow v(n: int) {\n model m = "q"\n o = llm(m, "{n}")\n return o, k = [o, 1]\n}\n'
        'workflow w(q: int) {\n model m = "q"\n a = v(n = q)\n b = llm(m, "{a} and {a.o}")\n return b\n}'
    )
    plan = plan_of(src, "w")
    assert set(plan.graph.edges) == {("a/o", "b")}
    tpl = plan.node("b").templates["prompt"]
    assert all(h.parts == ("a/o",) for h in tpl.holes())
    env = {"q": 1, "a/o": 'say "hi"'}
    expected = json.dumps({"o": 'say "hi"', "k": ['say "hi"', 1]}, ensure_ascii=False) + ' and say "hi"'
    assert tpl.render(env) == expected


def test_evaluate_on_an_env():
    pos = Pos("t.halo", 1, 1)
    env = {"x": {"a": [1, 2]}, "t": [{"col": 5}, {"col": 6}], "s": "text"}
    assert evaluate(ast.Ref(("x", "a"), pos), env) == [1, 2]
    assert evaluate(ast.Ref(("t", "col"), pos), env) == 5  # a table's column: first row
    assert evaluate(ast.Ref(("s", "nope"), pos), env) is None
    expr = ast.DictExpr(
        (("k", ast.ListExpr((ast.Ref(("s",), pos), ast.Num(1, pos), ast.Null(pos)), pos)),), pos
    )
    assert evaluate(expr, env) == {"k": ["text", 1, None]}


def test_plan_of_bad_program_raises_with_all_errors():
    checked = check(load_source('workflow w(q: text) {\n a = llm(mm, "{zz}")\n return a\n}', "t.halo"))
    with pytest.raises(HaloError) as info:
        build(checked)
    assert len(info.value.diagnostics) == 2


def test_named_workflow_and_unknown_name():
    src = "workflow a(x: text) { return x }\nworkflow b(y: int) { return y }"
    assert plan_of(src).name == "a"
    plan = plan_of(src, "b")
    assert plan.name == "b" and [p.name for p in plan.params] == ["y"] and plan.nodes() == []
    with pytest.raises(HaloError, match="no workflow named 'c'"):
        plan_of(src, "c")


def test_node_options():
    plan = plan_of(
        'workflow w(q: text, t: float = 0.5) {\n model m = "x"\n'
        ' a = llm(m, "{q}", max_tokens = 9, temperature = t, seed = 1)\n return a\n}'
    )
    a = plan.node("a")
    assert a.option("max_tokens") == 9 and a.option("seed") == 1
    assert a.option("temperature", "dflt") == "dflt"  # not a constant
    assert a.option("top_p", 1.0) == 1.0
