"""LLM engine layer against the real SmolLM2-135M model (CPU), the real loopback server and real HTTP."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from halo.runtime.engines import (
    RANDOM_WEIGHTS_NOTE,
    SMOLLM2_ID,
    EngineUnavailable,
    GenRequest,
    make_engine,
)
from halo.runtime.engines.base import chat_messages
from halo.runtime.engines.fake import FakeEngine
from halo.runtime.engines.model_cache import smollm2_dir
from halo.runtime.engines.serve import build_server

pytestmark = pytest.mark.slow
HAS_VLLM = importlib.util.find_spec("vllm") is not None

SYSTEM = (
    "You are a careful data analyst for an online shop. The orders table has the columns order_id, "
    "customer_id, order_date and total; the customers table has customer_id, name and country. "
    "Answer briefly and precisely."
)
PROMPTS = [
    "What is SQL?",
    "Name three colors.",
    "Write one sentence about why indexes make large database tables faster to query.",
    "How many days are in a leap year?",
]


def req(prompt: str, **kw) -> GenRequest:
    return GenRequest(
        model=kw.pop("model", SMOLLM2_ID), prompt=prompt, max_tokens=kw.pop("max_tokens", 8), **kw
    )


REQUESTS = [req(p, max_tokens=5 + i) for i, p in enumerate(PROMPTS)]


@pytest.fixture(scope="module")
def engine():
    eng = make_engine("hf")
    eng.load(SMOLLM2_ID)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(engine):
    """Batched results for REQUESTS, computed once and compared against by several tests."""
    return engine.generate(REQUESTS)


@pytest.fixture(scope="module")
def server():
    """``python -m halo.runtime.engines.serve`` on a free loopback port; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "halo.runtime.engines.serve", "--port", "0", "--preload", SMOLLM2_ID],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving on "), line
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- hf engine ------------------------------------------------------------------------------------


def test_real_text_is_deterministic(engine, reference):
    assert all(r.error is None and r.text.strip() for r in reference)
    assert all(
        r.prompt_tokens > 5 and 0 < r.completion_tokens <= q.max_tokens
        for r, q in zip(reference, REQUESTS, strict=True)
    )
    assert all(r.cached_tokens == 0 and r.seconds > 0 for r in reference)
    assert [r.text for r in engine.generate(REQUESTS)] == [r.text for r in reference]


def test_batch_keeps_order_and_matches_one_at_a_time(engine, reference):
    singles = [engine.generate([r])[0] for r in REQUESTS]
    assert [r.text for r in reference] == [r.text for r in singles]
    assert [r.completion_tokens for r in reference] == [r.completion_tokens for r in singles]


def test_prefix_reuse_gives_identical_text(engine):
    requests = [req(p, system=SYSTEM, prefix_key="analyst", max_tokens=6) for p in PROMPTS]
    reused = engine.generate(requests)
    assert all(r.cached_tokens > 20 for r in reused)
    assert all(r.cached_tokens < r.prompt_tokens for r in reused)
    engine.prefix_reuse = False
    try:
        plain = engine.generate(requests)
    finally:
        engine.prefix_reuse = True
    assert [r.text for r in reused] == [r.text for r in plain]
    assert all(r.cached_tokens == 0 for r in plain)
    again = engine.generate(requests[:1])  # a later call hits the retained prefix
    assert again[0].cached_tokens == reused[0].cached_tokens and again[0].text == reused[0].text


def test_count_tokens(engine):
    assert engine.count_tokens(SMOLLM2_ID, "") == 0
    short = engine.count_tokens(SMOLLM2_ID, "SELECT count(*) FROM orders;")
    assert 3 <= short <= 15
    assert engine.count_tokens(SMOLLM2_ID, "SELECT count(*) FROM orders; " * 4) > 3 * short


def test_unknown_model_is_substituted_and_recorded(engine, reference):
    substituted = engine.generate([req(PROMPTS[0], model="Qwen/Qwen3-14B", max_tokens=5)])[0]
    assert engine.substitutions["Qwen/Qwen3-14B"] == SMOLLM2_ID
    assert SMOLLM2_ID not in engine.substitutions
    assert substituted.text == reference[0].text
    assert {"Qwen/Qwen3-14B", SMOLLM2_ID} <= set(engine.resident_models())


