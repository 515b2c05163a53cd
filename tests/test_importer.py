"""The YAML importer: every reference template converts to a workflow that checks, plans and explains."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
import yaml

from halo import api, ast
from halo.explain import logical_report
from halo.importer import TemplateImportError, convert

TEMPLATES = Path(__file__).resolve().parents[1].parent / "shared" / "halo_templates"
FILES = sorted(TEMPLATES.glob("*.yaml")) if TEMPLATES.is_dir() else []
needs_templates = pytest.mark.skipif(not FILES, reason=f"reference templates not found at {TEMPLATES}")


def _build(path: Path):
    result = convert(path)
    return result, api.compile(result.text, filename=f"{path.stem}.halo").plan


@needs_templates
def test_all_templates_are_present():
    assert len(FILES) == 29


@needs_templates
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_template_converts_checks_and_plans(path: Path):
    result, plan = _build(path)
    graph = yaml.safe_load(path.read_text())["graph"]
    nodes = graph["nodes"]
    kinds = [op.kind for op in plan.nodes()]
    assert kinds.count("llm") == sum(n.get("type", "inference") == "inference" for n in nodes)
    assert kinds.count("sql") == sum(len(n.get("db_queries") or []) for n in nodes)
    assert kinds.count("py") == sum(n.get("type") == "processor" for n in nodes)
    assert kinds.count("http") == sum(n.get("type") == "http" for n in nodes)
    for n in nodes:
        for q in n.get("db_queries") or []:
            if q.get("post_llm"):
                assert nx.has_path(plan.graph, n["id"], q["name"]), f"{q['name']} must run after {n['id']}"
    report = logical_report(plan)
    assert report["workflow"] == graph["name"] and len(report["nodes"]) == len(kinds)
    assert result.text == convert(path).text, "output must be deterministic"
    assert "mapping" not in str(graph["edges"]) or any("mapping" in n for n in result.notes)


@needs_templates
def test_processor_becomes_py_with_the_template_config():
    path = TEMPLATES / "tpch_trident.yaml"
    _, plan = _build(path)
    config = next(
        n for n in yaml.safe_load(path.read_text())["graph"]["nodes"] if n["id"] == "rule_param_extractor"
    )["config"]
    op = plan.node("tpch_params")
    assert op.kind == "py" and op.option("function") == "halo.runtime.tools.builtins:regex_params"
    assert op.option("pure") is True
    for key in ("enums", "regex", "defaults", "normalize"):
        assert ast.literal_value(op.args[key]) == config[key]
    assert {"year", "region", "segment", "date"} <= {f for f, _ in op.out.fields}
    q5 = plan.node("tpch_q5_local_supplier_volume")
    assert "tpch_params" in q5.deps and "CAST(:region AS TEXT)" in q5.option("query")


@needs_templates
def test_unconvertible_parts_are_reported():
    result = convert(TEMPLATES / "imdb_fanout.yaml")
    notes = "\n".join(result.notes)
    assert "only orders the nodes" in notes and "becomes a text parameter" in notes
    comments = " ".join(line[2:].strip() for line in result.text.splitlines() if line.startswith("# "))
    assert all(" ".join(n.split()) in comments for n in result.notes), "every note is also a comment"
    http = convert(TEMPLATES / "tpch_trident_http.yaml")
    assert any("simulated" in n for n in http.notes) and "/sleep?s=2" in http.text
    qa = convert(TEMPLATES / "finewiki_qa_agent.yaml")
    assert any("mixes text and values" in n for n in qa.notes)
    assert "('%' || CAST(:title_pattern AS TEXT) || '%')" in qa.text


def test_malformed_yaml_gives_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("graph:\n  nodes: [\n")
    with pytest.raises(TemplateImportError, match=r"bad\.yaml:\d+:\d+: not valid YAML"):
        convert(bad)
    bad.write_text("nodes: []\n")
    with pytest.raises(TemplateImportError, match="top-level 'graph:'"):
        convert(bad)
    bad.write_text("graph:\n  nodes:\n    - {id: a, type: weird}\n")
    with pytest.raises(TemplateImportError, match="unknown type 'weird'"):
        convert(bad)


def test_small_template_round_trip(tmp_path: Path):
    src = tmp_path / "tiny.yaml"
    src.write_text(
        yaml.safe_dump(
            {
                "graph": {
                    "name": "tiny",
                    "description": "one LLM after one query",
                    "nodes": [
                        {"id": "in", "type": "input", "outputs": ["user_query"]},
                        {
                            "id": "answer",
                            "type": "inference",
                            "engine": "vllm",
                            "model": "Qwen/Qwen3-14B",
                            "system_prompt": "Answer briefly.",
                            "inputs": ["user_query"],
                            "outputs": ["reply"],
                            "db_queries": [
                                {
                                    "name": "rows",
                                    "sql": "SELECT 1 AS x WHERE :q <> ''",
                                    "parameters": {"q": "{{ user_query }}"},
                                    "plans": [{"id": "p1"}],
                                }
                            ],
                        },
                    ],
                    "edges": [{"from": "in", "to": "answer"}],
                }
            }
        )
    )
    result, plan = _build(src)
    llm = plan.node("answer")
    assert llm.option("system") == "Answer briefly." and "rows" in llm.deps
    assert "[Input::user_query]\n{user_query}" in llm.option("prompt")
    assert any("plans" in n for n in result.notes)
