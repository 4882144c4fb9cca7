#!/usr/bin/env bash
# Distributed training with torchrun: bash tools/dist_train.sh CONFIG NPROC [train.py options]
# (multi-node set-up and PYTHON: see tools/dist_run.sh)
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: bash $0 CONFIG NPROC [tools/train.py options]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/dist_run.sh" "$2" train.py "$1" --launcher pytorch "${@:3}"
