"""`halo serve`: the workflows it was started with, as an HTTP service (Starlette on uvicorn).

    POST /v1/workflows/{name}/runs   one input object or a list of them -> 202 {"ids": [...]}
    GET  /v1/runs/{id}               state (queued, running, done), times and the record
    GET  /v1/runs/{id}/events        server-sent events: the result when it is done
    GET  /v1/events?ids=a,b          the same for several runs (one event each, then `end`)
    GET  /v1/workflows               the served workflows: parameters, returns, queue, plan
    GET  /metrics                    Prometheus text
    GET  /health                     200 while every workflow is served, else 503 (no key needed)

Clients name workflows, never files. With an API key every endpoint but /health needs
`Authorization: Bearer KEY` (compared in constant time); a server that listens on anything but loopback
refuses to start without one. Limits: bodies over `max_body` bytes are 413; a workflow holding
`max_queue` unfinished runs answers 429 with Retry-After; inputs are read by `halo.batch`, the reader
`halo run` uses, and a request with a bad input is refused whole (422, with the same row errors).
Execution, planning and durability: `halo.serve_runner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import socket
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from halo import api, ast, types
from halo.batch import RowError, iter_rows
from halo.cost import detect_hardware
from halo.runtime.engines import Engine, check_model_map, make_engine
from halo.serve_metrics import render
from halo.serve_runner import MODES, NAIVE_WORKERS, QueueFull, Runner, ServeError, SharedEngine
from halo.serve_store import Run, Store

MAX_BODY = 1 << 20  # bytes of one request body
MAX_EVENT_IDS = 1000  # runs one event stream may follow
MAX_KEY = 200  # characters of an Idempotency-Key
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
STOP_S = 60.0  # on shutdown, how long the inputs in flight may take to finish
MAX_CONNECTIONS = 4096  # uvicorn answers 503 beyond this many connections
KEEP_ALIVE_S = 75  # idle connections are kept longer than clients keep them (httpx: 5 s), so a client
# never sends on a connection the server is closing

__all__ = ["ServeConfig", "ServeError", "Server", "serve"]


@dataclass
class ServeConfig:
    files: list[Path]
    hardware: str | None = None  # None: this machine
    engine: str = "hf"
    engine_options: dict[str, Any] = field(default_factory=dict)
    window_ms: float = 50.0
    max_batch: int | None = None  # None: the plan's engine batch
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    state: Path = Path(".halo/serve")
    max_queue: int = 10_000  # unfinished runs per workflow
    max_body: int = MAX_BODY
    replan_every: int = 100  # windows; 0: only when the batch grows
    mode: str = "halo"  # or "naive": the per-request baseline
    concurrency: int = NAIVE_WORKERS  # naive mode: inputs running at once


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Refusal(Exception):
    """An HTTP error answer: status, message and extra JSON fields or headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.headers, self.extra = status, headers, extra


