"""EXPLAIN: the report dict, its JSON form, the text tree and the Graphviz rendering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from halo import api
from halo import batch as batches
from halo.explain import logical_report, render_dot, render_text

FIXTURES = Path(__file__).parent / "fixtures"
TOP_KEYS = {"halo_plan", "workflow", "file", "params", "batch", "nodes", "returns", "rewrites"}
NODE_KEYS = {"id", "kind", "pos", "deps", "instances", "side_effect"}


@pytest.fixture(scope="module")
def plan():
    return api.compile(FIXTURES / "triage.halo").plan


@pytest.fixture(scope="module")
def report(plan):
    return logical_report(plan, batches.load(FIXTURES / "inputs.jsonl", plan.params))


def report_of(src: str, workflow: str | None = None):
    return logical_report(api.compile(src, workflow, filename="t.halo").plan)


def test_report_keys_and_values(report):
    assert TOP_KEYS <= set(report)
    assert report["halo_plan"] == 1 and report["workflow"] == "triage"
    assert report["params"][2] == {"name": "tags", "type": "text[]"}
    assert report["batch"] == {"inputs": 3, "rejected": 0, "errors": []}
    assert [n["id"] for n in report["nodes"]] == ["cls", "orders", "log", "s/out", "answer"]
    for n in report["nodes"]:
        assert NODE_KEYS <= set(n) and n["instances"] == 3
    nodes = {n["id"]: n for n in report["nodes"]}
    assert nodes["cls"]["model"] == "Qwen/Qwen3-14B" and nodes["cls"]["max_tokens"] == 64
    assert nodes["cls"]["temperature"] == 0.2 and nodes["cls"]["output"] == ["label", "params", "urgent"]
    assert nodes["cls"]["inputs"] == ["region", "ticket"]
    assert nodes["orders"]["access"] == "read" and nodes["log"]["access"] == "write"
    assert nodes["orders"]["params"] == {"region": "region", "limit": "limit"}
    assert nodes["log"]["side_effect"] and not nodes["orders"]["side_effect"]
    assert sorted(nodes["answer"]["deps"]) == ["orders", "s/out"]
    assert nodes["s/out"]["max_tokens"] == 256 and nodes["s/out"]["output"] == "text"
    assert report["returns"] == [
        {"key": "answer", "expr": "answer", "refs": ["answer"]},
        {"key": "label", "expr": "cls.label", "refs": ["cls"]},
        {"key": "urgent", "expr": "cls.urgent", "refs": ["cls"]},
    ]


def test_json_round_trip_is_stable(plan, report):
    text = json.dumps(report, indent=2)  # no default=str needed: everything is plain JSON
    assert json.loads(text) == report
    again = logical_report(plan, batches.load(FIXTURES / "inputs.jsonl", plan.params))
    assert json.dumps(again, indent=2) == text


def test_text_tree_shows_every_node_once(report):
    text = render_text(report)
    lines = text.splitlines()
    assert lines[0].startswith("Workflow triage(ticket: text, region: text, tags: text[], limit: int)")
    assert "batch: 3 inputs" in lines[0]
    assert lines[1] == "Return (answer = answer, label = cls.label, urgent = cls.urgent)"
    titles = [ln.strip() for ln in lines if ln.strip().startswith("->")]
    full = [t for t in titles if "(shared, see above)" not in t]
    ids = [t.split()[2] for t in full]
    assert sorted(ids) == sorted(n["id"] for n in report["nodes"])  # each node in full exactly once
    assert any("cls  (shared, see above)" in t for t in titles)
    assert "query: SELECT id, total FROM orders WHERE region = :region LIMIT :limit" in text
    assert "params: :region = region, :limit = limit" in text
    assert "side effect: runs once per input, never merged, in declared order" in text
    assert "Side effects (not returned)" in text
    # children are indented deeper than their parent
    depth = {
        t.split()[2]: (len(ln) - len(ln.lstrip()))
        for ln, t in ((ln, ln.strip()) for ln in lines if ln.strip().startswith("->"))
        if "shared" not in t
    }
    assert depth["orders"] > depth["answer"] and depth["cls"] > depth["s/out"]


def test_text_shows_rejected_rows(plan, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"ticket": "a"}\n{"ticket": 1}\nnope\n')
    text = render_text(logical_report(plan, batches.load(path, plan.params)))
    assert "batch: 1 inputs, 2 rejected" in text
    assert "Rejected rows:\n  row 2: 'ticket' must be text, got int 1\n  row 3: not valid JSON" in text


def test_dot_has_every_node_and_edge(plan, report):
    dot = render_dot(report)
    assert dot.startswith('digraph "triage" {') and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    for n in report["nodes"]:
        assert re.search(rf'^  "{re.escape(n["id"])}" \[shape=\w+, label="[^"]*"', dot, re.M)
    edges = set(re.findall(r'^  "([^"]+)" -> "([^"]+)"(?: \[style=dashed, label="[^"]+"\])?;', dot, re.M))
    assert set(plan.graph.edges) <= edges
    assert ("answer", "return") in edges and ("cls", "return") in edges
    assert 'fillcolor="#fde2e2"' in dot  # the side effect is highlighted


def test_all_operator_kinds_render():
    src = (
        'workflow w(q: text) {\n model m = "x"\n db d = postgres("postgresql://h/db")\n'
        ' a = http("GET", "http://x/{q}?a={{b}}")\n'
        ' b = py("mod:fn", x = a, pure = true)\n'
        ' c = sql(d, "SELECT :v AS k", v = q)\n'
        ' e = llm(m, "{b} {c.k}", seed = 7) -> {f: text}\n'
        " return e\n}"
    )
    report = report_of(src)
    nodes = {n["id"]: n for n in report["nodes"]}
    assert nodes["a"]["method"] == "GET" and nodes["a"]["url"] == "http://x/{q}?a={b}"
    assert (
        nodes["b"]["function"] == "mod:fn" and nodes["b"]["pure"] is True and nodes["b"]["args"] == {"x": "a"}
    )
    assert nodes["c"]["db_kind"] == "postgres" and nodes["e"]["seed"] == 7
    text = render_text(report)
    for needle in (
        "HTTP a  GET http://x/{q}?a={b}",
        "Python b  mod:fn pure",
        "SQL c  db=d (postgres) read",
        "seed=7",
        "output: {f}",
        "args: x = a",
    ):
        assert needle in text
    assert render_dot(report).count("->") >= 4
    json.loads(json.dumps(report))


def test_literal_and_dict_returns_render():
    report = report_of('workflow w(q: text) { return k = {a: [1, "x"], b: q}, n = null }')
    assert report["returns"] == [
        {"key": "k", "expr": '{a: [1, "x"], b: q}', "refs": ["q"]},
        {"key": "n", "expr": "null", "refs": []},
    ]
    assert report["nodes"] == []
    assert render_text(report).splitlines()[1] == 'Return (k = {a: [1, "x"], b: q}, n = null)'


REC = (
    'workflow v(n: int) {\n model m = "q"\n o = llm(m, "{n}")\n return o\n}\n'
    'workflow w(q: int) {\n model m = "q"\n a = v(n = q)\n b = llm(m, "x {q}")\n return a, k = {x: b}\n}'
)


def test_nodes_returned_inside_records_are_roots():
    report = report_of(REC, "w")
    text = render_text(report)
    assert "Side effects (not returned)" not in text
    assert '"b" -> "return"' in render_dot(report)


def test_unused_pure_node_is_not_called_a_side_effect():
    report = report_of(
        'workflow w(q: text) {\n model m = "x"\n a = llm(m, "{q}")\n b = llm(m, "{q}")\n return a\n}'
    )
    assert "Side effects" not in render_text(report)
