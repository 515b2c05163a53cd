"""`halo serve` over real HTTP on loopback: requests and results, event streams, limits, auth, restarts.

Most servers run in this process (uvicorn in a thread) on the fake engine; the crash test kills a
`halo serve` subprocess with SIGKILL and restarts it on the same state directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager

import httpx
import pytest
from typer.testing import CliRunner

from halo import serve_runner
from halo.cli import app
from halo.errors import HaloError
from halo.serve import ServeConfig, ServeError, Server

TOOLS = """
import os
import threading
import time

MEETING = threading.Barrier(12)


def nap(x: int, s: float = 0.0) -> int:
    time.sleep(s)
    return x


def mark(path: str, item: int, s: float = 0.0) -> int:
    \"\"\"A side effect: append the item to a file, durably, then take `s` seconds more.\"\"\"
    with open(path, "a") as f:
        f.write(f"{item}\\n")
        f.flush()
        os.fsync(f.fileno())
    time.sleep(s)
    return item


def meet(x: int) -> int:
    \"\"\"Returns once 12 calls wait here at once (BrokenBarrierError after 10 s).\"\"\"
    MEETING.wait(10)
    return x
"""

GREET = """
workflow greet(name: text, n: int = 2) {
  model m = "Qwen/Qwen3-14B"
  hello = llm(m, system = "Be brief.", prompt = "Greet {name} {n} times.", max_tokens = 8, temperature = 0)
  return hello
}
"""

SLOW = """
workflow slow(x: int, s: float = 1.0) {
  n = py("serve_tools:nap", x = x, s = s, pure = true)
  return n
}
"""

COUNTED = """
workflow counted(item: int) {
  m = py("serve_tools:mark", path = "MARKS", item = item, s = 0.2)
  return m
}
"""

MEET = """
workflow meet(x: int) {
  m = py("serve_tools:meet", x = x)
  return m
}
"""

BROKEN = """
workflow broken(q: text) {
  db d = duckdb("missing.duckdb")
  r = sql(d, "SELECT 1 AS one")
  return r
}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with the workflows and their tools module (importable by the servers)."""
    d = tmp_path_factory.mktemp("serve")
    (d / "serve_tools.py").write_text(TOOLS)
    (d / "greet.halo").write_text(GREET)
    (d / "slow.halo").write_text(SLOW)
    (d / "meet.halo").write_text(MEET)
    (d / "counted.halo").write_text(COUNTED.replace("MARKS", str(d / "marks.txt")))
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))


@contextmanager
def running(cfg: ServeConfig):
    """A server in a thread, ready; shut down (drained) at the end."""
    srv = Server(cfg)
    thread = threading.Thread(target=srv.serve, daemon=True)
    thread.start()
    assert srv.ready.wait(30)
    try:
        yield srv
    finally:
        srv.shutdown()
        thread.join(60)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def greet(work):
    """A client of a server of greet.halo on the fake engine."""
    cfg = ServeConfig(
        [work / "greet.halo"], engine="fake", port=0, state=work / "greet-state", hardware="cpu:2"
    )
    with running(cfg) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        yield client


def wait_done(client: httpx.Client, ids: list[str], timeout_s: float = 30) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    out: dict[str, dict] = {}
    while len(out) < len(ids) and time.monotonic() < deadline:
        for i in ids:
            if i not in out and (r := client.get(f"/v1/runs/{i}").json())["state"] == "done":
                out[i] = r
        time.sleep(0.05)
    assert len(out) == len(ids), f"{len(ids) - len(out)} runs not done in {timeout_s} s"
    return out


def metric(client: httpx.Client, name: str, workflow: str, labels: str = "") -> float:
    """One sample of /metrics: series `name` of `workflow` (and the other `labels`, as written there)."""
    series = f'{name}{{workflow="{workflow}"{labels}}}'
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} missing from /metrics")


def test_one_input_and_a_list_run_to_records(greet):
    one = greet.post("/v1/workflows/greet/runs", json={"name": "ada"})
    assert one.status_code == 202
    [run_id] = one.json()["ids"]
    assert one.headers["location"] == f"/v1/runs/{run_id}"
    many = greet.post("/v1/workflows/greet/runs", json=[{"name": "bo", "n": 3}, {"name": "cy"}])
    assert many.status_code == 202 and len(many.json()["ids"]) == 2
    done = wait_done(greet, [run_id, *many.json()["ids"]])
    records = [done[i]["record"] for i in (run_id, *many.json()["ids"])]
    assert [r["inputs"] for r in records] == [
        {"name": "ada", "n": 2},
        {"name": "bo", "n": 3},
        {"name": "cy", "n": 2},
    ]
    assert all(r["error"] is None and r["outputs"]["hello"] for r in records)
    assert all(d["latency_s"] >= 0 and d["finished_at"] >= d["accepted_at"] for d in done.values())


def test_a_retried_request_with_its_idempotency_key_gets_the_same_runs(greet, work):
    headers = {"Idempotency-Key": "client-7f3"}
    first = greet.post("/v1/workflows/greet/runs", json=[{"name": "fay"}, {"name": "gus"}], headers=headers)
    again = greet.post("/v1/workflows/greet/runs", json=[{"name": "fay"}, {"name": "gus"}], headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["ids"] == again.json()["ids"] and len(first.json()["ids"]) == 2
    other = greet.post("/v1/workflows/greet/runs", json={"name": "fay"}, headers={"Idempotency-Key": "k2"})
    assert other.json()["ids"][0] not in first.json()["ids"]
    wait_done(greet, first.json()["ids"] + other.json()["ids"])
    con = sqlite3.connect(work / "greet-state" / "runs.db")
    try:
        named = con.execute("SELECT count(*) FROM runs WHERE params LIKE '%\"gus\"%'").fetchone()[0]
    finally:
        con.close()
    assert named == 1, "the retry accepted nothing new"
    too_long = greet.post(
        "/v1/workflows/greet/runs", json={"name": "x"}, headers={"Idempotency-Key": "k" * 201}
    )
    assert too_long.status_code == 400


def test_event_streams_deliver_each_result_once_then_end(greet):
    ids = greet.post("/v1/workflows/greet/runs", json=[{"name": "dee"}, {"name": "eve"}]).json()["ids"]
    with greet.stream("GET", "/v1/events", params={"ids": ",".join(ids)}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.iter_lines())
    assert [e["event"] for e in events] == ["result", "result", "end"]
    assert sorted(e["data"]["id"] for e in events[:2]) == sorted(ids)
    for e in events[:2]:  # the same record as the status endpoint's
        assert e["data"]["record"] == greet.get(f"/v1/runs/{e['data']['id']}").json()["record"]
    with greet.stream("GET", f"/v1/runs/{ids[0]}/events") as r:  # already done: at once
        assert [e["event"] for e in _events(r.iter_lines())] == ["result", "end"]
    assert greet.get("/v1/events", params={"ids": "nope"}).status_code == 404


def _events(lines) -> list[dict]:
    out, cur = [], {}
    for line in lines:
        if line.startswith("event: "):
            cur["event"] = line[7:]
        elif line.startswith("data: "):
            cur["data"] = json.loads(line[6:])
        elif not line and cur:
            out.append(cur)
            cur = {}
    return out


def test_identical_calls_of_different_requests_run_once(greet):
    name = uuid.uuid4().hex  # a prompt no earlier test sent
    calls = metric(greet, "halo_serve_calls_total", "greet")
    hits = metric(greet, "halo_serve_cache_hits_total", "greet")
    a = greet.post("/v1/workflows/greet/runs", json={"name": name}).json()["ids"]
    b = greet.post("/v1/workflows/greet/runs", json={"name": name}).json()["ids"]
    done = wait_done(greet, a + b)
    assert done[a[0]]["record"]["outputs"] == done[b[0]]["record"]["outputs"]
    assert metric(greet, "halo_serve_calls_total", "greet") == calls + 1
    assert metric(greet, "halo_serve_cache_hits_total", "greet") == hits + 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "x", "n": "three"}, 422, "input 1: 'n' must be int, got text 'three'"),
        ([{"name": "x"}, {}], 422, "input 2: missing parameter 'name'"),
        ({"name": "x", "path": "/etc"}, 422, "input 1: unknown field(s) path (parameters: n, name)"),
        ([["name"]], 422, "input 1: a row must be a JSON object"),
        ({"name": "x", "n": 10**200}, 422, "input 1: integer of 201 digits (at most 100)"),
        ([], 422, "no inputs: send one input object or a non-empty list of them"),
    ],
)
def test_invalid_inputs_get_halo_runs_row_errors(greet, body, status, message):
    r = greet.post("/v1/workflows/greet/runs", json=body)
    assert (r.status_code, r.json()["error"]) == (status, message)


def test_bad_bodies_and_unknown_names_are_refused(greet):
    assert greet.post("/v1/workflows/greet/runs", content=b"{nope").status_code == 400
    too_big = greet.post("/v1/workflows/greet/runs", json={"name": "x" * (2 << 20)})
    assert too_big.status_code == 413
    for name in ("nope", "..%2Fgreet.halo", "greet.halo"):  # names only: no path reaches a file
        assert greet.post(f"/v1/workflows/{name}/runs", json={"name": "x"}).status_code == 404
    assert greet.get("/v1/runs/nope").status_code == 404


def test_a_workflow_that_cannot_run_stops_the_start_and_frees_the_state(work):
    (work / "broken.halo").write_text(BROKEN)
    state = work / "broken-state"
    files = [work / "greet.halo", work / "broken.halo"]
    with pytest.raises(HaloError, match="missing.duckdb does not exist"):
        Server(ServeConfig(files, engine="fake", port=0, state=state, hardware="cpu:2"))
    cfg = ServeConfig(files[:1], engine="fake", port=0, state=state, hardware="cpu:2")
    with running(cfg) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:  # the journal is not held
        wait_done(c, c.post("/v1/workflows/greet/runs", json={"name": "x"}).json()["ids"])


def test_workflows_metrics_and_health(greet):
    [wf] = greet.get("/v1/workflows").json()["workflows"]
    assert wf["name"] == "greet" and wf["returns"] == ["hello"] and wf["serving"]
    assert wf["parameters"] == [
        {"name": "name", "type": "text", "required": True, "default": None},
        {"name": "n", "type": "int", "required": False, "default": 2},
    ]
    assert "Execution (halo)" in wf["plan"]
    text = greet.get("/metrics").text
    for series in (
        "halo_serve_throughput_runs_per_second",
        "halo_serve_queue_depth",
        "halo_serve_engine_batches_total",
        "halo_serve_cache_hits_total",
    ):
        assert f'{series}{{workflow="greet"}}' in text
    assert re.search(r'^halo_serve_latency_seconds\{workflow="greet",quantile="0.99"\} [0-9.]+$', text, re.M)
    assert metric(greet, "halo_serve_engine_batches_total", "greet") >= 1
    assert greet.get("/health").json()["status"] == "ok"


def test_a_full_queue_answers_429_with_retry_after(work):
    cfg = ServeConfig(
        [work / "slow.halo"], engine="fake", port=0, state=work / "slow-state", hardware="cpu:2", max_queue=2
    )
    with running(cfg) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/v1/workflows/slow/runs", json=[{"x": 1}, {"x": 2}, {"x": 3}]).status_code == 413
        ids = c.post("/v1/workflows/slow/runs", json=[{"x": 1}, {"x": 2}]).json()["ids"]
        full = c.post("/v1/workflows/slow/runs", json={"x": 3})
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        assert metric(c, "halo_serve_runs_refused_total", "slow") == 1
        wait_done(c, ids)
        assert c.post("/v1/workflows/slow/runs", json={"x": 3, "s": 0}).status_code == 202


def test_an_api_key_is_required_off_loopback_and_checked(work):
    with pytest.raises(ServeError, match="needs an API key"):
        Server(ServeConfig([work / "greet.halo"], engine="fake", host="0.0.0.0", port=0, state=work / "k"))
    result = CliRunner().invoke(
        app, ["serve", str(work / "greet.halo"), "--host", "0.0.0.0"], env={"HALO_API_KEY": ""}
    )
    assert result.exit_code == 2 and "needs an API key" in result.output
    cfg = ServeConfig(
        [work / "greet.halo"],
        engine="fake",
        port=0,
        state=work / "key-state",
        api_key="s3cret",
        hardware="cpu:2",
    )
    with running(cfg) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/v1/workflows").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer s3cre"}).status_code == 401
        assert (
            c.post(
                "/v1/workflows/greet/runs", json={"name": "x"}, headers={"Authorization": "s3cret"}
            ).status_code
            == 401
        )
        good = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/workflows/greet/runs", json={"name": "x"}, headers=good).status_code == 202
        assert c.get("/v1/workflows", headers=good).status_code == 200
        assert c.get("/health").status_code == 200


def test_a_growing_batch_is_planned_again_for_the_next_generation(work, monkeypatch):
    monkeypatch.setattr(serve_runner, "REPLAN_MIN_S", 0.0)
    cfg = ServeConfig(
        [work / "greet.halo"], engine="fake", port=0, state=work / "grow-state", hardware="cpu:2"
    )
    with running(cfg) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        first = c.post("/v1/workflows/greet/runs", json={"name": "solo"}).json()["ids"]
        wait_done(c, first)
        policy = srv.runners["greet"].xplan.policy
        ids = c.post("/v1/workflows/greet/runs", json=[{"name": f"p{i}"} for i in range(64)]).json()["ids"]
        wait_done(c, ids)
        deadline = time.monotonic() + 10  # the new plan's executor starts once the old one drained
        while metric(c, "halo_serve_executors_total", "greet") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(c, "halo_serve_plans_total", "greet") == 2
        assert metric(c, "halo_serve_executors_total", "greet") == 2
        assert srv.runners["greet"].xplan.policy.max_batch > policy.max_batch
        wait_done(c, c.post("/v1/workflows/greet/runs", json={"name": "after"}).json()["ids"])


def test_the_baseline_runs_concurrency_inputs_at_once(work, monkeypatch):
    configs: list[ServeConfig] = []
    monkeypatch.setattr("halo.serve.serve", configs.append)
    args = ["serve", str(work / "meet.halo"), "--mode", "naive", "--concurrency", "12", "--engine", "fake"]
    assert CliRunner().invoke(app, args).exit_code == 0
    [cfg] = configs
    assert (cfg.mode, cfg.concurrency) == ("naive", 12)
    cfg.port, cfg.state, cfg.hardware = 0, work / "meet-state", "cpu:2"
    with running(cfg) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        ids = c.post("/v1/workflows/meet/runs", json=[{"x": i} for i in range(12)]).json()["ids"]
        done = wait_done(c, ids)
    assert sorted(d["record"]["outputs"]["m"] for d in done.values()) == list(range(12))  # all 12 met


def test_servers_must_name_declared_models(work):
    options = {"servers": {"Qwen/Qwen3-14B": "http://127.0.0.1:9/v1", "nope": "http://127.0.0.1:9/v1"}}
    with pytest.raises(ServeError, match="servers names 'nope', which no workflow declares"):
        Server(ServeConfig([work / "greet.halo"], engine="openai", engine_options=options, port=0))


def test_sigkill_mid_load_then_restart_loses_and_repeats_nothing(work, tmp_path):
    marks = work / "marks.txt"
    marks.unlink(missing_ok=True)
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": f"{work}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "halo", "serve", str(work / "counted.halo"), "--engine", "fake"]
    cmd += ["--port", "0", "--state", str(state), "--hardware", "cpu:2", "--window-ms", "10"]
    accepted: list[tuple[str, int]] = []

    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    url = _ready_url(server)
    sender = threading.Thread(target=_send, args=(url, range(1, 121), accepted), daemon=True)
    sender.start()
    with httpx.Client(base_url=url, timeout=10) as c:
        while metric(c, "halo_serve_finished_runs_total", "counted", ',outcome="succeeded"') < 20:
            time.sleep(0.02)
    server.send_signal(signal.SIGKILL)  # requests are still arriving; 8 marks have written, not returned
    server.wait(30)
    sender.join(30)
    assert 20 <= len(accepted) < 120

    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = _ready_url(server)
        with httpx.Client(base_url=url, timeout=30) as c:
            done = wait_done(c, [i for i, _ in accepted], timeout_s=60)
            assert metric(c, "halo_serve_runs_resumed_total", "counted") > 0
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    counts: dict[int, int] = {}
    for line in marks.read_text().split():
        counts[int(line)] = counts.get(int(line), 0) + 1
    assert max(counts.values()) == 1  # no side effect ran twice, for any input sent
    in_doubt = 0
    for run_id, item in accepted:
        record = done[run_id]["record"]
        assert record["inputs"] == {"item": item}
        if record["error"]:  # interrupted while its mark ran: not repeated, and said so
            assert "interrupted by a crash" in record["error"][0]["error"]
            in_doubt += 1
        else:
            assert record["outputs"] == {"m": item} and counts.get(item) == 1
    assert 1 <= in_doubt <= 8  # the tool calls running at the kill, not repeated


def _ready_url(server: subprocess.Popen) -> str:
    """The URL the server prints once it serves (its port was chosen by the system)."""
    for line in server.stderr:
        if m := re.search(r" on (http://\S+) ", line):
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep the pipe drained
            return m.group(1)
    raise AssertionError(f"the server exited with {server.wait()} before serving")


def _send(url: str, items, accepted: list[tuple[str, int]]) -> None:
    """One request per item, one at a time, until the server goes away; records what was acknowledged."""
    with httpx.Client(base_url=url, timeout=10) as c:
        for item in items:
            try:
                r = c.post("/v1/workflows/counted/runs", json={"item": item})
            except httpx.HTTPError:
                return
            if r.status_code == 202:
                accepted.append((r.json()["ids"][0], item))
            time.sleep(0.01)


@pytest.mark.slow
def test_smollm2_on_the_hf_engine_answers_requests(work):
    cfg = ServeConfig([work / "greet.halo"], engine="hf", port=0, state=work / "hf-state", hardware="cpu:2")
    with running(cfg) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        ids = c.post("/v1/workflows/greet/runs", json=[{"name": "Ada"}, {"name": "Bo"}]).json()["ids"]
        done = wait_done(c, ids, timeout_s=120)
    for d in done.values():
        assert d["record"]["error"] is None and d["record"]["outputs"]["hello"].strip()
