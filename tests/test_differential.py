"""Differential oracle: an optimized plan never changes a result.

Every shipped workload and a few hundred generated workflows (random DAGs of llm, sql reads and writes,
http GET with query and headers, pure and impure py, sub-workflow calls, twins, structured outputs) run
in the `halo`, `naive` and `opwise` modes over batches full of duplicated inputs, each mode on fresh
copies of the databases and against a loopback HTTP server. The three modes must return the same records
and leave every database with the same contents. The fake engine makes LLM replies a function of the
request alone, so any difference is the executor's or the optimizer's.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halo import api
from halo import batch as batches
from halo import plan as plans
from halo.bench import MODES, run_mode
from halo.check import check
from halo.execution import for_mode
from halo.program import load_source
from halo.runtime.engines import GenRequest
from halo.runtime.engines.fake import FakeEngine
from tests.runtime_fixtures import diff_funcs

STALL_S = 60  # a mode that takes longer has stalled
ROWS = 6
QS = ["ant", "bee", "ant bee", "c/d?e&f"]
PREFIXES = ["Answer briefly:", "Answer briefly: about", "Rate this:"]
FUNCS = "tests.runtime_fixtures.diff_funcs"


# -- the fake engine ------------------------------------------------------------------------------------


def test_fake_engine_replies_do_not_depend_on_the_batch():
    reqs = [GenRequest("m", f"p{i}", max_tokens=1 + i % 4) for i in range(6)]
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "n": {"type": "integer"},
            "f": {"type": "number"},
            "b": {"type": "boolean"},
        },
        "required": ["a", "n", "f", "b"],
    }
    reqs.append(GenRequest("m", "p0", json_schema=schema))
    eng = FakeEngine()
    together = [r.text for r in eng.generate(reqs)]
    alone = [eng.generate([r])[0].text for r in reversed(reqs)][::-1]
    assert together == alone
    assert eng.batch_sizes() == [7, *[1] * 7]
    assert all(len(t.split()) <= r.max_tokens for t, r in zip(together[:6], reqs[:6], strict=True))
    obj = json.loads(together[6])
    assert set(obj) == {"a", "n", "f", "b"} and isinstance(obj["n"], int) and isinstance(obj["b"], bool)


def test_fake_engine_reply_changes_with_every_decoding_field():
    base = GenRequest("m", "p", system="s", max_tokens=8, temperature=0.5, seed=1, top_p=0.9)
    variants = [
        GenRequest("m2", "p", "s", 8, 0.5, 1, top_p=0.9),
        GenRequest("m", "p2", "s", 8, 0.5, 1, top_p=0.9),
        GenRequest("m", "p", "s2", 8, 0.5, 1, top_p=0.9),
        GenRequest("m", "p", "s", 8, 0.7, 1, top_p=0.9),
        GenRequest("m", "p", "s", 8, 0.5, 2, top_p=0.9),
        GenRequest("m", "p", "s", 8, 0.5, 1, top_p=0.8),
        GenRequest("m", "p", "s", 8, 0.5, 1, json_schema={"type": "object"}, top_p=0.9),
    ]
    eng = FakeEngine()
    digests = {eng.reply(r) for r in [base, *variants]}
    assert len(digests) >= 6  # a short reply can collide by chance; the hash of each field differs
    assert eng.reply(
        GenRequest("m", "p", "s", 8, 0.5, 1, prefix_key="k", retain_s=3, top_p=0.9)
    ) == eng.reply(base)
    [bad] = eng.generate([GenRequest("m", "p", max_tokens=0)])
    assert bad.error and "max_tokens" in bad.error


# -- running three modes --------------------------------------------------------------------------------


def _records(path: Path) -> list[dict]:
    return [
        {k: r[k] for k in ("row", "outputs", "error")}
        for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())
    ]


def _run(plan, rows, workdir: Path, mode: str, engine: str):
    """One mode's run under a watchdog (a stalled executor fails the test instead of hanging it)."""
    box: dict = {}

    def go() -> None:
        try:
            box["res"] = run_mode(for_mode(plan, "halo"), rows, workdir, "diff", engine, {}, mode)
        except BaseException as e:  # reported below with the mode
            box["error"] = e

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(STALL_S)
    assert not worker.is_alive(), f"mode {mode} stalled (no result after {STALL_S} s)"
    if "error" in box:
        raise AssertionError(f"mode {mode} raised {type(box['error']).__name__}: {box['error']}") from box[
            "error"
        ]
    return box["res"]


def run_three(plan, rows, workdir: Path, dump_db, engine: str = "fake") -> dict[str, dict]:
    """Records, databases written and impure py calls of each mode, by mode."""
    out = {}
    for mode in MODES:
        diff_funcs.CALLS.clear()
        res = _run(plan, rows, workdir, mode, engine)
        dbs = {p.name: dump_db(p) for p in sorted((workdir / f"{mode}.db").glob("*.duckdb"))}
        out[mode] = {"records": _records(res.output), "dbs": dbs, "py_calls": dict(diff_funcs.CALLS)}
    return out


