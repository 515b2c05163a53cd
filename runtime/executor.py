"""The coordinator: runs a logical plan over a batch on a real engine and real tools.

Work is dispatched per input as soon as its inputs are ready (wavefront). Identical calls are served
once: from memory or the journal when already done, or by joining a call still in flight. LLM calls
queue per model and run in micro-batches sized by a token budget that uses the output lengths seen so
far; batches keep prefix groups together and order prompts by length. Tools run on a thread pool
while the engine works, so CPU tool work overlaps LLM work. A failed call fails only the inputs that
depend on it; everything is journaled so that a crashed run resumes without losing or repeating work.
"""

from __future__ import annotations

import hashlib
import json
import queue
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import networkx as nx

from halo.batch import RowError
from halo.batching import BatchPolicy, decoding_key, fusion_sets
from halo.consolidate import call_key
from halo.plan import LogicalPlan, OpNode, evaluate
from halo.runtime import structured
from halo.runtime.engines.base import Engine, GenRequest, GenResult
from halo.runtime.journal import Journal
from halo.runtime.records import dumps, rejected_record
from halo.runtime.stats import NodeStats, RunStats
from halo.runtime.toolbox import Toolbox
from halo.template import Template


@dataclass
class RunOptions:
    """How to execute. The defaults are Halo's; the baselines switch parts off."""

    merge: bool = True                 # serve identical calls once (memo + in-flight coalescing)
    window: int = 512                  # inputs in flight (bounds memory)
    max_batch: int = BatchPolicy.max_batch          # LLM requests per engine call
    batch_tokens: int = BatchPolicy.batch_tokens    # LLM micro-batch budget: prompt + expected output tokens
    tool_workers: int = 8
    operator_at_a_time: bool = False   # barrier between operators (the operator-at-a-time baseline)
    prefix_keys: bool = True           # tell the engine which requests share a prefix
    repair: bool = True                # one repair retry for invalid structured output
    llm_retries: int = 1
    priority: list[str] = field(default_factory=list)   # node order from the physical plan
    kv_ttl_s: float | None = 30.0      # keep an LLM call's KV this long for a follow-up (None/0: off)
    memo_bytes: int = 64 * 2**20       # results kept in memory, by JSON size (the journal keeps them all)
    retry_in_doubt: bool = False       # on resume, run again a side effect that may have run (idempotent ones)


@dataclass
class _Input:
    row: int
    params: dict[str, Any]
    env: dict[str, Any]
    todo: set[str]
    running: set[str] = field(default_factory=set)
    errors: list[dict[str, str]] = field(default_factory=list)
    in_doubt: bool = False             # a side effect of an interrupted run may have run (not repeated)


@dataclass
class _Call:
    """One executed call and the (input row, node) instances waiting on it.

    Identical LLM calls of different nodes share a key, so the waiters name their node.
    """

    node: str
    key: str | None
    waiters: list[tuple[int, str]]
    request: GenRequest | None = None
    repaired: bool = False


class _Memo:
    """Finished call results by key as JSON text, least recently used first, bounded in bytes.

    An entry counts its key and text plus a fixed overhead (the dict entry and its objects), so the bound
    is close to the memory really held. Each hit decodes its own copy, so inputs never share (or alter)
    one another's values.
    """

    def __init__(self, limit: int):
        self.limit, self.size, self.evicted = limit, 0, 0
        self.items: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()

    def get(self, key: str) -> tuple[Any, str | None] | None:
        hit = self.items.get(key)
        if hit is None:
            return None
        self.items.move_to_end(key)
        return decode(*hit)

    def put(self, key: str, text: str | None, error: str | None) -> None:
        old = self.items.pop(key, None)
        self.size += _size(key, text, error) - (_size(key, *old) if old else 0)
        self.items[key] = (text, error)
        while self.size > self.limit and self.items:
            k, v = self.items.popitem(last=False)
            self.size -= _size(k, *v)
            self.evicted += 1


_ENTRY_BYTES = 300   # what one memo entry costs besides its key and text (measured on CPython 3.11)


def _size(key: str, text: str | None, error: str | None) -> int:
    return _ENTRY_BYTES + len(key) + len(text or "") + len(error or "")


def decode(text: str | None, error: str | None) -> tuple[Any, str | None]:
    """A stored result: (value, error)."""
    return (None if text is None else json.loads(text)), error


