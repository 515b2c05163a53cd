"""Random weights of a real shape for vLLM (`dummy_weights`), co-resident models (`memory_split`) and the
`vllm serve` command line: the parts that need no GPU and no vLLM."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from halo.models import SMOLLM2_ID
from halo.runtime.engines import EngineUnavailable, GenRequest
from halo.runtime.engines.vllm import _check_split, dummy_model_dir, serve_args, spec_entry


@pytest.mark.parametrize(
    ("model", "arch", "billions"),
    [
        ("Qwen/Qwen3-14B", "Qwen3ForCausalLM", 14.8),
        ("Qwen/Qwen3-32B", "Qwen3ForCausalLM", 32.8),
        ("qwen2.5-1.5b", "Qwen2ForCausalLM", 1.54),
        ("meta-llama/Llama-3.1-8B-Instruct", "LlamaForCausalLM", 8.03),
    ],
)
def test_dense_shape_has_the_published_size(model, arch, billions):
    d = dummy_model_dir(model)
    config = AutoConfig.from_pretrained(d)
    assert config.architectures == [arch] and config.torch_dtype == torch.bfloat16
    with torch.device("meta"):  # no memory: only the parameter count
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    assert params / 1e9 == pytest.approx(billions, rel=0.02)


def test_mixture_of_experts_becomes_its_dense_active_width():
    _, raw = spec_entry("openai/gpt-oss-20b")
    config = json.loads((dummy_model_dir("gpt-oss-20b") / "config.json").read_text())
    assert config["intermediate_size"] == raw["experts_per_token"] * raw["expert_intermediate"]
    assert (config["hidden_size"], config["head_dim"], config["vocab_size"]) == (2880, 64, 201088)
    assert config["halo_dummy_of"] == "openai/gpt-oss-20b" and "num_local_experts" not in config


def test_directory_is_built_once_with_a_working_tokenizer():
    first = dummy_model_dir("Qwen/Qwen3-14B")
    assert dummy_model_dir("qwen3-14b") == first  # an alias names the same shape
    tok = AutoTokenizer.from_pretrained(first)
    config = json.loads((first / "config.json").read_text())
    assert config["eos_token_id"] == tok.eos_token_id and config["bos_token_id"] == tok.bos_token_id
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert dummy_model_dir(SMOLLM2_ID).name.startswith("HuggingFaceTB--SmolLM2-135M")


def test_unknown_model_names_the_known_ones():
    with pytest.raises(EngineUnavailable, match="no architecture for 'acme/llm-9000'.*Qwen/Qwen3-14B"):
        dummy_model_dir("acme/llm-9000")


def test_memory_split_shares_are_checked():
    assert _check_split({"a": 0.4, "b": 0.4}) == {"a": 0.4, "b": 0.4}
    assert _check_split(None) is None
    for bad in ({"a": 0.6, "b": 0.6}, {"a": 0.0}, {"a": 1.2}, {}):
        with pytest.raises(EngineUnavailable, match="memory_split"):
            _check_split(bad)


def test_serve_args_carry_the_engine_options():
    args = serve_args(
        "/m/dir",
        ["Qwen/Qwen3-14B", "Qwen/Qwen3-32B"],
        8123,
        0.3,
        {
            "dummy_weights": True,
            "enforce_eager": True,
            "sleep_mode": True,
            "max_model_len": 4096,
            "seed": 0,
            "model_map": {"a": "b"},
            "gpu_memory_utilization": 0.9,
            "compilation_config": {"level": 0},
        },
    )
    assert args[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", "/m/dir"]
    line = " ".join(args[5:])
    assert "--served-model-name Qwen/Qwen3-14B Qwen/Qwen3-32B --host 127.0.0.1 --port 8123" in line
    assert "--gpu-memory-utilization 0.3 " in line and "0.9" not in line  # the server's own share
    assert "--load-format dummy" in line and "--enforce-eager" in line and "--max-model-len 4096" in line
    assert '--compilation-config {"level": 0}' in line and "--seed 0" in line
    assert "model-map" not in line and "sleep-mode" not in line and "dummy-weights" not in line


class _FakeLLM:
    """Stands in for vllm.LLM where no GPU is: it keeps the GPU-memory books (awake engines' shares must fit in
    1.0) and counts starts, so the engine's warm handover and sleeping can be checked."""

    started: list[_FakeLLM] = []

    def __init__(self, model: str, gpu_memory_utilization: float, **options):
        self.model, self.share, self.options = model, gpu_memory_utilization, options
        self.awake, self.cached = False, 0
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=4096))
        self._claim()
        _FakeLLM.started.append(self)

    def _claim(self) -> None:
        used = sum(e.share for e in _FakeLLM.started if e.awake and e is not self)
        if used + self.share > 1.0:
            raise RuntimeError(f"out of GPU memory: {used:.2f} in use, {self.share:.2f} asked")
        self.awake = True

    def sleep(self, level: int) -> None:
        self.awake, self.cached = False, 0

    def wake_up(self) -> None:
        self._claim()

    def reset_prefix_cache(self) -> None:
        self.cached = 0

    def get_tokenizer(self):
        return SimpleNamespace(encode=lambda text, add_special_tokens: text.split())

    def chat(self, messages, sampling_params, use_tqdm):
        assert self.awake
        self.cached += len(messages)
        done = SimpleNamespace(text="ok", token_ids=[1, 2], finish_reason="stop")
        return [
            SimpleNamespace(outputs=[done], prompt_token_ids=[1] * 5, num_cached_tokens=0) for _ in messages
        ]


