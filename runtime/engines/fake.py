"""A deterministic engine with no model, for tests: each reply is a function of its request alone.

The reply hashes every field that decides an answer (model, system, prompt, max_tokens, temperature,
seed, top_p, json_schema), so the same request gets the same reply whatever it is batched with. A plain
request gets up to ``max_tokens`` words; a ``json_schema`` request gets a valid object of that schema.
Every batch is recorded (``batches``) so scheduling tests can inspect what the executor sent.
"""

from __future__ import annotations

import hashlib
import json
import threading

from .base import Engine, GenRequest, GenResult, validate

WORDS = (
    "alpha",
    "bravo",
    "carbon",
    "delta",
    "ember",
    "fjord",
    "gamma",
    "harbor",
    "iris",
    "jade",
    "kelvin",
    "lumen",
    "maple",
    "nova",
    "onyx",
    "prism",
)
MAX_TOKENS_LIMIT = 4096


class FakeEngine(Engine):
    """Deterministic replies, no model; ``batches`` holds every generate() call's requests."""

    name = "fake"

    def __init__(self, model_map: dict[str, str] | None = None, batches: list | None = None):
        """``batches``: a list to record into (a test passes its own to see the batches of a run)."""
        super().__init__(model_map)
        self._lock = threading.Lock()
        self._resident: list[str] = []
        self.batches: list[list[GenRequest]] = batches if batches is not None else []

    def load(self, model: str) -> float:
        with self._lock:
            if model not in self._resident:
                self._resident.append(model)
        return 0.0

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        with self._lock:
            self.batches.append(list(requests))
        return [self._one(r) for r in requests]

    def count_tokens(self, model: str, text: str) -> int:
        return len(text.split())

    def resident_models(self) -> list[str]:
        with self._lock:
            return list(self._resident)

    def close(self) -> None:
        with self._lock:
            self._resident.clear()

    def batch_sizes(self) -> list[int]:
        """Requests per generate() call, in call order."""
        with self._lock:
            return [len(b) for b in self.batches]

    def reply(self, req: GenRequest) -> str:
        """The text ``req`` gets (also for tests that predict a reply)."""
        digest = _digest(req, self.model_map.get(req.model, req.model))
        if req.json_schema is not None:
            return json.dumps(_value(req.json_schema, digest, "$"), sort_keys=True)
        n = min(req.max_tokens, 2 + digest[0] % 5)
        return " ".join(WORDS[digest[1 + i] % len(WORDS)] for i in range(n))

    def _one(self, req: GenRequest) -> GenResult:
        error = validate(req, MAX_TOKENS_LIMIT)
        if error:
            return GenResult.failed(error)
        text = self.reply(req)
        prompt = self.count_tokens(req.model, f"{req.system or ''} {req.prompt}")
        return GenResult(text, prompt, self.count_tokens(req.model, text), 0, 0.0)


def _digest(req: GenRequest, model: str) -> bytes:
    """SHA-256 of the request fields that decide a reply (prefix_key and retain_s do not)."""
    key = [
        model,
        req.system,
        req.prompt,
        req.max_tokens,
        req.temperature,
        req.seed,
        req.top_p,
        req.json_schema,
    ]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).digest()


def _value(schema: dict, digest: bytes, path: str):
    """A value of ``schema`` (object, string, integer, number, boolean; anything else: a string) derived
    from ``digest`` and the value's place ``path`` in the object."""
    h = hashlib.sha256(digest + path.encode()).digest()
    kind = schema.get("type")
    if kind == "object":
        return {k: _value(s, digest, f"{path}.{k}") for k, s in (schema.get("properties") or {}).items()}
    if kind == "integer":
        return h[0] % 10
    if kind == "number":
        return h[0] / 4
    if kind == "boolean":
        return bool(h[0] & 1)
    return WORDS[h[0] % len(WORDS)]
