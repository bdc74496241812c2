"""The ``t5_lora`` objective's options (a study spec's ``objective.params``), validated
with pydantic so that a typo or an out-of-range value fails the study at submission.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpod.objectives.base import PARAMS_PATH, parse_params

__all__ = [
    "ADAPTER_INFO_FILE",
    "DEFAULT_BASELINE",
    "OPTIONS_PATH",
    "PRESETS",
    "TINY_MODEL",
    "DataOptions",
    "T5LoraOptions",
    "parse_options",
]

#: The name of the offline tiny T5 (built from a config, BPE tokenizer learned from its corpus).
TINY_MODEL = "tiny"
#: Where these options live in a study spec, for error messages.
OPTIONS_PATH = PARAMS_PATH


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

#: What ``preset`` sets; options the spec gives explicitly win over the preset's. The
#: search space's ``batch_size`` stays the effective batch: ``max_micro_batch`` only
#: bounds what goes through the model at once (the rest is gradient accumulation).
#: Micro-batches are chosen so that the memory estimate (:mod:`.memory`) of one
#: micro-batch at 512/128 tokens, LoRA rank 16, bf16, fits a 24 GB GPU
#: (tests/objectives_tests/test_t5_lora_presets.py checks it); LoRA targets widen with
#: the model (attention q,v for small; all attention projections for base; attention
#: and feed-forward for large), and T5-large recomputes activations (gradient
#: checkpointing) to afford a useful micro-batch.
PRESETS: dict[str, dict[str, Any]] = {
    "t5-small": {"model": "t5-small", "target_modules": ["q", "v"], "gradient_checkpointing": False,
                 "precision": "auto", "max_micro_batch": 32},
    "t5-base": {"model": "t5-base", "target_modules": ["q", "k", "v", "o"], "gradient_checkpointing": False,
                "precision": "auto", "max_micro_batch": 16},
    "t5-large": {"model": "t5-large", "target_modules": ["q", "k", "v", "o", "wi", "wo"],
                 "gradient_checkpointing": True, "precision": "auto", "max_micro_batch": 8},
}


class DataOptions(BaseModel):
    """Where the (article, summary) pairs come from and how many of them to use.

    ``source`` is ``synthetic`` (the built-in deterministic news corpus), a path to a
    ``.jsonl`` / ``.csv`` / ``.parquet`` file (relative paths are taken from the
    current directory), or ``hf:cnn_dailymail`` (needs the ``datasets`` extra).
    Files give their first ``train_size`` records to training and the next
    ``val_size`` to validation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(default="synthetic", min_length=1)
    text_field: str = Field(default="article", min_length=1)
    summary_field: str = Field(default="highlights", min_length=1)
    train_size: int = Field(default=1000, ge=1, le=10_000_000)
    val_size: int = Field(default=100, ge=1, le=1_000_000)
    #: seed of the synthetic corpus (not of training: that is the trial's seed).
    synthetic_seed: int = Field(default=0, ge=0)
    #: the synthetic corpus's domain: ``news`` (the tiny base's own) or ``sports``
    #: (match reports: other words, another sentence shape).
    synthetic_domain: Literal["news", "sports"] = "news"


class T5LoraOptions(BaseModel):
    """All options of the ``t5_lora`` objective (hyperparameters come from the space)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: sets model, LoRA targets, gradient checkpointing, precision and micro-batch for a
    #: T5 size (see :data:`PRESETS`); any of those given explicitly wins
    preset: Literal["t5-small", "t5-base", "t5-large"] | None = None

    #: ``tiny`` (offline, built from a T5Config) or a Hugging Face name / local path.
    model: str = Field(default="t5-small", min_length=1)
    data: DataOptions = Field(default_factory=DataOptions)
    #: tokens of article / summary kept; None = 128/64 for ``tiny``, 512/128 otherwise.
    max_source_length: int | None = Field(default=None, ge=8, le=16384)
    max_target_length: int | None = Field(default=None, ge=4, le=4096)
    prefix: str = "summarize: "
    target_modules: list[str] = Field(default_factory=lambda: ["q", "v"], min_length=1)
    num_beams: int = Field(default=1, ge=1, le=16)
    #: tokens generated per summary when computing ROUGE/BLEU; None = max_target_length.
    max_new_tokens: int | None = Field(default=None, ge=1, le=4096)
    #: optimizer steps between validation-loss evaluations; None = 4 per epoch.
    eval_steps: int | None = Field(default=None, ge=1)
    #: early stopping: stop after this many evaluations improving less than min_delta.
    patience: int = Field(default=5, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    #: full-training steps of the tiny base (cached once per configuration).
    base_steps: int = Field(default=800, ge=0, le=100_000)
    #: largest micro-batch put through the model at once; larger batches accumulate.
    max_micro_batch: int | None = Field(default=None, ge=1)
    #: mixed precision: "auto" = bf16 autocast on a CUDA device that supports it, fp16
    #: autocast with loss scaling on one that does not, fp32 on CPU; "fp16" runs fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: recompute each T5 block's activations in the backward pass instead of keeping
    #: them (less memory, ~30% more compute)
    gradient_checkpointing: bool = False
    #: torch CPU threads for training (None = torch's default). On a shared CPU node,
    #: 1 can be several times faster than oversubscribed OpenMP threads.
    cpu_threads: int | None = Field(default=None, ge=1, le=1024)
    #: validation examples summarized for ROUGE/BLEU (None = the whole split).
    generate_size: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill in the preset's settings under the options given (a bad preset name is
        left for the field's own check, which names the allowed values)."""
        if isinstance(data, Mapping) and isinstance(data.get("preset"), str) and data["preset"] in PRESETS:
            return {**PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="after")
    def _check_lengths(self) -> T5LoraOptions:
        if self.data.source.startswith("hf:") and self.data.source != "hf:cnn_dailymail":
            raise ValueError(
                f"data.source {self.data.source!r}: the only hub dataset supported is "
                "hf:cnn_dailymail; point source at a .jsonl/.csv/.parquet file instead"
            )
        return self

    @property
    def is_tiny(self) -> bool:
        return self.model == TINY_MODEL

    @property
    def source_length(self) -> int:
        if self.max_source_length is not None:
            return self.max_source_length
        return 128 if self.is_tiny else 512

    @property
    def target_length(self) -> int:
        if self.max_target_length is not None:
            return self.max_target_length
        return 64 if self.is_tiny else 128

    @property
    def new_tokens(self) -> int:
        return self.max_new_tokens if self.max_new_tokens is not None else self.target_length


def parse_options(params: Mapping[str, Any] | None) -> T5LoraOptions:
    """Validate ``objective.params``; raise :class:`SpecError` naming the bad option."""
    return parse_params(T5LoraOptions, params)