@pytest.fixture
def fake_vllm(monkeypatch):
    from halo.runtime.engines import vllm as adapter

    module = SimpleNamespace(LLM=_FakeLLM, SamplingParams=lambda **kw: kw)
    monkeypatch.setattr(adapter, "_import_vllm", lambda: module)
    monkeypatch.setattr(adapter.VLLMEngine, "_structured_outputs_factory", lambda self: None)
    monkeypatch.setattr(adapter, "_sleep_available", lambda: True)
    _FakeLLM.started = []
    yield adapter
    adapter.release_warm()


MODELS3 = ["Qwen/Qwen3-14B", "Qwen/Qwen3-32B", "openai/gpt-oss-20b"]


def _ask(engine, model: str) -> None:
    [res] = engine.generate([GenRequest(model, "hi", max_tokens=2)])
    assert res.error is None and res.text == "ok"


def test_switching_engines_kept_warm_are_handed_over_asleep(fake_vllm):
    opts = {"dummy_weights": True, "keep_warm": True, "gpu_memory_utilization": 0.85}
    with fake_vllm.VLLMEngine(**opts) as first:
        for m in MODELS3:  # 0.85 each: only one can be awake at a time
            assert first.load(m) >= 0
            _ask(first, m)
        assert first.resident_models() == ["openai/gpt-oss-20b"]
        assert all(e.options["load_format"] == "dummy" for e in _FakeLLM.started)
    assert not any(e.awake for e in _FakeLLM.started)  # closed into the warm pool, all asleep
    with fake_vllm.VLLMEngine(**opts) as second:
        for m in reversed(MODELS3):
            _ask(second, m)
    assert len(_FakeLLM.started) == 3  # no second start
    assert "Qwen3-32B shape" in second.substitutions["Qwen/Qwen3-32B"]


def test_memory_split_keeps_models_resident_side_by_side(fake_vllm):
    split = {"Qwen/Qwen3-14B": 0.3, "Qwen/Qwen3-32B": 0.3, "openai/gpt-oss-20b": 0.3}
    opts = {"dummy_weights": True, "keep_warm": True, "memory_split": split}
    with fake_vllm.VLLMEngine(**opts) as first:
        for m in MODELS3:
            first.load(m)
        assert first.load("Qwen/Qwen3-14B") == 0.0  # resident: no load
        for m in MODELS3 * 2:
            _ask(first, m)
        assert sorted(first.resident_models()) == sorted(MODELS3)
        assert [e.share for e in _FakeLLM.started] == [0.3, 0.3, 0.3] and all(
            e.awake for e in _FakeLLM.started
        )
        assert not any("enable_sleep_mode" in e.options for e in _FakeLLM.started)
    assert all(e.awake and e.cached == 0 for e in _FakeLLM.started)  # kept resident, prefix cache emptied
    with fake_vllm.VLLMEngine(**opts) as second:
        _ask(second, "openai/gpt-oss-20b")
    assert len(_FakeLLM.started) == 3
    with fake_vllm.VLLMEngine(**{**opts, "memory_split": {"Qwen/Qwen3-14B": 0.3}}) as narrow:
        [res] = narrow.generate([GenRequest("Qwen/Qwen3-32B", "hi")])
        assert "memory_split gives no share" in res.error


def test_release_warm_shuts_the_pool_down(fake_vllm, monkeypatch):
    stopped = []
    monkeypatch.setattr(fake_vllm, "_shutdown", stopped.append)
    with fake_vllm.VLLMEngine(dummy_weights=True, keep_warm=True) as eng:
        _ask(eng, "Qwen/Qwen3-14B")
    assert stopped == []
    fake_vllm.release_warm()
    assert stopped == _FakeLLM.started


def test_calibrate_fits_the_batch_law_on_the_vllm_engine(fake_vllm, tmp_path):
    """`halo calibrate --engine vllm` (halo.api.calibrate) probes each model through the adapter; declared ids
    that run as the same stand-in are probed once."""
    from halo import api

    stand_in = {"Qwen/Qwen3-14B": "qwen2.5-0.5b", "Qwen/Qwen3-32B": "qwen2.5-0.5b"}
    opts = {"dummy_weights": True, "model_map": stand_in, "gpu_memory_utilization": 0.5}
    cal = api.calibrate(
        list(stand_in),
        engine="vllm",
        engine_options=opts,
        hardware="1 x H200",
        sizes=(1, 4),
        steps=(2, 8),
        prompts=(16,),
        calibration=tmp_path / "cal.json",
    )
    assert cal.device == "H200" and set(cal.laws) == set(stand_in)
    assert cal.laws["Qwen/Qwen3-14B"]["batches"] == 4 and len(_FakeLLM.started) == 1
    assert json.loads((tmp_path / "cal.json").read_text())
