"""Engine workers on Ray: one actor per device, each holding its own engine, behind a local `Engine` proxy.

`WorkerPool` starts Ray on this machine, or connects to a cluster (``address`` or ``$RAY_ADDRESS``), and
creates one actor per `WorkerSpec`, with one GPU for a GPU device. ``pool.engines[device]`` is a
`RemoteEngine`: an `Engine` that forwards to that actor, so the executor drives local and remote engines
alike. Ray restarts a worker whose process dies and sends its in-flight call again (generation has no
side effects; the executor's journal guards the rest); the new worker reloads its models on first use.
Each proxy keeps a timeline of loads, batches and releases in the driver's `time.perf_counter` seconds.
Ray is imported only when a pool is made (the ``ray`` extra).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from halo.runtime.engines import Engine, EngineUnavailable, GenRequest, GenResult, make_engine

# Started here (not on a cluster): Ray's object store only carries requests and results.
LOCAL_INIT = {"include_dashboard": False, "object_store_memory": 256 * 2**20}


class WorkerError(EngineUnavailable):
    """A worker could not be placed, or died more often than it may be restarted (the CLI reports it as a
    user error: the engine cannot run where the plan put it)."""


@dataclass(frozen=True)
class WorkerSpec:
    """One device's worker. ``engine``: a `make_engine` name, or a picklable callable taking
    ``engine_options`` and returning an `Engine`. ``resources``: Ray custom resources the worker needs
    (to pin it to a node)."""

    device: str
    engine: str | Callable[..., Engine]
    engine_options: dict = field(default_factory=dict)
    gpu: bool = False
    resources: dict[str, float] = field(default_factory=dict)
    cpus: float = 0.0  # CPUs reserved on its node (a CPU engine's one; so one worker per 1-CPU node)


def specs_for(devices: Iterable[str], engine: str, engine_options: dict | None = None) -> list[WorkerSpec]:
    """One spec per device id: ``cpu*`` ids get CPU workers (one CPU each), ``gpu*`` ids a GPU each."""
    specs = []
    for device in devices:
        if not device.startswith(("cpu", "gpu")):
            raise ValueError(f"no engine worker runs on device {device!r} (only cpu* and gpu* devices)")
        gpu = device.startswith("gpu")
        specs.append(WorkerSpec(device, engine, dict(engine_options or {}), gpu, cpus=0.0 if gpu else 1.0))
    return specs


def _make(engine: str | Callable[..., Engine], options: dict) -> Engine:
    return make_engine(engine, **options) if isinstance(engine, str) else engine(**options)


class _Worker:
    """The actor: one engine, made inside the worker process."""

    def __init__(self, engine: str | Callable[..., Engine], options: dict):
        self.factory, self.options = engine, options
        self.engine = _make(engine, options)
        self.incarnation = uuid.uuid4().hex  # a restarted worker gets a new one: the proxy counts them

    def info(self) -> dict:
        import ray

        node = ray.get_runtime_context().get_node_id()
        return {"pid": os.getpid(), "node_id": node, "incarnation": self.incarnation}

    def call(self, method: str, *args):
        """Run engine ``method``; reply with its value, the seconds it took, the resident models, the
        substitutions and this incarnation."""
        start = time.perf_counter()
        own: dict[str, Callable[..., object]] = {"generate": self._generate, "release": self._release}
        value = own[method](*args) if method in own else getattr(self.engine, method)(*args)
        busy = time.perf_counter() - start
        return value, busy, self.engine.resident_models(), dict(self.engine.substitutions), self.incarnation

    def _generate(self, requests: list[GenRequest]) -> tuple[list[GenResult], float]:
        """Results, and the seconds spent loading the batch's models first (after a restart, say)."""
        load_s = 0.0
        for model in dict.fromkeys(r.model for r in requests):
            with contextlib.suppress(Exception):  # generate fails that model's requests with the reason
                load_s += self.engine.load(model)
        return self.engine.generate(requests), load_s

    def _release(self, model: str, level: int) -> str:
        """Free ``model``: the engine's ``sleep(model, level=)`` if it has one, else its ``unload(model)``,
        else, when it is the only resident model, a fresh engine. Returns what was done."""
        sleep, unload = getattr(self.engine, "sleep", None), getattr(self.engine, "unload", None)
        if callable(sleep):
            sleep(model, level=level)
            return f"sleep{level}"
        if callable(unload):
            unload(model)
            return "unload"
        if self.engine.resident_models() == [model]:
            self.engine.close()
            self.engine = _make(self.factory, self.options)
            return "unload"
        return "kept"


