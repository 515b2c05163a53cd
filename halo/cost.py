"""Cost model: time, tokens and memory of every operator group, and the optimizer's Problem.

The only module that imports `halo.hw_models`. LLM groups are priced by the device's hardware
backend (`group_time`: batched prefill + decode under the KV budget, with the shared prefix cached);
tool groups by a per-call latency (calibrated, else a default) over a bounded number of concurrent
calls. Every estimate carries a breakdown and lists which of its inputs were calibrated and which
are defaults. LLM calls are priced in the engine batches the runtime will form (`halo.batching`):
a fitted engine law from the calibration (per-batch, per-step, per-sequence-step and per-token terms)
prices those batches when there is one; else a measured/predicted factor scales the roofline, and
failing that a measured tokens/s rate replaces it.

On accelerators each model's engine starts `eager` (no CUDA graphs: a shorter start, slower decode
iterations) or `compiled`; the cost model picks the one that costs less over the model's decode
iterations in the plan (`start_modes`), unless the engine options pin it, and prices its batches with
the law measured in that mode when there is one.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halo.batching import BatchPolicy, fusion_sets
from halo.calibration import Calibration, engine_key, engine_phases, llm_key
from halo.consolidate import ConsolidatedPlan, OpGroup
from halo.errors import HaloError
from halo.hw_models import backends, hardware, roofline, specs
from halo.hw_models.batching import CapacityError
from halo.hw_models.hardware import Hardware
from halo.hw_models.specs import DeviceSpec
from halo.optimizer.problem import Device, Problem, Task
from halo.tokens import counter, output_tokens
from halo.types import OPS

DEFAULT_DEVICE = "H100-SXM"
CPU_ENGINE = "cpu-engine"  # the device an LLM engine on the host is planned on


@dataclass
class GroupCost:
    """The estimate of one operator group on one device."""

    id: str
    kind: str
    device: str
    seconds: float
    prefill_tokens: float = 0.0
    decode_tokens: float = 0.0
    prompt_tokens: float = 0.0  # per call
    output_tokens: float = 0.0  # per call
    kv_bytes: float = 0.0  # peak KV cache resident
    kv_reuse_bytes: float = 0.0  # KV of prefix tokens computed once and reused
    mem_bytes: float = 0.0  # peak device memory beyond the weights
    breakdown: dict[str, Any] = field(default_factory=dict)
    calibrated: list[str] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        if self.kind == "llm":
            line = (
                f"estimate: {self.seconds:.2f} s on {self.device}: prefill {self.prefill_tokens:,.0f} tok "
                f"({self.breakdown.get('prefill_s', 0):.2f} s), decode {self.decode_tokens:,.0f} tok "
                f"({self.breakdown.get('decode_s', 0):.2f} s), KV {self.kv_bytes / 2**30:.2f} GiB"
            )
            sizes, fused = self.breakdown.get("engine_batches") or [], self.breakdown.get("fused_with") or []
            if sizes:
                line += f"; {len(sizes)} engine batch(es) of <= {max(sizes)}"
            if fused:
                line += f" shared with {', '.join(fused)}"
        else:
            line = (
                f"estimate: {self.seconds:.3f} s: {self.breakdown['calls']:,} calls x "
                f"{self.breakdown['latency_s'] * 1e3:.1f} ms / {self.breakdown['concurrency']} concurrent"
            )
        return line + f" [{'calibrated' if self.calibrated else 'default constants'}]"


@dataclass
class CostedPlan:
    """Estimates of every group on the reference device, plus what `to_problem` needs to re-price them."""

    consolidated: ConsolidatedPlan
    device: str
    groups: dict[str, GroupCost]
    calibration: Calibration
    hardware: Hardware | None = None
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    fuse: bool = True
    start_modes: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> `start_modes` entry

    @property
    def seconds(self) -> float:
        return sum(g.seconds for g in self.groups.values())


def estimate(
    cplan: ConsolidatedPlan,
    hw: str | Hardware | None = None,
    calibration: Calibration | None = None,
    policy: BatchPolicy | None = None,
    fuse: bool = True,
    start_mode: str | None = None,
) -> CostedPlan:
    """Price every group: LLM groups on the hardware's reference device (else H100-SXM), tools on a CPU pool.
    LLM calls are priced in the engine batches `policy` makes of them (the runtime's default policy);
    `fuse=False` prices every group alone, as a plan that runs one operator at a time would. On
    accelerators every model gets a start mode (`start_mode` pins one for all)."""
    cal = calibration or Calibration()
    hw = parse_hardware(hw) if isinstance(hw, str) else hw
    policy = policy or BatchPolicy()
    spec = reference_device(hw) if hw else specs.device(DEFAULT_DEVICE)
    groups = group_costs(cplan, spec, cal, policy, fuse=fuse)
    modes = start_modes(cplan, groups, spec, cal, start_mode) if hw is not None and hw.accelerators else {}
    if modes:
        chosen = {m: e["mode"] for m, e in modes.items()}
        groups = group_costs(cplan, spec, cal, policy, fuse=fuse, modes=chosen)
    return CostedPlan(cplan, spec.name, groups, cal, hw, policy, fuse, modes)


START_MODES = ("eager", "compiled")


def start_modes(
    cplan: ConsolidatedPlan,
    groups: dict[str, GroupCost],
    spec: DeviceSpec,
    cal: Calibration,
    pinned: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Per model: `compiled` when its decode iterations in the plan, each that much faster with CUDA
    graphs, save more than compiling adds to its start; else `eager`. The step and start differences
    come from laws and starts calibrated in both modes, else from the hardware model's defaults."""
    iterations: dict[str, float] = {}
    for gid, gc in groups.items():
        if gc.kind == "llm":
            model = cplan.groups[gid].op.llm_model()
            iterations[model] = iterations.get(model, 0.0) + gc.breakdown.get("iterations", 0.0)
    compile_s, eager_step_s = roofline.start_mode_costs(spec, calibration=cal.hw or None)
    out = {}
    for model, n in iterations.items():
        eager, compiled = (cal.engine.get(f"{engine_key(model, spec.name)}:{m}") for m in START_MODES)
        step = eager["step_s"] - compiled["step_s"] if eager and compiled else eager_step_s
        se, sc = (cal.load_s.get(llm_key(model, spec.name, f"load:{m}")) for m in START_MODES)
        extra = sc - se if se is not None and sc is not None else compile_s
        saving = n * max(step, 0.0)
        mode = pinned or ("compiled" if saving > extra else "eager")
        out[model] = {"mode": mode, "iterations": round(n), "saving_s": saving, "extra_start_s": extra}
        out[model]["why"] = (
            "pinned by the engine options"
            if pinned
            else f"{n:,.0f} decode steps save {saving:.1f} s {'>' if mode == 'compiled' else '<='} "
            f"{extra:.1f} s more to start compiled"
        )
    return out


def group_costs(
    cplan: ConsolidatedPlan,
    device: DeviceSpec,
    cal: Calibration,
    policy: BatchPolicy,
    skip_unfit: bool = False,
    fuse: bool = True,
    modes: dict[str, str] | None = None,
) -> dict[str, GroupCost]:
    """Every group's estimate, LLM groups on `device` (with `skip_unfit`, groups that do not fit it are
    left out instead of raising). With `fuse`, groups the runtime batches together
    (`halo.batching.fusion_sets`) are priced as one set of batches, each paying its share by calls;
    that assumes they share a device. `modes`: each model's start mode (`start_modes`)."""
    out: dict[str, GroupCost] = {}
    modes = modes or {}

    def price(groups: list[OpGroup]) -> None:
        mode = modes.get(groups[0].op.llm_model())
        try:
            out.update({c.id: c for c in _llm_cost(cplan, groups, device, cal, policy, mode)})
        except HaloError:
            if not skip_unfit:
                raise
            for g in groups:
                out.pop(g.id, None)

    for gid, g in cplan.groups.items():
        if not OPS[g.kind].tool:
            price([g])
        else:
            out[gid] = _tool_cost(cplan, g, cal)
    for members in fusion_sets(cplan.plan) if fuse else ():
        groups = [cplan.groups[m] for m in members if cplan.groups[m].calls and m in out]
        if len(groups) > 1:
            price(groups)
    return out


@dataclass(frozen=True)
class _Shape:
    """One group's calls as the cost model sees them: tokens per call and decode steps per batch."""

    calls: int
    prompt: int
    cached: int
    out: int
    steps: float
    known: float
    upstream: float
    out_source: str
    tokens_source: str


def _shape(cplan: ConsolidatedPlan, g: OpGroup, cal: Calibration) -> _Shape:
    op = g.op
    tc = counter(op.model, cal)
    known = sum(tc.count_many(g.texts)) / len(g.texts) if g.texts else 0.0
    upstream = sum(_upstream_tokens(cplan, cplan.groups[h], cal) for h in g.upstream_holes)
    prompt = max(1, round(known + upstream))
    key = f"{cplan.plan.name}.{g.id}"
    out, out_source = output_tokens(op, key, cal)
    out = max(1, round(out))
    saved = g.prefix.saved_tokens if g.prefix else 0
    cached = min(prompt - 1, round(saved / g.calls)) if g.calls else 0
    steps = cal.output_max.get(key, float(op.option("max_tokens")) if out_source != "measured" else out)
    return _Shape(g.calls, prompt, cached, out, steps, known, upstream, out_source, tc.source)


def _llm_cost(
    cplan: ConsolidatedPlan,
    groups: list[OpGroup],
    device: DeviceSpec,
    cal: Calibration,
    policy: BatchPolicy,
    mode: str | None = None,
) -> list[GroupCost]:
    """Price groups that share engine batches (usually one): the time of their batches, split by calls.
    With a start `mode`, the engine law measured in it when there is one; the uncalibrated roofline
    (CUDA graphs) pays the eager step cost in `eager` mode."""
    op = groups[0].op
    model_id = op.llm_model()
    shapes = [_shape(cplan, g, cal) for g in groups]
    calls = sum(s.calls for s in shapes)
    weight = [s.calls / calls if calls else 1 / len(shapes) for s in shapes]
    prompt = max(1, round(sum(w * s.prompt for w, s in zip(weight, shapes, strict=True))))
    cached = min(prompt - 1, round(sum(w * s.cached for w, s in zip(weight, shapes, strict=True))))
    out = max(1, round(sum(w * s.out for w, s in zip(weight, shapes, strict=True))))
    steps = max(s.steps for s in shapes)
    try:
        model = specs.model(model_id)
        est = backends.group_time(
            model, device, calls, prompt, cached, out, policy.max_batch, calibration=cal.hw or None
        )
    except (specs.UnknownSpecError, CapacityError) as e:
        raise HaloError.at(op.pos, f"cannot estimate `{groups[0].id}` on {device.name}: {e}") from None
    b = est.breakdown
    calibrated: list[str] = []
    defaults: list[str] = []
    hw_keys = b.get("prefill", {}).get("calibrated_keys") or b.get("decode", {}).get("calibrated_keys")
    if hw_keys:
        calibrated.append("hardware: " + ", ".join(hw_keys))
    sizes = policy.sizes(calls, prompt + out)
    key = engine_key(model_id, device.name)
    fitted = cal.engine.get(f"{key}:{mode}") or cal.engine.get(key)
    if fitted is not None:
        phases = [engine_phases(fitted, n, steps, n * (prompt - cached)) for n in sizes]
        prefill_s, decode_s = sum(p for p, _ in phases), sum(d for _, d in phases)
        ran_as = f", ran as {fitted['ran_as']}" if fitted.get("ran_as") else ""
        calibrated.append(
            f"engine law from {fitted['batches']} batches{ran_as}: {len(sizes)} batch(es) x {steps:.0f} steps"
        )
    else:
        prefill_tok, decode_tok = calls * (prompt - cached), calls * out
        prefill_s, decode_s = _calibrate(
            cal,
            model_id,
            device.name,
            b.get("prefill_s", 0.0),
            b.get("decode_s", 0.0),
            prefill_tok,
            decode_tok,
            calibrated,
            defaults,
        )
        if mode == "eager" and "decode: uncalibrated roofline" in defaults:  # measured rates hold the mode
            decode_s += len(sizes) * steps * roofline.start_mode_costs(device, calibration=cal.hw or None)[1]
    ids = [g.id for g in groups]
    kv_tok = model.kv_bytes_per_token()
    batch = b.get("batch", 0)
    out_costs = []
    for g, s, w in zip(groups, shapes, weight, strict=True):
        cal_g, def_g = list(calibrated), list(defaults)
        (cal_g if s.tokens_source != "default" else def_g).append(f"tokens: {s.tokens_source}")
        (cal_g if s.out_source == "measured" else def_g).append(f"output length: {s.out_source}")
        saved = g.prefix.saved_tokens if g.prefix else 0
        breakdown = {
            "prefill_s": w * prefill_s,
            "decode_s": w * decode_s,
            "roofline_s": w * est.seconds,
            "calls": s.calls,
            "batch": batch,
            "engine_batches": sizes,
            "steps": steps,
            "iterations": w * len(sizes) * steps,  # decode iterations, this group's share
            "start_mode": mode,
            "fused_with": [i for i in ids if i != g.id],
            "waves": b.get("waves", 0),
            "prompt_tokens_known": s.known,
            "prompt_tokens_upstream": s.upstream,
            "cached_prefix_tokens": s.cached,
            "output_source": s.out_source,
            "tokens_source": s.tokens_source,
            "hw": b,
        }
        out_costs.append(
            GroupCost(
                g.id,
                "llm",
                device.name,
                w * (prefill_s + decode_s),
                s.calls * (s.prompt - s.cached),
                s.calls * s.out,
                s.prompt,
                s.out,
                kv_bytes=b.get("kv_bytes_per_request", 0.0) * batch + s.cached * kv_tok,
                kv_reuse_bytes=saved * kv_tok,
                mem_bytes=max(0.0, est.peak_memory_bytes - model.weight_bytes()),
                breakdown=breakdown,
                calibrated=cal_g,
                defaults=def_g,
            )
        )
    return out_costs


def _calibrate(
    cal: Calibration,
    model: str,
    device: str,
    prefill_s: float,
    decode_s: float,
    prefill_tok: float,
    decode_tok: float,
    calibrated: list[str],
    defaults: list[str],
) -> tuple[float, float]:
    """Apply measurements: a whole-group factor, else per phase a factor or a measured tokens/s rate."""
    group = cal.llm_factor.get(llm_key(model, device, "group"))
    if group is not None:
        calibrated.append(f"roofline x {group:.2f} (measured/predicted)")
        return prefill_s * group, decode_s * group
    out = []
    for phase, seconds, tokens in (("prefill", prefill_s, prefill_tok), ("decode", decode_s, decode_tok)):
        key = llm_key(model, device, phase)
        if key in cal.llm_factor:
            seconds *= cal.llm_factor[key]
            calibrated.append(f"{phase}: roofline x {cal.llm_factor[key]:.2f} (measured/predicted)")
        elif key in cal.llm_rate:
            seconds = tokens / cal.llm_rate[key]
            calibrated.append(f"{phase}: measured {cal.llm_rate[key]:,.0f} tok/s")
        else:
            defaults.append(f"{phase}: uncalibrated roofline")
        out.append(seconds)
    return out[0], out[1]


def _upstream_tokens(cplan: ConsolidatedPlan, up: OpGroup, cal: Calibration) -> float:
    """Tokens an upstream output adds to a prompt it is pasted into."""
    key = f"{cplan.plan.name}.{up.id}"
    if not OPS[up.kind].tool:
        return output_tokens(up.op, key, cal)[0]
    return cal.output_tokens.get(key, OPS[up.kind].upstream_tokens)


def _tool_cost(cplan: ConsolidatedPlan, g: OpGroup, cal: Calibration) -> GroupCost:
    op = g.op
    keys = [g.id, f"{op.kind}:{op.db.name}" if op.db else None, op.kind]
    hit = next((k for k in keys if k and k in cal.tool_s), None)
    sig = OPS[op.kind]
    latency = cal.tool_s[hit] if hit else sig.latency_s
    timeout = op.option("timeout")
    if op.kind == "http" and timeout is not None and not hit:
        latency = min(latency, float(timeout))
    concurrency = 1 if op.side_effect else max(1, min(g.calls, sig.concurrency))
    seconds = g.calls * latency / concurrency
    source = f"latency: measured ({hit})" if hit else f"latency: default {latency * 1e3:.1f} ms"
    return GroupCost(
        g.id,
        op.kind,
        "cpu",
        seconds,
        breakdown={"calls": g.calls, "latency_s": latency, "concurrency": concurrency},
        calibrated=[source] if hit else [],
        defaults=[] if hit else [source],
    )


# -- hardware and the optimizer's problem ----------------------------------------------------------------

# What a wrong hardware description raises: a malformed string or file, or an unknown device name.
HARDWARE_ERRORS: tuple[type[Exception], ...] = (hardware.HardwareConfigError, specs.UnknownSpecError)


def parse_hardware(source: str | Path) -> Hardware:
    """The hardware a description names: `"2 x H100-SXM + cpu:16"`, TOML text, or a TOML file."""
    return hardware.parse(source)


def reference_device(hw: Hardware) -> DeviceSpec:
    """The device LLM estimates are reported on: the first accelerator, else the first CPU host."""
    return (hw.accelerators or hw.devices)[0].spec


def gpu_spec_name(device_name: str, memory_bytes: float) -> str:
    """The GPU spec closest to a CUDA device (e.g. "NVIDIA H100 80GB HBM3", 85e9 -> H100-SXM): same family
    word (h100, a10, l40s, ...), PCIe or not as the name says, then nearest memory; else DEFAULT_DEVICE."""
    name = device_name.lower()
    gpus = [s for s in map(specs.device, specs.device_names()) if s.kind == "gpu"]
    family = [s for s in gpus if re.search(rf"\b{re.escape(s.name.split('-')[0].lower())}\b", name)]
    if not family:
        return DEFAULT_DEVICE
    pcie = "pcie" in name
    return min(
        family, key=lambda s: (("pcie" in s.name.lower()) != pcie, abs(s.mem_capacity - memory_bytes))
    ).name


def detect_hardware() -> str:
    """This machine as a hardware description: `N x GPU-SPEC + cpu:CORES` when torch sees CUDA GPUs
    (the NVIDIA driver present), else `cpu:CORES`."""
    cores = os.cpu_count() or 1
    if Path("/dev/nvidiactl").exists() and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count():
            props = torch.cuda.get_device_properties(0)
            return (
                f"{torch.cuda.device_count()} x {gpu_spec_name(props.name, props.total_memory)} + cpu:{cores}"
            )
    return f"cpu:{cores}"


def to_problem(costed: CostedPlan, hw: str | Hardware | None = None) -> Problem:
    """Tasks = operator groups with per-device-kind seconds; LLMs on accelerators (on the CPU host when there
    are none), tools on the CPU hosts (one slot per core). Device kinds are spec names (H100-SXM, cpu, ...).
    `hw` defaults to the hardware the plan was costed for."""
    hw = parse_hardware(hw) if isinstance(hw, str) else hw or costed.hardware
    if hw is None:
        raise ValueError("to_problem needs a hardware description")
    cplan, cal = costed.consolidated, costed.calibration
    llm_devices = hw.accelerators or tuple(d for d in hw.devices if d.kind == "cpu")[:1]
    llm_specs = list({d.spec.name: d.spec for d in llm_devices}.values())
    devices = [
        Device(
            d.id,
            d.spec.name,
            0 if d.kind == "cpu" else int(d.spec.mem_capacity),
            max(1, d.cores) if d.kind == "cpu" else 1,
            d.simulated,
        )
        for d in hw.devices
    ]
    cpu_kind = next(d.spec.name for d in hw.devices if d.kind == "cpu")
    if not hw.accelerators:
        # With no accelerator LLM engines run on the hosts: one engine per host (`cpu-engine`, or
        # `cpu-engine0`, `cpu-engine1`, ... for several), one batch at a time each, beside the tools.
        # Its memory is the host's, so the plan knows which models stay loaded together.
        hosts = [d for d in hw.devices if d.kind == "cpu"]
        for i, host in enumerate(hosts):
            name = CPU_ENGINE if len(hosts) == 1 else f"{CPU_ENGINE}{i}"
            devices.append(Device(name, CPU_ENGINE, int(host.spec.mem_capacity), 1, False))
    kind_of = {spec.name: (spec.name if hw.accelerators else CPU_ENGINE) for spec in llm_specs}
    priced = {
        spec.name: costed.groups
        if spec.name == costed.device
        else group_costs(
            cplan,
            spec,
            cal,
            costed.policy,
            skip_unfit=True,
            fuse=costed.fuse,
            modes={m: e["mode"] for m, e in costed.start_modes.items()},
        )
        for spec in llm_specs
    }
    tasks, model_bytes, load_s, wake_s = [], {}, {}, {}
    sleeps: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    for gid, g in cplan.groups.items():
        deps = list(cplan.graph.predecessors(gid))
        if OPS[g.kind].tool:
            tasks.append(Task(gid, g.kind, deps, {cpu_kind: costed.groups[gid].seconds}))
            continue
        model_id = g.op.llm_model()
        model = specs.model(model_id)
        duration, mem = {}, None
        for spec in llm_specs:
            gc = priced[spec.name].get(gid)
            if gc is None:
                continue  # does not fit this device kind
            duration[kind_of[spec.name]] = gc.seconds
            mem = int(gc.mem_bytes) if mem is None else min(mem, int(gc.mem_bytes))  # fits the smallest
            load_s[(model_id, kind_of[spec.name])] = _start_s(model_id, model, spec, cal, costed.start_modes)
            if hw.accelerators:
                sleeps[(model_id, kind_of[spec.name])] = _sleep_levels(model, spec, cal)
            else:
                wake_s[(model_id, kind_of[spec.name])] = roofline.load_time(
                    model, spec, source="sleep", calibration=cal.hw or None
                ).seconds
        model_bytes[model_id] = int(model.weight_bytes())
        # Groups whose requests carry the same engine prefix key (halo.prefix.prefix_key) share a prefix group.
        tasks.append(
            Task(
                gid,
                "llm",
                deps,
                duration,
                model_id,
                mem or 0,
                shardable=g.calls > 1,
                prefix_group=g.prefix_key,
            )
        )
    prices = {d.spec.name: d.spec.price_per_hour for d in hw.devices}
    host_bytes = sum(d.spec.mem_capacity for d in hw.devices if d.kind == "cpu")
    level = sleep_levels(sleeps, model_bytes, host_bytes)
    sleep_s = {k: sleeps[k][lv][0] for k, lv in level.items()}
    wake_s.update({k: sleeps[k][lv][1] for k, lv in level.items()})
    return Problem(tasks, devices, model_bytes, load_s, wake_s, sleep_s, level, price_per_hour=prices)


def _start_s(model_id: str, model, spec, cal: Calibration, modes: dict[str, dict[str, Any]]) -> float:
    """Seconds to start `model`'s engine in its start mode: measured in that mode, else measured, else
    the hardware model's load time (plus compiling when it starts compiled)."""
    mode = modes.get(model_id, {}).get("mode")
    for key in ([f"load:{mode}"] if mode else []) + ["load"]:
        measured = cal.load_s.get(llm_key(model_id, spec.name, key))
        if measured is not None:
            return measured
    seconds = roofline.load_time(model, spec, calibration=cal.hw or None).seconds
    return seconds + (
        roofline.start_mode_costs(spec, calibration=cal.hw or None)[0] if mode == "compiled" else 0
    )


HOST_BACKUP_SHARE = 0.5  # of host memory, what sleeping models' weight copies (level 1) may take


def _sleep_levels(model, spec, cal: Calibration) -> dict[int, tuple[float, float]]:
    """Sleep level -> (seconds to sleep, seconds to wake) for `model` on `spec` (`hw_models`, §2.6)."""
    hw = cal.hw or None
    return {
        1: (
            roofline.sleep_time(model, spec, 1, calibration=hw).seconds,
            roofline.load_time(model, spec, "sleep", calibration=hw).seconds,
        ),
        2: (
            roofline.sleep_time(model, spec, 2, calibration=hw).seconds,
            roofline.load_time(model, spec, "reload", calibration=hw).seconds,
        ),
    }


def sleep_levels(
    costs: dict[tuple[str, str], dict[int, tuple[float, float]]],
    model_bytes: dict[str, int],
    host_bytes: float,
) -> dict[tuple[str, str], int]:
    """The sleep level per (model, device kind): the one whose sleep plus wake is cheaper; level 1 keeps
    the weights in host memory, so it is chosen only while the copies fit `HOST_BACKUP_SHARE` of it
    (models that gain most from level 1 first)."""
    gain = {k: sum(c[2]) - sum(c[1]) for k, c in costs.items()}
    out = dict.fromkeys(costs, 2)
    room = HOST_BACKUP_SHARE * host_bytes
    for key in sorted(costs, key=lambda k: -gain[k]):
        need = model_bytes.get(key[0], 0)
        if gain[key] > 0 and need <= room:
            out[key] = 1
            room -= need
    return out
