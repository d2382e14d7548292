#!/usr/bin/env bash
# Several machines under torchrun with c10d rendezvous. Run the same line on every node (checkout at the same
# path), changing only --node_rank; the endpoint is any host:port the nodes reach (usually node 0's):
#   node 0:  launch/torchrun_multinode.sh --nnodes 2 --node_rank 0 --rdzv_endpoint node0:29400 --nproc_per_node 8 -- --preset gpu_1b
#   node 1:  launch/torchrun_multinode.sh --nnodes 2 --node_rank 1 --rdzv_endpoint node0:29400 --nproc_per_node 8 -- --preset gpu_1b
# Options (or the environment variable in brackets):
#   --nnodes N [NNODES]            nodes in the job (required; "MIN:MAX" for an elastic range)
#   --node_rank R [NODE_RANK]      this node's index, 0..N-1 (default 0)
#   --rdzv_endpoint H:P [RDZV_ENDPOINT]   c10d rendezvous host:port (required)
#   --nproc_per_node K [NPROC]     ranks per node (default 2)
#   --rdzv_id ID [RDZV_ID]         job id shared by all nodes (default nzdist)
# Everything after "--" goes to nzdist.launch.compare (--preset, --out, --steps, ...); rank 0 writes the report.
set -euo pipefail
cd "$(dirname "$0")/.."
NNODES="${NNODES:-}"; NODE_RANK="${NODE_RANK:-0}"; RDZV_ENDPOINT="${RDZV_ENDPOINT:-}"
NPROC="${NPROC:-2}"; RDZV_ID="${RDZV_ID:-nzdist}"
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "torchrun_multinode.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nnodes) NNODES="${2:?--nnodes needs a value}"; shift 2 ;;
    --node_rank|--node-rank) NODE_RANK="${2:?--node_rank needs a value}"; shift 2 ;;
    --rdzv_endpoint|--rdzv-endpoint) RDZV_ENDPOINT="${2:?--rdzv_endpoint needs a value}"; shift 2 ;;
    --nproc_per_node|--nproc-per-node) NPROC="${2:?--nproc_per_node needs a value}"; shift 2 ;;
    --rdzv_id|--rdzv-id) RDZV_ID="${2:?--rdzv_id needs a value}"; shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) die "unknown option '$1' (worker arguments go after '--')" ;;
  esac
done
[[ -n "$NNODES" ]] || die "--nnodes is required"
[[ "$NNODES" =~ ^[1-9][0-9]*(:[1-9][0-9]*)?$ ]] || die "--nnodes must be N or MIN:MAX, got '$NNODES'"
[[ -n "$RDZV_ENDPOINT" ]] || die "--rdzv_endpoint host:port is required"
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "--nproc_per_node must be a positive integer, got '$NPROC'"
[[ "$NODE_RANK" =~ ^[0-9]+$ ]] || die "--node_rank must be an integer >= 0, got '$NODE_RANK'"
if [[ "$NNODES" =~ ^[0-9]+$ ]] && (( NODE_RANK >= NNODES )); then die "--node_rank $NODE_RANK is not below --nnodes $NNODES"; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
  --rdzv_backend c10d --rdzv_endpoint "$RDZV_ENDPOINT" --rdzv_id "$RDZV_ID" \
  -m nzdist.launch.compare "$@"
