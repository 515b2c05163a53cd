"""Token counts: the model's own tokenizer when it is available offline, else calibrated characters per token.

Tokenizers are looked up without network access: a model directory given as the model name, the
halo model cache (``halo.runtime.engines.model_cache``), or the Hugging Face hub cache. Only the
``tokenizers`` package is used (no torch). Output lengths come from measured history in the
calibration, else from the output schema (a small JSON object) or a fraction of ``max_tokens``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from halo.calibration import Calibration
from halo.models import SMOLLM2_ID, smollm2_location
from halo.plan import OpNode
from halo.types import Type

if TYPE_CHECKING:
    from tokenizers import Tokenizer

CHARS_PER_TOKEN = {"text": 4.0, "code": 3.0}  # English prose; SQL, JSON and tables
TEXT_FILL = 0.5  # free-text answers use about half of max_tokens
_FIELD_TOKENS = {
    "int": 3,
    "float": 4,
    "bool": 2,
    "text": 16,
    "list": 24,
    "json": 24,
    "table": 48,
    "struct": 24,
}


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens for one model; `source` says how ("tokenizer", "calibrated" or "default")."""

    model: str | None
    source: str
    chars_per_token: float
    tokenizer: Tokenizer | None = None

    def count(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
        return round(len(text) / self.chars_per_token)

    def count_many(self, texts: list[str]) -> list[int]:
        if self.tokenizer is not None:
            return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        cpt = self.chars_per_token
        return [round(len(t) / cpt) for t in texts]

    def chars(self, n_chars: float, kind: str = "text") -> float:
        """Tokens of `n_chars` characters of unseen text (`kind` "code" for SQL, JSON and tables)."""
        return n_chars / (self.chars_per_token if kind == "text" else CHARS_PER_TOKEN["code"])


def counter(model: str | None, calibration: Calibration | None = None) -> TokenCounter:
    """The best counter for `model`: its tokenizer if cached locally, else a (calibrated) chars/token rate."""
    cal = calibration or Calibration()
    cpt = cal.chars_per_token.get(model or "") or cal.chars_per_token.get("text")
    path = tokenizer_path(model) if model else None
    if path is not None:
        return TokenCounter(model, "tokenizer", cpt or CHARS_PER_TOKEN["text"], _load(str(path)))
    if cpt:
        return TokenCounter(model, "calibrated", cpt)
    return TokenCounter(model, "default", CHARS_PER_TOKEN["text"])


@cache
def tokenizer_path(model: str) -> Path | None:
    """`tokenizer.json` for `model` on local disk, or None."""
    candidates = [Path(model).expanduser()]
    if model == SMOLLM2_ID:
        candidates.append(smollm2_location())
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub")
    candidates += sorted((hub / f"models--{model.replace('/', '--')}" / "snapshots").glob("*"))
    for c in candidates:
        if (c / "tokenizer.json").is_file():
            return c / "tokenizer.json"
    return None


@cache
def _load(path: str) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def output_tokens(op: OpNode, key: str, calibration: Calibration | None = None) -> tuple[float, str]:
    """Expected output tokens of one call and where the number comes from ("measured", "schema", "default")."""
    limit = int(op.option("max_tokens"))
    measured = (calibration or Calibration()).output_tokens.get(key)
    if measured is not None:
        return min(float(measured), limit), "measured"
    if op.out.kind == "struct" and op.out.fields:
        return min(float(schema_tokens(op.out)), limit), "schema"
    return limit * TEXT_FILL, "default"


P90_AFTER = 8  # output lengths seen before their p90 replaces max_tokens in a request's budget


def expected_output_tokens(op: OpNode, seen: list[int] | None = None) -> int:
    """Output tokens one request of `op` is budgeted when engine batches are packed to their token budget:
    max_tokens until P90_AFTER lengths have been `seen` for the node, then their 90th percentile. (The cost
    model's `output_tokens` is the mean a call is expected to decode, which prices the work instead.)"""
    if seen is not None and len(seen) >= P90_AFTER:
        ordered = sorted(seen)
        return ordered[int(0.9 * (len(ordered) - 1))]
    return int(op.option("max_tokens"))


def schema_tokens(t: Type) -> int:
    """A compact JSON object of the struct's fields: braces, quoted names, colons, typical values."""
    return 2 + sum(len(name) // 4 + 3 + _FIELD_TOKENS.get(ft.kind, 16) for name, ft in t.fields or ())
