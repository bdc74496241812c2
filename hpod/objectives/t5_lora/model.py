"""Building the models ``t5_lora`` trains: the offline tiny T5 (its BPE tokenizer and
its weights learned once from the synthetic corpus and cached), any Hugging Face T5
checkpoint, and the LoRA wrapper.

torch / transformers / peft are imported inside the functions so that importing
hpod stays fast.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpod.errors import SpecError
from hpod.objectives.prepared import prepare_once
from hpod.objectives.t5_lora.data import pretraining_corpus
from hpod.objectives.t5_lora.options import OPTIONS_PATH, T5LoraOptions
from hpod.objectives.t5_lora.train import configure_torch, train_full
from hpod.objectives.t5_lora.vocab import build_tokenizer

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "MIN_VOCAB_SIZE",
    "TINY_BASE_INFO_FILE",
    "TINY_CONFIG",
    "TINY_VOCAB_SIZE",
    "apply_lora",
    "count_parameters",
    "ensure_tiny_base",
    "load_base_model",
    "load_tokenizer",
    "tiny_base_dir",
    "tiny_config",
]

#: Ids of the tiny T5's BPE vocabulary (3 specials + 256 bytes + merges learned from its corpus).
TINY_VOCAB_SIZE = 1000
#: The tiny T5's shape (~0.8 M parameters). No dropout in the base: it is trained once,
#: briefly, and LoRA's own dropout is one of the searched hyperparameters.
TINY_CONFIG: dict[str, Any] = {
    "vocab_size": TINY_VOCAB_SIZE,
    "d_model": 128,
    "d_kv": 32,
    "d_ff": 256,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "dropout_rate": 0.0,
    "feed_forward_proj": "relu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
#: A real T5 tokenizer has ~32k ids; offline loads can silently return one with ~100
#: (every word <unk>), which trains to garbage. Anything under this is refused.
MIN_VOCAB_SIZE = 1000
#: Version of the tiny-base recipe: bump to invalidate caches when it changes.
_TINY_RECIPE = 3
#: Source tokens the tiny base trains on: the synthetic corpus puts every fact in the
#: lead clause (~20 tokens), and short sequences keep the base's training to about a
#: minute of one core.
_TINY_BASE_SOURCE_LENGTH = 32
#: The tiny base's optimizer: AdamW at this peak rate, batches of this size.
_TINY_BASE_LEARNING_RATE = 1e-3
_TINY_BASE_BATCH = 16
#: Articles of the tiny base's corpus (its tokenizer is learned from the same ones).
_TINY_CORPUS_SIZE = 4096
#: The corpus seed the tiny base is trained on (distinct from the default study data
#: seed 0, so a study's validation pairs are not the base's training pairs).
_TINY_CORPUS_SEED = 1000
#: Written into the tiny base's directory: the recipe it was built with.
TINY_BASE_INFO_FILE = "hpod_tiny_base.json"


def tiny_config() -> Any:
    """The tiny T5's ``T5Config`` (d_model 128, 2+2 layers, 4 heads, d_ff 256)."""
    from transformers import T5Config

    return T5Config(**TINY_CONFIG)


def load_tokenizer(options: T5LoraOptions, cache_dir: Path | None = None) -> Any:
    """The tokenizer for ``options.model``; refuses a broken (tiny-vocabulary) one.

    The tiny model's tokenizer is learned with its base and stored beside it: it needs
    ``cache_dir`` (and is built there first if it is not yet).
    """
    if options.is_tiny:
        if cache_dir is None:
            raise ValueError("the tiny model's tokenizer lives with its base: pass cache_dir")
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(ensure_tiny_base(options, Path(cache_dir))))
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


def _tiny_recipe(options: T5LoraOptions) -> dict[str, Any]:
    return {
        "recipe": _TINY_RECIPE,
        "config": TINY_CONFIG,
        "steps": options.base_steps,
        "source_length": _TINY_BASE_SOURCE_LENGTH,
        "target_length": options.target_length,
        "prefix": options.prefix,
        "learning_rate": _TINY_BASE_LEARNING_RATE,
        "batch_size": _TINY_BASE_BATCH,
        "corpus": {"size": _TINY_CORPUS_SIZE, "seed": _TINY_CORPUS_SEED},
    }


def _tiny_key(options: T5LoraOptions) -> str:
    return hashlib.sha256(json.dumps(_tiny_recipe(options), sort_keys=True).encode()).hexdigest()[:16]


def tiny_base_dir(options: T5LoraOptions, cache_dir: Path) -> Path:
    """Where the tiny base for these options is cached (keyed by its recipe)."""
    return Path(cache_dir) / "t5_lora" / f"tiny-base-{_tiny_key(options)}"


def _build_tiny_base(options: T5LoraOptions, out: Path) -> None:
    import torch
    from transformers import T5ForConditionalGeneration

    configure_torch(options)
    corpus = pretraining_corpus(_TINY_CORPUS_SIZE, seed=_TINY_CORPUS_SEED)
    tokenizer = build_tokenizer([options.prefix + e.text for e in corpus] + [e.summary for e in corpus],
                                vocab_size=TINY_VOCAB_SIZE)
    # The base's own seed is fixed: every trial of every study shares one base.
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny_config())
    base_options = options.model_copy(update={"max_source_length": _TINY_BASE_SOURCE_LENGTH})
    train_full(model, tokenizer, base_options, corpus, steps=options.base_steps, seed=_TINY_CORPUS_SEED,
               batch_size=_TINY_BASE_BATCH, learning_rate=_TINY_BASE_LEARNING_RATE)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / TINY_BASE_INFO_FILE).write_text(json.dumps({**_tiny_recipe(options), "key": _tiny_key(options)},
                                                      indent=2, sort_keys=True))


def ensure_tiny_base(options: T5LoraOptions, cache_dir: Path) -> Path:
    """The tiny base (model + tokenizer) for these options, trained on the synthetic
    corpus the first time it is asked for and cached; return its directory.

    Prepared once per recipe across threads and processes (see
    :func:`~hpod.objectives.prepared.prepare_once`): concurrent studies, retunes and
    trial processes asking for the same base wait for one training, and never see a
    half-written base.
    """
    target = tiny_base_dir(options, cache_dir)
    return prepare_once(target, lambda out: _build_tiny_base(options, out),
                        info={"what": "t5_lora tiny base", "key": _tiny_key(options)})


def load_base_model(options: T5LoraOptions, cache_dir: Path) -> tuple[Any, Any, str]:
    """(model, tokenizer, base reference): the base model in train mode on CPU.

    The reference is the cached tiny base's directory or the HF name / path.
    """
    from transformers import AutoModelForSeq2SeqLM

    configure_torch(options)
    tokenizer = load_tokenizer(options, cache_dir)
    reference = str(ensure_tiny_base(options, cache_dir)) if options.is_tiny else options.model
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(reference)
    except (OSError, ValueError) as exc:
        raise SpecError(f"{OPTIONS_PATH}.model", f"cannot load the model ({exc})", found=options.model) from None
    return model, tokenizer, reference


def apply_lora(model: nn.Module, *, rank: int, alpha: int, dropout: float, target_modules: list[str]) -> Any:
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
        lora_alpha=int(alpha),
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
