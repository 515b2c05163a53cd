"""Halo's lightweight OpenAI-compatible server over an engine (default: the embedded ``hf`` engine).

    python -m halo.runtime.engines.serve --port 8000 [--preload MODEL] [--model-map '{"a": "b"}']

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /tokenize`` (vLLM-style) and
``GET /health``. Concurrent requests that arrive within ``batch_window`` seconds are generated as one
batch. Extension: a top-level ``prefix_key`` field maps to ``GenRequest.prefix_key``. Loopback only by default.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import ThreadingHTTPServer
from typing import Any

from halo.runtime.jsonhttp import JSONHandler

from . import make_engine
from .base import Engine, GenRequest, GenResult


class Batcher:
    """Collects requests from handler threads and runs them through the engine in batches."""

    def __init__(self, engine: Engine, batch_window: float = 0.005, max_batch: int = 32):
        self.engine = engine
        self.batch_window = batch_window
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[GenRequest, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="halo-batcher", daemon=True)
        self._thread.start()

    def submit(self, req: GenRequest) -> GenResult:
        future: Future = Future()
        self._queue.put((req, future))
        return future.result()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + self.batch_window
            stop = False
            while len(batch) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                results = self.engine.generate([req for req, _ in batch])
            except Exception as exc:  # engines should not raise; keep the server alive if one does
                results = [GenResult.failed(f"engine: {exc}") for _ in batch]
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
            if stop:
                return


def parse_chat(body: dict) -> GenRequest:
    """GenRequest from an OpenAI chat-completions body (system messages joined, other turns labelled)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    system: list[tuple[Any, str]] = []  # (role, text)
    turns: list[tuple[Any, str]] = []
    for msg in messages:
        content = msg.get("content") or ""
        if isinstance(content, list):  # content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        (system if msg.get("role") in ("system", "developer") else turns).append((msg.get("role"), content))
    prompt = turns[0][1] if len(turns) == 1 else "\n\n".join(f"{role}: {text}" for role, text in turns)
    schema = None
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    elif fmt.get("type") == "json_object":
        schema = {"type": "object"}
    return GenRequest(
        model=str(body.get("model") or ""),
        prompt=prompt,
        system="\n\n".join(text for _, text in system) or None,
        max_tokens=next(
            (body[k] for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None), 256
        ),
        temperature=float(body.get("temperature") or 0.0),
        seed=body.get("seed"),
        json_schema=schema,
        prefix_key=body.get("prefix_key"),
    )


def completion_body(req: GenRequest, result: GenResult) -> dict:
    """OpenAI chat-completion response for a finished request."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": "length" if result.completion_tokens >= req.max_tokens else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens},
        },
    }


class _Handler(JSONHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _error(self, status: int, message: str) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self.send_json(status, {"error": {"message": message, "type": kind}})

    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_json(200, {"status": "ok"})
        elif self.path == "/v1/models":
            models = [
                {"id": m, "object": "model", "owned_by": "halo"} for m in self.server.engine.resident_models()
            ]
            self.send_json(200, {"object": "list", "data": models})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path == "/v1/chat/completions":
                req = parse_chat(body)
                result = self.server.batcher.submit(req)
                if result.error:
                    self._error(400, result.error)
                else:
                    self.send_json(200, completion_body(req, result))
            elif self.path == "/tokenize":
                count = self.server.engine.count_tokens(
                    str(body.get("model") or ""), str(body.get("prompt") or "")
                )
                self.send_json(200, {"count": count})
            else:
                self._error(404, f"no route {self.path}")
        except (ValueError, TypeError, AttributeError) as exc:
            self._error(400, f"bad request: {exc}")
        except Exception as exc:
            self._error(500, f"{type(exc).__name__}: {exc}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, engine: Engine, batcher: Batcher):
        super().__init__(address, _Handler)
        self.engine = engine
        self.batcher = batcher

    def server_close(self) -> None:
        super().server_close()
        self.batcher.stop()


def build_server(
    engine: Engine, host: str = "127.0.0.1", port: int = 0, batch_window: float = 0.005
) -> _Server:
    """An unstarted server over ``engine``; ``port=0`` picks a free port (see ``server_address``)."""
    return _Server((host, port), engine, Batcher(engine, batch_window))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    parser.add_argument("--model-map", default="{}", help="JSON object: declared model id -> model to load")
    parser.add_argument("--preload", action="append", default=[], help="model to load before serving")
    parser.add_argument("--batch-window", type=float, default=0.005, help="seconds to gather a batch")
    args = parser.parse_args(argv)
    engine = make_engine(args.engine, model_map=json.loads(args.model_map))
    for model in args.preload:
        engine.load(model)
    server = build_server(engine, args.host, args.port, args.batch_window)
    host, port = server.server_address[:2]
    if isinstance(host, bytes):  # typeshed allows bytes; an AF_INET server reports str
        host = host.decode()
    print(f"serving on http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.close()


if __name__ == "__main__":
    main()
