#!/usr/bin/env bash
# Install Prometheus and promtool from the Debian/Ubuntu archive for the deploy/ tests.
# Idempotent: does nothing when promtool is already on PATH. The package's own service
# is not started (tests start `prometheus` themselves on 127.0.0.1 with a temp config).
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    echo "prometheus/promtool already installed: $(command -v promtool)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends prometheus
promtool --version
