"""Rewrite rules: `.halo` in, expected EXPLAIN JSON (the `execution` block) out, with each rule on and off.

The golden files are `tests/fixtures/rules/shop.<variant>.json`; after a deliberate change, regenerate
them with `HALO_UPDATE_GOLDEN=1 pytest tests/test_rules.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from halo import api
from halo.execution import for_mode
from halo.pipeline import explain_report
from halo.rules import RULES, check_names
from halo.runtime.run import execute

FIXTURES = Path(__file__).parent / "fixtures" / "rules"
VARIANTS = {"all": [], **{f"no_{name}": [name] for name in RULES}}


def _report(disabled: list[str]) -> dict:
    compiled = api.compile(FIXTURES / "shop.halo")
    batch = api.load_batch(compiled, FIXTURES / "shop.jsonl")
    return explain_report(compiled.plan, batch, disabled=disabled)


@pytest.mark.parametrize("variant", VARIANTS)
def test_execution_block_matches_its_golden_file(variant):
    got = _report(VARIANTS[variant])["execution"]
    path = FIXTURES / f"shop.{variant}.json"
    if os.environ.get("HALO_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(path.read_text())


def test_each_disabled_rule_is_reported_and_changes_its_part_only():
    on = _report([])["execution"]
    for name in RULES:
        off = _report([name])["execution"]
        rules = {r["rule"]: r for r in off["rules"]}
        assert rules[name]["enabled"] is False and rules[name]["actions"]
        assert all(r["enabled"] for n, r in rules.items() if n != name)
        assert off != on, name
    assert _report(["fusion"])["execution"]["fusion_sets"] == [] and on["fusion_sets"] == [["pitch", "warn"]]
    assert _report(["kv_retention"])["execution"]["kv_retention"] == {} and on["kv_retention"]
    assert _report(["prefix_grouping"])["execution"]["prefix_nodes"] == []
    assert _report(["read_write_order"])["execution"]["order_edges"] and on["order_edges"] == []
    assert _report(["merge"])["execution"]["merge"] is False


def test_unknown_rule_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown rule.*fuse.*rules are merge, prefix_grouping"):
        check_names(["fuse"])


def test_the_cli_refuses_an_unknown_rule_and_lists_the_rules():
    from typer.testing import CliRunner

    from halo.cli import app

    res = CliRunner().invoke(app, ["explain", str(FIXTURES / "shop.halo"), "--disable-rule", "nope"])
    assert res.exit_code == 2 and "unknown rule" in res.output
    listed = CliRunner().invoke(app, ["rules"])
    assert listed.exit_code == 0 and all(name in listed.output for name in RULES)


def _shop(folder: Path) -> api.Compiled:
    """The fixture workflow over empty databases of its own in `folder`."""
    import duckdb

    folder.mkdir()
    for name, ddl in (
        ("shop", "CREATE TABLE items (name TEXT, price INT); CREATE TABLE stock (name TEXT, qty INT)"),
        ("audit", "CREATE TABLE views (uid INT, item TEXT)"),
    ):
        con = duckdb.connect(str(folder / f"{name}.duckdb"))
        con.execute(ddl)
        con.close()
    return api.compile((FIXTURES / "shop.halo").read_text(), filename=str(folder / "shop.halo"))


def _outputs(path: Path) -> list[dict]:
    return [{k: r[k] for k in ("row", "outputs", "error")} for r in map(json.loads, path.open())]


def test_serialized_statements_run_in_declared_order(tmp_path):
    """With read_write_order off, each database statement starts after the one declared before it ends;
    the records are the same as with the rule on."""
    rows = [(1, {"item": "ant", "user": 1}), (2, {"item": "ant", "user": 1})]
    on_c, off_c = _shop(tmp_path / "on"), _shop(tmp_path / "off")
    serial = api.plan(off_c, FIXTURES / "shop.jsonl", "cpu", disabled=["read_write_order"]).execution
    on = execute(for_mode(on_c.plan, "halo"), rows, tmp_path / "on.jsonl", "on", engine="fake")
    off = execute(serial, rows, tmp_path / "off.jsonl", "off", engine="fake")
    assert on.stats.failed == off.stats.failed == 0
    assert _outputs(tmp_path / "on.jsonl") == _outputs(tmp_path / "off.jsonl")
    one = execute(serial, rows[:1], tmp_path / "one.jsonl", "one", engine="fake").stats.nodes
    for a, b in zip(["price", "stock", "seen"], ["stock", "seen", "logged"], strict=True):
        assert one[b].first_start >= one[a].last_end, (a, b)
