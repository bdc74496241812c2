"""The ``t5_lora`` objective: LoRA fine-tuning of T5 summarization models (Hugging Face
transformers + peft), registered at import without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpod.objectives.base import register_objective
from hpod.objectives.t5_lora._objective import (
    ADAPTER_INFO_FILE,
    DEFAULT_BASELINE,
    T5LoraObjective,
)
from hpod.objectives.t5_lora.options import DataOptions, T5LoraOptions, parse_options

__all__ = [
    "ADAPTER_INFO_FILE",
    "DEFAULT_BASELINE",
    "DataOptions",
    "T5LoraObjective",
    "T5LoraOptions",
    "create_t5_lora",
    "parse_options",
]


def create_t5_lora(params: Mapping[str, Any]) -> T5LoraObjective:
    """Factory registered as ``t5_lora``; raises SpecError for bad ``objective.params``."""
    return T5LoraObjective(params)


register_objective("t5_lora", create_t5_lora)
