#!/usr/bin/env bash
# GPU measurement check: a 3-trial t5_lora study with the tiny T5 (no hub), then a
# table of time per epoch, peak memory, joules per trial and how each was measured.
# Run on a machine with a CUDA GPU, from the repository root:
#   scripts/gpu-check.sh [STATE_DIR]
# Writes benchmarks/results/gpu-check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
DIR="${1:-$(mktemp -d /tmp/hpod-gpu-check.XXXXXX)}"
"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible: run this on a GPU machine"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PYEOF
HPOD=("$PY" -m hpod.cli.commands)
"${HPOD[@]}" run examples/gpu-check.yaml --state-dir "$DIR"
"${HPOD[@]}" trials gpu-check --json --state-dir "$DIR" > "$DIR/trials.json"
"$PY" scripts/gpu_check_table.py "$DIR/trials.json" benchmarks/results/gpu-check.json
