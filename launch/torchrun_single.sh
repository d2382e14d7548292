#!/usr/bin/env bash
# One machine, N ranks: the main job's worker (plain FSDP2 vs nzdist.fsdp, same seed and data) under torchrun.
#   launch/torchrun_single.sh                                   # 2 ranks, CPU/gloo, preset tiny_cpu
#   NPROC=8 launch/torchrun_single.sh --preset gpu_1b --out out/gpu
# Extra arguments go to nzdist.launch.compare (--preset, --out, --steps, --batch, --seed, ...); PYTHON picks the
# interpreter (default: python on PATH).
# `python -m nzdist.launch.main` does the same and picks NPROC and the preset from the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC="${NPROC:-2}"
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
  echo "torchrun_single.sh: NPROC must be a positive integer, got '$NPROC'" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m nzdist.launch.compare "$@"
