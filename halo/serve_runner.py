"""One served workflow of `halo serve`: arrivals gathered into windows and fed to one long-lived executor.

Arrivals wait until the window is `window_s` old or holds a full engine batch; then the whole window is
admitted together, requests with fewer inputs first (the shortest remaining work first: inputs of one
window are admitted in that order, and windows go in arrival order, so no request waits past its own
window). The executor runs in a background thread and pulls rows from the window queue, which yields
`WAIT` while nothing is due, so identical calls of different users merge through its memo and share
engine batches.

Planning: the first window is planned (`halo.api.plan`) and the executor runs that plan. Every
`replan_every` windows, or when the window plus the inputs in flight reaches twice the batch last
planned for, the server plans again in the background on that batch. An executor's plan never changes
under it: a plan that differs (order, batching, fusion, prefix keys, ordering, KV retention) takes
effect in a new executor generation, which starts once the inputs in flight drain; the journal carries
the finished calls across generations.

Durability: runs are committed to the store before they are accepted; every call is journaled by the
executor (`halo.runtime.journal`, one journal per workflow, fingerprinted by the workflow's text); a
finished run's record is committed to the store before anyone is told. On restart the unfinished runs
are admitted first; calls they already made come from the journal, and a side effect that may have run
when the crash came is not repeated (its run's record says so, as `halo run --resume` does).

`mode="naive"` is the framework baseline: each input runs alone, as it arrives, through its own
executor with the naive plan (no windows, no merging across inputs), `concurrency` at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from halo import api
from halo.batch import Batch
from halo.batching import BatchPolicy
from halo.errors import HaloError
from halo.execution import ExecutionPlan, for_mode
from halo.runtime.engines.base import Engine, GenRequest, GenResult
from halo.runtime.executor import WAIT, Executor, RunOptions
from halo.runtime.journal import Journal, JournalError, JournalMismatch
from halo.runtime.toolbox import Toolbox
from halo.serve_store import Run, Store

MODES = ("halo", "naive")
IN_FLIGHT = 512  # inputs one executor holds at once (RunOptions.window)
PLAN_TIME_S = 0.3  # the optimizer's budget for one plan
REPLAN_MIN_S = 10.0  # at most one re-plan this often
NAIVE_WORKERS = 8  # the baseline's inputs running at once, by default
LATENCIES = 2048  # recent run latencies kept for the quantiles
THROUGHPUT_S = 60.0  # throughput is measured over this many recent seconds
STAT_KEYS = ("engine_calls", "calls", "instances", "merged", "prompt_tokens", "cached_tokens")


class QueueFull(Exception):
    """The workflow has `max_queue` unfinished runs; `retry_after` is an estimate in seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"queue full; retry in {retry_after} s")
        self.retry_after = retry_after


class ServeError(ValueError):
    """A server that cannot start as configured (a user error)."""


class SharedEngine(Engine):
    """One warm engine for every served workflow: each batch loads its model and generates under one lock,
    unless the engine is `thread_safe` (a client of remote servers, which keep their own models resident)."""

    name = "shared"

    def __init__(self, inner: Engine):
        super().__init__(inner.model_map)
        self.inner = inner
        self.thread_safe = safe = inner.thread_safe
        self.max_in_flight = inner.max_in_flight
        self.lock: contextlib.AbstractContextManager = contextlib.nullcontext() if safe else threading.Lock()
        self.substitutions = inner.substitutions  # the same dict: the inner engine records into it

    def load(self, model: str) -> float:
        with self.lock:
            return self.inner.load(model)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        with self.lock:
            self.inner.load(requests[0].model)  # another workflow may have made its model resident
            return self.inner.generate(requests)

    def count_tokens(self, model: str, text: str) -> int:
        return self.inner.count_tokens(model, text)

    def resident_models(self) -> list[str]:
        return self.inner.resident_models()

    def close(self) -> None:
        """Nothing: the server closes the engine it shares."""


class _Fed(Executor):
    """An executor fed by the server. A row the journal already finished runs again (its calls come from the
    journal, nothing repeats) so that its record reaches the sink: the store, not the journal, says which
    runs are done, and a record the store lost in a crash must be delivered after the restart."""

    def _fresh(self, rows):
        return rows


def fingerprint(compiled: api.Compiled) -> str:
    """Identifies a served workflow's journal: its name and the text of every module."""
    h = hashlib.sha256(b"halo-serve\x00" + compiled.plan.name.encode())
    for source in compiled.sources:
        h.update(b"\x00" + source.encode())
    return h.hexdigest()[:32]


