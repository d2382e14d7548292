#!/usr/bin/env bash
# One prepared device run for a session that is lent a GPU (see the device tool's README): build nzdist with its
# CUDA kernels, run the GPU tests, the whole suite on the CUDA machine, and every benchmark with a GPU mode,
# leaving logs and JSON under $OUT (default ./gpu_out). Wheels the GPU image lacks (DeepSpeed, nvCOMP,
# DFloat11; prepared on the CPU machine as DEVELOPERS.md says) are installed from $WHEELS when it exists.
#   run: bash .ci/gpu_check.sh            (on the device: OUT is set by the tool)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"
WHEELS="${WHEELS:-shared/wheels}"
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
step() {  # step NAME TIMEOUT CMD...: run, keep its log, record its status; never stop the whole run
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  log "$name: rc=$rc, $((SECONDS - t0)) s"
  tail -3 "$OUT/$name.log" | sed 's/^/   /' | tee -a "$OUT/summary.txt"
}

log "$(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi -L 2>&1 | tee -a "$OUT/summary.txt"
if [ -d "$WHEELS" ]; then
  step wheels 300 pip install --no-deps "$WHEELS"/*.whl
fi
step build 600 env NZDIST_CUDA=1 pip install --no-build-isolation -e .
step cuda_tests 300 python -m pytest -q tests/cuda
step codec_tests 300 python -m pytest -q tests/codec
step bench_gpu 600 python -m nzdist.cli bench gpu --out "$OUT/bench"
step bench_fsdp 600 python -m nzdist.cli bench fsdp --device cuda --nproc 1 --out "$OUT/bench"
step bench_codec 600 python -m nzdist.cli bench codec --quick --out "$OUT/bench"
step full_suite 1800 python -m pytest -q -x tests
log "done"
