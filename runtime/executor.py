"""The coordinator: runs a logical plan over a batch on a real engine and real tools.

Work is dispatched per input as soon as its inputs are ready (wavefront). Identical calls are served
once: from memory or the journal when already done, or by joining a call still in flight. LLM calls
queue per model and run in micro-batches sized by a token budget that uses the output lengths seen so
far; batches keep prefix groups together and order prompts by length. Tools run on a thread pool
while the engine works, so CPU tool work overlaps LLM work. A failed call fails only the inputs that
depend on it; everything is journaled so that a crashed run resumes without losing or repeating work.

This module is the event loop (admit, dispatch, start, complete, finish, flush); its rules live beside
it: `batch_formation` (engine batches), `call_cache` (memo, calls in flight, journal lookups),
`llm_requests` (requests, their token budget, retries) and `kv_retention`.
"""

from __future__ import annotations

import queue
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from halo.batch import RowError
from halo.consolidate import call_key
from halo.execution import ExecutionPlan
from halo.plan import OpNode, evaluate
from halo.runtime import structured
from halo.runtime.batch_formation import BatchFormation
from halo.runtime.call_cache import Call, CallCache
from halo.runtime.engines.base import Engine, GenResult
from halo.runtime.journal import Journal
from halo.runtime.llm_requests import build_request, expected_tokens, retryable
from halo.runtime.records import rejected_record
from halo.runtime.stats import NodeStats, RunStats
from halo.runtime.toolbox import Toolbox

WAIT = object()  # a row source yields this when it has no row now but may have later (`halo serve`)
WAIT_POLL_S = 0.02
BATCHES_IN_FLIGHT = 64  # engine threads for a `thread_safe` engine (more batches queue for one)


@dataclass
class RunOptions:
    """How to execute, apart from the plan: bounds, workers, retries, resume."""

    window: int = 512  # inputs in flight (bounds memory); a plan priced over more inputs raises it to theirs
    tool_workers: int = 8
    repair: bool = True  # one repair retry for invalid structured output
    llm_retries: int = 1
    memo_bytes: int = 64 * 2**20  # results kept in memory, by JSON size (the journal keeps them all)
    retry_in_doubt: bool = False  # on resume, run again a side effect that may have run (idempotent ones)
    max_wait_s: float | None = None  # longest a queued LLM call waits for a fuller batch (online serving)


@dataclass
class InputState:
    """One input in flight: its values so far, the nodes left and running, its errors."""

    row: int
    params: dict[str, Any]
    env: dict[str, Any]
    todo: set[str]
    running: set[str] = field(default_factory=set)
    errors: list[dict[str, str]] = field(default_factory=list)
    in_doubt: bool = False  # a side effect of an interrupted run may have run (not repeated)