def _shape(x: ExecutionPlan) -> tuple:
    """What the executor follows of a plan (two plans with the same shape run alike)."""
    return (
        tuple(x.order),
        x.policy,
        x.merge,
        x.barrier,
        tuple(map(tuple, x.fusion_sets)),
        tuple(x.prefix_nodes),
        tuple(map(tuple, x.order_edges)),
        tuple(sorted(x.kv_retention.items())),
    )


class Runner:
    """One served workflow: its queue of accepted runs, the executor thread and the completion thread."""

    def __init__(
        self,
        compiled: api.Compiled,
        store: Store,
        engine: Engine | None,
        state: Path,
        *,
        hardware: str,
        window_s: float,
        max_batch: int | None,
        max_queue: int,
        replan_every: int,
        mode: str,
        on_done: Callable[[Run, str, float], None],
        concurrency: int = NAIVE_WORKERS,
    ):
        if mode not in MODES:
            raise ServeError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if concurrency < 1:
            raise ServeError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency  # naive mode: inputs running at once
        self.compiled, self.name, self.params = compiled, compiled.plan.name, compiled.plan.params
        self.store, self.engine, self.hardware, self.mode = store, engine, hardware, mode
        self.window_s, self.max_queue, self.replan_every = window_s, max_queue, replan_every
        self.policy = api.batch_policy(max_batch)
        self.on_done = on_done
        pending = store.unfinished(self.name)
        self.tools = Toolbox(compiled.plan)
        try:
            if problems := self.tools.check():
                raise HaloError(problems)
            self.journal = _open_journal(state / "journals" / f"{self.name}.journal", compiled, pending)
        except BaseException:
            self.tools.close()
            raise
        self.xplan: ExecutionPlan | None = None
        self._swap: ExecutionPlan | None = None  # a re-plan's result, for the next executor generation
        self._cond = threading.Condition()  # guards everything below
        self._stop = threading.Event()
        self._arrivals: list[Run] = list(pending)
        self._opened = 0.0 if pending else math.inf  # when the oldest arrival came (monotonic)
        self._ready: deque[Run] = deque()  # released by a window, not yet admitted
        self._admitted: dict[int, Run] = {}  # row -> run, in the executor
        self.unfinished = len(pending)  # accepted runs whose record is not committed yet
        self._planned_on, self._last_plan, self._windows_since, self._replanning = 0, 0.0, 0, False
        self._live: set[Executor] = set()
        self._retired: Counter = Counter()
        self.counts: Counter = Counter(resumed=len(pending))
        self.latencies: deque[float] = deque(maxlen=LATENCIES)
        self._finish_times: deque[float] = deque()
        self._started = time.monotonic()
        self.failure: str | None = None
        self._done: queue.Queue = queue.Queue()
        self._threads = [
            threading.Thread(target=self._main, name=f"halo-serve-{self.name}", daemon=True),
            threading.Thread(target=self._completions, name=f"halo-done-{self.name}", daemon=True),
        ]

    # -- the HTTP side -------------------------------------------------------------------------------------

    def submit(self, inputs: list[dict[str, Any]], key: str | None = None) -> list[Run]:
        """Accept validated inputs: committed to the store, then queued. Raises QueueFull over `max_queue`.
        A request `key` seen before returns its runs again, accepting nothing."""
        seen = self.store.request(self.name, key) if key is not None else None
        if seen is not None:
            self.count("replayed", len(seen))
            return seen
        with self._cond:
            if self.unfinished + len(inputs) > self.max_queue:
                self.counts["refused"] += len(inputs)
                raise QueueFull(self._retry_after(self.unfinished + len(inputs) - self.max_queue))
            self.unfinished += len(inputs)  # reserved while the store commits
        try:
            runs, fresh = self.store.accept(self.name, inputs, key)
        except BaseException:
            with self._cond:
                self.unfinished -= len(inputs)
            raise
        if not fresh:  # the same key arrived meanwhile: its runs, nothing queued
            with self._cond:
                self.unfinished -= len(inputs)
            self.count("replayed", len(runs))
            return runs
        with self._cond:
            if not self._arrivals:
                self._opened = time.monotonic()
            self._arrivals.extend(runs)
            self.counts["accepted"] += len(runs)
            self._cond.notify_all()
        return runs

    def count(self, key: str, n: int = 1) -> None:
        with self._cond:
            self.counts[key] += n

    def state_of(self, row: int) -> str:
        """'running' once the executor has the run, else 'queued' (for a run without a record)."""
        with self._cond:
            return "running" if row in self._admitted else "queued"

    def snapshot(self) -> dict[str, Any]:
        """Counters, queue depth, in flight, latencies and executor totals, for /metrics and /v1/workflows."""
        now = time.monotonic()
        with self._cond:
            while self._finish_times and self._finish_times[0] < now - THROUGHPUT_S:
                self._finish_times.popleft()
            totals = Counter(self._retired)
            for ex in self._live:
                t = ex.stats.totals()
                totals.update({k: t[k] for k in STAT_KEYS})
            return {
                "counts": dict(self.counts),
                "queued": len(self._arrivals) + len(self._ready),
                "in_flight": len(self._admitted),
                "unfinished": self.unfinished,
                "throughput": len(self._finish_times) / max(min(THROUGHPUT_S, now - self._started), 1e-3),
                "latencies": sorted(self.latencies),
                "executor": dict(totals),
                "plan": None if self.xplan is None else self.xplan.as_dict()["text"],
            }

    def _retry_after(self, excess: int) -> int:
        rate = len(self._finish_times) / max(min(THROUGHPUT_S, time.monotonic() - self._started), 1e-3)
        return max(1, min(300, math.ceil(excess / rate))) if rate > 0 else 5

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float) -> bool:
        """Stop admitting, let the inputs in flight finish (up to `timeout_s`), commit their records and
        close the journal. Queued runs stay in the store for the next start. False if the executor did not
        finish in time (the journal is then left to the next start, which resumes it)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        main, completions = self._threads
        if main.ident is not None:  # started
            main.join(timeout_s)
        self._done.put(None)
        if completions.ident is not None:
            completions.join(timeout_s)
        if main.is_alive():
            return False
        self.journal.close()
        self.tools.close()
        return True

    # -- the executor thread -------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            if self.mode == "naive":
                self._serve_alone()
            else:
                self._serve_windows()
        except Exception as e:  # the workflow stops being served; its runs stay in the store
            self.failure = f"{type(e).__name__}: {e}"
            print(f"halo serve: workflow {self.name} stopped: {self.failure}", file=sys.stderr)

    def _serve_windows(self) -> None:
        first = self._first_window()
        if first is None:
            return
        xplan = self._plan([(r.row, r.params) for r in first])
        while True:
            self.xplan = xplan
            options = RunOptions(window=IN_FLIGHT, max_wait_s=self.window_s)  # upstream never drains
            ex = _Fed(xplan, self.engine, self.tools, self.journal, options)
            self._run(ex, self._rows())
            if self._stop.is_set():
                return
            xplan, self._swap = self._swap or xplan, None

    def _run(self, ex: Executor, rows) -> None:
        with self._cond:
            self._live.add(ex)
            self.counts["executors"] += 1
        try:
            ex.run(rows, self._sink)
        finally:
            t = ex.stats.totals()
            with self._cond:
                self._live.discard(ex)
                self._retired.update({k: t[k] for k in STAT_KEYS})

    def _first_window(self) -> list[Run] | None:
        with self._cond:
            while not self._stop.is_set():
                if self._due():
                    return self._release()
                wait = self._opened + self.window_s - time.monotonic()
                self._cond.wait(max(wait, 1e-3) if wait != math.inf else None)
        return None

    def _rows(self) -> Iterator:
        """The executor's row source: released runs one at a time, WAIT while none is due; it ends on stop
        or when a new plan waits for the next generation."""
        while not self._stop.is_set() and self._swap is None:
            with self._cond:
                if not self._ready and self._due():
                    self._consider_replan(self._release())
                run = self._ready.popleft() if self._ready else None
                if run is not None:
                    self._admitted[run.row] = run
            yield WAIT if run is None else (run.row, run.params)

    def _due(self) -> bool:
        batch = (self.xplan.policy if self.xplan else self.policy or BatchPolicy()).max_batch
        return bool(self._arrivals) and (
            len(self._arrivals) >= batch or time.monotonic() >= self._opened + self.window_s
        )

    def _release(self) -> list[Run]:
        """Move the window's arrivals to the ready queue, fewer inputs per request first."""
        window = sorted(self._arrivals, key=lambda r: (r.size, r.row))
        self._arrivals, self._opened = [], math.inf
        self._ready.extend(window)
        self.counts["windows"] += 1
        self._windows_since += 1
        return window

    def _consider_replan(self, window: list[Run]) -> None:
        batch = len(window) + len(self._admitted)
        grown = batch >= 2 * max(self._planned_on, 1)
        periodic = self.replan_every > 0 and self._windows_since >= self.replan_every
        if self._replanning or not (grown or periodic) or time.monotonic() - self._last_plan < REPLAN_MIN_S:
            return
        self._replanning = True
        rows = [(r.row, r.params) for r in (*self._admitted.values(), *window)]
        threading.Thread(
            target=self._replan, args=(rows,), name=f"halo-plan-{self.name}", daemon=True
        ).start()

    def _replan(self, rows: list[tuple[int, dict[str, Any]]]) -> None:
        try:
            x = self._plan(rows)
            if self.xplan is not None and _shape(x) != _shape(self.xplan):
                self._swap = x
        except Exception as e:  # the current plan stays
            print(f"halo serve: re-planning {self.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            self._replanning = False

    def _plan(self, rows: list[tuple[int, dict[str, Any]]]) -> ExecutionPlan:
        start = time.perf_counter()
        planned = api.plan(
            self.compiled,
            Batch(rows=rows),
            self.hardware,
            optimizer="heuristic",
            time_limit_s=PLAN_TIME_S,
            policy=self.policy,
        )
        with self._cond:
            self.counts["plans"] += 1
            self.counts["plan_ms"] += round((time.perf_counter() - start) * 1e3)
            self._planned_on, self._last_plan, self._windows_since = len(rows), time.monotonic(), 0
        return planned.execution

    def _serve_alone(self) -> None:
        """The baseline: each input through its own executor with the naive plan, in arrival order."""
        xplan = for_mode(self.compiled.plan, "naive", self.policy)
        self.xplan = xplan
        slots = threading.Semaphore(self.concurrency)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"halo-alone-{self.name}") as pool:
            while not self._stop.is_set():
                if not slots.acquire(timeout=0.1):
                    continue
                with self._cond:
                    while not self._arrivals and not self._stop.is_set():
                        self._cond.wait()
                    run = self._arrivals.pop(0) if self._arrivals else None
                    if run is not None:
                        self._admitted[run.row] = run
                if run is None:
                    return
                ex = _Fed(xplan, self.engine, self.tools, self.journal, RunOptions(window=1))
                pool.submit(self._alone, ex, run, slots)

    def _alone(self, ex: Executor, run: Run, slots: threading.Semaphore) -> None:
        try:
            self._run(ex, [(run.row, run.params)])
        except Exception as e:
            self.failure = f"{type(e).__name__}: {e}"
            print(f"halo serve: run {run.id} of {self.name} failed: {self.failure}", file=sys.stderr)
        finally:
            slots.release()

    def _sink(self, text: str) -> None:
        """A finished input's record, journaled by the executor: hand it to the completion thread."""
        record = json.loads(text)
        with self._cond:
            run = self._admitted.pop(record["row"], None)
        if run is not None:
            self._done.put((run, text, bool(record["error"]), time.time()))

    # -- the completion thread -----------------------------------------------------------------------------

    def _completions(self) -> None:
        """Commit finished records to the store in groups, then count them and tell the server."""
        while True:
            first = self._done.get()
            if first is None:
                return
            done = [first]
            while len(done) < 1024:
                try:
                    item = self._done.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._done.put(None)
                    break
                done.append(item)
            self.store.finish([(run.id, text, at) for run, text, _, at in done])
            now = time.monotonic()
            with self._cond:
                self.unfinished -= len(done)
                for run, _, failed, at in done:
                    self.counts["failed" if failed else "succeeded"] += 1
                    self.latencies.append(at - run.accepted)
                    self.counts["latency_s"] += at - run.accepted
                    self._finish_times.append(now)
            for run, text, _, at in done:
                self.on_done(run, text, at)


def _open_journal(path: Path, compiled: api.Compiled, pending: list[Run]) -> Journal:
    """The workflow's journal: resumed when there is one; a journal of an earlier version of the workflow
    is started over when no run of it is unfinished (finished records live in the store)."""
    fp = fingerprint(compiled)
    if not path.exists():
        return Journal(path, fp, resume=False)
    try:
        return Journal(path, fp, resume=True)
    except JournalError:
        raise
    except JournalMismatch:
        if pending:
            raise ServeError(
                f"workflow {compiled.plan.name}: {len(pending)} unfinished run(s) in the state directory "
                "belong to another version of its file; serve them with that version, or use another --state"
            ) from None
        return Journal(path, fp, resume=False)
