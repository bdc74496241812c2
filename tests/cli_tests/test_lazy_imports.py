"""What the CLI's fast commands import (issue 12): ``hpod status`` on a SQLite database
imports neither torch nor Optuna; ``hpod --help`` imports no command module's heavy
libraries either. Checked on ``sys.modules`` of a fresh interpreter, not by timing
(benchmarks/cli_startup.py measures the time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hpod_testing import cli_env, run_cli

HEAVY = ("torch", "optuna", "transformers", "peft", "botorch", "pandas", "matplotlib")


def _modules_after(args: list[str], env: dict[str, str]) -> tuple[int, dict[str, bool]]:
    """Run ``hpod ARGS`` in a fresh interpreter; its exit code and which heavy
    libraries it left in sys.modules."""
    code = (
        "import json, sys\n"
        "from hpod.cli import main\n"
        f"sys.argv = ['hpod', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    rc = exc.code or 0\nelse:\n    rc = 0\n"
        f"print(json.dumps({{'rc': rc, 'heavy': {{h: h in sys.modules for h in {HEAVY!r}}}}}), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return int(report["rc"]), report["heavy"]


@pytest.fixture(scope="module")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite state dir holding one finished study (run with the real CLI)."""
    root = tmp_path_factory.mktemp("lazy")
    state_dir = root / "state"
    spec = root / "spec.yaml"
    spec.write_text(json.dumps({
        "name": "lazy", "objective": {"name": "synthetic:training_cost"},
        "objectives": [{"name": "loss"}, {"name": "energy_joules"}],
        "sampler": {"name": "random", "seed": 1}, "budget": {"n_trials": 2},
    }))
    proc = run_cli(["run", str(spec), "--no-codecarbon"], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    return state_dir


def test_status_on_sqlite_imports_neither_torch_nor_optuna(study_db: Path) -> None:
    rc, heavy = _modules_after(["status", "--json"], cli_env(study_db))
    assert rc == 0
    assert not heavy["torch"] and not heavy["optuna"], heavy


def test_help_imports_no_heavy_library() -> None:
    rc, heavy = _modules_after(["--help"], cli_env())
    assert rc == 0
    assert not any(heavy.values()), heavy


def test_the_probe_sees_a_command_that_does_import_optuna(study_db: Path) -> None:
    # `hpod trials` reads trials through Optuna: the same probe reports it.
    rc, heavy = _modules_after(["trials", "lazy", "--json"], cli_env(study_db))
    assert rc == 0 and heavy["optuna"]