class RemoteEngine(Engine):
    """An `Engine` whose calls run on one worker actor. ``resident_models`` answers from the last reply,
    without waiting behind a running batch. ``timeline``: one dict per load, generate and release (``kind``,
    ``model``, ``start``, ``end``, ``n`` requests; a release adds ``action``), placed by the worker's own
    duration before the reply's arrival and never overlapping (a worker runs one call at a time)."""

    def __init__(self, spec: WorkerSpec, actor, info: dict):
        super().__init__(spec.engine_options.get("model_map"))
        self.name = (
            spec.engine if isinstance(spec.engine, str) else getattr(spec.engine, "__name__", "engine")
        )
        self.device, self.actor = spec.device, actor
        self.timeline: list[dict] = []
        self._lock = threading.Lock()
        self._resident: list[str] = []
        self._prefetching: set[str] = set()
        self._incarnations = {info["incarnation"]}
        self._free_at = 0.0  # end of the last recorded event

    @property
    def restarts(self) -> int:
        """Restarts of this worker seen in its replies (two between the same pair of replies count once)."""
        return len(self._incarnations) - 1

    def _unwrap(self, reply) -> tuple:
        value, busy, resident, substitutions, incarnation = reply
        with self._lock:
            self._incarnations.add(incarnation)
            self._resident = list(resident)
            self.substitutions.update(substitutions)
        return value, busy

    def _call(self, method: str, *args) -> tuple:
        """(value, seconds on the worker) of engine ``method``, waiting for the reply."""
        import ray

        try:
            return self._unwrap(ray.get(self.actor.call.remote(method, *args)))
        except ray.exceptions.RayActorError as exc:
            raise WorkerError(f"the {self.device} worker is lost (restarts or retries spent): {exc}") from exc

    def _record(self, kind: str, model: str, start: float, end: float, n: int = 0, **extra) -> None:
        with self._lock:
            start = max(start, self._free_at)
            self._free_at = end = max(end, start)
            self.timeline.append({"kind": kind, "model": model, "start": start, "end": end, "n": n, **extra})

    def worker_info(self) -> dict:
        """The worker's ``pid``, Ray ``node_id`` and ``incarnation`` (a new one after each restart)."""
        import ray

        info = ray.get(self.actor.info.remote())
        with self._lock:
            self._incarnations.add(info["incarnation"])
        return info

    def prefetch(self, model: str) -> None:
        """Start loading ``model`` on the worker and return at once. Later calls run after it (an actor
        runs one caller's calls in order); a ``load`` of it returns the seconds it waited."""
        with self._lock:
            self._prefetching.add(model)

        def done(future) -> None:
            with self._lock:
                self._prefetching.discard(model)
            if future.exception() is None:
                seconds, busy = self._unwrap(future.result())
                if seconds:
                    end = time.perf_counter()
                    self._record("load", model, end - busy, end)

        self.actor.call.remote("load", model).future().add_done_callback(done)

    def load(self, model: str) -> float:
        start = time.perf_counter()
        with self._lock:
            waited = model in self._prefetching
        seconds, busy = self._call("load", model)
        end = time.perf_counter()
        if seconds:
            self._record("load", model, end - busy, end)
        return end - start if seconds or waited else 0.0

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        (results, load_s), busy = self._call("generate", list(requests))
        end = time.perf_counter()
        model = ",".join(dict.fromkeys(r.model for r in requests))
        if load_s:
            self._record("load", model, end - busy, end - busy + load_s)
        self._record("generate", model, end - busy + load_s, end, len(requests))
        return results

    def release(self, model: str, level: int = 1) -> float:
        """Free ``model`` on the worker (level 1: weights to host memory where the engine can sleep; 2: drop
        them; engines that cannot sleep unload at either level); returns the worker's seconds."""
        if level not in (1, 2):
            raise ValueError(f"release level must be 1 or 2, got {level!r}")
        action, busy = self._call("release", model, level)
        end = time.perf_counter()
        self._record("release", model, end - busy, end, action=action)
        return busy

    def count_tokens(self, model: str, text: str) -> int:
        return self._call("count_tokens", model, text)[0]

    def resident_models(self) -> list[str]:
        with self._lock:
            return list(self._resident)

    def close(self) -> None:
        with contextlib.suppress(WorkerError):
            self._call("close")


