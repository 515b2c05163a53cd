"""`halo loadgen`: open-loop arrivals against `halo serve`, with latency quantiles and SLO attainment.

Requests are sent at their scheduled times whether or not earlier ones have finished (open loop, so a
slow server meets the load it would meet in production instead of slowing the client down). Each request
carries one input, the next of the input file in turn; its latency runs from sending the POST to reading
its result from the run's event stream. Arrivals are Poisson at `rate`, or bursty: bursts of `BURST`
requests at Poisson times, with the same mean rate. `fresh_run` is one such run against a `halo serve`
subprocess of its own (fresh state, so no memo carries over), as the serve benchmarks make them (Linux).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ARRIVALS = ("poisson", "bursty")
BURST = 8  # requests per burst (bursty arrivals)
RESULT_TIMEOUT_S = 300.0  # a request with no result after this long counts as an error


@dataclass
class Report:
    workflow: str
    url: str
    rate: float
    arrival: str
    slo_ms: float | None
    sent: int = 0
    offered_s: float = 0.0  # from the first to the last scheduled arrival
    wall_s: float = 0.0  # from the first send to the last result
    latencies: list[float] = field(default_factory=list)  # seconds, of requests with a result
    outcomes: dict[str, int] = field(default_factory=dict)  # ok, failed (the record has an error), 429, error
    errors: list[str] = field(default_factory=list)  # the first few unexpected answers
    within_slo: int = 0  # ok results within the SLO

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.completed / self.wall_s if self.wall_s else 0.0

    def quantile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    @property
    def slo_attainment(self) -> float | None:
        """Share of the requests sent that finished without error within the SLO."""
        if self.slo_ms is None or not self.sent:
            return None
        return self.within_slo / self.sent

    def text(self) -> str:
        q = {p: self.quantile(p / 100) for p in (50, 90, 99)}
        lat = ", ".join(f"p{p} {v * 1e3:.0f} ms" for p, v in q.items() if v is not None) or "no results"
        slo = self.slo_attainment
        return "\n".join(
            [
                f"{self.workflow} at {self.rate:g}/s ({self.arrival}): {self.sent} sent, "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
                f"throughput {self.throughput:.2f} runs/s over {self.wall_s:.1f} s; latency {lat}",
                *([f"SLO {self.slo_ms:g} ms: {slo:.1%} of requests sent"] if slo is not None else []),
                *(f"error: {e}" for e in self.errors),
            ]
        )

    def row(self) -> list[str]:
        """This run as a markdown table row (see `columns`)."""
        q = [self.quantile(p) for p in (0.5, 0.9, 0.99)]
        slo = self.slo_attainment
        return [
            f"{self.rate:g}",
            self.arrival,
            str(self.sent),
            str(self.outcomes.get("ok", 0)),
            str(self.outcomes.get("failed", 0)),
            str(self.outcomes.get("429", 0)),
            str(self.outcomes.get("error", 0)),
            f"{self.throughput:.2f}",
            *("—" if v is None else f"{v * 1e3:.0f}" for v in q),
            "—" if slo is None else f"{slo:.1%}",
        ]

    def markdown(self, input_path: str | Path) -> str:
        return "\n".join(
            [
                f"# halo loadgen: {self.workflow}",
                "",
                machine_line(),
                f"- server {self.url}; inputs from {input_path}, one per request, in turn",
                "",
                table_header(self.slo_ms),
                "| " + " | ".join(self.row()) + " |",
                "",
            ]
        )


def columns(slo_ms: float | None) -> list[str]:
    """The markdown columns of `Report.row`."""
    slo = f"within {slo_ms:g} ms" if slo_ms is not None else "within SLO"
    counts = ["rate (req/s)", "arrivals", "sent", "ok", "failed", "429", "errors", "throughput (runs/s)"]
    return [*counts, "p50 ms", "p90 ms", "p99 ms", slo]


def table_header(slo_ms: float | None) -> str:
    cols = columns(slo_ms)
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def machine_line() -> str:
    return (
        f"- {dt.date.today().isoformat()}; {platform.platform()}, {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}"
    )


def schedule(
    rate: float, arrival: str, n: int | None, duration_s: float | None, seed: int = 0
) -> list[float]:
    """Arrival times in seconds from the start: `n` of them, or all before `duration_s`."""
    if rate <= 0:
        raise ValueError("--rate must be positive")
    if arrival not in ARRIVALS:
        raise ValueError(f"--arrival must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    if (n is None) == (duration_s is None):
        raise ValueError("give one of --requests and --duration")
    rng, t = random.Random(seed), 0.0
    out: list[float] = []
    size = BURST if arrival == "bursty" else 1
    while True:
        for _ in range(size):
            if (n is not None and len(out) >= n) or (duration_s is not None and t >= duration_s):
                return out
            out.append(t)
        t += rng.expovariate(rate / size)


def read_inputs(path: str | Path) -> list[dict[str, Any]]:
    """The input objects of a JSONL file (the server validates them)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no inputs")
    return rows


