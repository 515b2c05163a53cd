#!/usr/bin/env bash
# Run on the GPU machine, from the repository root (see bench/gpu/README.md).
#
#   bash bench/gpu/h200.sh receive              # move the carried kit parts out of the tree into /tmp/kit
#   bash bench/gpu/h200.sh install              # assemble and check the kit; install it with --no-index
#   bash bench/gpu/h200.sh PHASE OUT [ARGS...]  # offline | switch | serve | starts (bench/gpu/h200.py), results in OUT
#
# Every phase installs Halo's wheel (carried in bench/gpu/parts/) afresh, so a fixed Halo needs no new kit.
set -euo pipefail
KIT=/tmp/kit
LIB=/tmp/halo-lib   # the kit's packages (once a lease)
HALO=/tmp/halo-pkg  # Halo itself (every phase)
pip_install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$@"; }

case "${1:-}" in
  receive)
    mkdir -p "$KIT"
    mv bench/gpu/parts/kit.* "$KIT"/ 2>/dev/null || true
    ls -l "$KIT"
    ;;
  install)
    cd "$KIT"
    cat kit.tar.xz.* > kit.tar.xz && rm kit.tar.xz.*
    sha256sum -c kit.sha256
    mkdir -p unpacked && xz -dc -T0 kit.tar.xz | tar -x -C unpacked && rm kit.tar.xz
    rm -rf "$LIB" && pip_install "$LIB" unpacked/wheels/*.whl
    echo "installed $(ls unpacked/wheels | wc -l) wheels into $LIB"
    ;;
  offline|switch|serve|starts)
    phase=$1 out=$2
    shift 2
    rm -rf "$HALO" && pip_install "$HALO" bench/gpu/parts/halo-*.whl
    mkdir -p data "$out" && cp "$KIT/unpacked/tpch.duckdb" data/tpch.duckdb
    # Halo and the kit first; the checkout last, for bench/ only (its halo/ is not the installed layout).
    export PYTHONPATH=$HALO:$LIB:$PWD HALO_CACHE_DIR=$KIT/unpacked/cache VLLM_CACHE_ROOT=$KIT/vllm-cache
    export VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1 HALO_DEBUG=1 TOKENIZERS_PARALLELISM=false
    python3 -P bench/gpu/h200.py "$phase" "$out" "$@" 2>&1 | tee "$out/$phase.log"
    ;;
  *)
    sed -n 2,8p "$0"
    exit 2
    ;;
esac
