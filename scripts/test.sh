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
exec .venv/bin/python -m pytest "$@"