def assert_same(results: dict[str, dict], source: str, rows) -> None:
    """Every mode agrees with `naive` (the reference: one input at a time, nothing merged)."""
    ref = results["naive"]
    for mode, got in results.items():
        for part in ("records", "dbs", "py_calls"):
            if got[part] != ref[part]:
                diff = _first_difference(ref[part], got[part])
                raise AssertionError(
                    f"{mode} differs from naive in {part}: {diff}\n--- workflow\n{source}"
                    f"--- batch\n{[p for _, p in rows]}"
                )


def _first_difference(a, b) -> str:
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b, strict=True):
            if x != y:
                return f"naive {x!r}\n   got {y!r}"
    return f"naive {a!r}\n   got {b!r}"


# -- generated workflows --------------------------------------------------------------------------------


@dataclass
class _Gen:
    """The workflow being drawn: its bindings and the references each kind of argument can take."""

    base_url: str
    db: str
    lines: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=lambda: ["q"])  # text values (templates, SQL, URLs)
    ints: list[str] = field(default_factory=lambda: ["k"])  # int values (SQL limits, sub calls)
    anys: list[str] = field(default_factory=list)  # tables and JSON (templates only)
    llms: list[str] = field(default_factory=list)  # llm calls, for twins
    names: list[str] = field(default_factory=list)
    uses_sub: bool = False

    def add(self, name: str, call: str) -> None:
        self.lines.append(f"  {name} = {call}")
        self.names.append(name)


@st.composite
def _binding(draw, g: _Gen) -> None:
    name = f"n{len(g.names)}"
    ref = lambda pool: draw(st.sampled_from(pool))  # noqa: E731
    kind = draw(
        st.sampled_from(["llm", "llm", "twin", "read", "count", "write", "http", "py", "impure", "sub"])
    )
    if kind == "twin" and g.llms:
        g.add(name, draw(st.sampled_from(g.llms)))
        g.texts.append(name if "->" not in g.lines[-1] else f"{name}.label")
        return
    if kind in ("llm", "twin"):
        holes = " ".join(f"{{{ref(g.texts + g.anys)}}}" for _ in range(draw(st.integers(1, 2))))
        system = ', system = "Be brief."' if draw(st.booleans()) else ""
        sampled = ", temperature = 0.7, seed = 3" if draw(st.integers(0, 4)) == 0 else ""
        structured = draw(st.booleans())
        call = (
            f'llm(m, "{draw(st.sampled_from(PREFIXES))} {holes}"{system}{sampled}, '
            f"max_tokens = {draw(st.sampled_from([1, 3, 6]))})"
            + (" -> { label: text, score: int }" if structured else "")
        )
        g.add(name, call)
        g.llms.append(call)
        g.texts.append(f"{name}.label" if structured else name)
        if structured:
            g.ints.append(f"{name}.score")
    elif kind == "read":
        g.add(name, f'sql(d, "SELECT id, name FROM items WHERE id <= :n ORDER BY id", n = {ref(g.ints)})')
        g.anys.append(name)
        g.texts.append(f"{name}.name")
    elif kind == "count":  # reads rows this input wrote: the order of reads and writes shows
        g.add(name, 'sql(d, "SELECT count(*) AS c, max(tag) AS t FROM log WHERE uid = :uid", uid = uid)')
        g.anys.append(name)
    elif kind == "write":
        g.add(
            name,
            f'sql(d, "INSERT INTO log (uid, tag) VALUES (:uid, :tag) RETURNING tag", uid = uid, '
            f"tag = {ref(g.texts)})",
        )
        g.anys.extend([name, f"{name}.rows"])
    elif kind == "http":
        path = "missing" if draw(st.integers(0, 5)) == 0 else "echo"
        g.add(
            name,
            f'http("{g.base_url}/{path}/{{{ref(g.texts)}}}", query = {{v: {ref(g.texts)}, '
            f"n: {ref(g.ints)}}}, headers = {{x_tag: {ref(g.texts)}}})",
        )
        g.anys.append(name)
        g.texts.append(f"{name}.v")
    elif kind == "py":
        g.add(name, f'py("{FUNCS}:tag", pure = true, x = {ref(g.texts + g.ints)}) -> {{ t: text, n: int }}')
        g.texts.append(f"{name}.t")
        g.ints.append(f"{name}.n")
    elif kind == "impure":
        g.add(name, f'py("{FUNCS}:note", x = {ref(g.texts)})')
        g.anys.append(name)
    else:
        g.uses_sub = True
        g.add(name, f"sub(x = {ref(g.texts)}, n = {ref(g.ints)}, uid = uid)")
        g.texts.append(f"{name}.a")
        g.anys.append(f"{name}.r")


SUB = """
workflow sub(x: text, n: int, uid: int) {{
  model m = "Qwen/Qwen3-0.6B"
  db d = duckdb("{db}")
  a = llm(m, "Answer briefly: {{x}}", max_tokens = 3)
  r = sql(d, "SELECT name FROM items WHERE id <= :n ORDER BY id", n = n)
  w = sql(d, "INSERT INTO sublog (uid, tag) VALUES (:uid, :tag)", uid = uid, tag = a)
  return a, r
}}
"""


