"""Engine configuration mistakes are user errors (EngineUnavailable), and a schema reply cut by
max_tokens fails its request on the openai engine (real HTTP on loopback)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from halo.runtime.engines import EngineUnavailable, GenRequest, check_model_map, make_engine

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


def test_unknown_engine_lists_the_engines():
    with pytest.raises(EngineUnavailable, match="unknown engine 'nosuch'; choose one of hf, vllm, openai"):
        make_engine("nosuch")


def test_map_to_missing_directory_is_an_error(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(EngineUnavailable, match=f"--model-map big={missing}: cannot load"):
        make_engine("hf", model_map={"big": str(missing)})


def test_map_to_unloadable_directory_is_an_error_not_a_substitute(tmp_path):
    with make_engine("hf", model_map={"big": str(tmp_path)}) as eng:
        with pytest.raises(EngineUnavailable, match=f"--model-map big={tmp_path}: cannot load"):
            eng.load("big")
        result = eng.generate([GenRequest(model="big", prompt="hi", max_tokens=2)])[0]
        assert "--model-map big=" in result.error and "big" not in eng.substitutions


def test_map_naming_an_undeclared_model_is_an_error():
    check_model_map(["Qwen/Qwen3-14B"], {"Qwen/Qwen3-14B": "smollm2"})
    check_model_map(["Qwen/Qwen3-14B"], {})
    with pytest.raises(
        EngineUnavailable,
        match=r"'Qwen/Qwen3-41B', which no workflow declares "
        r"\(declared model ids: Qwen/Qwen3-14B\)",
    ):
        check_model_map(["Qwen/Qwen3-14B"], {"Qwen/Qwen3-41B": "smollm2", "Qwen/Qwen3-14B": "smollm2"})


class _Cut(BaseHTTPRequestHandler):
    """Answers every chat completion with a JSON object cut short (finish_reason "length")."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Cut.bodies.append(body)
        text = '{"a": "unfinished' if body.get("response_format") else "plain text cut"
        data = json.dumps(
            {
                "choices": [{"message": {"content": text}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_openai_schema_reply_cut_by_max_tokens_fails_its_request():
    _Cut.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Cut)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        with make_engine("openai", base_url=url, retries=0) as eng:
            cut, plain = eng.generate(
                [
                    GenRequest(model="m", prompt="x", max_tokens=4, json_schema=SCHEMA),
                    GenRequest(model="m", prompt="y", max_tokens=4),
                ]
            )
    finally:
        server.shutdown()
        server.server_close()
    assert cut.error and "max_tokens=4 ran out before the JSON output was complete" in cut.error
    assert plain.error is None and plain.text == "plain text cut"
    sent = next(b for b in _Cut.bodies if b.get("response_format"))
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA},
    }
