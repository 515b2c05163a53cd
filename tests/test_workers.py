"""Engine workers on Ray (`halo.runtime.workers`): real Ray, the hf engine on SmolLM2 and the fake engine."""

from __future__ import annotations

import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
yaml = pytest.importorskip("yaml")

from ray.cluster_utils import Cluster  # noqa: E402

from halo.runtime.engines import SMOLLM2_ID, GenRequest, make_engine  # noqa: E402
from halo.runtime.engines.fake import FakeEngine  # noqa: E402
from halo.runtime.workers import (  # noqa: E402
    LOCAL_INIT,
    RemoteEngine,
    WorkerError,
    WorkerPool,
    WorkerSpec,
    specs_for,
)

ROOT = Path(__file__).resolve().parent.parent
# SlowFake below runs inside Ray workers, which cannot import this file: ship the module by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class SlowFake(FakeEngine):
    """The fake engine, sleeping ``delay_s`` per request; each generate() first appends a line to ``marks``."""

    def __init__(self, delay_s: float, marks: str, **options):
        super().__init__(**options)
        self.delay_s, self.marks = delay_s, marks

    def generate(self, requests):
        with open(self.marks, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(self.delay_s * len(requests))
        return super().generate(requests)


@pytest.fixture
def local_ray():
    """Ray started by the test, not by the pool."""
    ray.init(num_cpus=1, **LOCAL_INIT)
    yield
    ray.shutdown()


def test_specs_for_maps_device_ids():
    specs = specs_for(["cpu0", "gpu0", "gpu1"], "hf", {"threads": 1})
    assert [(s.device, s.gpu) for s in specs] == [("cpu0", False), ("gpu0", True), ("gpu1", True)]
    assert all(s.engine == "hf" and s.engine_options == {"threads": 1} for s in specs)
    with pytest.raises(ValueError, match="npu0"):
        specs_for(["npu0"], "hf")


def broken_engine(**options):
    raise RuntimeError("this engine cannot start")


def test_workers_that_cannot_start_fail_the_pool_clearly(local_ray):
    with pytest.raises(WorkerError, match=r"gpu0 \(needs 1 GPU"):
        WorkerPool(specs_for(["gpu0"], "fake"), ready_timeout_s=3)
    with pytest.raises(
        WorkerError, match="^the cpu1 worker did not start: RuntimeError: this engine cannot start$"
    ):
        WorkerPool([WorkerSpec("cpu0", "fake"), WorkerSpec("cpu1", broken_engine)])
    assert ray.is_initialized()  # the pool did not start Ray, so it left it running


@pytest.mark.slow
def test_hf_workers_match_local_engine_and_reload_after_restart():
    import torch

    threads = torch.get_num_threads()
    options = {"threads": 1}  # one thread per worker on a 2-core machine, the same for the local engine
    requests = [
        GenRequest(SMOLLM2_ID, prompt, max_tokens=12)
        for prompt in ("What is 2 + 2?", "Name a colour.", "Say hello in French.")
    ]
    try:
        with make_engine("hf", **options) as local:
            expected = [r.text for r in local.generate(requests)]
            tokens = local.count_tokens(SMOLLM2_ID, "a tokenizer test")
    finally:
        torch.set_num_threads(threads)
    assert all(expected)

    with WorkerPool(specs_for(["cpu0", "cpu1"], "hf", options)) as pool:
        a, b = pool.engine("cpu0"), pool.engine("cpu1")
        assert isinstance(a, RemoteEngine) and a.name == "hf"
        start = time.perf_counter()
        a.prefetch(SMOLLM2_ID)
        assert time.perf_counter() - start < 1.0  # it did not wait for the load
        assert b.load(SMOLLM2_ID) > 0
        assert [r.text for r in a.generate(requests)] == expected
        assert [r.text for r in b.generate(requests)] == expected
        assert b.count_tokens(SMOLLM2_ID, "a tokenizer test") == tokens
        for timeline in pool.timelines().values():
            assert [e["kind"] for e in timeline] == ["load", "generate"]
            load, gen = timeline
            assert load["model"] == SMOLLM2_ID and load["start"] < load["end"] <= gen["start"] < gen["end"]
            assert gen["n"] == len(requests)
        assert a.resident_models() == [SMOLLM2_ID]

        a.release(SMOLLM2_ID)
        assert a.resident_models() == []
        assert a.timeline[-1]["kind"] == "release" and a.timeline[-1]["action"] == "unload"

        pid = b.worker_info()["pid"]
        os.kill(pid, signal.SIGKILL)
        assert [r.text for r in b.generate(requests)] == expected  # the new worker loads the model again
        assert b.worker_info()["pid"] != pid
        assert [e["kind"] for e in b.timeline] == ["load", "generate", "load", "generate"]
        assert pool.restarts == {"cpu0": 0, "cpu1": 1}
    assert not ray.is_initialized()  # the pool started Ray, so it shut it down


def test_workers_pinned_to_nodes_of_a_cluster():
    node = {"num_cpus": 1, "object_store_memory": 100 * 2**20, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "resources": {"node_a": 1}})
    try:
        cluster.add_node(**node, resources={"node_b": 1})
        specs = [
            WorkerSpec("cpu0", "fake", resources={"node_a": 1}),
            WorkerSpec("cpu1", "fake", resources={"node_b": 1}),
        ]
        with WorkerPool(specs, address=cluster.address) as pool:
            nodes = {d: e.worker_info()["node_id"] for d, e in pool.engines.items()}
            expected = {
                d: next(n["NodeID"] for n in ray.nodes() if n["Resources"].get(r))
                for d, r in (("cpu0", "node_a"), ("cpu1", "node_b"))
            }
            assert nodes == expected and nodes["cpu0"] != nodes["cpu1"]
            request = GenRequest("m", "hello")
            assert pool.engine("cpu1").generate([request])[0].text == FakeEngine().reply(request)
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_killed_worker_restarts_and_finishes_the_batch(local_ray, tmp_path):
    marks = tmp_path / "marks"
    spec = WorkerSpec("cpu0", SlowFake, {"delay_s": 0.1, "marks": str(marks)})
    pool = WorkerPool([spec])
    engine = pool.engine("cpu0")
    assert engine.name == "SlowFake"
    pid = engine.worker_info()["pid"]
    requests = [GenRequest("m", f"question {i}") for i in range(20)]
    with ThreadPoolExecutor(1) as threads:
        future = threads.submit(engine.generate, requests)
        deadline = time.monotonic() + 30
        while not marks.exists() and time.monotonic() < deadline:  # the batch is running on the worker
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        results = future.result(timeout=60)
    assert [r.text for r in results] == [FakeEngine().reply(r) for r in requests]
    ran = marks.read_text().split()
    assert (
        len(ran) == 2 and ran[0] == str(pid) != ran[1]
    )  # started on the killed worker, re-sent to the new one
    assert pool.restarts == {"cpu0": 1}
    assert engine.resident_models() == ["m"]
    assert [(e["kind"], e["n"]) for e in pool.timelines()["cpu0"]] == [("generate", 20)]
    pool.close()
    assert ray.is_initialized()


def test_raycluster_manifest_puts_one_gpu_per_worker_pod():
    manifest = yaml.safe_load((ROOT / "deploy" / "raycluster.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    spec = manifest["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    (group,) = spec["workerGroupSpecs"]
    assert group["rayStartParams"]["num-gpus"] == "1"
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