def run(
    url: str,
    workflow: str,
    inputs: list[dict[str, Any]],
    rate: float,
    *,
    arrival: str = "poisson",
    requests: int | None = None,
    duration_s: float | None = None,
    slo_ms: float | None = None,
    api_key: str | None = None,
    seed: int = 0,
) -> Report:
    """Send the arrivals and wait for every result (or RESULT_TIMEOUT_S)."""
    times = schedule(rate, arrival, requests, duration_s, seed)
    report = Report(
        workflow, url, rate, arrival, slo_ms, sent=len(times), offered_s=times[-1] if times else 0
    )
    asyncio.run(_drive(report, times, inputs, api_key))
    return report


async def _drive(
    report: Report, times: list[float], inputs: list[dict[str, Any]], api_key: str | None
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = httpx.Timeout(RESULT_TIMEOUT_S, connect=30.0)
    tls = httpx.create_ssl_context()  # made once: each client would load the CA bundle again

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=report.url, headers=headers, timeout=timeout, verify=tls)

    start = time.perf_counter()
    tasks = []
    for i, at in enumerate(times):
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(client, report, inputs[i % len(inputs)])))
    outcomes = await asyncio.gather(*tasks)
    report.wall_s = time.perf_counter() - start
    for outcome, latency, error in outcomes:
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
        if latency is not None:
            report.latencies.append(latency)
            if outcome == "ok" and report.slo_ms is not None and latency * 1e3 <= report.slo_ms:
                report.within_slo += 1
        if error and len(report.errors) < 5:
            report.errors.append(error)


async def _one(
    client: Callable[[], httpx.AsyncClient], report: Report, item: dict[str, Any]
) -> tuple[str, float | None, str]:
    """(outcome, latency or None, unexpected answer) of one request, on a client (and connection) of its
    own, as an independent user's: one client shared by every request in flight holds that many
    connections in one httpcore pool, whose every request start and end scans its connections once per
    idle one (quadratic; encode/httpcore#1035), so at a few hundred in flight the generator itself spent
    seconds of CPU and read results long after the server had sent them."""
    try:
        async with client() as http:
            start = time.perf_counter()
            r = await http.post(f"/v1/workflows/{report.workflow}/runs", json=item)
            if r.status_code == 429:
                return "429", None, ""
            if r.status_code != 202:
                return "error", None, f"POST answered {r.status_code}: {r.text[:200]}"
            run_id = r.json()["ids"][0]
            async with http.stream("GET", f"/v1/runs/{run_id}/events") as events:
                async for line in events.aiter_lines():
                    if line.startswith("data: ") and '"record"' in line:
                        record = json.loads(line[6:])["record"]
                        return ("failed" if record["error"] else "ok"), time.perf_counter() - start, ""
            return "error", None, f"the event stream of {run_id} ended without its result"
    except (httpx.HTTPError, ValueError, KeyError) as e:
        return "error", None, f"{type(e).__name__}: {e}"


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(files: list[Path], options: list[str]) -> Iterator[tuple[str, int]]:
    """A `halo serve` subprocess of `files` with `options`, on a free port with a fresh state directory;
    yields its URL and pid. Its stderr goes on to ours once it serves."""
    with tempfile.TemporaryDirectory(prefix="halo-serve-") as state:
        cmd = [sys.executable, "-P", "-m", "halo", "serve", *map(str, files)]
        cmd += ["--port", "0", "--state", state, *options]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        err = proc.stderr
        assert err is not None
        try:
            said: list[str] = []
            while not (m := re.search(r" on (http://\S+) ", line := err.readline())):
                if not line:
                    raise RuntimeError(f"halo serve exited with {proc.wait()}: {''.join(said[-5:])}")
                said.append(line)
            threading.Thread(target=sys.stderr.writelines, args=(err,), daemon=True).start()
            yield m.group(1), proc.pid
        finally:
            proc.terminate()
            proc.wait(120)


def fresh_run(
    files: list[Path], options: list[str], workflow: str, inputs: list[dict[str, Any]], rate: float, **load
) -> tuple[Report, float]:
    """One `run` against a fresh `halo serve`: the report and the server's CPU milliseconds per finished run."""
    with serving(files, options) as (url, pid):
        before = cpu_s(pid)
        report = run(url, workflow, inputs, rate, **load)
        used = cpu_s(pid) - before
    print(report.text(), file=sys.stderr)
    return report, used * 1e3 / max(report.completed, 1)
