"""Helpers the CLI calls for ``t5_lora`` studies: export a trial's adapter, summarize
texts with it, and build the experiment's before/after comparison table.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpod.errors import UsageError
from hpod.objectives.t5_lora.options import (
    ADAPTER_INFO_FILE,
    DEFAULT_BASELINE,
    parse_options,
)
from hpod.objectives.t5_lora.predictor import load_adapter_model
from hpod.objectives.t5_lora.train import generate_summaries

__all__ = [
    "COMPARE_ROWS",
    "DEFAULT_BASELINE",
    "EXPORT_INFO_FILE",
    "compare_table",
    "export_adapter",
    "load_adapter_model",
    "summarize_with_adapter",
]

#: Written in an export dir: where the base model is and how the adapter was trained.
EXPORT_INFO_FILE = "hpod_export.json"

#: (label, metric key, which direction is better) for the before/after table.
COMPARE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("ROUGE-1", "rouge1", "higher"),
    ("ROUGE-2", "rouge2", "higher"),
    ("BLEU", "bleu", "higher"),
    ("Peak memory (bytes)", "memory_bytes", "lower"),
    ("Time per epoch (s)", "time_per_epoch_seconds", "lower"),
    ("Energy (J)", "energy_joules", "lower"),
)


def export_adapter(artifact_dir: Path, out_dir: Path, objective_params: Mapping[str, Any], cache_dir: Path,
                   merge: bool = False) -> Path:
    """Write the trial adapter in ``artifact_dir`` to ``out_dir``; return ``out_dir``.

    ``out_dir`` then holds the adapter (``PeftModel.from_pretrained(base, out_dir)``),
    the tokenizer, ``hpod_export.json`` naming the base, and — for the offline tiny
    model, which has no hub name — the base itself in ``out_dir/base`` (the adapter
    config points there, so ``AutoPeftModelForSeq2SeqLM.from_pretrained(out_dir)``
    works too). ``merge=True`` adds the merged model (base + LoRA) in ``out_dir/merged``.
    """
    options = parse_options(objective_params)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir}: output directory exists and is not empty; choose a new one")
    model, tokenizer, reference = load_adapter_model(artifact_dir, objective_params, cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base_reference = reference
    if options.is_tiny:
        base_dir = out_dir / "base"
        # The cached base is exactly what the adapter was trained on: copy it as is.
        shutil.copytree(reference, base_dir)
        base_reference = str(base_dir.resolve())
    # peft writes base_model_name_or_path from the config it holds: point it at the
    # exported base so the directory stands alone.
    model.peft_config["default"].base_model_name_or_path = base_reference
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info_src = Path(artifact_dir) / ADAPTER_INFO_FILE
    trained_with = json.loads(info_src.read_text()) if info_src.is_file() else {}
    info = {
        "base": base_reference,
        "model": options.model,
        "objective": "t5_lora",
        "objective_params": options.model_dump(mode="json"),
        "params": trained_with.get("params"),
        "seed": trained_with.get("seed"),
        "trial_number": trained_with.get("trial_number"),
        "study_name": trained_with.get("study_name"),
        "merged": "merged" if merge else None,
    }
    (out_dir / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2, default=str))
    if merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(out_dir / "merged")
        tokenizer.save_pretrained(out_dir / "merged")
    return out_dir


def summarize_with_adapter(artifact_dir: Path, texts: Sequence[str], objective_params: Mapping[str, Any],
                           cache_dir: Path, device: str = "cpu") -> list[str]:
    """Summaries of ``texts`` by the base + the adapter in ``artifact_dir`` (the options'
    prefix, beams and length apply)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single str")

    options = parse_options(objective_params)
    model, tokenizer, _ = load_adapter_model(artifact_dir, objective_params, cache_dir, device)
    return generate_summaries(model, tokenizer, list(texts), options, device)


def _value(metrics: Mapping[str, Any], key: str) -> float | None:
    raw = metrics.get(key)
    if isinstance(raw, Mapping):  # a measurement: {"value": ..., "method": ...}
        raw = raw.get("value")
    if raw is None:
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


def compare_table(baseline: Mapping[str, Any], best: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The experiment's before/after rows: ROUGE-1, ROUGE-2, BLEU, peak memory, time
    per epoch, energy.

    ``baseline`` / ``best`` map metric names to floats or measurement dicts
    (``{"value": ..., "method": ...}``). Each row: ``metric`` (label), ``key``,
    ``baseline``, ``best``, ``change_percent`` ((best − baseline) / |baseline| × 100,
    None when either is missing or the baseline is 0), ``better`` ("higher"/"lower")
    and ``improved`` (bool or None).
    """
    rows: list[dict[str, Any]] = []
    for label, key, better in COMPARE_ROWS:
        before, after = _value(baseline, key), _value(best, key)
        change = None
        improved = None
        if before is not None and after is not None:
            if before != 0:
                change = (after - before) / abs(before) * 100.0
            improved = after > before if better == "higher" else after < before
        rows.append({"metric": label, "key": key, "baseline": before, "best": after,
                     "change_percent": change, "better": better, "improved": improved})
    return rows
