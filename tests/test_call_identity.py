"""Call identity: every part that reaches the engine or the tool is in `call_key`, one part varied at a time."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from halo import api
from halo.consolidate import call_key
from halo.execution import for_mode
from halo.runtime.run import execute

ENV = {"q": "a", "n": 1, "u": "c"}


def key(
    body: str,
    env: dict | None = None,
    schema: str = "",
    models: str = '"Qwen/Qwen3-8B"',
    db: str = '":memory:"',
) -> str | None:
    src = (
        f"workflow w(q: text, n: int, u: text) {{\n  model m = {models}\n  db d = duckdb({db})\n"
        f"  x = {body}{schema}\n  return x\n}}\n"
    )
    plan = api.compile(src, filename="t.halo").plan
    return call_key(plan.node("x"), env or ENV)


def assert_each_part_counts(base: dict, variants: dict[str, dict]) -> None:
    """`base` and every variant are keyword sets for `key`; equal inputs give equal keys, each variant differs."""
    k = key(**base)
    assert k is not None and key(**base) == k
    for name, change in variants.items():
        assert key(**{**base, **change}) != k, f"{name} is not part of the call identity"


def test_llm_identity_covers_model_prompt_sampling_and_schema():
    base = {
        "body": 'llm(m, system = "S {u}", prompt = "P {q}", max_tokens = 8, temperature = 0.5, seed = 1, '
        "top_p = 0.9)",
        "schema": " -> { a: text }",
    }
    body = base["body"]
    assert_each_part_counts(
        base,
        {
            "model": {"models": '"Qwen/Qwen3-14B"'},
            "system template": {"body": body.replace('"S {u}"', '"T {u}"')},
            "system value": {"env": {**ENV, "u": "f"}},
            "prompt value": {"env": {**ENV, "q": "b"}},
            "max_tokens": {"body": body.replace("max_tokens = 8", "max_tokens = 9")},
            "temperature": {"body": body.replace("temperature = 0.5", "temperature = 0.6")},
            "seed": {"body": body.replace("seed = 1", "seed = 2")},
            "top_p": {"body": body.replace("top_p = 0.9", "top_p = 0.8")},
            "schema field name": {"schema": " -> { b: text }"},
            "schema field type": {"schema": " -> { a: int }"},
            "schema list type": {"schema": " -> { a: text[] }"},
            "schema extra field": {"schema": " -> { a: text, b: int }"},
            "text output": {"schema": ""},
        },
    )


def test_sql_identity_covers_database_statement_and_every_value():
    base = {"body": 'sql(d, "SELECT :a AS a, :b AS b", a = q, b = n)'}
    assert_each_part_counts(
        base,
        {
            "database": {"db": '"other.duckdb"'},
            "statement": {"body": 'sql(d, "SELECT :a AS a, :b AS c", a = q, b = n)'},
            "first value": {"env": {**ENV, "q": "b"}},
            "second value": {"env": {**ENV, "n": 2}},
            "value type": {"env": {**ENV, "n": "1"}},
        },
    )
    # The normalized statement: layout and keyword case do not split a merge.
    assert key('sql(d, "select :a as a,  :b as b", a = q, b = n)') == key(**base)


def test_http_identity_covers_method_url_query_headers_body_and_redirects():
    base = {"body": 'http("GET", "http://h/p/{q}", query = {unit: u}, headers = {k: u}, body = "x")'}
    body = base["body"]
    assert_each_part_counts(
        base,
        {
            "method": {"body": body.replace('"GET"', '"HEAD"')},
            "URL literal": {"body": body.replace("/p/", "/r/")},
            "URL value": {"env": {**ENV, "q": "b"}},
            "query key": {"body": body.replace("{unit: u}", "{units: u}")},
            "query value": {
                "body": body.replace("headers = {k: u}", "headers = {k: q}"),
                "env": {**ENV, "u": "f"},
            },
            "headers": {"body": body.replace("{k: u}", "{k: q}")},
            "body": {"body": body.replace('body = "x"', 'body = "y"')},
            "redirect policy": {"body": body.replace(")", ', follow_redirects = "any")')},
        },
    )
    # The URL in the identity is the encoded one: a value that would add a parameter stays one value.
    assert key('http("GET", "http://h/?a={q}")', {**ENV, "q": "x&b=1"}) != key(
        'http("GET", "http://h/?a=x&b=1")'
    )


def test_py_identity_covers_function_and_every_argument():
    base = {"body": 'py("m:f", pure = true, a = q, b = n)'}
    assert_each_part_counts(
        base,
        {
            "function": {"body": 'py("m:g", pure = true, a = q, b = n)'},
            "argument a": {"env": {**ENV, "q": "b"}},
            "argument b": {"env": {**ENV, "n": 2}},
            "argument name": {"body": 'py("m:f", pure = true, a = q, c = n)'},
        },
    )


def test_timeouts_and_retries_are_not_identity():
    assert key('py("m:f", pure = true, a = q, timeout = 5)') == key('py("m:f", pure = true, a = q)')
    assert key('http("GET", "http://h/", retries = 0, timeout = 2)') == key('http("GET", "http://h/")')


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"query": dict(parse_qsl(urlsplit(self.path).query))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def echo():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_http_query_values_keep_calls_apart_end_to_end(tmp_path: Path, echo):
    src = f'workflow w(unit: text) {{\n  r = http("GET", "{echo}/temp", query = {{unit: unit}})\n  return r\n}}\n'
    plan = api.compile(src, filename=str(tmp_path / "w.halo")).plan
    rows = [(1, {"unit": "c"}), (2, {"unit": "f"}), (3, {"unit": "c"}), (4, {"unit": "k"})]
    out = tmp_path / "out.jsonl"
    result = execute(for_mode(plan, "halo"), rows, out, "fp")
    got = {
        r["row"]: r["outputs"]["r"]["query"]["unit"] for r in map(json.loads, out.read_text().splitlines())
    }
    assert got == {1: "c", 2: "f", 3: "c", 4: "k"}
    assert result.stats.nodes["r"].calls == 3  # the two "c" inputs still share one request
