#!/usr/bin/env bash
# Distributed testing with torchrun: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py options]
# (multi-node set-up and PYTHON: see tools/dist_run.sh)
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: bash $0 CONFIG CHECKPOINT NPROC [tools/test.py options]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/dist_run.sh" "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
