#!/usr/bin/env bash
# Compile every CUDA source for sm_80 (A100) and sm_90 (H100) with nvcc, warnings as errors, even on machines
# without a GPU, so kernel compile errors surface on every submission. Also builds the host simulation of the
# shared chunk code and syntax-checks the pybind11 binding. ~1 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [[ -z "$NVCC" ]]; then
  echo "nvcc_check: nvcc not found (install the CUDA toolkit, or set NVCC)" >&2
  exit 1
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$NVCC" --version | tail -2
pids=()
for cu in csrc/cuda/*.cu; do
  name="$(basename "$cu" .cu)"
  "$NVCC" -std=c++17 -O3 -c -Xcompiler -fPIC,-Wall -Werror all-warnings \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -Icsrc -o "$out/$name.o" "$cu" >"$out/$name.log" 2>&1 &
  pids+=("$!:$cu:$name")
done
status=0
for entry in "${pids[@]}"; do
  IFS=: read -r pid cu name <<<"$entry"
  if wait "$pid"; then
    echo "ok   $cu (sm_80, sm_90)"
  else
    echo "FAIL $cu" >&2
    cat "$out/$name.log" >&2
    status=1
  fi
done
CXX="${CXX:-g++}"
"$CXX" -std=c++17 -O1 -Wall -Wextra -Werror -ffp-contract=off -fPIC -shared -o "$out/host_sim.so" \
  csrc/cuda/host_sim.cpp && echo "ok   csrc/cuda/host_sim.cpp (host build of chunk.h)" || status=1
PYBIND="$(python -c 'import pybind11; print(pybind11.get_include())')"
PYINC="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
"$CXX" -std=c++17 -fsyntax-only -Wall -Wextra -Werror -I"$PYBIND" -I"$PYINC" -Icsrc csrc/cuda/bindings.cpp \
  && echo "ok   csrc/cuda/bindings.cpp" || status=1
exit $status