class _Hub:
    """Event streams waiting for runs: fed from the completion threads, read on the event loop."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiting: dict[str, set[asyncio.Queue]] = defaultdict(set)

    def subscribe(self, ids: list[str], q: asyncio.Queue) -> None:
        for i in ids:
            self.waiting[i].add(q)

    def unsubscribe(self, ids: list[str], q: asyncio.Queue) -> None:
        for i in ids:
            subs = self.waiting.get(i)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    del self.waiting[i]

    def publish(self, run: Run, record: str, finished: float) -> None:
        """Called by a completion thread once the record is committed (a stream that subscribes later
        finds it in the store)."""
        if self.loop is not None and run.id in self.waiting:
            self.loop.call_soon_threadsafe(self._deliver, run.id, _event_data(run.id, run.workflow, record))

    def _deliver(self, run_id: str, data: str) -> None:
        for q in self.waiting.get(run_id, ()):
            q.put_nowait((run_id, data))


def _event_data(run_id: str, workflow: str, record: str) -> str:
    return f'{{"id":{json.dumps(run_id)},"workflow":{json.dumps(workflow)},"record":{record}}}'


class Server:
    """Checks the configuration, compiles the files, binds the socket and opens the store, journals and
    engine (its models loaded) when made; `serve()` runs until SIGINT or SIGTERM, then drains."""

    def __init__(self, cfg: ServeConfig):
        if not is_loopback(cfg.host) and not cfg.api_key:
            raise ServeError(
                f"--host {cfg.host} is not loopback: serving it needs an API key (--api-key or HALO_API_KEY)"
            )
        if cfg.mode not in MODES:
            raise ServeError(f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
        if cfg.window_ms < 0 or cfg.max_queue < 1 or cfg.max_body < 1:
            raise ServeError("--window-ms must be >= 0, --max-queue and the body limit >= 1")
        self.cfg, self.hub, self.key = cfg, _Hub(), (cfg.api_key or "").encode()
        compiled: dict[str, api.Compiled] = {}
        for file in cfg.files:
            c = api.compile(file)
            if c.plan.name in compiled:
                raise ServeError(f"two files serve a workflow named {c.plan.name!r}; names must be unique")
            compiled[c.plan.name] = c
        models = sorted(
            {op.llm_model() for c in compiled.values() for op in c.plan.nodes() if op.kind == "llm"}
        )
        check_model_map(models, cfg.engine_options.get("model_map", {}))
        if unknown := sorted(set(cfg.engine_options.get("servers") or {}) - set(models)):
            raise ServeError(
                f"engine option servers names {', '.join(map(repr, unknown))}, which no workflow declares"
            )
        self.sock = _bind(cfg.host, cfg.port)
        self.ready = threading.Event()
        self._inner: Engine | None = None
        self.store: Store | None = None
        self.runners: dict[str, Runner] = {}
        try:
            cfg.state.mkdir(parents=True, exist_ok=True)
            self.tmp = tempfile.TemporaryDirectory(prefix="inputs-", dir=cfg.state)
            self.store = Store(cfg.state / "runs.db")
            self._inner = make_engine(cfg.engine, **cfg.engine_options) if models else None
            engine = SharedEngine(self._inner) if self._inner else None
            if engine is not None:
                for m in models:
                    engine.load(m)  # warm before the first request
            hardware = cfg.hardware or detect_hardware()
            for name, c in compiled.items():
                self.runners[name] = Runner(
                    c,
                    self.store,
                    engine,
                    cfg.state,
                    hardware=hardware,
                    window_s=cfg.window_ms / 1e3,
                    max_batch=cfg.max_batch,
                    max_queue=cfg.max_queue,
                    replan_every=cfg.replan_every,
                    mode=cfg.mode,
                    on_done=self.hub.publish,
                    concurrency=cfg.concurrency,
                )
        except BaseException:
            self.close()
            raise
        self.port = self.sock.getsockname()[1]
        self.app = self._app()
        self._uvicorn: Any = None  # the uvicorn.Server, once serving

    def serve(self) -> None:
        import uvicorn

        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            limit_concurrency=MAX_CONNECTIONS,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        server = self._uvicorn = uvicorn.Server(config)
        try:
            server.run(sockets=[self.sock])
        finally:
            self.close()

    def shutdown(self) -> None:
        """Ask a running `serve()` to stop (as SIGTERM does)."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    def close(self) -> None:
        for r in self.runners.values():
            r.stop(STOP_S)
        self.runners = {}
        if self.store is not None:
            self.store.close()
            self.tmp.cleanup()
        if self._inner is not None:
            self._inner.close()
        self.store = self._inner = None
        self.sock.close()

    @property
    def url(self) -> str:
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        return f"http://{host}:{self.port}"

    # -- the app -------------------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(app):
            self.hub.loop = asyncio.get_running_loop()
            for r in self.runners.values():
                r.start()
            names = ", ".join(self.runners)
            print(f"halo serve: {names} on {self.url} ({self.cfg.mode} mode)", file=sys.stderr, flush=True)
            self.ready.set()
            yield
            await run_in_threadpool(self.close)

        e = self._endpoint
        routes = [
            Route("/v1/workflows/{name}/runs", e(self.submit), methods=["POST"]),
            Route("/v1/workflows", e(self.workflows)),
            Route("/v1/runs/{id}", e(self.status)),
            Route("/v1/runs/{id}/events", e(self.run_events)),
            Route("/v1/events", e(self.events)),
            Route("/metrics", e(self.metrics)),
            Route("/health", e(self.health, auth=False)),
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    def _endpoint(self, handler: Callable, auth: bool = True) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                if auth and not self._authorized(request):
                    raise _Refusal(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
                return await handler(request)
            except _Refusal as r:
                return JSONResponse({"error": str(r), **r.extra}, r.status, headers=r.headers)

        return endpoint

    def _authorized(self, request: Request) -> bool:
        if not self.key:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key)

    def _runner(self, name: str) -> Runner:
        runner = self.runners.get(name)
        if runner is None:
            raise _Refusal(404, f"no workflow {name!r} is served (GET /v1/workflows lists them)")
        return runner

    async def submit(self, request: Request) -> Response:
        runner = self._runner(request.path_params["name"])
        body = await _body(request, self.cfg.max_body)
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise _Refusal(400, f"the body is not valid JSON: {e}") from None
        items = data if isinstance(data, list) else [data]
        if not items:
            raise _Refusal(422, "no inputs: send one input object or a non-empty list of them")
        if len(items) > self.cfg.max_queue:
            raise _Refusal(413, f"{len(items)} inputs in one request; at most {self.cfg.max_queue}")
        key = request.headers.get("idempotency-key")
        if key is not None and not 0 < len(key) <= MAX_KEY:
            raise _Refusal(400, f"Idempotency-Key must be 1 to {MAX_KEY} characters")
        inputs = await run_in_threadpool(self._validate, runner, items)
        try:
            runs = await run_in_threadpool(runner.submit, inputs, key)
        except QueueFull as full:
            raise _Refusal(429, str(full), {"Retry-After": str(full.retry_after)}) from None
        ids = [r.id for r in runs]
        headers = {"Location": f"/v1/runs/{ids[0]}"} if len(ids) == 1 else None
        return JSONResponse({"workflow": runner.name, "ids": ids}, 202, headers=headers)

    def _validate(self, runner: Runner, items: list[Any]) -> list[dict[str, Any]]:
        """The inputs typed by the workflow's parameters, read by `halo.batch.iter_rows` (through a JSONL
        file: the one reader of every batch format), so each gets `halo run`'s row errors and limits."""
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=self.tmp.name, encoding="utf-8") as f:
            f.writelines(json.dumps(item) + "\n" for item in items)
            f.flush()
            rows = list(iter_rows(f.name, runner.params))
        errors = [r for r in rows if isinstance(r, RowError)]
        if errors:
            runner.count("invalid", len(items))
            raise _Refusal(
                422,
                "; ".join(f"input {e.row}: {e.reason}" for e in errors[:10]),
                inputs=[{"input": e.row, "error": e.reason} for e in errors],
            )
        return [r[1] for r in rows if not isinstance(r, RowError)]

    def _store(self) -> Store:
        if self.store is None:
            raise RuntimeError("the server is not started")
        return self.store

    async def status(self, request: Request) -> Response:
        run_id = request.path_params["id"]
        found = (await run_in_threadpool(self._store().get, [run_id])).get(run_id)
        if found is None:
            raise _Refusal(404, f"no run {run_id!r}")
        runner = self.runners.get(found["workflow"])
        done = found["finished"] is not None
        state = "done" if done else runner.state_of(found["row"]) if runner else "queued"
        return JSONResponse(
            {
                "id": run_id,
                "workflow": found["workflow"],
                "state": state,
                "accepted_at": found["accepted"],
                "finished_at": found["finished"],
                "latency_s": round(found["finished"] - found["accepted"], 6) if done else None,
                "record": json.loads(found["record"]) if done else None,
            }
        )

    async def run_events(self, request: Request) -> Response:
        return await self._stream([request.path_params["id"]])

    async def events(self, request: Request) -> Response:
        ids = list(dict.fromkeys(i for i in request.query_params.get("ids", "").split(",") if i))
        if not ids:
            raise _Refusal(422, "name the runs: /v1/events?ids=ID,ID")
        if len(ids) > MAX_EVENT_IDS:
            raise _Refusal(413, f"{len(ids)} runs in one stream; at most {MAX_EVENT_IDS}")
        return await self._stream(ids)

    async def _stream(self, ids: list[str]) -> Response:
        """One `result` event per run as it finishes (at once for finished ones), then `end`."""
        q: asyncio.Queue = asyncio.Queue()
        self.hub.subscribe(ids, q)
        try:
            found = await run_in_threadpool(self._store().get, ids)
        except BaseException:
            self.hub.unsubscribe(ids, q)
            raise
        unknown = [i for i in ids if i not in found]
        if unknown:
            self.hub.unsubscribe(ids, q)
            raise _Refusal(404, f"no run {unknown[0]!r}", unknown=unknown)

        async def stream():
            try:
                waiting = set(ids)
                for i, f in found.items():
                    if f["finished"] is not None:
                        waiting.discard(i)
                        yield _sse("result", _event_data(i, f["workflow"], f["record"]), i)
                while waiting:
                    try:
                        i, data = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if i in waiting:
                        waiting.discard(i)
                        yield _sse("result", data, i)
                yield _sse("end", json.dumps({"runs": len(ids)}))
            finally:
                self.hub.unsubscribe(ids, q)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def workflows(self, request: Request) -> Response:
        out = []
        for name, r in self.runners.items():
            snap = r.snapshot()
            out.append(
                {
                    "name": name,
                    "parameters": [_param(p) for p in r.params],
                    "returns": [k for k, _ in r.compiled.plan.returns],
                    "mode": r.mode,
                    "queued": snap["queued"],
                    "in_flight": snap["in_flight"],
                    "plan": snap["plan"],
                    "serving": r.failure is None,
                }
            )
        return JSONResponse({"workflows": out})

    async def metrics(self, request: Request) -> Response:
        return PlainTextResponse(
            render({n: r.snapshot() | {"up": r.failure is None} for n, r in self.runners.items()}),
            media_type="text/plain; version=0.0.4",
        )

    async def health(self, request: Request) -> Response:
        failing = sorted(n for n, r in self.runners.items() if r.failure is not None)
        if failing:
            return JSONResponse({"status": "failing", "failing": failing}, 503)
        return JSONResponse({"status": "ok", "workflows": sorted(self.runners)})


def serve(cfg: ServeConfig) -> None:
    """Run `halo serve` until interrupted."""
    Server(cfg).serve()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refusal(413, f"the body is {int(declared):,} bytes; at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refusal(413, f"the body is over {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    return f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "") + f"data: {data}\n\n"


def _param(p: ast.Param) -> dict[str, Any]:
    return {
        "name": p.name,
        "type": str(types.from_ref(p.type) or types.JSON),
        "required": p.default is None,
        "default": None if p.default is None else ast.literal_value(p.default),
    }
