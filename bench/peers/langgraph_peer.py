"""The LangGraph peer: three workloads written as LangGraph StateGraphs, run against the same OpenAI-compatible
server as the framework baseline, as a check that the baseline does what LangGraph does.

Each graph's edges are written out below, as a LangGraph user would write them; a node's prompt or SQL is the
workflow file's own (read from its plan, so the two cannot drift apart). LLM nodes call the server through
langchain-openai's ChatOpenAI, one request per call; SQL and Python nodes run on Halo's tools. Inputs run
through ``graph.batch`` with ``max_concurrency`` inputs in flight; a graph's parallel branches run as
LangGraph runs them (supersteps).

    python bench/peers/langgraph_peer.py workloads/llm_voting.halo -i workloads/llm_voting.jsonl \\
        --base-url http://127.0.0.1:8000/v1 --limit 64
"""

from __future__ import annotations

import argparse
import operator
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, TypedDict

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph

from halo.batch import RowError
from halo.plan import LogicalPlan, OpNode, evaluate
from halo.runtime import records, structured
from halo.runtime.stats import NodeStats, RunStats
from halo.runtime.toolbox import Toolbox

Edge = tuple[str | list[str], str]

# The data flow of each workload, by hand: `([a, b], c)` runs c once both a and b are done.
GRAPHS: dict[str, list[Edge]] = {
    "llm_voting": [
        (START, "v1"),
        (START, "v2"),
        (START, "v3"),
        (["v1", "v2", "v3"], "vote"),
        ("vote", END),
    ],
    "tpch_trident": [
        (START, "p"),
        *(("p", q) for q in ("q1", "q6", "q3", "q5", "q2", "q9", "q12", "q14", "q15")),
        (["q1", "q6"], "entry_lineitem"),
        (["q3", "q5"], "entry_revenue"),
        (["q2", "q9"], "entry_supply"),
        (["entry_lineitem", "entry_revenue", "q12"], "hub_ops"),
        (["hub_ops", "entry_supply", "q14"], "hub_full"),
        ("hub_full", "tail"),
        (["tail", "q15"], "final"),
        ("final", END),
    ],
    "tpch_fanout": [
        (START, "p"),
        *(("p", q) for q in ("nation_rev", "seg_rev", "brand_vol", "ship", "returns")),
        ("nation_rev", "s1_nation"),
        ("seg_rev", "s1_segment"),
        ("brand_vol", "s1_brand"),
        ("ship", "s1_ship"),
        ("returns", "s1_returns"),
        *(
            (["s1_nation", "s1_segment", "s1_brand", "s1_ship", "s1_returns"], s2)
            for s2 in ("s2_market", "s2_ops", "s2_risk")
        ),
        (["s2_market", "s2_ops", "s2_risk"], "final"),
        ("final", END),
    ],
}


def _merge(a: dict, b: dict) -> dict:
    return {**a, **b}


class State(TypedDict):
    values: Annotated[dict, _merge]  # the workflow's inputs and each node's output, by name
    calls: Annotated[list, operator.add]  # (node, prompt, cached, completion tokens, start, end) per call


