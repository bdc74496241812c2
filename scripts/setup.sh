#!/usr/bin/env bash
# Create .venv with hpod and everything it needs. Idempotent.
#
# torch goes in first, pinned, so that botorch/peft do not pull a different (CUDA)
# build: on this project's CI machines `pip install torch==2.13.0` resolves to a local
# CPU build. Elsewhere, on a CPU-only machine, set
#   HPOD_TORCH_INDEX=https://download.pytorch.org/whl/cpu
# to get the small CPU build instead of PyPI's default CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${HPOD_TORCH_VERSION:-2.13.0}"

# Only what a user should read: pip's "Location ... is ignored" notes (local mirrors
# this machine lacks) and blank lines are dropped; errors pass.
quiet() { grep -v -e "is ignored" -e "^ *$" || true; }

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | quiet || true

# numpy goes in with torch: torch imported without numpy warns "Failed to initialize NumPy".
if ! .venv/bin/python -c "import torch, numpy" >/dev/null 2>&1; then
    echo "installing torch==${TORCH_VERSION} first"
    if [ -n "${HPOD_TORCH_INDEX:-}" ]; then
        .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}" "numpy>=1.26" \
            --index-url "$HPOD_TORCH_INDEX" 2>&1 | quiet || true
    else
        .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}" "numpy>=1.26" 2>&1 | quiet || true
    fi
fi
.venv/bin/python -c "import torch" || { echo "torch did not install" >&2; exit 1; }

echo "installing hpod and its dependencies into .venv"
# setuptools' boxed "Editable installation ... Please be careful" note is a UserWarning
# for packagers, not for someone installing hpod: ignored by its message.
PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
    .venv/bin/python -m pip install --quiet -e ".[dev]" 2>&1 | quiet || true
.venv/bin/python -c "import hpod, optuna, botorch, peft, transformers" \
    || { echo "the install is incomplete: rerun scripts/setup.sh and read pip's output" >&2; exit 1; }
echo "ready: $(.venv/bin/hpod --version) in .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
