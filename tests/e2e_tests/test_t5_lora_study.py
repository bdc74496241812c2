"""A 3-trial t5_lora study on real CNN/DailyMail articles through the CLI: metrics,
per-seed values, early stopping, adapters, export and `hpod compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hpod_testing import run_cli

pytestmark = pytest.mark.slow


def _spec(tmp_path: Path, data: Path) -> Path:
    spec = {
        "name": "t5-cnndm-tiny",
        "objective": {"name": "t5_lora", "params": {
            "model": "tiny", "base_steps": 10, "cpu_threads": 1, "max_source_length": 64,
            "max_target_length": 24, "max_new_tokens": 12, "eval_steps": 1,
            # a huge min_delta: no evaluation "improves enough", so early stopping acts
            "patience": 2, "min_delta": 10.0,
            "data": {"source": str(data), "train_size": 16, "val_size": 4},
        }},
        "space": {"epochs": 2, "batch_size": 8},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}, {"name": "rouge2", "direction": "maximize"}],
        "constraints": ["memory_bytes <= 8e9"],
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 3},
        "seeds": 2,
    }
    path = tmp_path / "t5.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_three_trial_t5_lora_study(tmp_path: Path, state_dir: Path, shared_cnndm: Path):
    spec = _spec(tmp_path, shared_cnndm)
    proc = run_cli(["run", str(spec)], state_dir=state_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = json.loads(run_cli(["trials", "t5-cnndm-tiny", "--json"], state_dir=state_dir).stdout)
    assert len(trials) == 3 and all(t["state"] == "COMPLETE" for t in trials), [t["fail_reason"] for t in trials]
    for t in trials:
        metrics = t["metrics"]
        for name in ("loss", "rouge1", "rouge2", "rougeL", "bleu", "exact_match", "trainable_parameters",
                     "total_parameters"):
            assert name in metrics, name
        assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
        assert [s["seed"] for s in t["seeds"]] == [0, 1]
        assert metrics["loss"] == pytest.approx(sum(s["values"]["loss"] for s in t["seeds"]) / 2)
        assert "loss" in t["metrics_std"]
        assert metrics["early_stopped"] == 1.0, "min_delta=10 must stop training early"
        assert t["measurements"]["memory_bytes"]["method"] == "rss-peak"
        assert t["measurements"]["energy_joules"]["method"].startswith(("codecarbon", "cpu-time"))
        adapter = Path(t["artifact_dir"])
        assert (adapter / "adapter_config.json").exists() and (adapter / "seed-1" / "adapter_config.json").exists()

    out = tmp_path / "exported"
    proc = run_cli(["export-adapter", "t5-cnndm-tiny", "--policy", "min-loss", "--out", str(out)],
                   state_dir=state_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(out)).r in (4, 8, 16)

    proc = run_cli(["compare", "t5-cnndm-tiny", "--json", "--data", str(shared_cnndm)], state_dir=state_dir,
                   timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    keys = {r["key"] for r in report["rows"]}
    assert {"rouge1", "rouge2", "bleu", "memory_bytes", "time_per_epoch_seconds", "energy_joules"} <= keys
    for row in report["rows"]:
        if row["baseline"] and row["best"] is not None:
            assert row["change_percent"] == pytest.approx((row["best"] - row["baseline"]) / abs(row["baseline"]) * 100)
    assert report["sample"]["article"] and isinstance(report["sample"]["best"], str)
    assert report["baseline_params"]["learning_rate"] == 5e-5

    bad = run_cli(["compare", "t5-cnndm-tiny", "--baseline", "yesterday"], state_dir=state_dir)
    assert bad.returncode == 2 and "--baseline" in bad.stderr
