#!/usr/bin/env bash
# Install everything (scripts/setup.sh), the Prometheus tools the deploy tests use,
# then the linters (ruff and mypy --strict; any finding fails the script) and the test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/install-prometheus.sh >/dev/null 2>&1 \
    || echo "note: prometheus/promtool could not be installed; their tests will be skipped"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m ruff check hpod tests benchmarks
.venv/bin/python -m mypy hpod
rc=0
.venv/bin/python -m pytest "$@" || rc=$?
# The tests marked `floor` again on the lowest versions pyproject.toml allows of optuna,
# botorch, transformers and peft (~1 min to build .venv-lowest once, ~3 min to run).
# HPOD_FLOOR_TESTS=0 skips them.
if [ "${HPOD_FLOOR_TESTS:-1}" != 0 ]; then
    ./scripts/lowest-versions.sh -q || rc=$(( rc ? rc : 1 ))
fi
exit "$rc"
