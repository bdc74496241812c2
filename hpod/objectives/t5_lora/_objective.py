"""The ``t5_lora`` objective: LoRA fine-tuning of a T5 model for summarization,
evaluated on validation loss, ROUGE, BLEU and exact match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpod.objectives.base import (
    LORA_EXPERIMENT_SPACE,
    BaseObjective,
    Measurement,
    MemoryEstimate,
    TrialContext,
)
from hpod.objectives.labelled import LabelSchema
from hpod.objectives.t5_lora.data import check_data, load_splits
from hpod.objectives.t5_lora.memory import estimate_training_memory, micro_batch_size, model_shape
from hpod.objectives.t5_lora.metrics import summary_metrics
from hpod.objectives.t5_lora.model import (
    TINY_CONFIG,
    apply_lora,
    count_parameters,
    ensure_tiny_base,
    load_base_model,
)
from hpod.objectives.t5_lora.options import (
    ADAPTER_INFO_FILE,
    DEFAULT_BASELINE,
    T5LoraOptions,
    parse_options,
)
from hpod.objectives.t5_lora.predictor import T5LoraPredictor, load_adapter_model
from hpod.objectives.t5_lora.tools import compare_table, export_adapter
from hpod.objectives.t5_lora.train import (
    Hyperparameters,
    adapter_digest,
    artifact_subdir,
    compute_precision,
    enable_gradient_checkpointing,
    generate_summaries,
    seed_everything,
    train_lora,
)

__all__ = ["ADAPTER_INFO_FILE", "DEFAULT_BASELINE", "T5LoraObjective"]

#: Interval training (PBT): the optimizer state and the step count next to the adapter.
OPTIMIZER_FILE = "optimizer.pt"
TRAIN_STATE_FILE = "train_state.json"


def _read_interval(resume_from: Path | None) -> dict[str, Any] | None:
    """What a PBT checkpoint directory says: steps to train, the step to start from, and
    the adapter / optimizer files to load (None when absent: a fresh member)."""
    if resume_from is None or not (Path(resume_from) / "pbt.json").exists():
        return None
    root = Path(resume_from)
    meta = json.loads((root / "pbt.json").read_text(encoding="utf-8"))
    state = json.loads((root / TRAIN_STATE_FILE).read_text()) if (root / TRAIN_STATE_FILE).exists() else {}
    adapter = root / "adapter_model.safetensors"
    return {"interval_steps": int(meta["interval_steps"]), "start_step": int(state.get("step", 0)),
            "adapter": adapter if adapter.exists() else None,
            "optimizer": root / OPTIMIZER_FILE if (root / OPTIMIZER_FILE).exists() else None}


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
    #: what the trial fork server imports once for these trials
    preload = ("torch", "transformers", "peft")
    prediction_name = "summaries"
    quality_metric = "rouge2"
    quality_names = ("rouge1", "rouge2", "rougeL", "bleu")

    def __init__(self, params: Mapping[str, Any] | None = None):
        self.options: T5LoraOptions = parse_options(params)
        self.label_schema = LabelSchema(self.options.data.text_field, self.options.data.summary_field)
        self._params = dict(params or {})

    # ------------------------------------------------------------------ capabilities
    def _train_split(self) -> list[Any]:
        if self.options.data.source.startswith("hf:"):
            return []  # never a hub download for a reference
        train, _ = load_splits(self.options.data)
        return train

    def reference_texts(self, limit: int) -> list[str] | None:
        """The training split's articles (the synthetic corpus or the data file)."""
        train = self._train_split()
        return [e.text for e in train[:limit]] or None

    def training_examples(self, limit: int) -> list[dict[str, str]]:
        s = self.label_schema
        return [{s.input_field: e.text, s.target_field: e.summary} for e in self._train_split()[:limit]]

    def validation_examples(self, limit: int) -> list[dict[str, str]]:
        if self.options.data.source.startswith("hf:"):
            return []
        _, val = load_splits(self.options.data)
        s = self.label_schema
        return [{s.input_field: e.text, s.target_field: e.summary} for e in val[:limit]]

    # ``hpod compare`` and ``hpod export-adapter``
    baseline_params = DEFAULT_BASELINE
    baseline_label = "default (lr 5e-5, batch 8, 3 epochs, rank 8, alpha 16, dropout 0.1)"

    def compare_rows(self, baseline: Mapping[str, Any], best: Mapping[str, Any]) -> list[dict[str, Any]]:
        return compare_table(baseline, best)

    def export_model(self, artifact_dir: Path, out_dir: Path, cache_dir: Path, *, merge: bool = False) -> Path:
        return export_adapter(Path(artifact_dir), out_dir, self._params, cache_dir, merge=merge)

    def params_for_examples(self, path: Path, n_train: int, n_val: int) -> dict[str, Any]:
        raw = self.options.model_dump(mode="json")
        raw["data"].update(source=str(path), train_size=int(n_train), val_size=int(n_val))
        return raw

    def load_predictor(self, artifact_dir: Path, cache_dir: Path) -> T5LoraPredictor:
        """Base + the trial's LoRA adapter, in eval mode on CPU."""
        model, tokenizer, _ = load_adapter_model(Path(artifact_dir), self._params, cache_dir)
        return T5LoraPredictor(model, tokenizer, self.options)

    def score(self, predictions: Any, references: Any) -> dict[str, float]:
        return summary_metrics(list(predictions), list(references))

    def default_space(self) -> dict[str, dict[str, Any]]:
        return {name: dict(entry) for name, entry in LORA_EXPERIMENT_SPACE.items()}

    def estimate_memory(self, params: Mapping[str, Any], *, world_size: int,
                        on_gpu: bool) -> MemoryEstimate | None:
        """One rank's peak memory for ``params`` (see :mod:`.memory`): None when the
        model's shape is unknown here (no local config.json, not a published T5 size).
        A GPU is assumed to support bf16 (fp16 keeps the same bytes)."""
        shape = model_shape(self.options, TINY_CONFIG)
        if shape is None:
            return None
        hp = Hyperparameters.from_params(params)
        options = self.options
        micro = micro_batch_size(hp.batch_size, world_size, options.max_micro_batch)
        precision = compute_precision("cuda" if on_gpu else "cpu", options, bf16_supported=True)
        breakdown = estimate_training_memory(
            shape, rank=hp.rank, lora_dropout=hp.dropout, target_modules=list(options.target_modules),
            micro_batch=micro, source_length=options.source_length, target_length=options.target_length,
            precision=precision, gradient_checkpointing=options.gradient_checkpointing)
        return MemoryEstimate(
            peak_bytes=breakdown.total,
            parts={"weights": breakdown.weights, "adapter": breakdown.adapter,
                   "activations": breakdown.activations, "logits": breakdown.logits},
            details={"micro_batch": micro, "precision": precision,
                     "gradient_checkpointing": options.gradient_checkpointing,
                     "source_length": options.source_length, "target_length": options.target_length,
                     "notes": list(breakdown.notes)})

    def validate(self) -> None:
        """Read and check the data a trial would read (DataError names file, line, field)."""
        check_data(self.options.data)

    def prepare(self, cache_dir: Path) -> None:
        """Train and cache the tiny base (a no-op for a Hugging Face model)."""
        if self.options.is_tiny:

            ensure_tiny_base(self.options, Path(cache_dir))

    def run(self, ctx: TrialContext) -> Mapping[str, float | Measurement]:

        options = self.options
        hp = Hyperparameters.from_params(ctx.params)
        train, val = load_splits(options.data)
        model, tokenizer, base_reference = load_base_model(options, Path(ctx.cache_dir))
        if options.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        # Seed after loading (loading a base draws no random numbers we rely on) and
        # before LoRA init, which draws A's initial weights.
        seed_everything(ctx.seed)
        model = apply_lora(model, rank=hp.rank, alpha=hp.alpha, dropout=hp.dropout,
                           target_modules=options.target_modules)
        interval = _read_interval(ctx.resume_from)
        optimizer_state = None
        if interval is not None and interval["adapter"]:
            # Population-based training: continue from a member's (or its donor's) checkpoint.
            import torch
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(model, load_file(str(interval["adapter"])))
            if interval["optimizer"]:
                optimizer_state = torch.load(interval["optimizer"], map_location="cpu", weights_only=True)
        model.to(ctx.device)
        trainable, total = count_parameters(model)
        result = train_lora(model, tokenizer, train, val, hp, options, seed=ctx.seed, device=ctx.device,
                            report=ctx.report,
                            start_step=interval["start_step"] if interval else 0,
                            max_steps=interval["interval_steps"] if interval else None,
                            optimizer_state=optimizer_state)
        if ctx.world_size > 1:
            digest = adapter_digest(model)
            if ctx.rank != 0:
                # Other ranks trained the same adapter (data parallel); rank 0 scores and saves it.
                return {"loss": float(result.best_val_loss), "adapter_sha256": digest}  # type: ignore[dict-item]  # the digest is a rank check, not a metric
        scored = val if options.generate_size is None else val[: options.generate_size]
        predictions = generate_summaries(model, tokenizer, [e.text for e in scored], options, ctx.device)
        quality = summary_metrics(predictions, [e.summary for e in scored])

        out_dir = artifact_subdir(Path(ctx.artifact_dir), ctx.seed_index)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        if result.optimizer_state is not None:
            import torch

            torch.save(result.optimizer_state, out_dir / OPTIMIZER_FILE)
            (out_dir / TRAIN_STATE_FILE).write_text(json.dumps({"step": result.steps}))
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
            **({"adapter_sha256": digest} if ctx.world_size > 1 else {}),  # type: ignore[dict-item]  # a rank check, not a metric
        }
