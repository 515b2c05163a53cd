"""Engine interface shared by every LLM backend: requests, results and the abstract engine."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

from halo.models import SMOLLM2_ID
from halo.types import DEFAULT_MAX_TOKENS

SMOLLM2_ALIASES = frozenset({SMOLLM2_ID, SMOLLM2_ID.lower(), "smollm2-135m-instruct", "smollm2"})
RANDOM_WEIGHTS_NOTE = "random weights, timing only"


class EngineUnavailable(RuntimeError):
    """The requested engine cannot run in this environment (e.g. vLLM not installed)."""


@dataclass(frozen=True)
class GenRequest:
    """One chat completion: a user message plus an optional system message.

    ``prefix_key`` names requests that share a prompt prefix. ``retain_s`` asks the engine to keep this
    request's final KV (prompt + generated tokens) for that many seconds, keyed by its token sequence, so
    a later request that starts with those tokens prefills only the rest (engines without such a store
    ignore it). ``top_p`` is nucleus sampling's threshold (used only when ``temperature > 0``).
    """

    model: str
    prompt: str
    system: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS  # llm()'s registry default (halo.types.OPS)
    temperature: float = 0.0
    seed: int | None = None
    json_schema: dict | None = None
    prefix_key: str | None = None
    retain_s: float | None = None
    top_p: float | None = None


@dataclass
class GenResult:
    """Outcome of one request; ``error`` is set instead of raising when the request failed."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    seconds: float
    error: str | None = None

    @classmethod
    def failed(cls, error: str, seconds: float = 0.0) -> GenResult:
        return cls("", 0, 0, 0, seconds, error)


class Engine(ABC):
    """An LLM backend. ``generate`` never raises for one bad request; it reports a per-request error."""

    name: str = "engine"
    # a client of servers that keep their own models resident and batch continuously: generate() may be
    # called from several threads at once, with up to `max_in_flight` requests of each model in flight
    # (the executor keeps sending batches until then, halo.serve_runner shares it without a lock)
    thread_safe: bool = False
    max_in_flight: int = 1

    def __init__(self, model_map: dict[str, str] | None = None):
        self.model_map = dict(model_map or {})
        self.substitutions: dict[str, str] = {}

    @abstractmethod
    def load(self, model: str) -> float:
        """Make ``model`` resident; return the seconds spent (0 if it already was)."""

    @abstractmethod
    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Run ``requests``; results come back in request order."""

    @abstractmethod
    def count_tokens(self, model: str, text: str) -> int:
        """Number of tokens ``text`` has under ``model``'s tokenizer (no special tokens)."""

    @abstractmethod
    def resident_models(self) -> list[str]:
        """Declared model ids currently loaded."""

    @abstractmethod
    def close(self) -> None:
        """Release models and connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def json_instruction(schema: dict) -> str:
    """Short instruction asking for JSON output that matches ``schema``."""
    return (
        "Answer with a single JSON value and nothing else. It must conform to this JSON schema: "
        + json.dumps(schema, separators=(",", ":"), sort_keys=True)
    )


def chat_messages(req: GenRequest, instruct_json: bool = True) -> list[dict[str, str]]:
    """System + user messages for ``req``; appends the JSON instruction when a schema is requested."""
    system = req.system
    if instruct_json and req.json_schema is not None:
        system = (
            f"{system}\n\n{json_instruction(req.json_schema)}"
            if system
            else json_instruction(req.json_schema)
        )
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": req.prompt})
    return messages


def json_cut_error(max_tokens: int) -> str:
    """The per-request error when ``max_tokens`` ends generation before the JSON output is complete."""
    return f"max_tokens={max_tokens} ran out before the JSON output was complete (raise max_tokens)"


def cut_json(req: GenRequest, text: str, stopped_by_length: bool) -> str | None:
    """``json_cut_error`` for a schema request that stopped at its length limit without valid JSON."""
    if req.json_schema is None or not stopped_by_length:
        return None
    try:
        json.loads(text)
    except ValueError:
        return f"{json_cut_error(req.max_tokens)}; reply was {text[:120]!r}"
    return None


def check_model_map(declared: Iterable[str], model_map: dict[str, str]) -> None:
    """Raise ``EngineUnavailable`` for ``model_map`` keys that name no declared model id."""
    known = set(declared)
    unused = sorted(k for k in model_map if k not in known)
    if unused:
        listed = ", ".join(sorted(known)) or "none"
        raise EngineUnavailable(
            f"--model-map names {', '.join(repr(k) for k in unused)}, which no workflow declares "
            f"(declared model ids: {listed})"
        )


def validate(req: GenRequest, max_tokens_limit: int) -> str | None:
    """Return an error message for a request no engine should run, else None."""
    if not isinstance(req.max_tokens, int) or req.max_tokens < 1:
        return f"max_tokens must be a positive integer, got {req.max_tokens!r}"
    if req.max_tokens > max_tokens_limit:
        return f"max_tokens={req.max_tokens} exceeds the limit of {max_tokens_limit}"
    if req.temperature < 0:
        return f"temperature must be >= 0, got {req.temperature}"
    if req.top_p is not None and not 0 < req.top_p <= 1:
        return f"top_p must be in (0, 1], got {req.top_p}"
    if req.retain_s is not None and req.retain_s < 0:
        return f"retain_s must be >= 0, got {req.retain_s}"
    return None


def invalid(req: GenRequest, error: str) -> bool:
    """Whether ``error`` is `validate`'s verdict on ``req`` under any engine's limit: the request is wrong."""
    return error == validate(req, 1 << 62) or error.startswith(
        f"max_tokens={req.max_tokens} exceeds the limit"
    )
