#!/usr/bin/env bash
# The prepared device run for a session that is lent a GPU: one call of at most 420 s (csrc/cuda/NOTES.md,
# "The device call", has the exact command, carry list and timeout_s). Steps, in order, each with its own limit:
#   probe      nvidia-smi, torch, nvcc; on a machine without a GPU: stop here, non-zero, within 60 s
#   wheels     carried wheels (.whl/*.whl, made by .ci/gpu_wheels.sh: nvCOMP, DFloat11), --no-index --no-deps
#   build      pip install -e . --no-deps --no-index --no-build-isolation, CUDA kernels for sm_90 only
#   gate       nzdist.codec.cuda.available(), else stop and print the CUDA error string
#   smoke      1 Mi bf16: GPU encode gives the CPU codec's bytes, every decode variant the CPU decode's bits
#   tests      the GPU tests only (tests/cuda/test_gpu.py, test_glue.py), each test with its own timeout
#   sanitizer  compute-sanitizer memcheck, racecheck, synccheck on a tiny decode / encode / corrupt-payload run
#   bench      nzdist bench gpu over every decode kernel variant
#   ncu        Nsight Compute on the decode kernel (one launch per variant), only if the budget has room
# Each step appends its result to $OUT/summary.tsv when it finishes; the files under $OUT are at most 8, all at
# its top level (summary.tsv, probe.log, build.log, check.log, sanitizer.log, bench.log, gpu.json, ncu.txt),
# and a short table is printed last.
#   bash .ci/gpu_check.sh            the whole run (OUT is set by the device tool; default ./gpu_out)
#   bash .ci/gpu_check.sh --plan     each step with its limit, and the total, without running anything
#   bash .ci/gpu_check.sh --from S   start at step S (a rerun on a machine where the build is still in place)
#   bash .ci/gpu_check.sh --skip S,T leave steps out (a shorter rerun on a fresh machine: --skip sanitizer,ncu)
set -uo pipefail
cd "$(dirname "$0")/.."

STEPS=(probe wheels build gate smoke tests sanitizer bench ncu)
# Limits: the build is ~70 s of one core here (2 shared cores; 8 C++ files and 2 .cu files, one after another).
declare -A LIMIT=([probe]=20 [wheels]=10 [build]=130 [gate]=20 [smoke]=20 [tests]=40 [sanitizer]=55
                  [bench]=65 [ncu]=20)
declare -A CRITICAL=([probe]=1 [build]=1 [gate]=1)  # a failure here stops the run: nothing after can mean much
declare -A WHAT=([probe]="nvidia-smi, torch, nvcc" [wheels]="carried wheels, if any (--no-index --no-deps)"
                 [build]="pip install -e . --no-deps --no-index --no-build-isolation, sm_90"
                 [gate]="nzdist.codec.cuda.available(), else the CUDA error string"
                 [smoke]="1 Mi bf16 encode+decode == CPU codec, every variant"
                 [tests]="tests/cuda GPU tests, per-test timeout"
                 [sanitizer]="compute-sanitizer memcheck, racecheck, synccheck (tiny run)"
                 [bench]="nzdist bench gpu, every decode variant"
                 [ncu]="Nsight Compute on decode_kernel, if time is left")
BUDGET=0
for s in "${STEPS[@]}"; do BUDGET=$((BUDGET + LIMIT[$s])); done

if [[ "${1:-}" == "--plan" ]]; then
  for s in "${STEPS[@]}"; do printf '%-10s %4d s  %s\n' "$s" "${LIMIT[$s]}" "${WHAT[$s]}"; done
  echo "total $BUDGET s"
  exit 0
fi
FROM="" SKIP=","
while (($#)); do
  case "$1" in
    --from) FROM="${2:?--from needs a step name}"; shift 2
            [[ -n "${LIMIT[$FROM]:-}" ]] || { echo "unknown step $FROM (steps: ${STEPS[*]})" >&2; exit 2; } ;;
    --skip) SKIP=",${2:?--skip needs step names, comma-separated},"; shift 2 ;;
    *) echo "usage: bash .ci/gpu_check.sh [--plan] [--from STEP] [--skip STEP,STEP]" >&2; exit 2 ;;
  esac
done

OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY="${PYTHON:-python3}"
SITE="${SITE:-/tmp/nzdist_site}"  # carried wheels (.ci/gpu_wheels.sh) go here
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
START=$SECONDS
printf 'step\tstatus\tseconds\tlimit\tnote\n' >"$OUT/summary.tsv"
STATUS=0

