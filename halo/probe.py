"""Engine probe (`halo calibrate`): time a grid of synthetic batches on a real engine, for the batch law.

Every batch has `n` distinct prompts of about `prompt` tokens (nothing merges, no shared prefix) and asks
for `steps` new tokens at temperature 0. Each result is one `llm_batch` calibration record; the fitted
law (see `halo.calibration`) then prices any batch the runtime forms, on this engine, model and device.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable

from halo.runtime.engines import Engine, GenRequest

FILLER = (
    "The quarterly report lists revenue, shipping dates, supplier names and regional totals for "
    "every order; analysts compare them across years and segments before they write a summary. "
)


def prompt_text(engine: Engine, model: str, tokens: int, row: int) -> str:
    """A distinct prompt of about `tokens` tokens (row number first, so no two share a prefix)."""
    head = f"Request {row}: summarise the following notes at length.\n"
    per = max(1, engine.count_tokens(model, FILLER))
    return head + FILLER * max(1, round(tokens / per))


def probe(
    engine: Engine,
    model: str,
    device: str,
    sizes: Iterable[int],
    steps: Iterable[int],
    prompts: Iterable[int],
    load_s: float,
    on_batch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Warm every batch shape of the loaded `model` up (not recorded), then time every (prompt, steps,
    size) batch. Returns calibration records: one `load` (`load_s`, what loading it took; a warm engine's
    0 is not recorded), one `llm_batch` per batch."""
    sizes, steps, prompts = list(sizes), list(steps), list(prompts)
    ran_as = engine.substitutions.get(model)
    out = [{"kind": "load", "model": model, "device": device, "seconds": load_s}] if load_s > 0 else []
    row = itertools.count(-1, -1)
    for p, n in itertools.product(prompts, sizes):  # first use of a shape allocates and picks kernels
        engine.generate(
            [GenRequest(model, prompt_text(engine, model, p, next(row)), max_tokens=2) for _ in range(n)]
        )
    row = itertools.count()
    for p, k, n in itertools.product(prompts, steps, sizes):
        requests = [
            GenRequest(model, prompt_text(engine, model, p, next(row)), max_tokens=k, temperature=0.0)
            for _ in range(n)
        ]
        start = time.perf_counter()
        results = engine.generate(requests)
        seconds = time.perf_counter() - start
        failed = [r.error for r in results if r.error]
        if failed:
            raise RuntimeError(f"probe batch (n={n}, steps={k}, prompt={p}) failed: {failed[0]}")
        record = {
            "kind": "llm_batch",
            "model": model,
            "device": device,
            "n": n,
            "prefill_tokens": sum(r.prompt_tokens - r.cached_tokens for r in results),
            "steps": max(r.completion_tokens for r in results),
            "seconds": seconds,
            **({"ran_as": ran_as} if ran_as else {}),
        }
        out.append(record)
        if on_batch:
            on_batch(record)
    return out
