"""Client engine for any OpenAI-compatible server (``/v1/chat/completions``) over httpx.

Requests run concurrently on a thread pool, up to ``max_concurrency`` per server (the executor keeps
that many of each model's requests in flight, as many batches as it takes); 429/5xx answers, connection errors
and timeouts are retried with exponential backoff; other 4xx answers fail the request at once.
``servers`` sends each listed model (by its declared name) to a server of its own (a base URL ending
in ``/v1``); other models go to ``base_url``. A schema goes to the server as ``response_format`` (``json_schema``); a reply cut by ``max_tokens``
(``finish_reason`` "length") that is not valid JSON fails its request.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from .base import Engine, GenRequest, GenResult, chat_messages, cut_json, validate

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_TOKENS_LIMIT = 1 << 20  # the server enforces the real context limit


class _Retryable(Exception):
    """A failure worth another attempt."""


class OpenAIEngine(Engine):
    """OpenAI-compatible HTTP engine. Thread-safe; ``generate`` blocks until all requests finish."""

    name = "openai"
    thread_safe = True

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        model_map: dict[str, str] | None = None,
        max_concurrency: int = 16,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        send_prefix_key: bool = False,
        servers: dict[str, str] | None = None,
    ):
        super().__init__(model_map)
        self.base_url = base_url.rstrip("/")
        self.servers = {m: url.rstrip("/") for m, url in (servers or {}).items()}
        self.retries = retries
        self.backoff = backoff
        self.send_prefix_key = send_prefix_key  # Halo's own server groups requests by this extension field
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._clients = {  # one per distinct server
            url: httpx.Client(
                base_url=url,
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=connect_timeout),
                limits=httpx.Limits(max_connections=max_concurrency),
            )
            for url in sorted({self.base_url, *self.servers.values()})
        }
        self.max_in_flight = max_concurrency
        self._pool = ThreadPoolExecutor(
            max_concurrency * len(self._clients), thread_name_prefix="halo-openai"
        )
        self._used: set[str] = set()
        self._lock = threading.Lock()
        self._tokenize_ok: dict[str, bool] = {}  # by server: whether it answers /tokenize

    def load(self, model: str) -> float:
        """Remote servers keep their own models resident; nothing to do here."""
        with self._lock:
            self._used.add(model)
        return 0.0

    def resident_models(self) -> list[str]:
        """Models the servers list under ``/models``, named as declared where ``model_map`` says so."""
        served: list[str] = []
        for client in self._clients.values():
            try:
                served += [m["id"] for m in client.get("/models").json()["data"] if m["id"] not in served]
            except (httpx.HTTPError, KeyError, ValueError):
                pass  # a server that is down lists nothing
        declared = {v: k for k, v in self.model_map.items()}
        return [declared.get(m, m) for m in served]

    def _server(self, model: str) -> str:
        """The base URL that serves declared ``model``."""
        return self.servers.get(model, self.base_url)

    def count_tokens(self, model: str, text: str) -> int:
        """Exact count from the server's ``/tokenize`` (vLLM and Halo's server); else ~4 chars a token."""
        url = self._server(model)
        if self._tokenize_ok.get(url) is not False:
            body = {"model": self.model_map.get(model, model), "prompt": text, "add_special_tokens": False}
            try:
                resp = self._clients[url].post(f"{url.removesuffix('/v1')}/tokenize", json=body)
                if resp.status_code == 200:
                    self._tokenize_ok[url] = True
                    return int(resp.json()["count"])
                self._tokenize_ok[url] = False
            except (httpx.HTTPError, KeyError, ValueError):
                self._tokenize_ok[url] = False
        return max(1, round(len(text) / 4)) if text else 0

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        for req in requests:
            self.load(req.model)
        return list(self._pool.map(self._one, requests))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for client in self._clients.values():
            client.close()

    def _body(self, req: GenRequest) -> dict:
        body = {
            "model": self.model_map.get(req.model, req.model),
            "messages": chat_messages(req, instruct_json=False),
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
        }
        if req.seed is not None:
            body["seed"] = req.seed
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": req.json_schema},
            }
        if self.send_prefix_key and req.prefix_key is not None:
            body["prefix_key"] = req.prefix_key
        return body

    def _one(self, req: GenRequest) -> GenResult:
        start = time.perf_counter()
        error = validate(req, MAX_TOKENS_LIMIT)
        if error:
            return GenResult.failed(error)
        body = self._body(req)
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._post(req, body, start)
            except _Retryable as exc:
                last = str(exc)
            except Exception as exc:  # permanent: bad request, bad response
                return GenResult.failed(str(exc), time.perf_counter() - start)
        return GenResult.failed(f"{last} (after {self.retries + 1} attempts)", time.perf_counter() - start)

    def _post(self, req: GenRequest, body: dict, start: float) -> GenResult:
        try:
            resp = self._clients[self._server(req.model)].post("/chat/completions", json=body)
        except httpx.TransportError as exc:  # connection refused/reset, timeouts
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code in RETRY_STATUS or resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:200]}")
        if resp.status_code >= 400:
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:500]}")
        data = resp.json()
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        return GenResult(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            seconds=time.perf_counter() - start,
            error=cut_json(req, text, choice.get("finish_reason") == "length"),
        )
