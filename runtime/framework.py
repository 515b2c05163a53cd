"""The framework baseline: what LangGraph or AgentScope over a serving engine do with a batch.

Each input runs the workflow on its own, ``concurrency`` inputs at a time (64 by default). Every node starts
as soon as its inputs are ready: an LLM call is its own request to an OpenAI-compatible server with continuous
batching (``vllm serve``, or Halo's loopback server over the embedded engine), a tool is called on the spot.
Nothing is merged, batched or reordered across inputs, and no prefix hints are sent; the server's own
batching and prefix cache work as they would under a framework.

    with serving("hf", {}, models, log_dir) as served:
        stats = run(plan, rows, "out.jsonl", served.servers, served.model_map)
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import networkx as nx

from halo.batch import RowError
from halo.plan import LogicalPlan, OpNode, evaluate
from halo.runtime import records, structured
from halo.runtime.engines import make_engine
from halo.runtime.engines.base import GenResult
from halo.runtime.engines.openai import OpenAIEngine
from halo.runtime.executor import InputState
from halo.runtime.llm_requests import build_request
from halo.runtime.stats import NodeStats, RunStats
from halo.runtime.toolbox import Toolbox

CONCURRENCY = 64  # inputs in flight, as a framework's batch call would run them


class _Framework:
    def __init__(
        self, plan: LogicalPlan, servers: dict[str, str], model_map: dict[str, str], concurrency: int
    ):
        self.plan = plan
        self.ops = {op.id: op for op in plan.nodes()}
        self.preds = {n: set(plan.graph.predecessors(n)) for n in self.ops}
        self.desc = {n: nx.descendants(plan.graph, n) for n in self.ops}
        llm_nodes = [op for op in self.ops.values() if op.kind == "llm"]
        missing = sorted({op.llm_model() for op in llm_nodes} - set(servers))
        if missing:
            raise ValueError(f"no server for model(s) {', '.join(missing)}")
        # At most every LLM node of every input in flight: each request gets a connection of its own.
        width = concurrency * max(1, len(llm_nodes))
        self.clients = {
            url: OpenAIEngine(base_url=url, model_map=model_map, max_concurrency=width, timeout=900.0)
            for url in sorted(set(servers.values()))
        }
        self.client_of = {m: self.clients[url] for m, url in servers.items()}
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(concurrency * max(1, len(self.ops)), thread_name_prefix="halo-fw")
        self.events: queue.Queue = queue.Queue()
        self.stats = RunStats(nodes={n: NodeStats() for n in self.ops})
        self.tools = Toolbox(plan)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for client in self.clients.values():
            client.close()
        self.tools.close()

    def run(self, rows: Iterable, output: Path) -> RunStats:
        t0 = time.perf_counter()
        out: dict[int, dict] = {}
        inflight: dict[int, InputState] = {}
        source = iter(rows)
        exhausted = False
        while True:
            while not exhausted and len(inflight) < self.concurrency:
                item = next(source, None)
                if item is None:
                    exhausted = True
                elif isinstance(item, RowError):
                    self.stats.rejected += 1
                    out[item.row] = records.rejected_record(item.row, item.reason)
                else:
                    row, params = item
                    inflight[row] = inp = InputState(row, params, dict(params), set(self.ops))
                    self._start_ready(inp, t0)
                    if not inp.todo:  # a workflow without operators
                        out[row] = self._record(inflight.pop(row))
            if exhausted and not inflight:
                break
            row, node, value, error, result, start, end = self.events.get()
            inp = inflight[row]
            self._account(node, result, start - t0, end - t0, error)
            self._finish(inp, node, value, error)
            if not inp.todo and not inp.running:
                out[row] = self._record(inflight.pop(row))
            else:
                self._start_ready(inp, t0)
        self.stats.seconds = time.perf_counter() - t0
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as f:
            for row in sorted(out):
                f.write(records.dumps(out[row]) + "\n")
        return self.stats

    def _start_ready(self, inp: InputState, t0: float) -> None:
        for node in [n for n in inp.todo if n not in inp.running and not (self.preds[n] & inp.todo)]:
            inp.running.add(node)
            self.pool.submit(self._call, inp.row, node, dict(inp.env))

    def _call(self, row: int, node: str, env: dict[str, Any]) -> None:
        """Run one node for one input on a worker thread; the outcome goes to the event queue."""
        op = self.ops[node]
        start = time.perf_counter()
        result: list[GenResult] = []
        try:
            if op.kind == "llm":
                value, error = self._llm(op, env, result)
            else:
                value, error = self.tools.run(op, env)[0], None
        except Exception as e:  # a failure is data for this input
            value, error = None, f"{type(e).__name__}: {e}"
        self.events.put((row, node, value, error, result, start, time.perf_counter()))

    def _llm(self, op: OpNode, env: dict[str, Any], results: list[GenResult]) -> tuple[Any, str | None]:
        """One request (plus one repair request for an invalid structured reply, as Halo does)."""
        req = build_request(op, env, prefix_keys=False, retain_s=None)
        client = self.client_of[op.llm_model()]
        for attempt in range(2):
            res = client.generate([req])[0]
            results.append(res)
            if res.error:
                return None, f"LLM call failed: {res.error}"
            if op.out.kind != "struct":
                return res.text, None
            try:
                return structured.parse(res.text, op.out), None
            except structured.OutputError as e:
                if attempt:
                    return None, f"invalid structured output: {e}; reply was {res.text[:120]!r}"
                req = replace(req, prompt=structured.repair_prompt(req.prompt, op.out, str(e)))
        raise AssertionError("unreachable")

    def _account(self, node: str, results: list[GenResult], start: float, end: float, error) -> None:
        st = self.stats.nodes[node]
        st.calls += max(1, len(results))
        st.repairs += max(0, len(results) - 1)
        st.seconds += end - start
        st.span(start, end)
        for res in results:
            st.prompt_tokens += res.prompt_tokens
            st.completion_tokens += res.completion_tokens
            st.cached_tokens += res.cached_tokens
            if not res.error:
                st.output_tokens.append(res.completion_tokens)

    def _finish(self, inp: InputState, node: str, value: Any, error: str | None) -> None:
        inp.running.discard(node)
        inp.todo.discard(node)
        self.stats.nodes[node].instances += 1
        if error is None:
            inp.env[node] = value
            return
        self.stats.nodes[node].errors += 1
        inp.errors.append({"node": node, "error": error})
        for d in self.desc[node]:
            if d in inp.todo and d not in inp.running:
                inp.todo.discard(d)
                inp.errors.append({"node": d, "error": f"skipped: depends on failed '{node}'"})

    def _record(self, inp: InputState) -> dict:
        self.stats.inputs += 1
        self.stats.failed += bool(inp.errors)
        outputs = {}
        for key, expr in self.plan.returns:
            try:
                outputs[key] = evaluate(expr, inp.env)
            except KeyError:
                outputs[key] = None
        return {"row": inp.row, "inputs": inp.params, "outputs": outputs, "error": inp.errors or None}


def run(
    plan: LogicalPlan,
    rows: Iterable,
    output: str | Path,
    servers: dict[str, str],
    model_map: dict[str, str] | None = None,
    concurrency: int = CONCURRENCY,
) -> RunStats:
    """Run every row as the framework baseline; records (as `halo run` writes them) go to `output` in row
    order. `servers` maps each declared model to its server's base URL (`.../v1`); `model_map` renames
    declared models to the names the server knows."""
    fw = _Framework(plan, servers, model_map or {}, concurrency)
    try:
        return fw.run(rows, Path(output))
    finally:
        fw.close()


@dataclass
class Served:
    """Where a framework sends its requests: {declared model: base URL}, the model names the servers know,
    and how to empty their prefix caches between two runs (where a server offers it)."""

    servers: dict[str, str]
    model_map: dict[str, str] = field(default_factory=dict)
    reset: Callable[[], None] = lambda: None


@contextlib.contextmanager
def serving(engine: str, engine_options: dict, models: list[str], log_dir: Path) -> Iterator[Served]:
    """The OpenAI-compatible server(s) a framework would use on `engine`, started and warm. `openai`: the
    given server (`base_url`); `vllm`: one `vllm serve` per model (runtime.engines.vllm.serve), after the
    engines kept warm in this process are shut down; any other engine: Halo's loopback server over it, every
    model loaded first."""
    if engine == "openai":
        url = engine_options.get("base_url", "http://127.0.0.1:8000/v1")
        yield Served(dict.fromkeys(models, url), dict(engine_options.get("model_map") or {}))
        return
    if engine == "vllm":
        from halo.runtime.engines.vllm import release_warm, reset_prefix_caches, serve

        release_warm()  # engines this process kept warm hold the GPU memory the servers need
        with serve(models, engine_options, log_dir) as urls:
            yield Served(urls, {}, lambda: reset_prefix_caches(urls))
        return
    from halo.runtime.engines.serve import build_server

    eng = make_engine(engine, **engine_options)
    try:
        for model in models:
            eng.load(model)
        server = build_server(eng)
        thread = threading.Thread(target=server.serve_forever, name="halo-serve", daemon=True)
        thread.start()
        host, port = server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        try:
            yield Served(dict.fromkeys(models, f"http://{host}:{port}/v1"))
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
    finally:
        eng.close()
