"""The ``t5_lora`` objective: LoRA fine-tuning of a T5 model for summarization,
evaluated on validation loss, ROUGE, BLEU and exact match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpod.objectives.base import BaseObjective, Measurement, TrialContext
from hpod.objectives.t5_lora.data import check_data, load_splits
from hpod.objectives.t5_lora.options import T5LoraOptions, parse_options

__all__ = ["T5LoraObjective", "DEFAULT_BASELINE", "ADAPTER_INFO_FILE"]

#: The usual hand-picked configuration the experiment compares against.
DEFAULT_BASELINE: dict[str, Any] = {
    "learning_rate": 5e-5,
    "batch_size": 8,
    "epochs": 3,
    "rank": 8,
    "alpha": 16,
    "dropout": 0.1,
}
#: Written next to each saved adapter: what base and options it was trained with.
ADAPTER_INFO_FILE = "hpod_t5_lora.json"


class T5LoraObjective(BaseObjective):
    """LoRA on T5 for summarization (see issue 3 for the experiment it reproduces).

    ``run`` is called in the trial's own process once per seed; it reads only its
    options and ``ctx`` and writes only under ``ctx.artifact_dir`` and (the cached
    tiny base) ``ctx.cache_dir``.
    """

    metric_names = frozenset({
        "loss", "rouge1", "rouge2", "rougeL", "bleu", "exact_match",
        "trainable_parameters", "total_parameters", "trainable_share",
        "time_per_epoch_seconds", "epochs_run", "early_stopped", "steps", "train_loss",
    })
    heavy = True

    def __init__(self, params: Mapping[str, Any] | None = None):
        self.options: T5LoraOptions = parse_options(params)

    def default_space(self) -> dict[str, dict[str, Any]]:
        return {
            "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
            "batch_size": {"type": "categorical", "choices": [8, 16, 32]},
            "epochs": {"type": "categorical", "choices": [2, 3, 4]},
            "dropout": {"type": "categorical", "choices": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
            "rank": {"type": "categorical", "choices": [4, 8, 16]},
            "alpha": {"type": "categorical", "choices": [16, 32, 64]},
        }

    def validate(self) -> None:
        """Read and check the data a trial would read (DataError names file, line, field)."""
        check_data(self.options.data)

    def prepare(self, cache_dir: Path) -> None:
        """Train and cache the tiny base (a no-op for a Hugging Face model)."""
        if self.options.is_tiny:
            from hpod.objectives.t5_lora.model import ensure_tiny_base

            ensure_tiny_base(self.options, Path(cache_dir))

    def run(self, ctx: TrialContext) -> Mapping[str, float | Measurement]:
        from hpod.objectives.t5_lora.metrics import summary_metrics
        from hpod.objectives.t5_lora.model import apply_lora, count_parameters, load_base_model
        from hpod.objectives.t5_lora.train import (
            Hyperparameters,
            artifact_subdir,
            generate_summaries,
            seed_everything,
            train_lora,
        )

        options = self.options
        hp = Hyperparameters.from_params(ctx.params)
        train, val = load_splits(options.data)
        model, tokenizer, base_reference = load_base_model(options, Path(ctx.cache_dir))
        # Seed after loading (loading a base draws no random numbers we rely on) and
        # before LoRA init, which draws A's initial weights.
        seed_everything(ctx.seed)
        model = apply_lora(model, rank=hp.rank, alpha=hp.alpha, dropout=hp.dropout,
                           target_modules=options.target_modules)
        model.to(ctx.device)
        trainable, total = count_parameters(model)
        result = train_lora(model, tokenizer, train, val, hp, options, seed=ctx.seed, device=ctx.device,
                            report=ctx.report)
        scored = val if options.generate_size is None else val[: options.generate_size]
        predictions = generate_summaries(model, tokenizer, [e.text for e in scored], options, ctx.device)
        quality = summary_metrics(predictions, [e.summary for e in scored])

        out_dir = artifact_subdir(Path(ctx.artifact_dir), ctx.seed_index)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        (out_dir / ADAPTER_INFO_FILE).write_text(json.dumps({
            "base": base_reference,
            "model": options.model,
            "options": options.model_dump(mode="json"),
            "params": dict(ctx.params),
            "seed": ctx.seed,
            "trial_number": ctx.trial_number,
            "study_name": ctx.study_name,
        }, indent=2, default=str))

        return {
            "loss": float(result.best_val_loss),
            **{k: float(v) for k, v in quality.items()},
            "trainable_parameters": float(trainable),
            "total_parameters": float(total),
            "trainable_share": trainable / total,
            "time_per_epoch_seconds": result.train_seconds / max(result.epochs_run, 1e-9),
            "epochs_run": float(result.epochs_run),
            "early_stopped": float(result.early_stopped),
            "steps": float(result.steps),
            "train_loss": float(result.final_train_loss),
        }
