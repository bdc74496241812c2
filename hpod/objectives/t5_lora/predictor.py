"""A saved ``t5_lora`` trial as a model: base + LoRA adapter, and the predictor the
serving endpoint calls (``predict(texts)`` -> summaries)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpod.errors import UsageError
from hpod.objectives.t5_lora.model import load_base_model
from hpod.objectives.t5_lora.options import T5LoraOptions, parse_options
from hpod.objectives.t5_lora.train import generate_summaries

__all__ = ["T5LoraPredictor", "load_adapter_model"]


def _check_adapter_dir(artifact_dir: Path) -> Path:
    artifact_dir = Path(artifact_dir)
    if not (artifact_dir / "adapter_config.json").is_file():
        raise UsageError(f"{artifact_dir}: no LoRA adapter here (adapter_config.json missing); "
                         "was the trial completed?")
    return artifact_dir


def load_adapter_model(artifact_dir: Path, objective_params: Mapping[str, Any], cache_dir: Path,
                       device: str = "cpu") -> tuple[Any, Any, str]:
    """(PeftModel in eval mode, tokenizer, base reference) for a saved trial adapter."""
    from peft import PeftModel

    artifact_dir = _check_adapter_dir(artifact_dir)
    options = parse_options(objective_params)
    base, tokenizer, reference = load_base_model(options, Path(cache_dir))
    model = PeftModel.from_pretrained(base, str(artifact_dir)).to(device)
    model.eval()
    return model, tokenizer, reference


class T5LoraPredictor:
    """Summaries by one loaded adapter model on CPU; calls are serialised (generation
    on one torch module from several threads gains nothing)."""

    def __init__(self, model: Any, tokenizer: Any, options: T5LoraOptions):
        self.model, self.tokenizer, self.options = model, tokenizer, options
        self._lock = threading.Lock()

    def predict(self, texts: Sequence[str]) -> list[str]:
        with self._lock:
            return generate_summaries(self.model, self.tokenizer, list(texts), self.options, "cpu")