class WorkerPool:
    """One restartable engine worker per spec. ``engines``: device id -> `RemoteEngine`.

    ``address`` (else ``$RAY_ADDRESS``) names a running cluster; without one, Ray starts here with
    ``init_options`` over `LOCAL_INIT`. An already initialized Ray is used as it is. Each worker may be
    restarted ``max_restarts`` times, its interrupted call sent again each time. Workers that are not
    placed within ``ready_timeout_s`` (no free GPU, say) fail the pool with `WorkerError`.
    """

    def __init__(
        self,
        specs: Iterable[WorkerSpec],
        address: str | None = None,
        max_restarts: int = 3,
        ready_timeout_s: float = 600.0,
        init_options: dict | None = None,
    ):
        import ray

        specs = list(specs)
        devices = [s.device for s in specs]
        if len(set(devices)) < len(devices):
            raise ValueError(f"one worker per device: {devices} repeats a device")
        address = address or os.environ.get("RAY_ADDRESS")
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(**({"address": address} if address else LOCAL_INIT), **(init_options or {}))
        self._actors: dict[str, Any] = {}  # device -> actor handle
        self.engines: dict[str, RemoteEngine] = {}
        gpus, have = sum(s.gpu for s in specs), int(ray.cluster_resources().get("GPU", 0))
        if self._owns_ray and address in (None, "local") and gpus > have:  # this machine: no GPU will come
            self.close(grace_s=0)
            raise WorkerError(f"the plan places work on {gpus} GPU(s); this machine has {have}")
        try:
            worker = ray.remote(_Worker)
            for s in specs:
                self._actors[s.device] = worker.options(
                    num_cpus=s.cpus,
                    num_gpus=1 if s.gpu else 0,
                    resources=s.resources or None,
                    scheduling_strategy="DEFAULT" if s.resources else "SPREAD",  # one node each if can be
                    max_restarts=max_restarts,
                    max_task_retries=max_restarts,
                ).remote(s.engine, s.engine_options)
            refs = {s.device: self._actors[s.device].info.remote() for s in specs}
            _, waiting = ray.wait(list(refs.values()), num_returns=len(refs), timeout=ready_timeout_s)
            if waiting:
                late = [
                    f"{s.device} (needs {'1 GPU' if s.gpu else 'no GPU'}, {s.resources or 'no resources'})"
                    for s in specs
                    if refs[s.device] in waiting
                ]
                raise WorkerError(f"not placed within {ready_timeout_s:g}s: {', '.join(late)}")
            for s in specs:
                try:
                    info = ray.get(refs[s.device])
                except ray.exceptions.RayActorError as exc:
                    last = str(exc).strip().splitlines()[-1]  # the error its engine raised
                    raise WorkerError(f"the {s.device} worker did not start: {last}") from exc
                self.engines[s.device] = RemoteEngine(s, self._actors[s.device], info)
        except BaseException:
            self.close(grace_s=0)
            raise

    def engine(self, device: str) -> RemoteEngine:
        return self.engines[device]

    @property
    def restarts(self) -> dict[str, int]:
        """Worker restarts per device, for the run summary."""
        return {d: e.restarts for d, e in self.engines.items()}

    def timelines(self) -> dict[str, list[dict]]:
        """Each device's timeline (see `RemoteEngine`), for EXPLAIN ANALYZE per device."""
        return {d: list(e.timeline) for d, e in self.engines.items()}

    def close(self, grace_s: float = 30.0) -> None:
        """Close each engine (up to ``grace_s``), end the workers, and shut Ray down if this pool started it."""
        import ray

        if self._actors:
            ray.wait(
                [a.call.remote("close") for a in self._actors.values()],
                num_returns=len(self._actors),
                timeout=grace_s,
            )
            for actor in self._actors.values():
                ray.kill(actor)
            self._actors.clear()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