class Executor:
    """Runs an `ExecutionPlan`: `engines` is one engine for every device, or one per device of the
    placement (an LLM node goes to the engines of its devices; one with no placed device to all)."""

    def __init__(
        self,
        xplan: ExecutionPlan,
        engines: Engine | Mapping[str, Engine] | None,
        toolbox: Toolbox,
        journal: Journal,
        options: RunOptions | None = None,
    ):
        self.xplan, self.plan, self.tools, self.journal = xplan, xplan.logical, toolbox, journal
        plan = self.plan
        self.opt = options or RunOptions()
        self.ops = {op.id: op for op in plan.nodes()}
        self.order = list(xplan.order)
        self.rank = {n: i for i, n in enumerate(self.order)}
        self.graph = plan.graph.copy()
        self.graph.add_edges_from(xplan.order_edges, order=True)
        # Nodes that share engine batches wait for each other (the plan's fusion sets, priced as shared).
        siblings = {n: [m for m in group if m != n] for group in xplan.fusion_sets for n in group}
        llm = [n for n, op in self.ops.items() if op.kind == "llm"]
        policy = xplan.policy
        self.batches = BatchFormation(
            policy.max_batch,
            policy.batch_tokens,
            siblings,
            self.rank,
            {n: self.ops[n].llm_model() for n in llm},
            self._expected_tokens,
            self.opt.max_wait_s,
        )
        self.prefix_nodes = set(xplan.prefix_nodes)
        self.retain_s = dict(xplan.kv_retention)
        self.slots, self.routes = _slots(engines, xplan.placement, llm)
        self.engine = self.slots[0][1] if self.slots else None
        self.candidates: list[tuple[int, str]] = []
        self.topo = list(nx.lexicographical_topological_sort(self.graph, key=self.rank.__getitem__))
        self.level = {n: i for i, n in enumerate(self.topo)}
        # Operator at a time: node i opens once nodes 0..i-1 (topological order) are done for every input;
        # instances of a node that is not open yet are parked on it until it opens.
        self.opened = 0
        self.parked: dict[str, list[int]] = defaultdict(list)
        self.preds = {n: set(self.graph.predecessors(n)) for n in self.ops}
        self.succs = {n: list(self.graph.successors(n)) for n in self.ops}
        self.desc = {n: nx.descendants(self.graph, n) for n in self.ops}
        self.stats = RunStats(nodes={n: NodeStats() for n in self.ops})
        self.events: queue.Queue = queue.Queue()
        self.pool = ThreadPoolExecutor(max(1, self.opt.tool_workers), thread_name_prefix="halo-tool")
        workers = sum(BATCHES_IN_FLIGHT if e.thread_safe else 4 for _, e in self.slots)
        self.gpu = ThreadPoolExecutor(max(1, workers), thread_name_prefix="halo-engine")
        self.busy: set[int] = set()  # slots whose engine runs one batch at a time, with a batch or load out
        # requests in flight per (slot, model) on a `thread_safe` engine (a client of servers that batch
        # continuously: batches go while the model has room, several at once, the models' side by side)
        self.in_flight: Counter = Counter()
        self.inputs: dict[int, InputState] = {}
        self.cache = CallCache(journal, self.opt.memo_bytes)
        self.finished: list[int] = []  # rows whose every node is done, not yet flushed
        self.unstarted: dict[str, int] = defaultdict(int)  # admitted instances not yet started
        self.done_count: dict[str, int] = defaultdict(int)
        self.total_inputs = 0
        self.outstanding = 0  # tool calls and engine batches whose event is still due
        self.t0 = 0.0

    # -- driver ------------------------------------------------------------------------------------------

    def run(
        self,
        rows: Iterable[tuple[int, dict[str, Any]] | RowError],
        sink: Callable[[str], None],
        on_progress: Callable[[int], None] | None = None,
    ) -> RunStats:
        """Run every row; each finished input's record goes to `sink` as JSON text (after it is journaled).

        A rejected row (a `RowError`) is journaled as its record, never run.
        """
        self.t0 = time.perf_counter()
        self.stats.resumed = self.journal.count_finished()
        self.cache.resuming = self.journal.has_calls() or self.stats.resumed > 0
        source: Iterable = self._fresh(rows)
        window = max(self.opt.window, self.xplan.inputs)  # a plan over more inputs batched them together
        if self.xplan.barrier:
            source = list(source)
            window = self.total_inputs = len(source)
        it = iter(source)
        exhausted = False
        try:
            while True:
                waiting = False  # the source has no row now (WAIT): handle events, then ask again
                while not exhausted and len(self.inputs) < max(window, 1):
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                        break
                    if nxt is WAIT:
                        waiting = True
                        break
                    self._admit(*nxt)
                self._dispatch()
                self._flush(sink, on_progress)  # inputs served entirely from memory finish here
                if exhausted and not self.inputs:
                    break
                if self.outstanding == 0:
                    if exhausted:
                        raise RuntimeError(f"executor stalled with {len(self.inputs)} unfinished inputs")
                    if waiting:
                        time.sleep(WAIT_POLL_S)
                    continue
                try:
                    kind, payload = self.events.get(timeout=WAIT_POLL_S if waiting else None)
                except queue.Empty:
                    continue
                self.outstanding -= 1
                self._handle(kind, payload, sink, on_progress)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.gpu.shutdown(wait=True, cancel_futures=True)
        self.stats.seconds = time.perf_counter() - self.t0
        for _, engine in self.slots:
            self.stats.substitutions.update(getattr(engine, "substitutions", {}))
        return self.stats

    def _fresh(self, rows: Iterable) -> Iterable[Any]:
        """The rows not finished in the journal; a rejected row (a RowError) is journaled as its record."""
        done = self.journal.is_finished if self.cache.resuming else (lambda row: False)
        for item in rows:
            if item is WAIT:
                yield item
            elif isinstance(item, RowError):
                self.stats.rejected += 1
                if not done(item.row):
                    self.journal.put_output(item.row, rejected_record(item.row, item.reason))
            elif not done(item[0]):
                yield item

    def _admit(self, row: int, params: dict[str, Any]) -> None:
        self.inputs[row] = InputState(row, params, dict(params), set(self.ops))
        for n in self.ops:
            self.unstarted[n] += 1
        self.candidates.extend((row, n) for n in self.ops if not self.preds[n])
        if not self.ops:
            self.finished.append(row)

    # -- dispatch ----------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start every candidate (input, node) whose inputs are ready, in plan priority order.

        Each candidate is examined once: one whose predecessors are not all done is dropped (the last
        predecessor to finish adds it again); under operator-at-a-time one whose node is not open yet is
        parked on that node until it opens.
        """
        rank = self.rank
        while True:  # a call served from memory (or the journal) finishes at once and adds its successors
            if self.xplan.barrier:
                self._open_nodes()
            if not self.candidates:
                break
            candidates, self.candidates = self.candidates, []
            candidates.sort(key=lambda c: rank[c[1]])
            for row, node in candidates:
                inp = self.inputs.get(row)
                if inp is None or node not in inp.todo or node in inp.running:
                    continue
                if any(p in inp.todo for p in self.preds[node]):
                    continue
                if self.xplan.barrier and self.level[node] > self.opened:
                    self.parked[node].append(row)
                    continue
                self._start(inp, node)
        self._kick_engine()

    def _open_nodes(self) -> None:
        """Operator at a time: open the next nodes whose predecessors in topological order are all done."""
        while (
            self.opened + 1 < len(self.topo) and self.done_count[self.topo[self.opened]] >= self.total_inputs
        ):
            self.opened += 1
            node = self.topo[self.opened]
            self.candidates.extend((row, node) for row in self.parked.pop(node, ()))

    def _start(self, inp: InputState, node: str) -> None:
        op = self.ops[node]
        inp.running.add(node)
        self.unstarted[node] -= 1
        try:
            key = call_key(op, inp.env) if self.xplan.merge else None
        except Exception as e:  # rendering failed: a missing upstream value
            self._finish(inp.row, node, None, f"cannot prepare call: {e}")
            return
        if key is not None:
            key = f"{node}|{key}" if op.kind != "llm" else key
            hit = self.cache.finished(key)
            if hit is not None:
                self.stats.nodes[node].memo_hits += 1
                self._finish(inp.row, node, *hit)
                return
            if self.cache.join(key, inp.row, node):
                self.stats.nodes[node].coalesced += 1
                return
        elif (op.side_effect or op.kind == "llm") and self._replayed(inp, node):
            return
        call = Call(node, key, [(inp.row, node)])
        self.cache.open(call)
        if op.kind == "llm":
            call.request = build_request(op, inp.env, node in self.prefix_nodes, self.retain_s.get(node))
            self.batches.add(call)
        else:
            env = inp.env
            self.outstanding += 1
            self.pool.submit(self._run_tool, call, op, env, inp.row)

    def _replayed(self, inp: InputState, node: str) -> bool:
        """Finish a per-input call from the journal if an earlier run did it (or may have: in doubt)."""
        prior = self.cache.replay(node, inp.row, self.opt.retry_in_doubt)
        if prior is None:
            return False
        value, error, in_doubt = prior
        inp.in_doubt |= in_doubt
        self.stats.nodes[node].memo_hits += 1
        self._finish(inp.row, node, value, error)
        return True

    def _run_tool(self, call: Call, op: OpNode, env: dict[str, Any], row: int) -> None:
        """Run one tool call on a worker thread.

        A side effect is journaled around the call itself: its intent is committed right before it runs
        and its result right after, so only a call that was really running when a crash came is in doubt.
        """
        start = time.perf_counter()
        effect = op.side_effect and call.key is None
        try:
            if effect:
                self.journal.intent(op.id, row)
            value, _ = self.tools.run(op, env)
            error = None
        except Exception as e:  # a tool failure is data for the inputs that need it
            value, error = None, f"{type(e).__name__}: {e}"
        if effect:
            self.journal.put_effect(op.id, row, value, error)
        self.events.put(("tool", (call, value, error, start, time.perf_counter())))

    # -- the engine --------------------------------------------------------------------------------------

    def _kick_engine(self) -> None:
        """Give each idle engine the next micro-batch of the nodes routed to it (`BatchFormation.next_batch`);
        a `thread_safe` engine every ready batch of a model with fewer than `max_in_flight` requests out
        (a server that batches continuously fills its running batch from them; a batch that waited for the
        last one to come back would leave it half empty).

        The loop never asks a `thread_safe` engine which models are resident: it is a client of servers
        that keep their own models resident (every model it serves counts as resident), and asking them is a
        round trip per server that would hold up every arrival and completion behind it. Another engine is
        asked once per kick, and only while it is idle."""
        for slot, (_, engine) in enumerate(self.slots):
            if not engine.thread_safe:
                if slot not in self.busy:
                    resident = set(engine.resident_models())
                    if not self._send(slot, self.routes[slot], resident):
                        self._preload(slot, engine, resident)
                continue
            served = {self.ops[n].llm_model() for n in self.routes[slot]}
            while self._send(slot, self._with_room(slot, engine.max_in_flight), served):
                pass

    def _with_room(self, slot: int, limit: int) -> list[str]:
        """The nodes routed to a `thread_safe` slot whose model has fewer than `limit` requests in flight."""
        return [n for n in self.routes[slot] if self.in_flight[slot, self.ops[n].llm_model()] < limit]

    def _send(self, slot: int, nodes, resident: set[str]) -> bool:
        """Submit the next batch of `nodes` on `slot`'s engine; False when there is none."""
        batch = self.batches.next_batch(self.unstarted, resident, idle=self.outstanding == 0, nodes=nodes)
        if not batch:
            return False
        model = self.ops[batch[0].node].llm_model()
        if self.slots[slot][1].thread_safe:
            self.in_flight[slot, model] += len(batch)
        else:
            self.busy.add(slot)
        self.outstanding += 1
        self.gpu.submit(self._run_engine, slot, model, batch)
        return True

    def _preload(self, slot: int, engine: Engine, resident: set[str]) -> None:
        """An idle engine whose `resident` models have no work left loads the next model it will need
        (the plan's residency order for its devices, else plan order), while tools and upstream work go on."""
        waiting = [n for n in self.routes[slot] if self.unstarted[n] > 0 or self.batches.queues.get(n)]
        if not waiting or any(self.ops[n].model in resident for n in waiting):
            return
        models = {self.ops[n].llm_model() for n in waiting}
        devices = set(self.slots[slot][0].split("+"))
        planned = [s.model for s in sorted(self.xplan.residency, key=lambda s: s.at_s) if s.device in devices]
        model = (
            next((m for m in planned if m in models), None)
            or self.ops[min(waiting, key=self.rank.__getitem__)].llm_model()
        )
        self.busy.add(slot)
        self.outstanding += 1
        self.gpu.submit(self._load, slot, model)

    def _load(self, slot: int, model: str) -> None:
        start = time.perf_counter()
        try:
            seconds = self.slots[slot][1].load(model)
        except Exception:  # the batch that needs it loads it again and reports the error per request
            seconds = 0.0
        self.events.put(("load", (slot, model, seconds, start, time.perf_counter())))

    def _expected_tokens(self, call: Call) -> int:
        return expected_tokens(
            self.ops[call.node], call.llm_request, self.stats.nodes[call.node].output_tokens
        )

    def _run_engine(self, slot: int, model: str, batch: list[Call]) -> None:
        """Run one batch; requests that failed for a reason that may pass (an engine error, a timeout; not an
        invalid request or a greedy reply cut at max_tokens) are sent again, up to `llm_retries` times."""
        engine = self.slots[slot][1]
        start = time.perf_counter()
        load_s = 0.0
        results: list[GenResult] = []
        try:
            load_s = engine.load(model)
            pending = list(range(len(batch)))
            results = [GenResult.failed("not run")] * len(batch)
        except Exception as e:  # the model did not load: every request of the batch fails
            results, pending = [GenResult.failed(f"{type(e).__name__}: {e}") for _ in batch], []
        for attempt in range(self.opt.llm_retries + 1):
            if not pending:
                break
            if attempt:
                time.sleep(0.2 * 2 ** (attempt - 1))
            try:
                for i, r in zip(
                    pending, engine.generate([batch[i].llm_request for i in pending]), strict=True
                ):
                    results[i] = r
            except Exception as e:  # the engine itself failed: every pending request fails this attempt
                for i in pending:
                    results[i] = GenResult.failed(f"{type(e).__name__}: {e}")
            pending = [
                i
                for i in pending
                if (err := results[i].error) is not None and retryable(batch[i].llm_request, err)
            ]
        self.events.put(("llm", (slot, batch, results, load_s, start, time.perf_counter())))

    # -- completions -------------------------------------------------------------------------------------

    def _handle(self, kind: str, payload, sink, on_progress) -> None:
        if kind == "load":
            slot, model, seconds, start, end = payload
            self.busy.discard(slot)
            if seconds > 0:
                self.stats.record_load(self.slots[slot][0], model, start - self.t0, end - self.t0, True)
        elif kind == "tool":
            call, value, error, start, end = payload
            st = self.stats.nodes[call.node]
            st.calls += 1
            st.seconds += end - start
            st.span(start - self.t0, end - self.t0)
            self._complete(call, value, error)
        else:
            slot, batch, results, load_s, start, end = payload
            model = self.ops[batch[0].node].llm_model()
            if self.slots[slot][1].thread_safe:
                self.in_flight[slot, model] -= len(batch)
            else:
                self.busy.discard(slot)
            if load_s > 0:
                self.stats.record_load(
                    self.slots[slot][0], model, start - self.t0, start - self.t0 + load_s, False
                )
            per = (end - start - load_s) / max(len(batch), 1)
            members = Counter(c.node for c in batch)
            for node in members:
                self.stats.nodes[node].batches += 1
            self.stats.record_batch(
                {
                    "model": self.ops[batch[0].node].llm_model(),
                    "device": self.slots[slot][0],
                    "load_s": load_s,
                    "end": end - self.t0,
                    "nodes": dict(members),
                    "n": len(batch),
                    "prompt_tokens": sum(r.prompt_tokens for r in results),
                    "cached_tokens": sum(r.cached_tokens for r in results),
                    "steps": max((r.completion_tokens for r in results), default=0),
                    "node_steps": {
                        n: max(
                            r.completion_tokens for c, r in zip(batch, results, strict=True) if c.node == n
                        )
                        for n in members
                    },
                    "seconds": end - start - load_s,
                }
            )
            for call, res in zip(batch, results, strict=True):
                st = self.stats.nodes[call.node]
                st.calls += 1
                st.seconds += res.seconds or per
                st.engine_s += per
                st.span(start - self.t0, end - self.t0)
                st.prompt_tokens += res.prompt_tokens
                st.completion_tokens += res.completion_tokens
                st.cached_tokens += res.cached_tokens
                if not res.error:
                    st.output_tokens.append(res.completion_tokens)  # a bounded deque
                self._llm_done(call, res)
        self._flush(sink, on_progress)

    def _llm_done(self, call: Call, res: GenResult) -> None:
        op = self.ops[call.node]
        if res.error:
            self._complete(call, None, f"LLM call failed: {res.error}")
            return
        if op.out.kind != "struct":
            self._complete(call, res.text, None)
            return
        try:
            self._complete(call, structured.parse(res.text, op.out), None)
        except structured.OutputError as e:
            if self.opt.repair and not call.repaired:
                self.stats.nodes[call.node].repairs += 1
                r = call.llm_request
                call.request = replace(r, prompt=structured.repair_prompt(r.prompt, op.out, str(e)))
                call.repaired = True
                self.batches.add(call)
            else:
                self._complete(call, None, f"invalid structured output: {e}; reply was {res.text[:120]!r}")

    def _complete(self, call: Call, value: Any, error: str | None) -> None:
        self.cache.close(call, value, error, sampled=self.ops[call.node].kind == "llm")
        for row, node in call.waiters:
            self._finish(row, node, value, error)

    def _finish(self, row: int, node: str, value: Any, error: str | None) -> None:
        inp = self.inputs[row]
        inp.running.discard(node)
        inp.todo.discard(node)
        self.stats.nodes[node].instances += 1
        self.done_count[node] += 1
        if error is None:
            inp.env[node] = value
            self.candidates.extend((row, s) for s in self.succs[node])
        else:
            self._fail(inp, node, error)
        if not inp.todo and not inp.running:
            self.finished.append(row)

    def _fail(self, inp: InputState, node: str, error: str) -> None:
        self.stats.nodes[node].errors += 1
        inp.errors.append({"node": node, "error": error})
        for d in self.desc[node]:
            if d in inp.todo:
                inp.todo.discard(d)
                self.unstarted[d] -= d not in inp.running
                self.done_count[d] += 1
                inp.errors.append({"node": d, "error": f"skipped: depends on failed '{node}'"})

    def _flush(self, sink, on_progress) -> None:
        done, self.finished = self.finished, []
        for row in done:
            inp = self.inputs.pop(row)
            record = {
                "row": inp.row,
                "inputs": inp.params,
                "outputs": self._outputs(inp),
                "error": inp.errors or None,
            }
            sink(self.journal.put_output(inp.row, record))
            self.stats.inputs += 1
            self.stats.failed += 1 if inp.errors else 0
            self.stats.in_doubt += inp.in_doubt
            if on_progress:
                on_progress(1)

    def _outputs(self, inp: InputState) -> dict[str, Any]:
        out = {}
        for key, expr in self.plan.returns:
            try:
                out[key] = evaluate(expr, inp.env)
            except KeyError:
                out[key] = None
        return out


def _slots(
    engines: Engine | Mapping[str, Engine] | None, placement: Mapping[str, list[str]], llm: list[str]
) -> tuple[list[tuple[str, Engine]], list[set[str]]]:
    """The distinct engines as (device names, engine) and, per engine, the LLM nodes it runs: those placed
    on one of its devices; a node placed on none of the given devices runs on every engine."""
    if engines is None:
        return [], []
    by_device = {"local": engines} if isinstance(engines, Engine) else dict(engines)
    slots: list[tuple[str, Engine]] = []
    devices: list[set[str]] = []
    for dev, engine in by_device.items():
        same = next((i for i, (_, e) in enumerate(slots) if e is engine), None)
        if same is None:
            slots.append((dev, engine))
            devices.append({dev})
        else:
            slots[same] = (f"{slots[same][0]}+{dev}", engine)
            devices[same].add(dev)
    routes: list[set[str]] = [set() for _ in slots]
    for n in llm:
        hit = [i for i, devs in enumerate(devices) if devs & set(placement.get(n, ()))]
        for i in hit or range(len(slots)):
            routes[i].add(n)
    return slots, routes
