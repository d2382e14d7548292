#!/usr/bin/env bash
# Several nodes under the DeepSpeed launcher (pdsh by default): one line per node in the hostfile,
#   node1 slots=8
#   node2 slots=8
# Run on the first node, from a checkout present at the same path on every node:
#   HOSTFILE=hostfile MASTER_ADDR=node1 launch/ds_multinode.sh --steps 1000
# Extra arguments go to launch/train.py. DeepSpeed forwards NCCL_*/PYTHON* variables and those named in
# ~/.deepspeed_env to every node. LAUNCHER picks DeepSpeed's multi-node backend (pdsh by default; openmpi,
# mvapich, slurm, ...), LAUNCHER_ARGS is handed to it (e.g. LAUNCHER=openmpi LAUNCHER_ARGS=--allow-run-as-root),
# DS_ARGS adds launcher flags (e.g. --no_ssh_check).
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTFILE="${HOSTFILE:-hostfile}"
CONFIG="${CONFIG:-configs/neuzip_zero.json}"
MASTER_ADDR="${MASTER_ADDR:-$(head -n1 "$HOSTFILE" | awk '{print $1}')}"
MASTER_PORT="${MASTER_PORT:-29500}"
LAUNCHER="${LAUNCHER:-pdsh}"
LAUNCHER_ARGS="${LAUNCHER_ARGS:-}"
read -r -a DS_EXTRA <<< "${DS_ARGS:-}"
exec deepspeed "${DS_EXTRA[@]}" --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  --launcher "$LAUNCHER" --launcher_args="$LAUNCHER_ARGS" launch/train.py --deepspeed_config "$CONFIG" "$@"