def test_bad_requests_fail_alone(engine):
    good = req("Hi", max_tokens=3)
    results = engine.generate([good, req("Hi", max_tokens=0), req("Hi", max_tokens=10**9), good])
    assert results[0].error is None and results[0].text
    assert "max_tokens" in results[1].error and "max_tokens" in results[2].error
    assert results[3].error is None and results[3].text


def test_sampling_with_seed_is_reproducible(engine):
    a, b = (
        engine.generate([req("Tell me a story.", temperature=0.9, seed=7, max_tokens=6)])[0] for _ in range(2)
    )
    assert a.error is None and a.text == b.text


def test_json_schema_adds_instruction(engine):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    messages = chat_messages(req("Capital of France?", system="Be brief.", json_schema=schema))
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("Be brief.")
    assert '"answer"' in messages[0]["content"] and "JSON" in messages[0]["content"]
    assert chat_messages(req("x", json_schema=schema), instruct_json=False) == [
        {"role": "user", "content": "x"}
    ]
    result = engine.generate([req("Capital of France?", json_schema=schema, max_tokens=4)])[0]
    assert result.error is None and result.text


def test_cache_is_reused_quickly():
    start = time.perf_counter()
    path = smollm2_dir()
    assert time.perf_counter() - start < 1.0
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


def test_random_weights_are_flagged():
    tiny = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 49152,
    }
    with make_engine("hf", random_weights=True, shape=tiny) as eng:
        result = eng.generate([req("Hello", model="Qwen/Qwen2.5-1.5B-Instruct", max_tokens=6)])[0]
        assert result.error is None and result.completion_tokens == 6
        assert RANDOM_WEIGHTS_NOTE in eng.substitutions["Qwen/Qwen2.5-1.5B-Instruct"]


def test_make_engine_rejects_unknown_name():
    with pytest.raises(EngineUnavailable, match="unknown engine 'llamafile'; choose one of hf, vllm, openai"):
        make_engine("llamafile")


@pytest.mark.skipif(HAS_VLLM, reason="vllm is importable here")
def test_vllm_unavailable_names_make_target():
    with pytest.raises(EngineUnavailable, match="make test-vllm"):
        make_engine("vllm")


# ---- openai engine against the real loopback server -----------------------------------------------


def test_openai_engine_matches_hf(engine, reference, server):
    with make_engine("openai", base_url=server, max_concurrency=4) as client:
        remote = client.generate(REQUESTS)
        assert client.count_tokens(SMOLLM2_ID, "SELECT 1;") == engine.count_tokens(SMOLLM2_ID, "SELECT 1;")
        assert SMOLLM2_ID in client.resident_models()
    local = reference
    assert [r.error for r in remote] == [None] * len(REQUESTS)
    assert [r.text for r in remote] == [r.text for r in local]
    assert [r.prompt_tokens for r in remote] == [r.prompt_tokens for r in local]
    assert [r.completion_tokens for r in remote] == [r.completion_tokens for r in local]


def test_openai_engine_prefix_key_and_errors(server):
    requests = [req(p, system=SYSTEM, prefix_key="remote", max_tokens=3) for p in PROMPTS[:2]]
    with make_engine("openai", base_url=server, send_prefix_key=True, retries=0) as client:
        ok = client.generate(requests)
        bad = client.generate([req("Hi", max_tokens=100_000)])[0]
    assert all(r.error is None and r.cached_tokens > 0 for r in ok)
    assert bad.error and "HTTP 400" in bad.error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_closed_port_fails_fast_after_retries():
    start = time.perf_counter()
    with make_engine(
        "openai", base_url=f"http://127.0.0.1:{_free_port()}/v1", retries=2, backoff=0.01
    ) as client:
        result = client.generate([req("Hi")])[0]
    assert result.error and "after 3 attempts" in result.error and "Connect" in result.error
    assert time.perf_counter() - start < 5


