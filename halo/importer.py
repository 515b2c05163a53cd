"""Convert a Halo reference-prototype YAML template into a `.halo` workflow.

The prototype's templates (`graph: {nodes, edges}`) pass data through one flat per-query context keyed
by output names. The converter walks the nodes in dependency order and resolves every context key a
node reads to the Halo expression of its latest writer, so data flow becomes references:

- `input` node outputs become workflow parameters (`user_query: text`);
- `inference` nodes become `llm(...)` calls whose prompt renders each declared input as an
  `[Input::name]` section (as the prototype's executor did) and whose `outputs` become a schema;
- `db_queries` become `sql(...)` bindings before (or, for `post_llm`, after) their LLM;
- `processor: regex_param_extractor` becomes `py("halo.runtime.tools.builtins:regex_params", ...)`;
- `http` nodes, which the prototype only simulated with a sleep, call the sleep endpoint of a Halo
  tool server.

Whatever cannot be expressed is reported in `ImportResult.notes` and as comments in the output.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import sqlglot
import yaml

from halo import sql as halo_sql

PY_REGEX_PARAMS = "halo.runtime.tools.builtins:regex_params"
DEFAULT_TOOL_SERVER = "http://127.0.0.1:8765"
DUCKDB_FILES = {
    "tpch": "data/tpch.duckdb",
    "imdb": "data/imdb.duckdb",
    "wiki": "data/wiki.duckdb",
    "tpcc": "data/tpcc.duckdb",
}
# Prototype sampling defaults (engines.py): kept so a converted workflow asks for the same decoding.
LLM_DEFAULTS = {"max_tokens": 1024, "temperature": 0.2, "top_p": 0.9}
SQL_TYPES = {
    "int": "INT",
    "integer": "INT",
    "bigint": "BIGINT",
    "numeric": "NUMERIC",
    "float": "DOUBLE PRECISION",
    "text": "TEXT",
    "str": "TEXT",
    "date": "DATE",
    "bool": "BOOLEAN",
    "json": "JSON",
}
HALO_TYPES = {
    "int": "int",
    "integer": "int",
    "bigint": "int",
    "numeric": "float",
    "float": "float",
    "text": "text",
    "str": "text",
    "date": "text",
    "bool": "bool",
    "json": "json",
}
NODE_FIELDS = {
    "id",
    "type",
    "engine",
    "model",
    "system_prompt",
    "inputs",
    "outputs",
    "db_queries",
    "processor",
    "config",
    "sleep_s",
    "sleep_ms",
    "latency_s",
    "latency_ms",
    "timeout_s",
    "timeout_ms",
}
QUERY_FIELDS = {
    "name",
    "sql",
    "parameters",
    "param_types",
    "post_llm",
    "result_mappings",
    "required_inputs",
    "plans",
}
_KEYWORDS = {"import", "workflow", "model", "db", "return", "true", "false", "null"}
_CTX = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


class TemplateImportError(ValueError):
    """The YAML is not a template the converter understands; the message says where and why."""


@dataclass
class ImportResult:
    text: str
    notes: list[str] = field(default_factory=list)


def convert(
    yaml_path: str | Path,
    *,
    target: str = "duckdb",
    dsn: str | None = None,
    tool_server: str = DEFAULT_TOOL_SERVER,
) -> ImportResult:
    """Convert one template. `target` is `duckdb` (files under data/) or `postgres` (`dsn`, default
    `postgresql:///<dataset>`); `tool_server` is the base URL whose `/sleep?s=N` stands in for http nodes."""
    if target not in ("duckdb", "postgres"):
        raise ValueError("target must be 'duckdb' or 'postgres'")
    path = Path(yaml_path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TemplateImportError(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise TemplateImportError(
            f"{path}{where}: not valid YAML: {getattr(e, 'problem', None) or e}"
        ) from None
    return _Converter(path, doc, target, dsn, tool_server.rstrip("/")).run()


# -- the converter ----------------------------------------------------------------------------------------


@dataclass
class _Writer:
    """A node that writes a context key, and the Halo expression that reads it."""

    node: str  # step id in the expanded DAG
    expr: str
    type: str = "json"


@dataclass
class _Step:
    """One operator of the expanded prototype DAG: an input/LLM/processor/http node or a db query."""

    id: str
    kind: str  # input | llm | py | http | sql
    node: dict
    query: dict = field(default_factory=dict)  # a sql step's db query (empty for the other kinds)
    post: bool = False
    binding: str = ""


class _Converter:
    def __init__(self, path: Path, doc: Any, target: str, dsn: str | None, server: str):
        self.path, self.target, self.dsn, self.server = path, target, dsn, server
        self.graph = self._graph(doc)
        self.notes: list[str] = []
        self.names: set[str] = set(_KEYWORDS)
        self.writers: dict[str, list[_Writer]] = {}
        self.params: dict[str, str] = {}  # parameter name -> type
        self.models: dict[str, str] = {}  # model id -> name
        self.read: set[tuple[str, str]] = set()  # (writer step, context key) pairs some step reads
        self.deps: dict[str, set[str]] = {}  # step id -> step ids it references
        self.lines: list[str] = []
        self.db_name = ""

    def fail(self, msg: str) -> TemplateImportError:
        return TemplateImportError(f"{self.path}: {msg}")

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)

    # -- structure ---------------------------------------------------------------------------------------

    def _graph(self, doc: Any) -> dict:
        if not isinstance(doc, dict) or not isinstance(doc.get("graph"), dict):
            raise self.fail("expected a mapping with a top-level 'graph:' key")
        g = doc["graph"]
        nodes = g.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            raise self.fail("'graph.nodes' must be a non-empty list")
        seen = set()
        for i, n in enumerate(nodes):
            if not isinstance(n, dict) or not isinstance(n.get("id"), str):
                raise self.fail(f"node #{i + 1} must be a mapping with a string 'id'")
            if n["id"] in seen:
                raise self.fail(f"duplicate node id '{n['id']}'")
            seen.add(n["id"])
            kind = n.get("type", "inference")
            if kind not in ("input", "inference", "processor", "http"):
                raise self.fail(
                    f"node '{n['id']}': unknown type '{kind}' (input, inference, processor, http)"
                )
            for key in ("inputs", "outputs"):
                if not isinstance(n.get(key) or [], list):
                    raise self.fail(f"node '{n['id']}': '{key}' must be a list")
        edges = g.get("edges") or []
        if not isinstance(edges, list):
            raise self.fail("'graph.edges' must be a list")
        for e in edges:
            if (
                not isinstance(e, dict)
                or not isinstance(e.get("from"), str)
                or not isinstance(e.get("to"), str)
            ):
                raise self.fail(f"edge {e!r} must be a mapping with 'from' and 'to' node ids")
        return g

    def _order(self) -> list[dict]:
        """Nodes in a topological order of the edges, ties broken by declaration order."""
        nodes = self.graph["nodes"]
        index = {n["id"]: i for i, n in enumerate(nodes)}
        g = nx.DiGraph()
        g.add_nodes_from(index)
        for e in self.graph.get("edges") or []:
            missing = [x for x in (e["from"], e["to"]) if x not in index]
            if missing:
                self.note(f"edge {e['from']} -> {e['to']} names no node '{missing[0]}'; it is ignored")
            else:
                g.add_edge(e["from"], e["to"])
        try:
            order = list(nx.lexicographical_topological_sort(g, key=index.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = " -> ".join(u for u, _ in nx.find_cycle(g))
            raise self.fail(f"edges form a cycle: {cycle}") from None
        self.edges = g
        return [nodes[index[n]] for n in order]

    def _steps(self, ordered: list[dict]) -> list[_Step]:
        steps: list[_Step] = []
        for n in ordered:
            kind = {"input": "input", "inference": "llm", "processor": "py", "http": "http"}[
                n.get("type", "inference")
            ]
            queries = n.get("db_queries") or []
            if queries and kind != "llm":
                raise self.fail(f"node '{n['id']}': db_queries are only supported on inference nodes")
            for q in queries:
                if (
                    not isinstance(q, dict)
                    or not isinstance(q.get("name"), str)
                    or not isinstance(q.get("sql"), str)
                ):
                    raise self.fail(
                        f"node '{n['id']}': every db_queries item needs a 'name' and an 'sql' string"
                    )
            pre = [
                _Step(f"{n['id']}__pre__{q['name']}", "sql", n, q) for q in queries if not q.get("post_llm")
            ]
            post = [
                _Step(f"{n['id']}__post__{q['name']}", "sql", n, q, post=True)
                for q in queries
                if q.get("post_llm")
            ]
            steps += [*pre, _Step(n["id"], kind, n), *post]
        return steps

    # -- naming and context ------------------------------------------------------------------------------

    def name(self, want: str) -> str:
        base = re.sub(r"\W", "_", want).strip("_") or "x"
        if base[0].isdigit():
            base = f"n_{base}"
        name, i = base, 2
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def write(self, key: str, step: _Step, expr: str, typ: str = "json") -> None:
        self.writers.setdefault(key, []).append(_Writer(step.id, expr, typ))

    def resolve(self, key: str, step: _Step) -> _Writer | None:
        """The latest writer of `key` before `step` (as a serial run of the template would see it)."""
        found = self.writers.get(key)
        if not found:
            if any(key in (n.get("outputs") or []) for n in self.graph["nodes"]):
                self.note(
                    f"'{step.id}' reads '{key}' before any node writes it (no edge orders them); "
                    "the read is dropped"
                )
                return None
            self.note(f"'{key}' is read by '{step.id}' but written by no node: it becomes a text parameter")
            self.params[key] = "text"
            self.names.add(key)
            w = _Writer("", key, "text")
            self.writers[key] = [w]
            return w
        if len(found) > 1:
            self.note(
                f"'{key}' is written by several nodes ({', '.join(w.node or 'input' for w in found)}); "
                f"'{step.id}' reads the latest one, '{found[-1].node}'"
            )
        w = found[-1]
        self.read.add((w.node, key))
        if w.node:
            self.deps.setdefault(step.id, set()).add(w.node)
        return w

    # -- emission ----------------------------------------------------------------------------------------

    def run(self) -> ImportResult:
        g = self.graph
        steps = self._steps(self._order())
        self._header_notes()
        self._declare(steps)
        body: list[str] = []
        for step in steps:
            body += {
                "input": self._input,
                "llm": self._llm,
                "py": self._py,
                "http": self._http,
                "sql": self._sql,
            }[step.kind](step)
        self._check_edges(steps)
        returns = self._returns(steps)
        wf = self.name(g.get("name") or self.path.stem)
        out = [f"# Converted from {self.path.name} (graph '{g.get('name', '')}') by halo import-yaml."]
        out += _comment(str(g.get("description") or "").strip())
        for ex in g.get("examples") or []:
            out.append(f"# example input: {json.dumps(ex, ensure_ascii=False)}")
        if self.notes:
            out += ["#", "# Conversion notes (what the prototype did that this file cannot say exactly):"]
            for n in self.notes:
                out += _comment(f"- {n}", indent="#   ", first="# ")
        params = ", ".join(f"{k}: {t}" for k, t in self.params.items())
        out.append(f"workflow {wf}({params}) {{")
        for model_id, name in self.models.items():
            out.append(f"  model {name} = {_str(model_id)}")
        out.append(f"  {self._db_decl()}" if self.db_name else "")
        out += body
        out.append("")
        out.append("  return " + ",\n         ".join(returns))
        out.append("}")
        text = "\n".join(line for i, line in enumerate(out) if line or (i and out[i - 1])) + "\n"
        return ImportResult(text, list(self.notes))

    def _header_notes(self) -> None:
        g = self.graph
        if g.get("examples"):
            self.note(
                f"'examples' ({len(g['examples'])}) are not part of a workflow; they are kept as comments "
                "(put them in a JSONL batch to run them)"
            )
        if any("mapping" in e for e in g.get("edges") or []):
            self.note(
                "edges' 'mapping' is not converted: the prototype never reads it (data flows by context key)"
            )
        for n in g["nodes"]:
            extra = sorted(set(n) - NODE_FIELDS)
            if extra:
                self.note(
                    f"node '{n['id']}': field(s) {', '.join(extra)} not converted (the prototype ignores them)"
                )
            for q in n.get("db_queries") or []:
                extra = sorted(set(q) - QUERY_FIELDS)
                if extra:
                    self.note(f"query '{q['name']}': field(s) {', '.join(extra)} not converted")
                if q.get("plans"):
                    self.note(
                        f"query '{q['name']}': planner-hint 'plans' ({len(q['plans'])}) have no Halo "
                        "equivalent; the query runs with the database's own plan"
                    )

    def _declare(self, steps: list[_Step]) -> None:
        for s in steps:
            if s.kind == "llm":
                model = s.node.get("model")
                if not isinstance(model, str):
                    raise self.fail(f"inference node '{s.id}' needs a 'model'")
                if model not in self.models:
                    self.models[model] = self.name(model.rsplit("/", 1)[-1].lower())
                if s.node.get("engine", "vllm") != "vllm":
                    self.note(f"node '{s.id}': engine '{s.node['engine']}' becomes Halo's LLM engine choice")
            if s.kind == "sql" and not self.db_name:
                self.dataset = self._dataset(s.query["sql"])
                self.db_name = self.name(self.dataset)
        if self.models:
            self.note(
                "the prototype sent the system prompt and the input sections as one raw completion "
                "(no chat template); Halo passes them as system and user messages"
            )
        if self.db_name:
            self.note(
                "the prototype trimmed query results in prompts to 5 rows and 2000 characters per "
                "field; Halo renders whole results (add LIMIT in SQL to bound them)"
            )

    def _dataset(self, sql: str) -> str:
        stem = self.path.stem.lower()
        for prefix, ds in (
            ("tpch", "tpch"),
            ("tpcc", "tpcc"),
            ("imdb", "imdb"),
            ("finewiki", "wiki"),
            ("wiki", "wiki"),
        ):
            if stem.startswith(prefix):
                return ds
        low = sql.lower()
        for table, ds in (
            ("lineitem", "tpch"),
            ("bmsql_", "tpcc"),
            ("title_basics", "imdb"),
            ("pages", "wiki"),
        ):
            if table in low:
                return ds
        return "db"

    def _db_decl(self) -> str:
        if self.target == "postgres":
            return f"db {self.db_name} = postgres({_str(self.dsn or f'postgresql:///{self.dataset}')})"
        if self.dataset == "tpcc":
            self.note(
                "TPC-C (BenchmarkSQL bmsql_* tables) has no generator in workloads/data; load it into "
                "data/tpcc.duckdb or convert with target='postgres'"
            )
        return f"db {self.db_name} = duckdb({_str(DUCKDB_FILES.get(self.dataset, 'data/db.duckdb'))})"

    def _input(self, step: _Step) -> list[str]:
        for key in step.node.get("outputs") or []:
            if key in self.params:
                continue
            name = self.name(key)
            self.params[name] = "text"
            self.write(key, step, name, "text")
        return []

    def _llm(self, step: _Step) -> list[str]:
        n = step.node
        outputs = n.get("outputs") or []
        if not outputs:
            raise self.fail(f"inference node '{step.id}' declares no outputs")
        sections = []
        keys = list(n.get("inputs") or [])
        keys += [
            k
            for q in n.get("db_queries") or []
            if not q.get("post_llm")
            for k in [q["name"], *(q.get("result_mappings") or {})]
            if k not in keys
        ]
        for key in keys:
            w = self.resolve(key, step)
            if w is not None:
                sections.append(f"[Input::{key}]\n{{{w.expr}}}")
        system = self._system_template(str(n.get("system_prompt") or "").strip(), step)
        prompt = "\n\n".join(sections)
        if "{{" in system or "}}" in system:
            # halo.template rejects escaped braces after a template's last hole, so a system prompt with
            # literal braces goes first in the prompt (as in the prototype's raw completion prompt).
            prompt, system = f"{system}\n\n{prompt}", ""
            self.note(
                "system prompts with literal braces (JSON examples) are put at the head of the prompt, as "
                "in the prototype's raw completion prompt: Halo's template parser rejects {{ }} after the "
                "last placeholder, so they cannot be a system template of their own"
            )
        binding = step.binding = self.name(step.id)
        schema = self._llm_schema(n, outputs)
        lines = ["", f"  # {step.id}: {n.get('model')}"]
        lines.append(f"  {binding} = llm({self.models[n['model']]},")
        if system:
            lines.append(f"    system = {_long(system, 6)},")
        lines.append(f"    prompt = {_long(prompt, 6)},")
        lines.append("    " + ", ".join(f"{k} = {v}" for k, v in LLM_DEFAULTS.items()) + ")")
        lines.append(f"    -> {{ {', '.join(f'{_field(k)}: {t}' for k, t in schema)} }}")
        for key, t in schema:
            self.write(key, step, f"{binding}.{_field(key)}", t)
        if "search_keyword" in outputs:
            self.note(
                f"node '{step.id}': the prototype cut 'search_keyword' at the first comma; SQL parameters "
                "bound to it apply TRIM(SPLIT_PART(..., ',', 1)), prompts show the whole value"
            )
        return lines

    def _system_template(self, text: str, step: _Step) -> str:
        """A prototype system prompt as a Halo template: braces escaped, `{{ key }}` resolved to a hole."""
        out, last = [], 0
        for m in _CTX.finditer(text):
            out.append(text[last : m.start()].replace("{", "{{").replace("}", "}}"))
            w = self.resolve(m.group(1).split(".")[0], step)
            out.append("{" + _extend(w, m.group(1)) + "}" if w else "")
            last = m.end()
        out.append(text[last:].replace("{", "{{").replace("}", "}}"))
        return "".join(out)

    def _llm_schema(self, node: dict, outputs: list[str]) -> list[tuple[str, str]]:
        """Output fields typed by the SQL parameter types that consume them, else by the JSON the system
        prompt asks for, else text."""
        consumer: dict[str, str] = {}
        for n in self.graph["nodes"]:
            for q in n.get("db_queries") or []:
                types = q.get("param_types") or {}
                for p, tpl in (q.get("parameters") or {}).items():
                    m = _CTX.fullmatch(str(tpl).strip())
                    if m and m.group(1) in outputs and str(types.get(p, "")).lower() in _halo_types():
                        consumer.setdefault(m.group(1), _halo_types()[str(types[p]).lower()])
        prompt = str(node.get("system_prompt") or "")
        return [(k, consumer.get(k) or _json_hint(prompt, k)) for k in outputs]

    def _py(self, step: _Step) -> list[str]:
        n = step.node
        if n.get("processor") != "regex_param_extractor":
            raise self.fail(
                f"processor node '{step.id}': unsupported processor '{n.get('processor')}' "
                "(only regex_param_extractor converts)"
            )
        inputs, outputs = n.get("inputs") or [], n.get("outputs") or []
        if len(inputs) != 1 or len(outputs) != 1:
            raise self.fail(f"processor node '{step.id}' must have exactly one input and one output")
        text = self.resolve(inputs[0], step)
        config = n.get("config") or {}
        unknown = sorted(set(config) - {"enums", "regex", "defaults", "normalize", "allow_multi"})
        if unknown:
            self.note(f"processor '{step.id}': config key(s) {', '.join(unknown)} not converted")
        binding = step.binding = self.name(outputs[0])
        args = [f"text = {text.expr if text else _str('')}"]
        args += [
            f"{k} = {_literal(config[k], 4)}"
            for k in ("enums", "regex", "defaults", "normalize", "allow_multi")
            if k in config
        ]
        fields = _regex_fields(config)
        lines = [
            "",
            f"  # {step.id}: rule-based parameter extraction (regex_param_extractor)",
            f"  {binding} = py({_str(PY_REGEX_PARAMS)},",
            *[f"    {a}," for a in args],
            "    pure = true)",
            f"    -> {{ {', '.join(f'{_field(k)}: {t}' for k, t in fields)} }}",
        ]
        self.write(outputs[0], step, binding, "struct")
        return lines

    def _http(self, step: _Step) -> list[str]:
        n = step.node
        seconds = _sleep_seconds(n)
        self.note(
            "http nodes were simulated in the prototype (a Gamma-distributed sleep with the given mean, "
            f"no request); here they GET {self.server}/sleep?s=<mean> on a Halo tool server, which "
            "sleeps that long, and send the node's inputs as query parameters (identical GETs "
            "across a batch may be coalesced; the prototype slept once per query)"
        )
        query = []
        for key in n.get("inputs") or []:
            w = self.resolve(key, step)
            if w is not None:
                query.append(f"{_field(key)}: {w.expr}")
        outputs = n.get("outputs") or []
        binding = step.binding = self.name(outputs[0] if len(outputs) == 1 else step.id)
        for key in outputs:
            self.write(key, step, binding)
        if len(outputs) > 1:
            self.note(
                f"http node '{step.id}': all of its outputs ({', '.join(outputs)}) read the one response"
            )
        args = [_str("GET"), _str(f"{self.server}/sleep?s={_num(seconds)}")]
        if query:
            args.append(f"query = {{ {', '.join(query)} }}")
        args.append(f"timeout = {_num(max(10.0, 2 * seconds + 5))}")
        return [
            "",
            f"  # {step.id}: simulated API call (mean {_num(seconds)} s)",
            f"  {binding} = http({', '.join(args)})",
        ]

    def _sql(self, step: _Step) -> list[str]:
        q, n = step.query, step.node
        text = q["sql"].strip().replace("%%", "%")
        if "%%" in q["sql"]:
            self.note("'%%' in SQL (psycopg's escape for '%') is written as '%'")
        types = {k: str(v).lower() for k, v in (q.get("param_types") or {}).items()}
        binds: list[tuple[str, str]] = []
        for p, value in (q.get("parameters") or {}).items():
            text, new = self._bind(step, text, p, value, types.get(p))
            binds += new
        if q.get("required_inputs"):
            self.note(
                f"query '{q['name']}': required_inputs ({', '.join(q['required_inputs'])}) not converted; "
                "the prototype skipped the query when one was missing, Halo binds null"
            )
        llm = n["id"]
        if step.post and not self._reaches(step.id, llm):
            text = _after_cte(text)
            key = (n.get("outputs") or [])[0]
            w = next(w for w in reversed(self.writers[key]) if w.node == llm)
            binds.append(("after_llm", w.expr))
            self.deps.setdefault(step.id, set()).add(llm)
            self.note(
                f"post-LLM query '{q['name']}' reads nothing from its LLM; a CTE binding :after_llm to "
                f"{w.expr} keeps it after '{llm}' (Halo orders operators by data flow only)"
            )
        try:
            stmts = halo_sql.parse(text)
        except halo_sql.SqlParseError as e:
            raise self.fail(
                f"query '{q['name']}': SQL does not parse after conversion: {e.message}"
            ) from None
        if halo_sql.is_write(stmts):
            self.note(
                "writes run as Halo side effects: never merged across inputs, in declared order, each "
                "autocommitted (the prototype had no transaction across nodes either)"
            )
        used = set(halo_sql.placeholders(stmts))
        for p, _ in binds:
            if p not in used:
                raise self.fail(f"query '{q['name']}': parameter '{p}' is not used in the SQL")
        missing = used - {p for p, _ in binds}
        if missing:
            raise self.fail(
                f"query '{q['name']}': SQL parameter(s) {', '.join(sorted(missing))} have no value "
                "in 'parameters'"
            )
        binding = step.binding = self.name(q["name"])
        self.write(q["name"], step, binding, "table")
        for key, pathspec in (q.get("result_mappings") or {}).items():
            m = re.fullmatch(r"rows\.0\.([A-Za-z_]\w*)", str(pathspec))
            if not m:
                raise self.fail(
                    f"query '{q['name']}': result mapping {key}: {pathspec!r} is not rows.0.<column>"
                )
            rows = ".rows" if halo_sql.is_write(text) else ""  # a write's value is {rowcount, rows}
            self.write(key, step, f"{binding}{rows}.{m.group(1)}")
        where = "after" if step.post else "before"
        args = "".join(f",\n    {p} = {e}" for p, e in binds)
        return [
            "",
            f"  # {q['name']} ({where} {llm})",
            f"  {binding} = sql({self.db_name}, {_long(_reflow(text), 6)}{args})",
        ]

    def _bind(self, step: _Step, text: str, p: str, value: Any, ptype: str | None) -> tuple[str, list]:
        """Bind one prototype parameter: returns the SQL (rewritten where needed) and the Halo bindings."""
        cast = SQL_TYPES.get((ptype or "").removesuffix("[]"))
        if ptype and not cast:
            raise self.fail(f"query '{step.query['name']}': unknown param_type '{ptype}' for '{p}'")
        if cast and ptype and ptype.endswith("[]"):
            cast += "[]"
        if not isinstance(value, str):
            return text, [(p, _literal(value, 4))]
        m = _CTX.fullmatch(value.strip())
        if m:
            w = self.resolve(m.group(1).split(".")[0], step)
            expr = _extend(w, m.group(1)) if w else "null"
            if w and m.group(1) == "search_keyword" and w.type == "text":
                return _wrap(text, p, "TRIM(SPLIT_PART(CAST({} AS TEXT), ',', 1))"), [(p, expr)]
            return (_wrap(text, p, f"CAST({{}} AS {cast})") if cast else text), [(p, expr)]
        holes = list(_CTX.finditer(value))
        if not holes:
            return text, [(p, _literal(value, 4))]
        # A template mixing text and values: build the string in SQL, one parameter per value.
        pieces, binds, last = [], [], 0
        for i, h in enumerate(holes):
            if value[last : h.start()]:
                pieces.append(_sql_str(value[last : h.start()]))
            name = p if len(holes) == 1 else f"{p}_{i + 1}"
            w = self.resolve(h.group(1).split(".")[0], step)
            binds.append((name, _extend(w, h.group(1)) if w else "null"))
            pieces.append(f"CAST(:{name} AS TEXT)")
            last = h.end()
        if value[last:]:
            pieces.append(_sql_str(value[last:]))
        self.note(
            f"query '{step.query['name']}': parameter '{p}' = {value!r} mixes text and values; the string "
            "is built in SQL with ||"
        )
        expr = "(" + " || ".join(pieces) + ")"
        return _wrap(text, p, f"CAST({expr} AS {cast})" if cast else expr, placeholder=False), binds

    def _reaches(self, step_id: str, target: str) -> bool:
        todo, seen = [step_id], set()
        while todo:
            s = todo.pop()
            if s == target:
                return True
            if s not in seen:
                seen.add(s)
                todo += list(self.deps.get(s, ()))
        return False

    def _check_edges(self, steps: list[_Step]) -> None:
        """Report prototype edges that carry no data (Halo drops them) and data reads no edge orders."""
        by_node = {s.node["id"] for s in steps if s.kind != "input"}
        for u, v in self.edges.edges:
            if u in by_node and v in by_node and not self._reaches(v, u):
                self.note(
                    f"edge {u} -> {v} only orders the nodes ({v} reads nothing {u} writes); Halo orders "
                    "by data flow, so it is not kept"
                )
        for s in steps:
            for d in sorted(self.deps.get(s.id, ())):
                owner = next(x.node["id"] for x in steps if x.id == d)
                if owner != s.node["id"] and not nx.has_path(self.edges, owner, s.node["id"]):
                    self.note(
                        f"'{s.id}' reads an output of '{owner}' without an edge between them; Halo makes "
                        "it a dependency"
                    )

    def _returns(self, steps: list[_Step]) -> list[str]:
        """Return what no node reads, and every output of the LLM nodes that end the graph."""
        sinks = {n for n in self.edges if self.edges.out_degree(n) == 0}
        written = [(key, w) for key, ws in self.writers.items() for w in ws if w.node]
        order = {s.id: i for i, s in enumerate(steps)}
        out, seen = [], set(self.params)
        for key, w in sorted(written, key=lambda kw: order[kw[1].node]):
            if (w.node, key) in self.read and w.node not in sinks:
                continue
            name = key if key not in seen else self.name(key)
            seen.add(name)
            out.append(f"{name} = {w.expr}")
        if not out:
            raise self.fail("the template writes nothing that could be returned")
        return out


# -- helpers ----------------------------------------------------------------------------------------------


def _halo_types() -> dict[str, str]:
    return {**HALO_TYPES, **{f"{k}[]": f"{v}[]" for k, v in HALO_TYPES.items() if v != "json"}}


def _extend(w: _Writer, path: str) -> str:
    rest = path.split(".")[1:]
    return ".".join([w.expr, *rest])


def _wrap(text: str, p: str, template: str, placeholder: bool = True) -> str:
    """Replace every `:p` not already followed by a `::type` cast with `template` (its `{}` is `:p`)."""
    pattern = re.compile(
        rf"(?<![:\w]):{re.escape(p)}\b" + (r"(?!\s*::)" if placeholder else r"(?:::\w+(?:\[\])?)?")
    )
    repl = template.replace("{}", f":{p}") if placeholder else template
    return pattern.sub(lambda _: repl, text)


_CLAUSES = {"FROM", "JOIN", "WHERE", "GROUP_BY", "ORDER_BY", "HAVING", "LIMIT", "UNION"}
_JOIN_SIDES = {"LEFT", "RIGHT", "INNER", "FULL", "OUTER", "CROSS"}


def _reflow(sql: str, width: int = 100) -> str:
    """Break long lines (YAML's folded `>` joins a query into one) before FROM, JOIN, WHERE, ... clauses."""
    out = []
    for line in sql.splitlines():
        if len(line) <= width:
            out.append(line)
            continue
        try:
            tokens = sqlglot.tokenize(line, read="postgres")
        except sqlglot.errors.TokenError:
            out.append(line)
            continue
        cuts = []
        for i, tok in enumerate(tokens):
            name = tok.token_type.name
            if (
                name in _CLAUSES
                and i
                and not (name == "JOIN" and tokens[i - 1].token_type.name in _JOIN_SIDES)
            ):
                cuts.append(tok.start)
            elif (
                name in _JOIN_SIDES
                and i + 1 < len(tokens)
                and tokens[i + 1].token_type.name in ("JOIN", "OUTER")
            ):
                if not (name == "OUTER" and tokens[i - 1].token_type.name in _JOIN_SIDES):
                    cuts.append(tok.start)
        indent = line[: len(line) - len(line.lstrip())]
        pieces = [line[a:b].strip() for a, b in zip([0, *cuts], [*cuts, len(line)], strict=True)]
        out += [indent + p for p in pieces if p]
    return "\n".join(out)


def _after_cte(text: str) -> str:
    cte = "_after_llm AS (SELECT CAST(:after_llm AS TEXT) AS done)"
    m = re.match(r"\s*with(\s+recursive)?\s", text, re.IGNORECASE)
    if m:
        return f"{text[: m.end()]}{cte},\n{text[m.end() :]}"
    return f"WITH {cte}\n{text}"


def _json_hint(prompt: str, key: str) -> str:
    """The type the system prompt's JSON example gives `key` ("string", 1, 0.5, true, [..], {..})."""
    m = re.search(rf'"{re.escape(key)}"\s*:\s*(.)(.{{0,40}})', prompt)
    if not m:
        return "text"
    first, rest = m.group(1), m.group(2).lstrip()
    if first == '"':
        return "text"
    if first == "[":
        if re.match(r"(integer|int\b|-?\d+\s*[,\]])", rest):
            return "int[]"
        if rest.startswith('"') and not rest.startswith('"{'):
            return "text[]"
        return "json"
    if first == "{":
        return "json"
    if first in "tf":
        return "bool"
    num = re.match(r"-?\d+(\.\d+)?", first + rest)
    if num:
        return "float" if num.group(1) else "int"
    return "text"


def _regex_fields(config: dict) -> list[tuple[str, str]]:
    defaults = config.get("defaults") or {}
    norm = config.get("normalize") or {}
    multi = config.get("allow_multi")
    names = list(dict.fromkeys([*(config.get("regex") or {}), *defaults]))
    fields = []
    for f in names:
        t = "text"
        if f in (norm.get("numeric_fields") or ()):
            t = "float" if isinstance(defaults.get(f), float) else "int"
        if multi is True or f in (multi or ()):
            t += "[]"
        fields.append((f, t))
    return fields


def _sleep_seconds(node: dict) -> float:
    for key, scale in (
        ("sleep_s", 1),
        ("latency_s", 1),
        ("timeout_s", 1),
        ("sleep_ms", 1e-3),
        ("latency_ms", 1e-3),
        ("timeout_ms", 1e-3),
    ):
        if key in node:
            return float(node[key]) * scale
    return 0.0


def _field(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise TemplateImportError(f"'{name}' is not a valid field name")
    return name


def _str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _long(s: str, indent: int) -> str:
    """A triple-quoted string, indented (the parser dedents it); a plain string when it can't be one."""
    if not s or '"""' in s or s != s.strip():
        return _str(s)
    pad = " " * indent
    body = "\n".join(pad + line if line.strip() else "" for line in textwrap.dedent(s).splitlines())
    return f'"""\n{body}\n{pad}"""'


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _literal(value: Any, indent: int) -> str:
    """A YAML value as a Halo literal (dicts and lists over several lines when long)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return _num(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, list):
        items = [_literal(v, indent + 2) for v in value]
        flat = "[" + ", ".join(items) + "]"
        if len(flat) <= 90:
            return flat
        pad = " " * (indent + 2)
        return "[\n" + ",\n".join(pad + i for i in items) + "\n" + " " * indent + "]"
    if isinstance(value, dict):
        items = [f"{_str(str(k))}: {_literal(v, indent + 2)}" for k, v in value.items()]
        flat = "{ " + ", ".join(items) + " }"
        if len(flat) <= 90:
            return flat
        pad = " " * (indent + 2)
        return "{\n" + ",\n".join(pad + i for i in items) + "\n" + " " * indent + "}"
    return _str(str(value))


def _comment(text: str, indent: str = "# ", first: str | None = None) -> list[str]:
    if not text:
        return []
    lines = textwrap.wrap(" ".join(text.split()), 100)
    return [(first if i == 0 and first else indent) + line for i, line in enumerate(lines)]
