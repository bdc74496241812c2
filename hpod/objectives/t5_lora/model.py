"""Building the models ``t5_lora`` trains: the offline tiny T5 (trained once on the
synthetic corpus and cached), any Hugging Face T5 checkpoint, and the LoRA wrapper.

torch / transformers / peft are imported inside the functions so that importing
hpod stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpod.errors import SpecError
from hpod.objectives.t5_lora.options import OPTIONS_PATH, T5LoraOptions
from hpod.objectives.t5_lora.train import configure_torch, train_full

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "MIN_VOCAB_SIZE",
    "TINY_CONFIG",
    "apply_lora",
    "count_parameters",
    "ensure_tiny_base",
    "load_base_model",
    "load_tokenizer",
    "tiny_base_dir",
    "tiny_config",
]

#: The tiny T5's shape (vocab 384 = ByT5Tokenizer's byte-level ids).
TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 384,
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "dropout_rate": 0.1,
    "feed_forward_proj": "relu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
#: A real T5 tokenizer has ~32k ids; offline loads can silently return one with ~100
#: (every word <unk>), which trains to garbage. Anything under this is refused.
MIN_VOCAB_SIZE = 1000
#: Version of the tiny-base recipe: bump to invalidate caches when it changes.
_TINY_RECIPE = 2
#: Source bytes the tiny base trains on: the synthetic corpus puts every fact in the
#: lead clause, and short sequences let 800 steps finish in about a minute on one core.
_TINY_BASE_SOURCE_LENGTH = 96
#: The synthetic corpus seed the tiny base is trained on (distinct from the default
#: study data seed 0, so a study's validation pairs are not the base's training pairs).
_TINY_CORPUS_SEED = 1000


def tiny_config() -> Any:
    """The tiny T5's ``T5Config`` (d_model 64, 2+2 layers, 4 heads, d_ff 128)."""
    from transformers import T5Config

    return T5Config(**TINY_CONFIG)


def load_tokenizer(options: T5LoraOptions) -> Any:
    """The tokenizer for ``options.model``; refuses a broken (tiny-vocabulary) one."""
    if options.is_tiny:
        from transformers import ByT5Tokenizer

        return ByT5Tokenizer()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(options.model)
    except (OSError, ValueError) as exc:
        raise SpecError(f"{OPTIONS_PATH}.model", f"cannot load the tokenizer ({exc})", found=options.model) from None
    if len(tokenizer) <= MIN_VOCAB_SIZE:
        raise SpecError(
            f"{OPTIONS_PATH}.model",
            f"tokenizer has only {len(tokenizer)} tokens (need > {MIN_VOCAB_SIZE}); an offline load "
            "without the model's files returns such a broken tokenizer: download the model or use a local path",
            found=options.model,
        )
    return tokenizer


def _tiny_key(options: T5LoraOptions) -> str:
    recipe = {
        "recipe": _TINY_RECIPE,
        "config": TINY_CONFIG,
        "steps": options.base_steps,
        "source_length": _TINY_BASE_SOURCE_LENGTH,
        "target_length": options.target_length,
        "prefix": options.prefix,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def tiny_base_dir(options: T5LoraOptions, cache_dir: Path) -> Path:
    """Where the tiny base for these options is cached (keyed by its recipe)."""
    return Path(cache_dir) / "t5_lora" / f"tiny-base-{_tiny_key(options)}"


def ensure_tiny_base(options: T5LoraOptions, cache_dir: Path) -> Path:
    """Train the tiny base on the synthetic corpus once and cache it; return its dir.

    Idempotent and safe against concurrent callers: the model is written to a temp
    dir and renamed into place, so a reader never sees a half-written base.
    """
    target = tiny_base_dir(options, cache_dir)
    if (target / "config.json").exists():
        return target
    import torch


    configure_torch(options)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        from transformers import T5ForConditionalGeneration

        # The base's own seed is fixed: every trial of every study shares one base.
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(tiny_config())
        tokenizer = load_tokenizer(options)
        base_options = options.model_copy(update={"max_source_length": _TINY_BASE_SOURCE_LENGTH})
        train_full(model, tokenizer, base_options, steps=options.base_steps, corpus_seed=_TINY_CORPUS_SEED,
                   learning_rate=3e-3)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "hpod_tiny_base.json").write_text(
            json.dumps({"recipe": _TINY_RECIPE, "base_steps": options.base_steps, "key": _tiny_key(options)})
        )
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
            # Another process finished first; its base is identical (same recipe).
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_base_model(options: T5LoraOptions, cache_dir: Path) -> tuple[Any, Any, str]:
    """(model, tokenizer, base reference): the base model in train mode on CPU.

    The reference is the cached tiny base's directory or the HF name / path.
    """
    from transformers import AutoModelForSeq2SeqLM


    configure_torch(options)
    tokenizer = load_tokenizer(options)
    reference = str(ensure_tiny_base(options, cache_dir)) if options.is_tiny else options.model
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(reference)
    except (OSError, ValueError) as exc:
        raise SpecError(f"{OPTIONS_PATH}.model", f"cannot load the model ({exc})", found=options.model) from None
    return model, tokenizer, reference


def apply_lora(model: nn.Module, *, rank: int, alpha: float, dropout: float, target_modules: list[str]) -> Any:
    """Freeze ``model`` and wrap it with LoRA adapters on ``target_modules``."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=int(rank),
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        target_modules=list(target_modules),
    )
    import warnings

    try:
        with warnings.catch_warnings():
            # peft calls a transformers API deprecated in v5; harmless, and noisy in every trial log.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as exc:
        # peft's message for unknown module names; say which option to fix.
        raise SpecError(f"{OPTIONS_PATH}.target_modules", str(exc), found=target_modules) from None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return int(trainable), int(total)
