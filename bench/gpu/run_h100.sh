#!/usr/bin/env bash
# GPU benchmark on a host without registry access (torch + transformers preinstalled, Python 3.12).
# Expects .gpu/wheels (halo's wheel and its pure dependencies for cp312), .gpu/cache/tokenizers/smollm2 and
# .gpu/tpch.duckdb beside the checkout; results go to $OUT. The hf engine runs random-weight models of
# realistic shape: timing is real, text is not (transformers is a real but slow engine on a GPU).
set -euo pipefail
LIMIT=${LIMIT:-128}
# The image's python3 (a venv with torch) gets halo and its pure dependencies on PYTHONPATH.
rm -rf /tmp/halo-lib && python3 -m pip install -q --no-index --no-deps --target /tmp/halo-lib .gpu/wheels/*.whl
export HALO_CACHE_DIR=$PWD/.gpu/cache PYTHONPATH=/tmp/halo-lib HALO_DEBUG=1
halo() { python3 -P -m halo "$@"; }   # -P: the checkout must not shadow the installed package
mkdir -p data && cp .gpu/tpch.duckdb data/tpch.duckdb
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
SHAPE=${SHAPE:-qwen2.5-1.5b}   # the random-weight shape every model runs as
W=${W:-bench/gpu/tpch_trident_1p5b.halo}
INPUT=${INPUT:-workloads/tpch_trident.jsonl}
MODELS=${MODELS:-Qwen/Qwen2.5-1.5B-Instruct}   # the declared models to calibrate (all run as one shape)
if [ "$SHAPE" = qwen2.5-7b ] && [ "$W" = bench/gpu/tpch_trident_1p5b.halo ]; then   # the 7B variant
  W=bench/gpu/tpch_trident_7b.halo MODELS=Qwen/Qwen2.5-7B-Instruct
  sed 's/Qwen2.5-1.5B-Instruct/Qwen2.5-7B-Instruct/; s/Qwen2.5-1.5B shape/Qwen2.5-7B shape/' \
    bench/gpu/tpch_trident_1p5b.halo > "$W"
fi
HW="1 x H100-SXM + cpu:16"
OPTS=(--engine-opt random_weights=true --engine-opt "shape=\"$SHAPE\"")
BATCH=(--max-batch ${MAX_BATCH:-256} --batch-tokens 262144)
# 1. the engine's batch law from a grid of synthetic batches (halo calibrate), then a small real slice
#    under EXPLAIN ANALYZE (tool latencies, output lengths); both land in .halo/calibration.json
halo calibrate $MODELS -H "$HW" --sizes 1,16,64,256 --steps 16,64 --prompts 128,512 \
  "${OPTS[@]}" > "$OUT/calibrate.txt" 2>&1 || true
halo explain "$W" -i "$INPUT" --limit 24 --analyze -H "$HW" -o "$OUT/analyze.jsonl" \
  "${OPTS[@]}" "${BATCH[@]}" > "$OUT/analyze.txt" 2>&1 || true
cp .halo/calibration.json "$OUT/calibration.json" 2>/dev/null || true
# 2. the three plans side by side on the same engine, predicted from that calibration
halo bench "$W" -i "$INPUT" --limit "$LIMIT" -H "$HW" --results "$OUT" \
  --note "GPU: $(head -1 "$OUT/gpu.txt"); hf engine (transformers) with random weights of the $SHAPE shape in bf16: timing is real, text is not" \
  "${BATCH[@]}" "${OPTS[@]}" 2>&1 | tail -25
# 3. repeats of the two batched plans on the same warm machine: how much the timing moves run to run
for i in $(seq 1 ${REPEATS:-0}); do
  halo bench "$W" -i "$INPUT" --limit "$LIMIT" -H "$HW" --results "$OUT/repeat$i" --modes opwise,halo \
    "${BATCH[@]}" "${OPTS[@]}" 2>&1 | grep -E "^\| (opwise|halo)|predicted"
done
