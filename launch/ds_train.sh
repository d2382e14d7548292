#!/usr/bin/env bash
# Single node: N ranks of launch/train.py under the DeepSpeed launcher, ZeRO-3 with nzdist's compressed all-gather.
#   NUM_GPUS=8 launch/ds_train.sh                       # GPUs
#   DS_ACCELERATOR=cpu NUM_GPUS=2 launch/ds_train.sh    # CPU, gloo
# Extra arguments go to launch/train.py (e.g. --steps 100 --compare-dense --json out.json); SCRIPT=other.py runs
# another script that accepts --deepspeed_config the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
NUM_GPUS="${NUM_GPUS:-2}"
CONFIG="${CONFIG:-configs/neuzip_zero.json}"
SCRIPT="${SCRIPT:-launch/train.py}"
PORT_ARGS=()
if [[ -n "${MASTER_PORT:-}" ]]; then PORT_ARGS=(--master_port "$MASTER_PORT"); fi
exec deepspeed "${PORT_ARGS[@]}" --num_gpus "$NUM_GPUS" "$SCRIPT" --deepspeed_config "$CONFIG" "$@"
