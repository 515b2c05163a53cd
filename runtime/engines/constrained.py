"""JSON-schema constrained decoding for the hf engine, on xgrammar (vLLM's default backend).

Each schema compiles once per tokenizer. During generation a logits processor masks, per row, every
token the row's grammar rejects; a model EOS is allowed only where the grammar may end. Rows without a
schema are left alone. The processor also keeps each row able to finish inside its ``max_tokens``: it
knows a short closing path (close the open string, fill required fields with minimal values, close the
braces, EOS) and takes it once the budget left would otherwise not suffice. For greedy rows that check is
exact (the model's next token is tried first); sampled rows start closing ``SAMPLING_SLACK`` tokens early.
"""

from __future__ import annotations

import json

import torch
import xgrammar as xgr
from transformers import LogitsProcessor

SAMPLING_SLACK = 8  # extra tokens a sampled row keeps in reserve for closing
CLOSE_LIMIT = 64  # longest closing path searched; beyond it the row decodes under the grammar only
# Preferred tokens on a closing path, in order, inside a string (where "x" is allowed) and outside one.
IN_STRING, OUTSIDE = ('"}', '"'), ("}", "]", "0", "false", "null", '"')


class Grammars:
    """Compiled JSON-schema grammars for one tokenizer, each schema compiled once."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: set[int]):
        self.tokenizer = tokenizer
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)
        self._compiled: dict[str, xgr.CompiledGrammar] = {}
        self.stops = sorted(stop_ids)
        self.in_string, self.outside = (self._single(tokenizer, texts) for texts in (IN_STRING, OUTSIDE))
        self.letter = self._single(tokenizer, ("x",))

    @staticmethod
    def _single(tokenizer, texts: tuple[str, ...]) -> list[int]:
        """The token ids of those ``texts`` that are one token each."""
        encoded = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
        return [ids[0] for ids in encoded if len(ids) == 1]

    def compile(self, schema: dict) -> xgr.CompiledGrammar:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._compiled:
            self._compiled[key] = self.compiler.compile_json_schema(key, any_whitespace=False)
        return self._compiled[key]

    def compiled_count(self) -> int:
        return len(self._compiled)


class SchemaProcessor(LogitsProcessor):
    """Masks each constrained row of one ``generate`` call to its grammar (see the module docstring).

    ``rows[i]`` is (compiled grammar or None, max_tokens) for batch row i.
    """

    def __init__(self, grammars: Grammars, rows: list[tuple[xgr.CompiledGrammar | None, int]], greedy: bool):
        self.grammars = grammars
        self.greedy = greedy
        self.budgets = [n for _, n in rows]
        self.matchers = {i: xgr.GrammarMatcher(g) for i, (g, _) in enumerate(rows) if g is not None}
        self.fed = dict.fromkeys(self.matchers, 0)  # tokens each matcher has accepted
        self.step = 0
        vocab = grammars.info.vocab_size
        self.bitmask = xgr.allocate_token_bitmask(len(rows), vocab)
        self._probe = xgr.allocate_token_bitmask(1, vocab)

    def __call__(self, input_ids: torch.Tensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        active = [i for i, m in self.matchers.items() if self._live(i, m)]
        if self.step:
            last = input_ids[:, -1].tolist()
            for i in active:
                self._accept(i, last[i])
            active = [i for i in active if self._live(i, self.matchers[i])]
        for i in active:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
        if active:
            xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), indices=active)
        for i in active:
            forced = self._forced(i, scores[i])
            if forced is not None:
                keep = scores[i, forced].clone()
                scores[i] = float("-inf")
                scores[i, forced] = keep if torch.isfinite(keep) else 0.0
        self.step += 1
        return scores

    def complete(self, row: int, kept: list[int]) -> bool:
        """Feed ``row``'s tokens not yet accepted; whether its output is a complete value of the schema."""
        matcher = self.matchers[row]
        for tok in kept[self.fed[row] :]:
            if matcher.is_terminated() or not matcher.accept_token(tok):
                break
        return matcher.is_terminated() or matcher.is_completed()

    def _live(self, i: int, matcher) -> bool:
        return not matcher.is_terminated() and self.step < self.budgets[i]

    def _accept(self, i: int, tok: int) -> None:
        if self.matchers[i].accept_token(tok):
            self.fed[i] += 1

    def _forced(self, i: int, row_scores: torch.Tensor) -> int | None:
        """The closing path's next token when row ``i`` must start (or keep) closing now, else None."""
        left = self.budgets[i] - self.step
        matcher = self.matchers[i]
        path = self._closing(matcher, left)
        if path is None:  # cannot close in time whatever happens: the grammar alone decides
            return None
        length, first = path
        if length >= left:
            return first
        if not self.greedy:
            return first if length + SAMPLING_SLACK >= left else None
        choice = int(row_scores.argmax())
        if choice in self.grammars.stops:
            return None
        probe = matcher.fork()
        probe.accept_token(choice)
        after = self._closing(probe, left - 1)
        return first if after is None or after[0] > left - 1 else None

    def _closing(self, matcher, limit: int) -> tuple[int, int] | None:
        """(length, first token) of the closing path from ``matcher``'s state, if it is at most ``limit``."""
        probe = matcher.fork()
        first = None
        for n in range(min(limit, CLOSE_LIMIT) + 1):
            if probe.is_terminated():
                return (n, first) if first is not None else None
            if n == min(limit, CLOSE_LIMIT):
                return None
            probe.fill_next_token_bitmask(self._probe, 0)
            tok = self._closer(probe)
            if tok is None or not probe.accept_token(tok):
                return None
            first = tok if first is None else first
        return None

    def _closer(self, probe) -> int | None:
        """The preferred allowed token in ``self._probe``: EOS, the first token of the text the grammar
        forces, a closer (``"`` inside a string, ``}`` before ``"`` outside), or the lowest allowed id."""
        words = self._probe[0]

        def allowed(tok: int) -> bool:
            return bool((int(words[tok >> 5]) >> (tok & 31)) & 1)

        forced = probe.find_jump_forward_string()
        ids = self.grammars.tokenizer.encode(forced, add_special_tokens=False) if forced else []
        g = self.grammars
        closers = g.in_string if any(allowed(t) for t in g.letter) else g.outside
        for tok in (*g.stops, *ids[:1], *closers):
            if allowed(tok):
                return tok
        nonzero = torch.nonzero(words).flatten()
        if not len(nonzero):
            return None
        word = int(nonzero[0])
        bits = int(words[word]) & 0xFFFFFFFF
        return word * 32 + ((bits & -bits).bit_length() - 1)
