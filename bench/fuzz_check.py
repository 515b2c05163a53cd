"""Fuzz the checker: 10,000+ generated and mutated workflow files through load -> check -> plan, in-process.

Every case must end in a located HaloError or a plan. Counts uncaught exceptions by type, records the
peak resident memory and the slowest case, and prints a markdown report (`--out` writes it to a file).
Families: character and token mutations of the shipped workloads and fixtures, plus the pathological
inputs of the fuzzing issue (deep nesting, nested SQL parentheses, long numbers and strings, NUL bytes,
special-file and oversized imports, deep call chains, exponential inlining, random bytes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import lark
import sqlglot

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from halo.bench import machine  # noqa: E402
from halo.check import check  # noqa: E402
from halo.errors import HaloError  # noqa: E402
from halo.plan import build  # noqa: E402
from halo.program import load  # noqa: E402

SEEDS = [
    p.read_text()
    for p in sorted([*(ROOT / "workloads").glob("*.halo"), *(ROOT / "tests/fixtures").glob("*.halo")])
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
    "\n",
    "x",
    "3",
    "-1.5e3",
    "true",
    "null",
    "\x00",
    "SELECT",
    "INSERT INTO t VALUES (1) RETURNING id",
    ":n",
    "((((",
    "))))",
    "\\",
    "9" * 80,
]
LEX = re.compile(r'"""[\s\S]*?"""|"(?:\\.|[^"\\\n])*"|\w+|->|\[\]|\S')


def wf(body: str, params: str = "q: text") -> str:
    return f'workflow w({params}) {{\n  db d = duckdb(":memory:")\n{body}\n}}\n'


def mutate(rng: random.Random, src: str) -> str:
    for _ in range(rng.randint(1, 6)):
        i = rng.randint(0, len(src))
        j = min(len(src), i + rng.randint(1, 40))
        op = rng.randrange(6)
        if op == 0:
            src = src[:i] + src[j:]
        elif op == 1:
            src = src[:i] + rng.choice(TOKENS) + src[i:]
        elif op == 2:
            src = src[:j] + src[i:j] * rng.randint(1, 8) + src[j:]
        elif op == 3:
            src = src[:i] + chr(rng.randint(0, 0x2FFF)) + src[j:]
        elif op == 4:
            parts = LEX.findall(src)
            k = rng.randrange(len(parts)) if parts else 0
            src = " ".join(parts[:k] + parts[k + 1 :])
        else:
            src = src[:i] + src[j : j + (j - i)] + src[i:j] + src[j + (j - i) :]
    return src


def nested(rng: random.Random) -> str:
    depth = rng.choice([10, 60, 61, 62, 65, 100, 490, 2000, 20000])
    o, c = rng.choice([("[", "]"), ("{k: ", "}"), ("[{a: ", "}]"), ("(", ")")])
    return wf(f'  a = py("m:f", x = {o * depth}1{c * depth}, pure = true)\n  return a')


def sql_parens(rng: random.Random) -> str:
    n = rng.choice([5, 32, 33, 46, 200, 5000])
    kind = rng.randrange(3)
    q = (
        "SELECT " + "(" * n + "1" + ")" * n + " AS x"
        if kind == 0
        else "SELECT " + "NOT " * n + "true AS x"
        if kind == 1
        else "SELECT " + " + ".join(["1"] * n) + " AS x"
    )
    return wf(f'  a = sql(d, "{q}")\n  return a.x')


def long_number(rng: random.Random) -> str:
    digits = "9" * rng.choice([64, 65, 300, 4300, 4301, 100000])
    return wf(
        "  return q", rng.choice([f"q: int = {digits}", f"q: float = 1.{digits}", f"q: float = 1e{digits}"])
    )


def long_string(rng: random.Random) -> str:
    size = rng.choice([1000, 256 * 1024 - 2, 256 * 1024, 900 * 1024, 10 * 1024 * 1024])
    quote = rng.choice(['"', '"""'])
    return wf(f'  a = py("m:f", s = {quote}{"x" * size}{quote}, pure = true)\n  return a')


def bad_import(rng: random.Random, tmp: Path) -> str:
    target = rng.choice(
        [
            "/dev/zero",
            "/dev/null",
            "/proc/self/status",
            ".",
            "nope.halo",
            "a\x00b.halo",
            "big.halo",
            "empty.halo",
            "../" * 50 + "x",
            "x" * 5000,
            "loop.halo",
        ]
    )
    return f'import "{target}"\n' + wf("  return q")


