#!/usr/bin/env bash
# Build the project's virtual environment (.venv) from the pinned set in requirements/lock.txt.
#
# Order matters: torch first, then mmcv 2.1.0 compiled from its sdist against that torch (no
# prebuilt wheel exists for torch 2.13; ~19 min on 2 cores, then pip's wheel cache makes it
# seconds), then mmengine/mmseg/mim, then this plugin in editable mode.
# Idempotent: a stamp holds the hash of the inputs, so a second run returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
LOCK=requirements/lock.txt
STAMP="$VENV/.deeplabv3-plugin-env"
BUILD_LOG="$VENV/mmcv-build.log"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '\n[setup] ERROR: %s\n\n' "$*" >&2; exit 1; }

want=$(cat "$LOCK" setup.cfg pyproject.toml "$0" | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    say "environment up to date ($VENV)"
    exit 0
fi

# --- Python -------------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH. Install Python 3.11 (the tested \
version) or point PYTHON=/path/to/python3.11 at one."
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "'$PYTHON' \
does not run (see above). Install Python 3.11 (the tested version) or point \
PYTHON=/path/to/python3.11 at one."
case "$pyver" in
    3.11) ;;
    *) die "Python $pyver is not supported by the pinned stack: torch 2.13.0 (CPU) is provided \
for Python 3.11 and requirements/lock.txt is resolved for it. Run with PYTHON=/path/to/python3.11, \
or install the plugin into an existing OpenMMLab environment instead (see README)." ;;
esac
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtual environment $VENV (Python $pyver)"
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed: install your distribution's \
venv package (Debian/Ubuntu: apt-get install python3.11-venv)."
fi
PY="$VENV/bin/python"
# (pip's notes about unreadable find-links/index locations of the host's pip.conf are dropped.)
pip_install() {
    "$PY" -m pip install --disable-pip-version-check -q -c "$LOCK" "$@" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

# --- 1. build tools and torch ------------------------------------------------------------------
say "1/4 build tools and torch (from $LOCK)"
pip_install setuptools wheel ninja numpy torch \
    || die "could not install torch as pinned in $LOCK (torch==2.13.0+cpu). Check network \
access to the package index, or that the CPU wheel is reachable through pip's find-links."

# --- 2. mmcv with compiled ops -----------------------------------------------------------------
if "$PY" -c 'import mmcv._ext' 2>/dev/null; then
    say "2/4 mmcv with ops already installed"
else
    torchver=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
    case "$torchver" in
        2.1[4-9]*|2.[2-9]*|[3-9]*) die "torch $torchver has no matching mmcv: mmcv 2.1.0 does not \
compile against torch >= 2.14 (it needs C++20) and mmseg 1.2.2 rejects mmcv >= 2.2. Use \
torch 2.13.0 as pinned in $LOCK." ;;
    esac
    command -v g++ >/dev/null || die "no C++ compiler: mmcv 2.1.0 has no prebuilt wheel for \
torch $torchver and must be compiled. Install g++ (Debian/Ubuntu: apt-get install g++)."
    "$PY" - <<'EOF' || die "Python development headers (Python.h) are missing; mmcv's build \
needs them. Debian/Ubuntu: apt-get install python3.11-dev."
import os, sysconfig, sys
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')) else 1)
EOF
    say "2/4 mmcv 2.1.0: compiling its CPU ops from source against torch $torchver."
    say "    The first build takes about 19 minutes on 2 cores; pip caches the wheel, so later"
    say "    installs on this machine take seconds. Full log: $BUILD_LOG"
    start=$SECONDS
    MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$PY" -m pip install --disable-pip-version-check -v --no-build-isolation -c "$LOCK" mmcv \
        >"$BUILD_LOG" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 30
        step=$(grep -oE '^\[[0-9]+/[0-9]+\]' "$BUILD_LOG" | tail -n 1 || true)
        say "    mmcv build: ${step:+$step objects compiled, }$(( (SECONDS - start) / 60 )) min elapsed"
    done
    if ! wait "$pid"; then
        grep -E 'error:|Error|fatal' "$BUILD_LOG" | head -n 15 >&2 || true
        die "the mmcv build failed (first errors above; full log in $BUILD_LOG). Common causes: \
a torch other than 2.13.0, setuptools >= 82 (no pkg_resources), or a missing compiler."
    fi
    "$PY" -c 'import mmcv._ext' || die "mmcv installed without its compiled ops (mmcv._ext); \
see $BUILD_LOG."
fi

# --- 3. OpenMMLab stack --------------------------------------------------------------------------
say "3/4 mmengine, mmsegmentation, ftfy/regex and openmim"
pip_install mmengine mmsegmentation ftfy regex
# openmim's own requirement chain (opendatalab -> openxlab) pins setuptools 60, old requests,
# rich and tqdm, none of which mim imports: install mim alone, then what it really uses.
pip_install --no-deps openmim
pip_install Click colorama model-index pandas requests rich tabulate

# --- 4. the plugin --------------------------------------------------------------------------------
say "4/4 deeplabv3-plugin (editable) with its test and engine extras"
# setuptools' editable-install notices go to a log; they are shown only if the install fails.
pip_install --no-build-isolation -e ".[tests,engines]" >"$VENV/plugin-install.log" 2>&1 \
    || { cat "$VENV/plugin-install.log" >&2; die "installing the plugin failed (log above)."; }
"$PY" -W ignore -c 'import mmseg.models, mim, deeplabv3_plugin' \
    || die "the environment was built but 'import mmseg.models, mim, deeplabv3_plugin' fails."
echo "$want" >"$STAMP"
say "done: $("$PY" -W ignore -c 'import torch, mmcv, mmengine, mmseg; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmseg {mmseg.__version__}")')"