# run_step NAME LOGFILE CMD...: run with min(limit, budget left) seconds, append its output to LOGFILE, record
# the result in summary.tsv at once. Returns the command's status (124 = out of time).
run_step() {
  local name=$1 logf=$2; shift 2
  local left=$((BUDGET - (SECONDS - START))) limit=${LIMIT[$name]}
  ((limit > left)) && limit=$left
  if ((limit < 5)); then
    record "$name" skip 0 "no time left in the ${BUDGET} s budget"
    return 1
  fi
  echo "=== $name (limit ${limit} s) $(date -u +%T)" >>"$OUT/$logf"
  local t0=$SECONDS rc
  # bash -c: the step may be a shell function (exported below); timeout kills it and its children at the limit.
  timeout -k 5 "$limit" bash -c '"$@"' _ "$@" >>"$OUT/$logf" 2>&1
  rc=$?
  local note
  note=$(grep -v '^\s*$' "$OUT/$logf" | tail -1 | tr '\t' ' ' | cut -c1-110)
  ((rc == 124 || rc == 137)) && note="out of time after ${limit} s; $note"
  record "$name" "$([[ $rc == 0 ]] && echo ok || echo "FAIL($rc)")" $((SECONDS - t0)) "$note"
  return $rc
}
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${LIMIT[$1]}" "$4" >>"$OUT/summary.tsv"; }
finish() {
  echo
  echo "gpu_check: $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $((SECONDS - START)) s of $BUDGET"
  column -t -s $'\t' "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
  exit "$1"
}
wanted() {  # with --from S: false until step S is reached
  [[ -z "$FROM" ]] && return 0
  [[ $1 == "$FROM" ]] && { FROM=""; return 0; }
  return 1
}
step() {  # step NAME LOGFILE CMD...: run_step, honouring --from and stopping after a critical failure
  local name=$1
  if ! wanted "$name"; then record "$name" skip 0 "--from"; return 0; fi
  if [[ $SKIP == *",$name,"* ]]; then record "$name" skip 0 "--skip"; return 0; fi
  if ! run_step "$@"; then
    STATUS=1
    if [[ -n "${CRITICAL[$name]:-}" ]]; then
      echo "gpu_check: step $name failed; stopping (see $OUT/$2)"
      tail -15 "$OUT/$2"
      finish 1
    fi
  fi
}

probe() {
  echo "date $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -m)"
  local gpus=""
  if command -v nvidia-smi >/dev/null; then
    gpus=$(timeout 10 nvidia-smi -L 2>&1 | grep '^GPU ' || true)
  else
    echo "nvidia-smi: not found"
  fi
  if [[ -z "$gpus" ]]; then  # decided before anything slow (torch) is even imported
    echo "no GPU found (nvidia-smi -L lists none): stopping before anything is built or installed"
    return 3
  fi
  timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1
  command -v nvcc >/dev/null && nvcc --version | tail -1 || echo "nvcc: not found"
  timeout 15 "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "available", torch.cuda.is_available(), "devices", torch.cuda.device_count())' 2>&1
  echo "$gpus"
}

wheels() {  # into $SITE (on PYTHONPATH for every later step): the image's own environment stays as it is
  local w=(.whl/*.whl)
  [[ -e "${w[0]}" ]] || { echo "no wheels carried (.whl/): nvCOMP and DFloat11 columns will be skipped"; return 0; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${w[@]}" \
    && echo "installed into $SITE: ${w[*]##*/}"
}

build() {
  # PYTHONPATH: setup.py imports its sibling cuda_build.py, which a PEP 517 backend does not put on sys.path.
  env NZDIST_CUDA=1 NZDIST_CUDA_ARCHS=90 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
    "$PY" -m pip install -v --no-deps --no-index --no-build-isolation --no-cache-dir -e . || return $?
  "$PY" -c 'import nzdist, nzdist._cuda; print("built", nzdist.__file__, nzdist._cuda.__file__)'
}

gate() {
  "$PY" - <<'EOF'
import sys
from nzdist.codec import cuda
why = cuda.unavailable_reason()
print("nzdist.codec.cuda.available():", why is None, "" if why is None else f"({why})")
print("decode variants:", ", ".join(cuda.variants()))
sys.exit(0 if why is None else 4)
EOF
}

tests() {
  local timeout_flag=()
  "$PY" -c 'import pytest_timeout' 2>/dev/null && timeout_flag=(--timeout 20)  # pytest-timeout (on the image) loads itself
  "$PY" -m pytest -q -p no:cacheprovider "${timeout_flag[@]}" tests/cuda/test_gpu.py tests/cuda/test_glue.py
}

sanitizer() {
  local cs rc=0
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null) \
    || { echo "compute-sanitizer not found"; return 5; }
  local log
  log=$(mktemp)
  for tool in memcheck racecheck synccheck; do
    echo "--- $tool"
    # No caching allocator: every tensor is its own cudaMalloc, so memcheck sees an access past any one of them.
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 2 17 "$cs" --tool "$tool" --error-exitcode 9 --print-limit 20 \
      "$PY" .ci/gpu_smoke.py tiny >"$log" 2>&1
    local r=$?
    grep -v '^ok ' "$log" | tail -40
    echo "$tool: rc=$r"
    ((r != 0)) && rc=$r
  done
  rm -f "$log"
  echo "sanitizer: memcheck, racecheck, synccheck rc=$rc"
  return $rc
}

ncu_step() {
  local ncu
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1) \
    || { echo "ncu not found"; return 5; }
  "$ncu" --clock-control none --kernel-name regex:decode_kernel --launch-count 3 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    "$PY" .ci/gpu_smoke.py ncu >"$OUT/ncu.txt" 2>&1
  local rc=$?
  grep -E 'decode_kernel|Duration|Memory Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Warp Cycles Per Issued' \
    "$OUT/ncu.txt" | head -40
  return $rc
}

export PY OUT SITE
export -f probe wheels build gate tests sanitizer ncu_step
step probe probe.log probe
step wheels build.log wheels
step build build.log build
step gate check.log gate
step smoke check.log "$PY" .ci/gpu_smoke.py smoke
step tests check.log tests
step sanitizer sanitizer.log sanitizer
step bench bench.log "$PY" -m nzdist.cli bench gpu --out "$OUT"
if ((BUDGET - (SECONDS - START) >= LIMIT[ncu])); then
  step ncu check.log ncu_step
else
  record ncu skip 0 "$((BUDGET - (SECONDS - START))) s left, under its ${LIMIT[ncu]} s"
fi
finish $STATUS
