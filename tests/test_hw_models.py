"""Tests of halo.hw_models: spec data, hardware parsing, the calibrated roofline and the
simulated devices reproducing their papers' published relative results (within 15%)."""

import json

import pytest

from halo.hw_models import (
    backends,
    batching,
    hardware,
    logic_pim,
    lut_gemv,
    npu_pim,
    roofline,
    specs,
    w4a16,
)

KIB = 1024


def within(value, target, tol=0.15):
    return abs(value - target) <= tol * target


# ---- specs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kib", [("llama-3-8b", 128), ("meta-llama/Meta-Llama-3-70B", 320), ("Qwen/Qwen2.5-7B-Instruct", 56)]
)
def test_kv_bytes_per_token(name, kib):
    assert specs.model(name).kv_bytes_per_token() == kib * KIB


@pytest.mark.parametrize("name", specs.model_names())
def test_architecture_matches_published_parameter_counts(name):
    m = specs.model(name)
    assert within(m.params_total, m.params_published, 0.03)
    if m.active_published is not None:  # MoE; publishers count input embeddings inconsistently
        assert within(m.params_active, m.active_published, 0.10)
        assert m.params_active < m.params_total / 3


def test_model_lookup_by_alias_is_case_insensitive():
    assert specs.model("QWEN3-14B").name == "Qwen/Qwen3-14B"
    assert specs.model("gpt-oss:20b").name == "openai/gpt-oss-20b"


def test_mixed_precision_checkpoint_and_formats():
    oss = specs.model("openai/gpt-oss-20b")
    assert 12e9 < oss.weight_bytes() < 15e9  # mxfp4 experts, bf16 attention
    assert within(oss.weight_bytes("bf16"), 2 * oss.params_total, 1e-9)
    llama = specs.model("llama-3-8b")
    assert within(llama.weight_bytes("bf16") / llama.weight_bytes("w4a16"), 3.88, 0.01)
    with pytest.raises(ValueError, match="unknown weight format"):
        llama.weight_bytes("fp5")


def test_flops_per_token_has_attention_term():
    m = specs.model("llama-3-8b")
    assert within(m.flops_per_token(), 15.0e9, 0.02)  # §2.2 worked example
    assert m.flops_per_token(2048) - m.flops_per_token() == pytest.approx(524288 * 2048)


def test_unknown_model_error_lists_known_names():
    with pytest.raises(specs.UnknownSpecError) as err:
        specs.model("no-such/model-9B")
    assert isinstance(err.value, KeyError)
    assert "no-such/model-9B" in str(err.value) and "Qwen/Qwen3-8B" in str(err.value)
    with pytest.raises(KeyError, match="H100-SXM"):
        specs.device("TPU-v9")


