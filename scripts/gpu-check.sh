#!/usr/bin/env bash
# GPU measurement check: a 3-trial t5_lora study with the tiny T5 (no hub), then a
# table of time per epoch, peak memory (beside the objective's memory estimate), joules
# per trial and how each was measured. Run on a machine with a CUDA GPU, from the
# repository root:
#   scripts/gpu-check.sh [STATE_DIR]
# Writes benchmarks/results/gpu-check.json; with two or more GPUs also a 2-GPU run (each
# trial data-parallel over GPUs 0 and 1: resources.gpus_per_trial 2, NCCL) into
# benchmarks/results/gpu-check-2gpu.json.
#
# GPU_CHECK_DRY_RUN=1 prints the commands instead of running them and takes the number
# of GPUs from GPU_CHECK_GPUS (how tests/scripts_tests check the branching on a machine
# without a GPU); it writes the specs it would run, and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
DIR="${1:-$(mktemp -d /tmp/hpod-gpu-check.XXXXXX)}"
mkdir -p "$DIR"
DRY="${GPU_CHECK_DRY_RUN:-}"

step() {  # run one command, or say what would run
    if [ -n "$DRY" ]; then echo "would run: $*"; else "$@"; fi
}

if [ -n "$DRY" ]; then
    N_GPUS="${GPU_CHECK_GPUS:?GPU_CHECK_DRY_RUN needs GPU_CHECK_GPUS (the number of GPUs to plan for)}"
else
    "$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible: run this on a GPU machine"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PYEOF
    N_GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
fi

HPOD=("$PY" -m hpod.cli.commands)
step "${HPOD[@]}" run examples/gpu-check.yaml --state-dir "$DIR" --gpus 0
if [ -z "$DRY" ]; then
    "${HPOD[@]}" trials gpu-check --json --state-dir "$DIR" > "$DIR/trials.json"
fi
step "$PY" scripts/gpu_check_table.py "$DIR/trials.json" benchmarks/results/gpu-check.json examples/gpu-check.yaml

if [ "$N_GPUS" -ge 2 ]; then
    echo "2-GPU run: each trial spans GPUs 0 and 1"
    "$PY" - "$DIR/gpu-check-2gpu.yaml" <<'PYEOF'
import sys, yaml
spec = yaml.safe_load(open("examples/gpu-check.yaml"))
spec["name"] = "gpu-check-2gpu"
spec["resources"] = {"gpus_per_trial": 2}
yaml.safe_dump(spec, open(sys.argv[1], "w"))
PYEOF
    step "${HPOD[@]}" run "$DIR/gpu-check-2gpu.yaml" --state-dir "$DIR" --gpus 0,1
    if [ -z "$DRY" ]; then
        "${HPOD[@]}" trials gpu-check-2gpu --json --state-dir "$DIR" > "$DIR/trials-2gpu.json"
    fi
    step "$PY" scripts/gpu_check_table.py "$DIR/trials-2gpu.json" benchmarks/results/gpu-check-2gpu.json \
        "$DIR/gpu-check-2gpu.yaml"
else
    echo "one GPU: no 2-GPU run"
fi
if [ -n "$DRY" ]; then echo "dry run: nothing was run"; fi
