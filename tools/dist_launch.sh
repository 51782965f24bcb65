#!/usr/bin/env bash
# Launch a tool on several GPUs / nodes with torchrun:
#   tools/dist_launch.sh <script> <config> <gpus> [script args...]
# e.g. tools/dist_launch.sh tools/det_train.py configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py 8
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR, PORT on every node (defaults 1, 0, 127.0.0.1, 29500).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 <script> <config> <gpus> [args...]" >&2
    exit 2
fi
SCRIPT=$1
CONFIG=$2
GPUS=$3
shift 3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$SCRIPT" "$CONFIG" --launcher pytorch "$@"
