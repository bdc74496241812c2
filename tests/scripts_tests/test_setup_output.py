"""scripts/setup.sh prints only what a user should read.

The script runs against a stand-in ``.venv/bin/python`` that answers as pip, torch and
setuptools do (checked by hand with pip 26.3 and setuptools' editable wheels): torch
imported without numpy warns "Failed to initialize NumPy"; setuptools' editable build
prints its boxed "Editable installation" note unless a ``PYTHONWARNINGS`` filter ignores
it; pip notes unreachable local mirrors ("is ignored"). Nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = r'''#!/usr/bin/env bash
state="$(dirname "$0")/../state"; mkdir -p "$state"
args="$*"
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    echo "WARNING: Location 'file:///opt/pypi/simple/x/' is ignored: it is neither a file nor a directory." >&2
    case "$args" in
        *"torch=="*)
            if [ -n "${FAIL_TORCH:-}" ]; then
                echo "ERROR: No matching distribution found for torch==9.9" >&2; exit 1
            fi
            touch "$state/torch"
            case "$args" in *"numpy"*) touch "$state/numpy" ;; esac ;;
        *"-e .[dev]"*)
            case "${PYTHONWARNINGS:-}" in
                *"ignore:Editable installation:UserWarning"*) ;;
                *) printf '%s\n' \
                       "  setuptools/command/editable_wheel.py:354: BuildBackendWarning: Editable installation." \
                       "  !!" "" "          ****************" \
                       "          Please be careful with folders in your working directory with the same" \
                       "          ****************" "" "  !!" >&2 ;;
            esac
            touch "$state/hpod" "$state/numpy" ;;
    esac
    exit 0
fi
if [ "$1" = "-c" ]; then
    case "$2" in *torch*)
        [ -f "$state/torch" ] || exit 1
        [ -f "$state/numpy" ] || echo "torch/_subclasses/functional_tensor.py:276:" \
            "UserWarning: Failed to initialize NumPy: No module named 'numpy'" >&2
        case "$2" in *"import torch, numpy"*) [ -f "$state/numpy" ] || exit 1 ;; esac ;;
    esac
    case "$2" in *"import hpod"*) [ -f "$state/hpod" ] || exit 1 ;; esac
    case "$2" in *"__version__"*) echo "2.13.0+cpu" ;; esac
    exit 0
fi
exit 0
'''


def _sandbox(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "hpod").write_text("#!/usr/bin/env bash\necho 'hpod 0.1.0'\n")
    for exe in ("python", "hpod"):
        (bin_dir / exe).chmod(0o755)
    return tmp_path


def _run(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "HPOD_TORCH_INDEX")}
    return subprocess.run(["bash", str(root / "scripts" / "setup.sh")], capture_output=True, text=True,
                          timeout=120, env={**environ, **env})


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_fresh_setup_prints_only_what_a_user_should_read(tmp_path: Path) -> None:
    root = _sandbox(tmp_path)
    proc = _run(root)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).splitlines() == [
        "installing torch==2.13.0 first",
        "installing hpod and its dependencies into .venv",
        "ready: hpod 0.1.0 in .venv (torch 2.13.0+cpu)",
    ]
    # a second run has nothing to install
    again = _run(root)
    assert (again.stdout + again.stderr).splitlines() == [
        "installing hpod and its dependencies into .venv", "ready: hpod 0.1.0 in .venv (torch 2.13.0+cpu)"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_pip_errors_still_reach_the_user(tmp_path: Path) -> None:
    proc = _run(_sandbox(tmp_path), FAIL_TORCH="1")
    assert proc.returncode == 1
    assert "ERROR: No matching distribution found for torch==9.9" in proc.stdout + proc.stderr
    assert "torch did not install" in proc.stderr
    assert "is ignored" not in proc.stdout + proc.stderr