def test_model_from_hf_config(tmp_path):
    cfg = {
        "_name_or_path": "acme/tiny-moe",
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 1000,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "torch_dtype": "float16",
        "tie_word_embeddings": True,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    m = specs.model(str(tmp_path))  # a directory holding config.json
    assert (m.name, m.head_dim, m.dtype, m.experts) == ("acme/tiny-moe", 32, "fp16", 4)
    assert m.kv_bytes_per_token() == 2 * 4 * 2 * 32 * 2
    attn = 256 * (256 + 2 * 64) + 256 * 256
    expert = 3 * 256 * 512
    assert m.params_total == 4 * (attn + 256 * 4 + 4 * expert) + 1000 * 256
    del cfg["hidden_size"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="hidden_size"):
        specs.model_from_hf_config(path)


@pytest.mark.parametrize("name", specs.device_names())
def test_every_device_loads_with_sane_numbers(name):
    d = specs.device(name)
    assert d.peak_flops("bf16") > 0 and d.mem_bw > 0 and d.mem_capacity > 0
    assert d.simulated == (d.backend != "roofline")
    assert d.backend in backends.BACKENDS


def test_cpu_device_scales_with_cores():
    small, big = specs.device("cpu", 4), specs.device("cpu", 64)
    assert big.peak_flops("bf16") == 16 * small.peak_flops("bf16")
    assert big.mem_bw == specs.device("cpu").mem_bw  # socket bandwidth saturates
    with pytest.raises(ValueError):
        specs.device("H100-SXM", 8)


def test_lora_adapter_is_small_and_cheap_to_switch():
    base = specs.model("Qwen/Qwen3-8B")
    adapter = specs.lora(base, 16)
    assert 0 < adapter.weight_bytes() < 0.01 * base.weight_bytes()
    swap = roofline.load_time(adapter, "H100-SXM", "host").seconds
    wake = roofline.load_time(base, "H100-SXM", "sleep").seconds
    assert swap < wake / 5


# ---- hardware ----------------------------------------------------------------------------


def test_parse_hardware_string():
    hw = hardware.parse("2 x H100-SXM + cpu:16")
    assert [d.id for d in hw.devices] == ["gpu0", "gpu1", "cpu0"]
    assert hw["gpu1"].spec.name == "H100-SXM" and not hw.simulated
    assert hw.cpu_workers == 16 and len(hw.accelerators) == 2
    assert hardware.parse(hw.describe()) == hw


def test_parse_simulated_and_implicit_cpu():
    hw = hardware.parse("1 x NeuPIMs")
    assert [(d.id, d.simulated) for d in hw.devices] == [("npu0", True), ("cpu0", False)]
    assert hw.cpu_workers == 1
    assert len(hardware.parse("8xH100").accelerators) == 8


def test_parse_hardware_toml(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text('[[devices]]\nname = "H200"\ncount = 2\n\n[[devices]]\nname = "cpu"\ncores = 8\n')
    hw = hardware.parse(path)
    assert hw.describe() == "2 x H200 + 1 x cpu:8"
    assert hardware.parse('hardware = "1 x Duplex + cpu:4"').devices[0].id == "xpu0"


@pytest.mark.parametrize(
    "text, message",
    [
        ("2 x B300", "unknown device 'B300'"),
        ("2 x", "cannot parse"),
        ("0 x H100-SXM", "at least 1"),
        ("H100-SXM:8", "not a CPU"),
        ("cpu:0", "at least one core"),
        ("", "empty"),
        ("missing.toml", "does not exist"),
        ("[[devices]]\ncount = 2", "lacks 'name'"),
    ],
)
def test_parse_hardware_errors(text, message):
    with pytest.raises(hardware.HardwareConfigError, match=message):
        hardware.parse(text)


# ---- roofline ----------------------------------------------------------------------------


def test_decode_memory_bound_at_batch_one_compute_bound_past_ridge():
    one = roofline.decode_time("llama-3-8b", "H100-SXM", 1, 512)
    assert one.breakdown["bound"] == "memory" and one.breakdown["eta"] == pytest.approx(0.78, abs=0.01)
    ridge = specs.device("H100-SXM").ridge()
    big = roofline.decode_time("llama-3-8b", "H100-SXM", int(2 * ridge), 512)
    assert big.breakdown["bound"] == "compute"
    assert big.breakdown["linear_compute_s"] > big.breakdown["linear_memory_s"]


def test_decode_anchors():
    # A100 40GB, Llama-3.1-8B bf16, batch 1: ~75 tok/s measured (§6.2)
    a100 = roofline.decode_time("llama-3.1-8b", "A100-40GB", 1, 128)
    assert within(1 / a100.seconds, 75, 0.10)
    # H100 per-layer linear at M=256 is 1.58x the roofline (§6.3a)
    h100 = roofline.decode_time("llama-3-8b", "H100-SXM", 256, 1)
    assert within(1 / h100.breakdown["eta"], 1.58, 0.05)


def test_prefill_matches_measured_gemm_and_prefix_cache_saves():
    cold = roofline.prefill_time("llama-3-8b", "H100-SXM", 2048)
    # 32 layers x 1122.8 us measured at M=2048 (§6.3a) plus attention and LM head
    assert within(cold.breakdown["linear_s"], 32 * 1122.8e-6, 0.10)
    warm = roofline.prefill_time("llama-3-8b", "H100-SXM", 2048, cached_tokens=1900)
    assert warm.seconds < cold.seconds / 4
    with pytest.raises(ValueError):
        roofline.prefill_time("llama-3-8b", "H100-SXM", 100, cached_tokens=200)


def test_decode_steps_accumulate_growing_context():
    one = roofline.decode_time("llama-3-8b", "H100-SXM", 64, 4000)
    many = roofline.decode_time("llama-3-8b", "H100-SXM", 64, 4000, steps=100)
    assert 100 * one.seconds < many.seconds < 100 * 1.05 * one.seconds
    assert many.breakdown["steps"] == 100


def test_calibration_override_is_applied_and_reported():
    default = roofline.decode_time("llama-3-8b", "H100-SXM", 1, 512)
    assert default.breakdown["calibrated"] is False
    flat = roofline.decode_time("llama-3-8b", "H100-SXM", 1, 512, calibration={"eta": 0.5})
    assert flat.breakdown["eta"] == 0.5 and flat.seconds > 1.4 * default.seconds
    assert flat.breakdown["calibrated"] and flat.breakdown["calibrated_keys"] == ["eta"]
    other = roofline.decode_time("llama-3-8b", "H100-SXM", 1, 512, calibration={"h200": {"eta": 0.5}})
    assert other.seconds == default.seconds and not other.breakdown["calibrated"]
    with pytest.raises(ValueError, match="unknown calibration key"):
        roofline.decode_time("llama-3-8b", "H100-SXM", 1, 512, calibration={"etaa": 0.5})


def test_load_times():
    assert 30 <= roofline.load_time("llama-3-8b", "H100-SXM", "disk").seconds <= 100
    assert 30 <= roofline.load_time("llama-3-70b", "H100-SXM", "disk", tp=4).seconds <= 110
    assert 0.1 <= roofline.load_time("llama-3-8b", "H100-SXM", "sleep").seconds <= 6
    assert roofline.load_time("llama-3-8b", "H100-SXM", "peer").seconds < 0.2
    with pytest.raises(ValueError):
        roofline.load_time("llama-3-8b", "H100-SXM", "tape")


def test_kv_transfer_beats_recompute():
    kv = 4096 * specs.model("llama-3-8b").kv_bytes_per_token()  # 512 MiB
    nvlink = roofline.kv_transfer_time(kv, "nvlink").seconds
    pcie = roofline.kv_transfer_time(kv, "pcie").seconds
    recompute = roofline.prefill_time("llama-3-8b", "H100-SXM", 4096).seconds
    assert within(nvlink, 1.4e-3, 0.1) and within(pcie, 9.8e-3, 0.1)
    assert pcie < recompute / 5


def test_group_time_batches_under_kv_budget():
    g = roofline.group_time("llama-3-8b", "H100-SXM", 1000, 8000, 0, 1000, max_batch=256)
    b = g.breakdown
    assert b["batch_limited_by"] == "memory"
    assert (
        b["batch"] * b["kv_bytes_per_request"]
        <= b["kv_budget_bytes"]
        < (b["batch"] + 1) * b["kv_bytes_per_request"]
    )
    assert b["waves"] == -(-1000 // b["batch"])
    assert g.peak_memory_bytes <= 0.9 * 80e9 + 1
    assert g.seconds == pytest.approx(b["prefill_s"] + b["decode_s"])
    cached = roofline.group_time("llama-3-8b", "H100-SXM", 1000, 8000, 7000, 1000, max_batch=256)
    assert cached.breakdown["batch"] > b["batch"] and cached.seconds < g.seconds


def test_group_time_capacity_errors_and_tensor_parallel():
    with pytest.raises(batching.CapacityError):
        roofline.group_time("llama-3-70b", "H100-SXM", 10, 100, 0, 10)
    tp4 = roofline.group_time("llama-3-70b", "H100-SXM", 64, 1000, 0, 100, tp=4)
    assert tp4.breakdown["decode"]["comm_s"] > 0
    with pytest.raises(batching.CapacityError, match="does not fit"):
        roofline.group_time("SmolLM2-135M", "L40S", 1, 10_000_000, 0, 10)


# ---- simulated devices: paper ratios -----------------------------------------------------

# ShareGPT-like decode: 128 requests with KV lengths spread over 50..650 (mean ~350)
SHAREGPT = [50 + (600 * i) // 127 for i in range(128)]


def test_neupims_reproduces_paper_ratios():
    r = npu_pim.compare("gpt3-13b", SHAREGPT)
    assert within(r["gpu_only"], 3.0)
    assert within(r["npu_only"], 2.4)
    assert within(r["naive"], 1.6)


def test_neupims_pim_channel_packing_and_sub_batches():
    d = specs.device("NeuPIMs")
    loads = npu_pim.pim_channel_loads(specs.model("gpt3-13b"), d, [1000] + [10] * 63)
    small = npu_pim.pim_channel_loads(specs.model("gpt3-13b"), d, [10])[0]
    assert len(loads) == 32 and max(loads) == loads[0] > 30 * small  # the long request sits alone
    assert max(loads[1:]) - min(loads[1:]) == pytest.approx(small)  # the rest spread evenly
    subs = npu_pim.split_sub_batches(SHAREGPT, 2)
    assert abs(sum(subs[0]) - sum(subs[1])) <= max(SHAREGPT)
    step = npu_pim.decode_step("gpt3-13b", d, SHAREGPT)
    assert step.breakdown["simulated"] and step.breakdown["sub_batches"] == [64, 64]
    # overlap pays most when GEMM and PIM time balance; it is bounded by 2x over blocked mode
    gain = {
        f: npu_pim.compare(
            "gpt3-13b", SHAREGPT, specs.with_params(d, pim_channel_bw=d.params["pim_channel_bw"] / f)
        )["naive"]
        for f in (0.5, 1.0, 1.6, 4.0)
    }
    assert gain[0.5] < gain[1.0] < gain[1.6] <= 2.0 and gain[4.0] < gain[1.6]
    assert gain[1.6] > 1.9


def test_duplex_up_to_2_67x_over_h100_on_mixtral_decode():
    gains = {b: logic_pim.speedup_vs_gpu("mixtral-8x7b", b, 1024) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256)}
    assert within(max(gains.values()), 2.67)
    assert gains[256] < max(gains.values()) / 1.5  # Logic-PIM's edge fades once Op/B is high
    step = logic_pim.decode_step("mixtral-8x7b", "Duplex", [1024] * 16)
    assert step.breakdown["attention_on"] == "logic_pim"


def test_duplex_expert_split_balances_sides():
    x, lp, on_xpu = logic_pim.split_experts([(3.0, 1.0)] * 8)
    assert on_xpu == 2 and x == 6.0 and lp == 6.0


def test_sail_up_to_10_7x_over_neoverse_n1():
    best, batch, bits = lut_gemv.best_speedup("llama-2-7b", 64)
    assert within(best, 10.7) and bits == 2
    assert lut_gemv.speedup("llama-2-7b", 1, 64, 4) == pytest.approx(1.0, abs=0.05)  # both DRAM-bound


def test_sail_lut_cost_linear_in_bits():
    m, d = specs.model("llama-2-7b"), specs.device("SAIL")
    cost = {b: lut_gemv.linear_time(m, d, 32, b)["compute_s"] for b in (2, 3, 4)}
    assert cost[4] - cost[3] == pytest.approx(cost[3] - cost[2], rel=1e-9)
    assert cost[4] > 1.8 * cost[2]


def test_marlin_w4a16_speedup_and_fade():
    k, n = 72 * 1024, 18 * 1024  # MARLIN's large GEMM, on an A10
    assert within(w4a16.gemm_speedup(k, n, 1, "A10"), 3.87)
    assert within(w4a16.gemm_speedup(k, n, 16, "A10"), 3.87)
    assert w4a16.gemm_speedup(k, n, 128, "A10") < 2.0
    assert w4a16.gemm_speedup(k, n, 1024, "A10") < 1.0
    assert within(w4a16.crossover_batch("H100-SXM"), specs.device("H100-SXM").ridge() / 4, 0.05)
    assert 2.0 < w4a16.decode_speedup("llama-3-8b", "A100-80GB", 1, 512) < 3.87


@pytest.mark.parametrize("name", ["H100-SXM", "NeuPIMs", "Duplex", "SAIL", "cpu"])
def test_group_time_on_every_backend(name):
    est = backends.group_time("llama-3.2-1b", name, 40, 400, 100, 50, max_batch=16)
    assert est.seconds > 0 and est.breakdown["batch"] == 16 and est.breakdown["waves"] == 3
    assert est.breakdown["simulated"] == specs.device(name).simulated