def call_chain(rng: random.Random) -> str:
    n = rng.choice([5, 31, 32, 33, 200, 1500])
    if rng.random() < 0.5:
        return (
            "".join(f"workflow w{i}() {{\n  a = w{i + 1}()\n  return a\n}}\n" for i in range(n))
            + f"workflow w{n}() {{ return x = 1 }}\n"
        )
    src = 'workflow w0() {\n  a = py("m:f", pure = true)\n  return a\n}\n'
    for i in range(1, min(n, 30)):
        src += f"workflow w{i}() {{\n  a = w{i - 1}()\n  b = w{i - 1}()\n  return a, b\n}}\n"
    return src.replace("workflow w0", "workflow z").replace("w0()", "z()") if rng.random() < 0.1 else src


def many_bindings(rng: random.Random) -> str:
    n = rng.choice([1000, 20000])
    body = "".join(
        f'  a{i} = py("m:f", x = a{i - 1}, pure = true)\n' if i else '  a0 = py("m:f", pure = true)\n'
        for i in range(n)
    )
    return wf(body + f"  return a{n - 1}")


def random_bytes(rng: random.Random) -> str:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 400))).decode("utf-8", "replace")


FAMILIES = {
    "mutated workload": (None, 0.80),
    "nesting": (nested, 0.03),
    "SQL nesting": (sql_parens, 0.03),
    "long number": (long_number, 0.03),
    "long string": (long_string, 0.004),
    "bad import": (bad_import, 0.03),
    "call chains": (call_chain, 0.02),
    "many bindings": (many_bindings, 0.002),
    "random bytes": (random_bytes, 0.054),
}


def case(rng: random.Random, family: str, tmp: Path) -> str:
    gen = FAMILIES[family][0]
    if gen is None:
        return mutate(rng, rng.choice(SEEDS))
    return gen(rng, tmp) if gen is bad_import else gen(rng)


def setup(tmp: Path) -> None:
    (tmp / "big.halo").write_bytes(b"#" * (2 << 20))
    (tmp / "empty.halo").write_text("# nothing\n")
    (tmp / "loop.halo").write_text('import "main.halo"\nworkflow l() { return x = 1 }\n')
    (tmp / "lib.halo").write_text((ROOT / "tests/fixtures/lib.halo").read_text())


def run_one(src: str, path: Path) -> str:
    """'plan', 'error' (a located HaloError) or the uncaught exception's type."""
    path.write_text(src, encoding="utf-8", errors="surrogatepass")
    try:
        result = check(load(path))
        for d in result.diagnostics:
            assert d.pos.line >= 1 and d.pos.col >= 1 and d.message
        build(result)
        return "plan"
    except HaloError as e:
        assert e.diagnostics and all(d.pos.line >= 1 and d.pos.col >= 1 for d in e.diagnostics)
        return "error"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sys.setrecursionlimit(1000)
    rng = random.Random(args.seed)
    names, weights = list(FAMILIES), [w for _, w in FAMILIES.values()]
    outcomes: Counter = Counter()
    per_family: dict[str, Counter] = {f: Counter() for f in FAMILIES}
    crashes: list[str] = []
    slowest = (0.0, "")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        setup(tmp)
        for _ in range(args.cases):
            family = rng.choices(names, weights)[0]
            src = case(rng, family, tmp)
            t0 = time.perf_counter()
            try:
                outcome = run_one(src, tmp / "main.halo")
            except Exception as e:  # noqa: BLE001 - counting exactly these is the point
                outcome = type(e).__name__
                if len(crashes) < 10:
                    crashes.append(f"{family}: {traceback.format_exc(limit=-3)}")
            took = time.perf_counter() - t0
            slowest = max(slowest, (took, family))
            outcomes[outcome] += 1
            per_family[family][outcome] += 1
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    uncaught = sum(n for k, n in outcomes.items() if k not in ("plan", "error"))
    lines = [
        f"# Checker fuzz: {args.cases:,} cases through load -> check -> plan",
        "",
        f"- date: {dt.date.today().isoformat()}; machine: {machine()}",
        f"- Python {sys.version.split()[0]}, lark {lark.__version__}, sqlglot {sqlglot.__version__}; "
        f"seed {args.seed}; `python bench/fuzz_check.py --cases {args.cases} --seed {args.seed}`",
        f"- **uncaught exceptions: {uncaught}**; located errors: {outcomes['error']:,}; "
        f"plans: {outcomes['plan']:,}",
        f"- peak RSS of the whole run: {peak_mib:,.0f} MiB; wall time {seconds:.0f} s; slowest case "
        f"{slowest[0]:.2f} s ({slowest[1]})",
        "",
        "| family | cases | located errors | plans | uncaught |",
        "|---|---|---|---|---|",
    ]
    for f, c in per_family.items():
        bad = sum(n for k, n in c.items() if k not in ("plan", "error"))
        lines.append(f"| {f} | {sum(c.values()):,} | {c['error']:,} | {c['plan']:,} | {bad} |")
    if crashes:
        lines += ["", "## First uncaught exceptions", "", "```", *crashes, "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    sys.exit(1 if uncaught else 0)


if __name__ == "__main__":
    main()