def kv_retention(plan: LogicalPlan, ttl_s: float | None) -> dict[str, float]:
    """LLM nodes whose KV the engine should keep for ``ttl_s`` seconds after the call (Continuum's TTL).

    The rule: LLM node A retains when some LLM node B (for the same input) satisfies all of
      1. B runs on A's model;
      2. B is reachable from A through tool nodes only (sql/http/py; a direct edge counts), so B is issued
         after A finishes, with at most tool calls in between;
      3. B's conversation starts with A's: equal system templates (or both absent), equal JSON schemas
         (a schema extends the system message), and B's prompt template begins with A's: every piece of
         A's template but the last is the same piece of B's, and A's last piece is the same hole or a
         text that B's next piece starts with (e.g. A = "User: {q}\nAssistant:", B = "User: {q}\nAssistant:
         {a}\nUser: ...").
    Then B's tokens begin with A's system + prompt, and the engine serves them from A's retained KV.
    A B whose prompt merely starts with the hole ``{a}`` does not qualify: chat formatting puts A's reply
    after A's prompt and the assistant header, so B could share only the system prompt with A, which
    ``prefix_key`` reuse already serves without holding a per-input KV.
    Returns {node id: ttl_s}; empty when ``ttl_s`` is None or <= 0.
    """
    if not ttl_s or ttl_s <= 0:
        return {}
    graph = plan.graph
    ops = {n: graph.nodes[n]["op"] for n in graph}
    out: dict[str, float] = {}
    for a, op_a in ops.items():
        if op_a.kind != "llm" or "prompt" not in op_a.templates:
            continue
        seen, stack = {a}, list(graph.successors(a))
        while stack:
            b = stack.pop()
            if b in seen:
                continue
            seen.add(b)
            op_b = ops[b]
            if op_b.kind != "llm":
                stack.extend(graph.successors(b))
            elif _continues(op_a, op_b):
                out[a] = float(ttl_s)
                break
    return out


def _continues(a: OpNode, b: OpNode) -> bool:
    """Rules 1 and 3 of `kv_retention`: same model, same system and schema, B's prompt starts with A's."""
    if a.model != b.model or _pieces(a.templates.get("system")) != _pieces(b.templates.get("system")):
        return False
    if structured.json_schema(a.out) != structured.json_schema(b.out) or "prompt" not in b.templates:
        return False
    pa, pb = _pieces(a.templates["prompt"]), _pieces(b.templates["prompt"])
    n = len(pa)
    if n == 0 or len(pb) < n or pa[: n - 1] != pb[: n - 1]:
        return False
    if isinstance(pa[-1], str):
        return isinstance(pb[n - 1], str) and pb[n - 1].startswith(pa[-1])
    return pa[-1] == pb[n - 1]


def _pieces(t: Template | None) -> tuple | None:
    """A template's pieces with holes reduced to what they render (their position is irrelevant)."""
    if t is None:
        return None
    return tuple(p if isinstance(p, str) else (p.parts, p.as_json) for p in t.pieces)


