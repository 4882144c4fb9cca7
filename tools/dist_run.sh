#!/usr/bin/env bash
# torchrun for tools/dist_train.sh and tools/dist_test.sh: bash tools/dist_run.sh NPROC SCRIPT ARGS
#
# One process per GPU, or NPROC processes on CPUs (gloo; tools/train.py and test.py set it up).
# Multi-node: run the same command on every node with NNODES, NODE_RANK (0..NNODES-1),
# MASTER_ADDR (host of node 0) and PORT set, e.g.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # on node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # on node 1
# PYTHON selects the interpreter (default: python).
set -euo pipefail
NPROC=$1
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$TOOLS_DIR/$2" "${@:3}"