class _Peer:
    def __init__(self, plan: LogicalPlan, servers: dict[str, str], model_map: dict[str, str]):
        if plan.name not in GRAPHS:
            raise ValueError(f"no LangGraph graph for workflow {plan.name!r} (have {', '.join(GRAPHS)})")
        self.plan, self.servers, self.model_map = plan, servers, model_map
        self.ops = {op.id: op for op in plan.nodes()}
        self.tools = Toolbox(plan)
        self.chats: dict[tuple, ChatOpenAI] = {}
        self.lock = threading.Lock()

    def graph(self):
        g = StateGraph(State)
        for name, op in self.ops.items():
            g.add_node(name, self._llm_node(op) if op.kind == "llm" else self._tool_node(op))
        for start, end in GRAPHS[self.plan.name]:
            g.add_edge(start, end)
        return g.compile()

    def _chat(self, op: OpNode) -> ChatOpenAI:
        key = (op.model, op.option("max_tokens"), op.option("temperature"), op.option("seed"))
        with self.lock:
            if key not in self.chats:
                self.chats[key] = ChatOpenAI(
                    model=self.model_map.get(op.model, op.model),
                    base_url=self.servers[op.model],
                    api_key="none",
                    max_tokens=int(op.option("max_tokens")),
                    temperature=float(op.option("temperature")),
                    seed=op.option("seed"),
                    timeout=900.0,
                    max_retries=3,
                )
            return self.chats[key]

    def _llm_node(self, op: OpNode):
        schema = structured.json_schema(op.out)
        fmt = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}} if schema else None

        def node(state: State) -> dict:
            env = state["values"]
            prompt = op.templates["prompt"].render(env)
            system = [SystemMessage(op.templates["system"].render(env))] if "system" in op.templates else []
            calls = []
            for attempt in range(2):  # one repair request for an invalid structured reply, as Halo does
                start = time.perf_counter()
                chat = self._chat(op)
                reply = chat.invoke(
                    [*system, HumanMessage(prompt)], **({"response_format": fmt} if fmt else {})
                )
                usage = reply.usage_metadata or {}
                cached = (usage.get("input_token_details") or {}).get("cache_read", 0)
                calls.append(
                    (
                        op.id,
                        usage.get("input_tokens", 0),
                        cached,
                        usage.get("output_tokens", 0),
                        start,
                        time.perf_counter(),
                    )
                )
                text = reply.content if isinstance(reply.content, str) else str(reply.content)
                if schema is None:
                    return {"values": {op.id: text}, "calls": calls}
                try:
                    return {"values": {op.id: structured.parse(text, op.out)}, "calls": calls}
                except structured.OutputError as e:
                    if attempt:
                        raise
                    prompt = structured.repair_prompt(prompt, op.out, str(e))
            raise AssertionError("unreachable")

        return node

    def _tool_node(self, op: OpNode):
        def node(state: State) -> dict:
            start = time.perf_counter()
            value, _ = self.tools.run(op, state["values"])
            return {"values": {op.id: value}, "calls": [(op.id, 0, 0, 0, start, time.perf_counter())]}

        return node


def run(
    plan: LogicalPlan,
    rows,
    output: str | Path,
    servers: dict[str, str],
    model_map: dict[str, str] | None = None,
    concurrency: int = 64,
) -> RunStats:
    """Run every row through the workflow's LangGraph graph, `concurrency` inputs at a time; records (as
    `halo run` writes them) go to `output` in row order. `servers`: declared model -> base URL."""
    peer = _Peer(plan, servers, model_map or {})
    stats = RunStats(nodes={n: NodeStats() for n in peer.ops})
    out: dict[int, dict] = {}
    valid = []
    for item in rows:
        if isinstance(item, RowError):
            stats.rejected += 1
            out[item.row] = records.rejected_record(item.row, item.reason)
        else:
            valid.append(item)
    graph = peer.graph()
    t0 = time.perf_counter()
    try:
        finals = graph.batch(
            [{"values": dict(params), "calls": []} for _, params in valid],
            config={"max_concurrency": concurrency},
            return_exceptions=True,
        )
    finally:
        peer.tools.close()
    stats.seconds = time.perf_counter() - t0
    for (row, params), final in zip(valid, finals, strict=True):
        stats.inputs += 1
        if isinstance(final, BaseException):
            stats.failed += 1
            out[row] = {
                "row": row,
                "inputs": params,
                "outputs": None,
                "error": [{"error": repr(final)[:500]}],
            }
            continue
        for node, prompt, cached, completion, start, end in final["calls"]:
            st = stats.nodes[node]
            st.calls += 1
            st.prompt_tokens += prompt
            st.cached_tokens += cached
            st.completion_tokens += completion
            st.seconds += end - start
            st.span(start - t0, end - t0)
        for node in peer.ops:
            stats.nodes[node].instances += node in final["values"]
        env = final["values"]
        outputs = {k: evaluate(e, env) for k, e in plan.returns}
        out[row] = {"row": row, "inputs": params, "outputs": outputs, "error": None}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as f:
        for row in sorted(out):
            f.write(records.dumps(out[row]) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    from halo import api

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workflow")
    parser.add_argument("-i", "--input", required=True)
    parser.add_argument("--base-url", required=True, help="the OpenAI-compatible server (.../v1)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("-o", "--output", default=".halo/langgraph.jsonl")
    args = parser.parse_args(argv)
    compiled = api.compile(args.workflow)
    models = sorted({op.model for op in compiled.plan.nodes() if op.kind == "llm"})
    batch = api.load_batch(compiled, args.input, args.limit)
    stats = run(
        compiled.plan,
        batch.rows,
        args.output,
        dict.fromkeys(models, args.base_url),
        concurrency=args.concurrency,
    )
    t = stats.totals()
    print(f"{t['inputs']} inputs in {t['seconds']:.1f} s ({t['inputs_per_s']:.2f}/s), {t['failed']} failed")
    return 1 if t["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