class Executor:
    def __init__(self, plan: LogicalPlan, engine: Engine | None, toolbox: Toolbox, journal: Journal,
                 options: RunOptions | None = None):
        self.plan, self.engine, self.tools, self.journal = plan, engine, toolbox, journal
        self.opt = options or RunOptions()
        self.ops = {op.id: op for op in plan.nodes()}
        rank = {n: i for i, n in enumerate(self.opt.priority)}
        self.order = sorted(self.ops, key=lambda n: rank.get(n, len(rank)))
        self.rank = {n: i for i, n in enumerate(self.order)}
        # Nodes that share engine batches wait for each other (the plan's fusion sets; not in the baseline).
        self.siblings = {} if self.opt.operator_at_a_time else \
            {n: [m for m in group if m != n] for group in fusion_sets(plan) for n in group}
        self.candidates: list[tuple[int, str]] = []
        self.topo = [op.id for op in plan.nodes()]
        self.level = {n: i for i, n in enumerate(self.topo)}
        # Operator at a time: node i opens once nodes 0..i-1 (topological order) are done for every input;
        # instances of a node that is not open yet are parked on it until it opens.
        self.opened = 0
        self.parked: dict[str, list[int]] = defaultdict(list)
        self.preds = {n: set(plan.graph.predecessors(n)) for n in self.ops}
        self.desc = {n: nx.descendants(plan.graph, n) for n in self.ops}
        self.stats = RunStats(nodes={n: NodeStats() for n in self.ops})
        self.events: queue.Queue = queue.Queue()
        self.pool = ThreadPoolExecutor(max(1, self.opt.tool_workers), thread_name_prefix="halo-tool")
        self.gpu = ThreadPoolExecutor(1, thread_name_prefix="halo-engine")
        self.engine_busy = False
        self.inputs: dict[int, _Input] = {}
        self.memo = _Memo(self.opt.memo_bytes)
        self.resuming = False                # the journal held work when the run started: look there too
        self.finished: list[int] = []        # rows whose every node is done, not yet flushed
        self.inflight: dict[str, _Call] = {}
        self.llm_queue: dict[str, list[_Call]] = defaultdict(list)     # by node: one node per micro-batch
        self.unstarted: dict[str, int] = defaultdict(int)                # admitted instances not yet started
        self.done_count: dict[str, int] = defaultdict(int)
        self.total_inputs = 0
        self.outstanding = 0                 # tool calls and engine batches whose event is still due
        self.t0 = 0.0

    # -- driver ------------------------------------------------------------------------------------------

    def run(self, rows: Iterable[tuple[int, dict[str, Any]] | RowError], sink: Callable[[str], None],
            on_progress: Callable[[int], None] | None = None) -> RunStats:
        """Run every row; each finished input's record goes to `sink` as JSON text (after it is journaled).

        A rejected row (a `RowError`) is journaled as its record, never run.
        """
        self.t0 = time.perf_counter()
        self.stats.resumed = self.journal.count_finished()
        self.resuming = self.journal.has_calls() or self.stats.resumed > 0
        source: Iterable = self._fresh(rows)
        window = self.opt.window
        if self.opt.operator_at_a_time:
            source = list(source)
            window = self.total_inputs = len(source)
        it = iter(source)
        exhausted = False
        try:
            while True:
                while not exhausted and len(self.inputs) < max(window, 1):
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                        break
                    self._admit(*nxt)
                self._dispatch()
                self._flush(sink, on_progress)     # inputs served entirely from memory finish here
                if exhausted and not self.inputs:
                    break
                if self.outstanding == 0:
                    if exhausted:
                        raise RuntimeError(f"executor stalled with {len(self.inputs)} unfinished inputs")
                    continue
                kind, payload = self.events.get()
                self.outstanding -= 1
                self._handle(kind, payload, sink, on_progress)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.gpu.shutdown(wait=True, cancel_futures=True)
        self.stats.seconds = time.perf_counter() - self.t0
        if self.engine is not None:
            self.stats.substitutions = dict(getattr(self.engine, "substitutions", {}))
        return self.stats

    def _fresh(self, rows: Iterable) -> Iterable[tuple[int, dict[str, Any]]]:
        """The rows not finished in the journal; a rejected row (a RowError) is journaled as its record."""
        done = self.journal.is_finished if self.resuming else (lambda row: False)
        for item in rows:
            if isinstance(item, RowError):
                self.stats.rejected += 1
                if not done(item.row):
                    self.journal.put_output(item.row, rejected_record(item.row, item.reason))
            elif not done(item[0]):
                yield item

    def _admit(self, row: int, params: dict[str, Any]) -> None:
        self.inputs[row] = _Input(row, params, dict(params), set(self.ops))
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
        while True:   # a call served from memory (or the journal) finishes at once and adds its successors
            if self.opt.operator_at_a_time:
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
                if self.opt.operator_at_a_time and self.level[node] > self.opened:
                    self.parked[node].append(row)
                    continue
                self._start(inp, node)
        self._kick_engine()

    def _open_nodes(self) -> None:
        """Operator at a time: open the next nodes whose predecessors in topological order are all done."""
        while self.opened + 1 < len(self.topo) and \
                self.done_count[self.topo[self.opened]] >= self.total_inputs:
            self.opened += 1
            node = self.topo[self.opened]
            self.candidates.extend((row, node) for row in self.parked.pop(node, ()))

    def _start(self, inp: _Input, node: str) -> None:
        op = self.ops[node]
        inp.running.add(node)
        self.unstarted[node] -= 1
        try:
            key = call_key(op, inp.env) if self.opt.merge else None
        except Exception as e:   # rendering failed: a missing upstream value
            self._finish(inp.row, node, None, f"cannot prepare call: {e}")
            return
        if key is not None:
            key = f"{node}|{key}" if op.kind != "llm" else key
            hit = self.memo.get(key)
            if hit is None and (self.memo.evicted or self.resuming) and (stored := self.journal.get_call(key)):
                self.memo.put(key, *stored)
                hit = decode(*stored)
            if hit is not None:
                self.stats.nodes[node].memo_hits += 1
                self._finish(inp.row, node, *hit)
                return
            call = self.inflight.get(key)
            if call is not None:
                call.waiters.append((inp.row, node))
                self.stats.nodes[node].coalesced += 1
                return
        elif (op.side_effect or op.kind == "llm") and self._replayed(inp, node):
            return
        call = _Call(node, key, [(inp.row, node)])
        if key is not None:
            self.inflight[key] = call
        if op.kind == "llm":
            call.request = self._request(op, inp.env)
            self.llm_queue[node].append(call)
        else:
            env = inp.env
            self.outstanding += 1
            self.pool.submit(self._run_tool, call, op, env, inp.row)

    def _replayed(self, inp: _Input, node: str) -> bool:
        """Finish a per-input call from the journal if an earlier run did it (or may have: in doubt)."""
        prior = self.journal.get_effect(node, inp.row)
        if prior is None:
            return False
        state, value, error = prior
        if state == "intent":
            if self.opt.retry_in_doubt:
                return False
            inp.in_doubt = True
            error = ("interrupted by a crash: this call may have run; it is not repeated "
                     "(--retry-in-doubt runs it again)")
        self.stats.nodes[node].memo_hits += 1
        self._finish(inp.row, node, value, error)
        return True

    @cached_property
    def _retain_s(self) -> dict[str, float]:
        return kv_retention(self.plan, self.opt.kv_ttl_s)

    def _request(self, op: OpNode, env: dict[str, Any]) -> GenRequest:
        system = op.templates["system"].render(env) if "system" in op.templates else None
        prefix = None
        if self.opt.prefix_keys:
            head = (system or "") + "\x00" + op.templates["prompt"].static_prefix()
            prefix = hashlib.blake2b(f"{op.model}\x00{head}".encode(), digest_size=8).hexdigest()
        top_p = op.option("top_p")
        return GenRequest(model=op.model, prompt=op.templates["prompt"].render(env), system=system,
                          max_tokens=int(op.option("max_tokens", 256)),
                          temperature=float(op.option("temperature", 0.0)), seed=op.option("seed"),
                          json_schema=structured.json_schema(op.out), prefix_key=prefix,
                          retain_s=self._retain_s.get(op.id), top_p=None if top_p is None else float(top_p))

    def _run_tool(self, call: _Call, op: OpNode, env: dict[str, Any], row: int) -> None:
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
        except Exception as e:   # a tool failure is data for the inputs that need it
            value, error = None, f"{type(e).__name__}: {e}"
        if effect:
            self.journal.put_effect(op.id, row, value, error)
        self.events.put(("tool", (call, value, error, start, time.perf_counter())))

    # -- the engine --------------------------------------------------------------------------------------

    def _kick_engine(self) -> None:
        """Give the idle engine one node's micro-batch.

        A node is ready to go when its queue (with those of the nodes it shares batches with) fills a batch,
        or when none of their instances is still waiting upstream: one full batch costs about as much as a
        small one on a GPU, so a node whose requests are still on their way waits while other work runs.
        When nothing else is in flight, the largest queue goes anyway. Among ready nodes: resident model
        first, then plan priority.
        """
        if self.engine_busy or self.engine is None:
            return
        nodes = [n for n, q in self.llm_queue.items() if q]
        if not nodes:
            return
        ready = [n for n in nodes if self._batch_ready(n)]
        if not ready:
            if self.outstanding > 0:
                return
            ready = [max(nodes, key=lambda n: len(self.llm_queue[n]))]
        resident = set(self.engine.resident_models())
        node = min(ready, key=lambda n: (self.ops[n].model not in resident, self.rank[n]))
        batch = self._take_batch(node, [])
        for other in sorted(ready, key=self.rank.get):   # fuse ready nodes that decode alike into one batch
            if other != node and self._same_decoding(node, other) and len(batch) < self.opt.max_batch:
                batch = self._take_batch(other, batch)
        self.engine_busy = True
        self.outstanding += 1
        self.gpu.submit(self._run_engine, self.ops[node].model, batch)

    def _batch_ready(self, node: str) -> bool:
        group = [node, *self.siblings.get(node, ())]
        return (sum(len(self.llm_queue[n]) for n in group) >= self.opt.max_batch
                or all(self.unstarted[n] <= 0 for n in group))

    def _same_decoding(self, a: str, b: str) -> bool:
        """Two nodes can share a micro-batch: same model, output length and sampling."""
        return decoding_key(self.ops[a]) == decoding_key(self.ops[b])

    def _take_batch(self, node: str, batch: list[_Call]) -> list[_Call]:
        """Add the node's calls to `batch`: prefix groups together, short prompts first, within the budgets."""
        calls = self.llm_queue[node]
        calls.sort(key=lambda c: (c.request.prefix_key or "", len(c.request.prompt)))
        budget = sum(self._expected_tokens(c) for c in batch)
        taken = 0
        for c in calls:
            cost = self._expected_tokens(c)
            if batch and (len(batch) >= self.opt.max_batch or budget + cost > self.opt.batch_tokens):
                break
            batch.append(c)
            budget += cost
            taken += 1
        self.llm_queue[node] = calls[taken:]
        return batch

    def _expected_tokens(self, call: _Call) -> int:
        """Prompt tokens (≈ chars/4) plus the p90 of output lengths seen for this node (max_tokens before)."""
        seen = self.stats.nodes[call.node].output_tokens
        if len(seen) >= 8:
            tail = sorted(seen)
            out = tail[int(0.9 * (len(tail) - 1))]
        else:
            out = call.request.max_tokens
        return (len(call.request.prompt) + len(call.request.system or "")) // 4 + out

    def _run_engine(self, model: str, batch: list[_Call]) -> None:
        start = time.perf_counter()
        load_s = 0.0
        try:
            load_s = self.engine.load(model)
            results = self.engine.generate([c.request for c in batch])
            for attempt in range(self.opt.llm_retries):
                bad = [i for i, r in enumerate(results) if r.error]
                if not bad:
                    break
                time.sleep(0.2 * 2 ** attempt)
                again = self.engine.generate([batch[i].request for i in bad])
                for i, r in zip(bad, again, strict=True):
                    results[i] = r
        except Exception as e:   # the engine itself failed: every request of the batch fails
            results = [GenResult.failed(f"{type(e).__name__}: {e}") for _ in batch]
        self.events.put(("llm", (batch, results, load_s, start, time.perf_counter())))

    # -- completions -------------------------------------------------------------------------------------

    def _handle(self, kind: str, payload, sink, on_progress) -> None:
        if kind == "tool":
            call, value, error, start, end = payload
            st = self.stats.nodes[call.node]
            st.calls += 1
            st.seconds += end - start
            st.span(start - self.t0, end - self.t0)
            self._complete(call, value, error)
        else:
            batch, results, load_s, start, end = payload
            self.engine_busy = False
            if load_s > 0:
                self.stats.model_loads += 1
                self.stats.load_seconds += load_s
            per = (end - start - load_s) / max(len(batch), 1)
            members = Counter(c.node for c in batch)
            for node in members:
                self.stats.nodes[node].batches += 1
            self.stats.record_batch({
                "model": self.ops[batch[0].node].model, "nodes": dict(members), "n": len(batch),
                "prompt_tokens": sum(r.prompt_tokens for r in results),
                "cached_tokens": sum(r.cached_tokens for r in results),
                "steps": max((r.completion_tokens for r in results), default=0),
                "node_steps": {n: max(r.completion_tokens for c, r in zip(batch, results, strict=True) if c.node == n)
                               for n in members},
                "seconds": end - start - load_s})
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
                    st.output_tokens.append(res.completion_tokens)   # a bounded deque
                self._llm_done(call, res)
        self._flush(sink, on_progress)

    def _llm_done(self, call: _Call, res: GenResult) -> None:
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
                r = call.request
                call.request = replace(r, prompt=structured.repair_prompt(r.prompt, op.out, str(e)))
                call.repaired = True
                self.llm_queue[call.node].append(call)
            else:
                self._complete(call, None, f"invalid structured output: {e}; reply was {res.text[:120]!r}")

    def _complete(self, call: _Call, value: Any, error: str | None) -> None:
        op = self.ops[call.node]
        if call.key is not None:
            self.inflight.pop(call.key, None)
            text = None if error else dumps(value)
            self.memo.put(call.key, text, error)
            self.journal.put_call(call.key, text, error)
        elif op.kind == "llm":   # a sampled call: journaled so that it is not drawn again (tools: `_run_tool`)
            self.journal.put_effect(call.node, call.waiters[0][0], value, error)
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
            self.candidates.extend((row, s) for s in self.plan.graph.successors(node))
        else:
            self._fail(inp, node, error)
        if not inp.todo and not inp.running:
            self.finished.append(row)

    def _fail(self, inp: _Input, node: str, error: str) -> None:
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
            record = {"row": inp.row, "inputs": inp.params, "outputs": self._outputs(inp),
                      "error": inp.errors or None}
            sink(self.journal.put_output(inp.row, record))
            self.stats.inputs += 1
            self.stats.failed += 1 if inp.errors else 0
            self.stats.in_doubt += inp.in_doubt
            if on_progress:
                on_progress(1)

    def _outputs(self, inp: _Input) -> dict[str, Any]:
        out = {}
        for key, expr in self.plan.returns:
            try:
                out[key] = evaluate(expr, inp.env)
            except KeyError:
                out[key] = None
        return out
