#!/usr/bin/env bash
# Regenerates bench/results/simulated_DATE.md: the Halo plan against baseline plans in virtual time
# (cost model only, labelled simulated), four workloads on 1/4/8 x H100, then alternative devices.
set -euo pipefail
HALO=${HALO:-.venv/bin/halo}
OUT=bench/results/simulated_$(date +%F).md
{
  echo "# Simulated makespans: the Halo plan vs baseline plans (cost model, not measured)"
  echo
  echo "- date: $(date +%F); planning machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "- command: \`halo simulate workloads/W.halo -i workloads/W.jsonl -H HW --time-limit 5\` (1,200 inputs each)"
  echo "- every number below is a **simulated** estimate from the cost model (roofline, default constants: no"
  echo "  calibration file); the plans run in virtual time. The Halo plan's groups are priced in the engine"
  echo "  batches the cost model chose (the \`Batching:\` line), with nodes that share batches fused; the"
  echo "  operator-at-a-time and round-robin plans are priced unfused; the naive per-input plan is one input's"
  echo "  plan repeated."
  for w in tpch_trident tpch_fanout imdb_diamond wiki_bridges; do
    for hw in "1 x H100-SXM + cpu:16" "4 x H100-SXM + cpu:16" "8 x H100-SXM + cpu:32"; do
      echo; echo "### $w on $hw"; echo
      $HALO simulate workloads/$w.halo -i workloads/$w.jsonl -H "$hw" --time-limit 5 | sed -n '1,9p'
    done
  done
  echo; echo "## Alternative devices (simulated), bench/gpu/tpch_trident_1p5b.halo (every model the Qwen2.5-1.5B shape)"
  for hw in "1 x H100-SXM + cpu:16" "1 x NeuPIMs + cpu:16" "1 x Duplex + cpu:16" "1 x SAIL"; do
    echo; echo "### $hw"; echo
    $HALO simulate bench/gpu/tpch_trident_1p5b.halo -i workloads/tpch_trident.jsonl -H "$hw" --time-limit 5 | sed -n '1,9p'
  done
} > "$OUT"
echo "wrote $OUT"