def test_openai_timeout():
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        with make_engine("openai", base_url=url, timeout=0.3, retries=1, backoff=0.01) as client:
            result = client.generate([req("Hi")])[0]
    assert result.error and "Timeout" in result.error


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first two chat requests, then a valid completion; 400 for model 'bad'."""

    hits: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.hits.append(body["model"])
        if body["model"] == "bad":
            status, payload = 400, {"error": {"message": "no such model"}}
        elif len(self.hits) <= 2:
            status, payload = 503, {"error": {"message": "busy"}}
        else:
            usage = {
                "prompt_tokens": 7,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 4},
            }
            status, payload = 200, {"choices": [{"message": {"content": "ok!"}}], "usage": usage}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_openai_retries_5xx_but_not_4xx():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        with make_engine(
            "openai", base_url=url, retries=3, backoff=0.01, model_map={"m": "served-m"}
        ) as client:
            result = client.generate([req("Hi", model="m")])[0]
            assert (result.text, result.prompt_tokens, result.completion_tokens, result.cached_tokens) == (
                "ok!",
                7,
                2,
                4,
            )
            assert _Flaky.hits == ["served-m"] * 3
            bad = client.generate([req("Hi", model="bad")])[0]
            assert "HTTP 400" in bad.error and _Flaky.hits.count("bad") == 1
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_openai_servers_send_each_model_to_its_own_server():
    """`servers` (by declared name) routes m-a to server A and m-b to B; m-c, unlisted, to `base_url`."""
    seen: dict[str, list] = {k: [] for k in "abc"}
    servers = {k: build_server(FakeEngine(batches=seen[k])) for k in "abc"}
    url = {k: f"http://127.0.0.1:{srv.server_address[1]}/v1" for k, srv in servers.items()}
    for srv in servers.values():
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with make_engine(
            "openai",
            base_url=url["c"],
            servers={"m-a": url["a"], "m-b": url["b"]},
            model_map={"m-b": "served-b"},
            retries=0,
        ) as client:
            results = client.generate(
                [req(f"q{i}", model=m) for i in range(3) for m in ("m-a", "m-b", "m-c")]
            )
    finally:
        for srv in servers.values():
            srv.shutdown()
            srv.server_close()
    assert [r.error for r in results] == [None] * 9
    received = {k: sorted(r.model for batch in v for r in batch) for k, v in seen.items()}
    assert received == {"a": ["m-a"] * 3, "b": ["served-b"] * 3, "c": ["m-c"] * 3}


# ---- vllm tier (make test-vllm) -------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not importable (make test-vllm)")
def test_vllm_engine_smollm2():
    eng = make_engine("vllm", enforce_eager=True, max_model_len=2048)
    try:
        requests = [req(p, system=SYSTEM * 6, max_tokens=16) for p in PROMPTS]  # > one KV block shared
        first = eng.generate(requests)
        second = eng.generate(requests)  # texts may differ from `first` in bf16 once the prefix is cached
        assert all(r.error is None and r.text for r in first + second)
        assert [r.prompt_tokens for r in first] == [r.prompt_tokens for r in second]
        assert all(r.cached_tokens > 0 for r in second) and eng.prefix_cache_stats()["hits"] > 0
        assert eng.count_tokens(SMOLLM2_ID, "SELECT 1;") > 0 and eng.resident_models() == [SMOLLM2_ID]
        schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        structured = eng.generate([req("Capital of France?", json_schema=schema, max_tokens=32)])[0]
        assert "city" in json.loads(structured.text)
        assert eng.generate([req("Hi", max_tokens=0)])[0].error
    finally:
        eng.close()


def test_top_p_is_sent_and_checked(engine):
    from halo.runtime.engines.openai import OpenAIEngine

    eng = OpenAIEngine()
    try:
        assert eng._body(req("x", top_p=0.5))["top_p"] == 0.5 and "top_p" not in eng._body(req("x"))
    finally:
        eng.close()
    sampled = engine.generate([req("Tell me a story.", temperature=0.9, top_p=0.3, seed=7, max_tokens=6)] * 2)
    assert sampled[0].error is None and sampled[0].text == sampled[1].text
    assert engine.generate([req("x", top_p=0.0)])[0].error.startswith("top_p")
