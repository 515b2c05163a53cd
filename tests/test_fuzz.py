"""Property-based fuzzing: any input gives a program or a clean, located HaloError, never another exception."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halo.check import check
from halo.errors import HaloError
from halo.plan import build
from halo.program import load_source

FIXTURES = Path(__file__).parent / "fixtures"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = [
    (FIXTURES / "lib.halo").read_text(),
    (FIXTURES / "warn.halo").read_text(),
    '''workflow w(q: text, n: int = 3, tags: text[] = ["a"]) {
  model m = "Qwen/Qwen3-0.6B"
  db d = duckdb("x.db")
  a = llm(m, """
      Answer {q} in {n} words.
  """, max_tokens = 32) -> {answer: text, score: float}
  t = sql(d, "SELECT id, name FROM items WHERE name = :name LIMIT :n", name = a.answer, n = n)
  h = http("POST", "http://x/{t.id}", body = {v: [a.score, 1, true, null]})
  p = py("mod:fn", x = t, pure = true)
  return a.answer, rows = t, p = p
}
workflow caller(z: text) {
  r = w(q = z)
  return r
}
''',
]
TOKENS = [
    "workflow",
    "model",
    "db",
    "return",
    "import",
    "llm",
    "sql",
    "http",
    "py",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "[]",
    ",",
    ":",
    "=",
    "->",
    ".",
    '"',
    '"""',
    "{x}",
    "#",
    "//",
    "\n",
    " ",
    "x",
    "q",
    "a",
    "3",
    "-1.5e3",
    "true",
    "null",
    '"s"',
    "text",
    "int",
    ":n",
    "SELECT",
    "w",
    "{{",
    "}}",
    "\\",
]


def pipeline(src: str) -> None:
    """parse -> check -> plan.build; only HaloError may escape, and it must be located and renderable."""
    try:
        program = load_source(src, "fuzz.halo")
        result = check(program)
        for d in result.diagnostics:
            assert d.pos.line >= 1 and d.pos.col >= 1
            d.render(program.source(d.pos.file) or src)
        if program.main.workflows:
            build(result)
    except HaloError as e:
        assert e.diagnostics
        for d in e.diagnostics:
            assert d.pos.line >= 1 and d.pos.col >= 1 and d.message
            assert re.match(r"^fuzz\.halo:\d+:\d+: (error|warning): ", d.render(src))


def test_seeds_are_valid():
    for src in SEEDS:
        result = check(load_source(src, "fuzz.halo"))
        assert result.errors == [], result.errors


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes(data):
    pipeline(data.decode("utf-8", errors="replace"))


@FUZZ
@given(st.text(max_size=200))
def test_any_text(text):
    pipeline(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_token_soup(tokens):
    pipeline(" ".join(tokens))


@st.composite
def mutated(draw):
    src = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "token", "swap"]))
        i = draw(st.integers(0, len(src)))
        j = min(len(src), i + draw(st.integers(1, 12)))
        if op == "delete":
            src = src[:i] + src[j:]
        elif op == "insert":
            src = src[:i] + draw(st.text(min_size=1, max_size=3)) + src[i:]
        elif op == "duplicate":
            src = src[:j] + src[i:j] + src[j:]
        elif op == "token":
            src = src[:i] + draw(st.sampled_from(TOKENS)) + src[i:]
        else:
            src = src[:i] + src[j : j + (j - i)] + src[i:j] + src[j + (j - i) :]
    return src


@FUZZ
@given(mutated())
def test_mutated_workflows(src):
    pipeline(src)


@FUZZ
@given(mutated())
def test_mutated_token_level(src):
    # delete or duplicate whole tokens of a valid source
    parts = re.findall(r'"""[\s\S]*?"""|"(?:\\.|[^"\\\n])*"|\w+|->|\[\]|\S', src)
    pipeline(" ".join(parts[: len(parts) // 2] + parts[len(parts) // 2 - 3 :]))


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_removing_one_token(src, data):
    spans = [m.span() for m in re.finditer(r'"""[\s\S]*?"""|"(?:\\.|[^"\\\n])*"|\w+|->|\[\]|\S', src)]
    i, j = data.draw(st.sampled_from(spans))
    pipeline(src[:i] + src[j:])
    pipeline(src[:j] + src[i:j] + src[j:])


def _pathological(kind: str, n: int) -> str:
    head = 'workflow w(q: text) {\n  db d = duckdb(":memory:")\n'
    if kind == "nest":
        return head + f'  a = py("m:f", x = {"[{k: " * n}1{"}]" * n}, pure = true)\n  return a\n}}'
    if kind == "parens":
        return head + f'  a = sql(d, "SELECT {"(" * n}1{")" * n} AS x")\n  return a.x\n}}'
    if kind == "not":
        return head + f'  a = sql(d, "SELECT {"NOT " * n}true AS x")\n  return a.x\n}}'
    if kind == "digits":
        return f"workflow w(q: int = {'7' * n}) {{ return q }}"
    if kind == "import":
        return (
            f'import "{["/dev/zero", "/dev/null", ".", "a" + chr(0), "/nonexistent/x.halo"][n % 5]}"\n'
            + SEEDS[2]
        )
    return (
        "".join(f"workflow w{i}() {{\n  a = w{i + 1}()\n  return a\n}}\n" for i in range(n))
        + f"workflow w{n}() {{ return x = 1 }}"
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["nest", "parens", "not", "digits", "import", "calls"]), st.integers(0, 3000))
def test_pathological_inputs_end_in_a_plan_or_a_located_error(kind, n):
    pipeline(_pathological(kind, n if kind != "calls" else n % 120))