@st.composite
def workflows(draw, base_url: str, db: str) -> str:
    """`.halo` source of a random DAG over the parameters q (text), k (int) and uid (int)."""
    g = _Gen(base_url, db)
    for _ in range(draw(st.integers(1, 7))):
        draw(_binding(g))
    rets = ", ".join(f"o{i} = {n}" for i, n in enumerate(g.names))
    head = (
        f'workflow gen(q: text, k: int, uid: int) {{\n  model m = "Qwen/Qwen3-0.6B"\n'
        f'  db d = duckdb("{db}")\n'
    )
    return head + "\n".join(g.lines) + f"\n  return {rets}\n}}\n" + (SUB.format(db=db) if g.uses_sub else "")


inputs = st.lists(st.tuples(st.sampled_from(QS), st.sampled_from([0, 1, 2])), min_size=ROWS, max_size=ROWS)


def _fresh_db(path: Path) -> None:
    path.unlink(missing_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE items (id INTEGER, name TEXT)")
        con.execute("INSERT INTO items VALUES (1, 'ant'), (2, 'bee'), (3, 'cat')")
        con.execute("CREATE TABLE log (uid INTEGER, tag TEXT)")
        con.execute("CREATE TABLE sublog (uid INTEGER, tag TEXT)")


GENERATED = settings(
    max_examples=220,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


@GENERATED
@given(data=st.data())
def test_generated_workflows_agree_across_modes(data, tmp_path, loopback, dump_db):
    db = tmp_path / "gen.duckdb"
    _fresh_db(db)
    source = data.draw(workflows(loopback, str(db)), label="workflow")
    batch = data.draw(inputs, label="batch")
    rows = [(i + 1, {"q": q, "k": k, "uid": i + 1}) for i, (q, k) in enumerate(batch)]
    checked = check(load_source(source, str(tmp_path / "gen.halo")))
    assert not checked.errors, "\n".join(d.render(source) for d in checked.errors) + "\n" + source
    plan = plans.build(checked)
    original = dump_db(db)
    results = run_three(plan, rows, tmp_path / "work", dump_db)
    assert dump_db(db) == original, "a mode wrote to the original database"
    assert_same(results, source, rows)


# -- shipped workloads ----------------------------------------------------------------------------------

WORKLOADS = Path(__file__).resolve().parents[1] / "workloads"
DATA = {"tpch": {"sf": 0.01}, "imdb": {"scale": 0.05}, "wiki": {"scale": 0.05}}


@pytest.fixture(scope="session")
def workload_dbs(tmp_path_factory) -> dict[str, Path]:
    """Small tpch, imdb and wiki databases, generated once for the session."""
    from halo.datagen import imdb, tpch, wiki

    folder = tmp_path_factory.mktemp("data")
    gens = {"tpch": tpch.generate, "imdb": imdb.generate, "wiki": wiki.generate}
    out = {}
    for name, gen in gens.items():
        out[name] = folder / f"{name}.duckdb"
        gen(out[name], **DATA[name])
    return out


def _workload_plan(path: Path, dbs: dict[str, Path]):
    """The workload's plan with each database pointed at the session's generated copy of it."""
    plan = api.compile(path).plan
    graph = plan.graph.copy()
    for n in graph:
        op = graph.nodes[n]["op"]
        if op.kind == "sql" and op.db is not None and op.db.kind == "duckdb":
            name = Path(op.db.target).stem
            assert name in dbs, f"{path.name} uses database {op.db.target}, which no generator makes"
            graph.nodes[n]["op"] = replace(op, db=replace(op.db, target=str(dbs[name])))
    return plans.LogicalPlan(plan.workflow, graph, plan.returns)


def _first_rows(path: Path, plan, n: int):
    batch = batches.load(path.with_suffix(".jsonl"), plan.params, limit=n)
    assert not batch.errors
    return batch.rows


@pytest.mark.parametrize("path", sorted(WORKLOADS.glob("*.halo")), ids=lambda p: p.stem)
def test_shipped_workloads_agree_across_modes(path, workload_dbs, tmp_path, dump_db):
    plan = _workload_plan(path, workload_dbs)
    rows = _first_rows(path, plan, 8)
    results = run_three(plan, rows, tmp_path, dump_db)
    assert_same(results, path.read_text(), rows)
    assert any(r["error"] is None for r in results["naive"]["records"]), results["naive"]["records"][:2]


@pytest.mark.slow
def test_demo_agrees_across_modes_on_the_real_engine(workload_dbs, tmp_path, dump_db):
    """SmolLM2's greedy decoding on CPU (fp32) gives the same text batched or alone, so the three modes
    agree on real replies too."""
    path = WORKLOADS / "demo.halo"
    plan = _workload_plan(path, workload_dbs)
    first = [params for _, params in _first_rows(path, plan, 3)]
    rows = list(enumerate([*first, first[0]], start=1))  # an input repeats
    results = run_three(plan, rows, tmp_path, dump_db, engine="hf")
    assert_same(results, path.read_text(), rows)
    assert all(r["error"] is None for r in results["naive"]["records"]), results["naive"]["records"][:2]
