"""Peak device memory of one ``t5_lora`` trial, estimated before it starts.

From the model's shape (its ``config.json``: read from a local directory, the Hugging
Face cache, or the published T5 shapes below; never a download), the LoRA rank and
targets, the micro-batch each rank puts through the model, the sequence lengths, the
precision and gradient checkpointing, the estimate adds up, per device:

- ``weights``: the frozen base in fp32 (mixed precision keeps fp32 weights);
- ``adapter``: LoRA weights, their gradients and AdamW's two moments (4 x 4 bytes each);
- ``activations``: what autograd keeps for the backward pass of one micro-batch: per
  encoder/decoder block a multiple of tokens x width and of the attention maps
  (heads x length x length), or only the blocks' inputs plus one block recomputed with
  gradient checkpointing; and the relative position biases the blocks share;
- ``logits``: the output layer's logits, log-probabilities and their gradient (fp32).

The per-block multiples were fitted to peak-RSS measurements of CPU fp32 runs and are
checked on held-out configurations by ``python -m benchmarks.memory_estimate``
(benchmarks/results/memory_estimate.md states the error). The 16-bit figures halve the
activations kept in the compute type; they have not been measured on a GPU.

Import cost: none beyond the standard library (no torch), so the controller can ask.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpod.objectives.t5_lora.options import T5LoraOptions

__all__ = [
    "PUBLISHED_SHAPES",
    "MemoryBreakdown",
    "count_lora_parameters",
    "count_t5_parameters",
    "estimate_training_memory",
    "micro_batch_size",
    "model_shape",
]

#: The published ``config.json`` fields that matter here, for the three T5 sizes the
#: presets name (used when no local copy of the config is found; never downloaded).
PUBLISHED_SHAPES: dict[str, dict[str, Any]] = {
    "t5-small": {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6,
                 "num_decoder_layers": 6, "num_heads": 8, "feed_forward_proj": "relu", "dropout_rate": 0.1,
                 "tie_word_embeddings": True, "relative_attention_num_buckets": 32},
    "t5-base": {"vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12,
                "num_decoder_layers": 12, "num_heads": 12, "feed_forward_proj": "relu", "dropout_rate": 0.1,
                "tie_word_embeddings": True, "relative_attention_num_buckets": 32},
    "t5-large": {"vocab_size": 32128, "d_model": 1024, "d_kv": 64, "d_ff": 4096, "num_layers": 24,
                 "num_decoder_layers": 24, "num_heads": 16, "feed_forward_proj": "relu", "dropout_rate": 0.1,
                 "tie_word_embeddings": True, "relative_attention_num_buckets": 32},
}
for _name in list(PUBLISHED_SHAPES):
    PUBLISHED_SHAPES[f"google-t5/{_name}"] = PUBLISHED_SHAPES[_name]

#: Elements autograd keeps per token and block, as multiples of the block's widths
#: (fitted on CPU fp32 runs; see the module docstring): encoder block (one attention,
#: one feed-forward sublayer) and decoder block (self-attention, cross-attention,
#: feed-forward), per model width ``d_model``, attention width ``heads x d_kv`` and
#: feed-forward width ``d_ff``.
_ENCODER_PER_TOKEN = {"d_model": 6.0, "inner": 5.0, "d_ff": 3.0}
_DECODER_PER_TOKEN = {"d_model": 9.0, "inner": 8.0, "d_ff": 3.0}
#: Copies of each attention map kept per block: the softmax output, and with dropout the
#: dropped-out map and its mask (one byte per element).
_ATTENTION_MAPS = 2.25
#: Blocks' worth of activations alive while one checkpointed block is recomputed.
_RECOMPUTED_BLOCKS = 2.0
#: fp32 copies of the logits alive at the start of the backward pass (logits,
#: log-probabilities, their gradient).
_LOGIT_COPIES = 3.0


@dataclass(frozen=True)
class MemoryBreakdown:
    """An estimate of one rank's peak device memory, bytes, by part."""

    weights: float
    adapter: float
    activations: float
    logits: float
    micro_batch: int
    precision: str
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.weights + self.adapter + self.activations + self.logits

    def as_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total, "weights_bytes": self.weights, "adapter_bytes": self.adapter,
                "activations_bytes": self.activations, "logits_bytes": self.logits,
                "micro_batch": self.micro_batch, "precision": self.precision, "notes": list(self.notes)}


def _read_local_config(model: str) -> dict[str, Any] | None:
    path = Path(model).expanduser()
    candidates = [path / "config.json"] if path.is_dir() else []
    # not a repo id, or huggingface_hub missing: the other sources follow
    with contextlib.suppress(Exception):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        if isinstance(cached, str):
            candidates.append(Path(cached))
    for candidate in candidates:
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "d_model" in data:
            return data
    return None


def model_shape(options: T5LoraOptions, tiny_config: dict[str, Any]) -> dict[str, Any] | None:
    """The T5 config fields of ``options.model``: ``tiny_config`` for the tiny model, a
    local directory's or the Hugging Face cache's ``config.json``, else the published
    shape of t5-small/base/large; None when none of these knows the model."""
    if options.is_tiny:
        return dict(tiny_config)
    return _read_local_config(options.model) or (dict(PUBLISHED_SHAPES[options.model])
                                                 if options.model in PUBLISHED_SHAPES else None)


def _widths(shape: dict[str, Any]) -> tuple[int, int, int, int, int, int, int, bool]:
    h = int(shape["d_model"])
    heads = int(shape["num_heads"])
    inner = heads * int(shape["d_kv"])
    ff = int(shape["d_ff"])
    enc = int(shape["num_layers"])
    dec = int(shape.get("num_decoder_layers") or enc)
    vocab = int(shape["vocab_size"])
    gated = str(shape.get("feed_forward_proj", "relu")).startswith("gated")
    return h, heads, inner, ff, enc, dec, vocab, gated


def count_t5_parameters(shape: dict[str, Any]) -> int:
    """Parameters of a ``T5ForConditionalGeneration`` of this shape (embeddings shared by
    encoder and decoder; a separate output layer when embeddings are not tied)."""
    h, heads, inner, ff, enc, dec, vocab, gated = _widths(shape)
    buckets = int(shape.get("relative_attention_num_buckets", 32))
    attention = 4 * h * inner
    feed_forward = h * ff * (3 if gated else 2)
    total = vocab * h
    if not shape.get("tie_word_embeddings", True):
        total += vocab * h
    total += enc * (attention + feed_forward + 2 * h) + dec * (2 * attention + feed_forward + 3 * h)
    total += 2 * buckets * heads + 2 * h  # relative position biases (first blocks), final norms
    return int(total)


def count_lora_parameters(shape: dict[str, Any], rank: int, target_modules: list[str]) -> tuple[int, list[str]]:
    """(LoRA parameters, targets not counted): ``rank x (in + out)`` for each targeted
    linear layer of the attention (``q``, ``k``, ``v``, ``o``) and feed-forward (``wi``,
    ``wi_0``, ``wi_1``, ``wo``) blocks."""
    h, _, inner, ff, enc, dec, _, gated = _widths(shape)
    attention_blocks = enc + 2 * dec
    ff_blocks = enc + dec
    sizes = {"q": (h + inner, attention_blocks), "k": (h + inner, attention_blocks),
             "v": (h + inner, attention_blocks), "o": (inner + h, attention_blocks),
             "wo": (ff + h, ff_blocks)}
    if gated:
        sizes.update({"wi_0": (h + ff, ff_blocks), "wi_1": (h + ff, ff_blocks)})
    else:
        sizes["wi"] = (h + ff, ff_blocks)
    total, unknown = 0, []
    for name in target_modules:
        if name in sizes:
            width, count = sizes[name]
            total += rank * width * count
        else:
            unknown.append(name)
    return int(total), unknown


def micro_batch_size(batch_size: int, world_size: int, max_micro_batch: int | None) -> int:
    """Examples one rank puts through the model at once: its share of the batch, at
    most ``max_micro_batch``."""
    share = math.ceil(batch_size / max(1, world_size))
    return max(1, min(share, max_micro_batch) if max_micro_batch else share)


def _lora_per_token(shape: dict[str, Any], rank: int, targets: list[str], dropout: float) -> tuple[float, float]:
    """Elements LoRA adds per token in (an encoder block, a decoder block): the dropped-out
    input and the rank-wide intermediate of each adapted layer."""
    h, _, inner, ff, _, _, _, _ = _widths(shape)
    keep = 2.0 if dropout > 0 else 1.0
    per = {"q": h, "k": h, "v": h, "o": inner, "wi": h, "wi_0": h, "wi_1": h, "wo": ff}
    enc = dec = 0.0
    for name in targets:
        if name not in per:
            continue
        one = keep * per[name] + rank
        if name in ("q", "k", "v", "o"):
            enc, dec = enc + one, dec + 2 * one
        else:
            enc, dec = enc + one, dec + one
    return enc, dec


def estimate_training_memory(shape: dict[str, Any], *, rank: int, lora_dropout: float, target_modules: list[str],
                             micro_batch: int, source_length: int, target_length: int, precision: str,
                             gradient_checkpointing: bool) -> MemoryBreakdown:
    """Peak memory (bytes) of one rank training LoRA on a T5 of ``shape`` (see the
    module docstring); ``precision`` is ``fp32``, ``bf16`` or ``fp16``."""
    h, heads, inner, ff, enc, dec, vocab, _ = _widths(shape)
    s, t, b = int(source_length), int(target_length), int(micro_batch)
    act_bytes = 4.0 if precision == "fp32" else 2.0
    maps = _ATTENTION_MAPS if float(shape.get("dropout_rate", 0.0)) > 0 else 1.0

    base = count_t5_parameters(shape)
    lora, unknown = count_lora_parameters(shape, rank, target_modules)
    notes = [f"LoRA on {', '.join(unknown)} not counted (unknown module names)"] if unknown else []
    lora_enc, lora_dec = _lora_per_token(shape, rank, target_modules, lora_dropout)

    def per_token(coefficients: dict[str, float]) -> float:
        return coefficients["d_model"] * h + coefficients["inner"] * inner + coefficients["d_ff"] * ff

    encoder_block = s * (per_token(_ENCODER_PER_TOKEN) + lora_enc) + maps * heads * s * s
    decoder_block = (t * (per_token(_DECODER_PER_TOKEN) + lora_dec) + 2 * inner * s
                     + maps * heads * (t * t + t * s))
    # The relative position biases (with the masks added) are shared by all blocks of a stack.
    position_bias = heads * (s * s + t * t + t * s)
    if gradient_checkpointing:
        # Each block keeps its input; one block at a time is recomputed in full, with
        # its gradients beside it.
        kept = enc * s * h + dec * t * h + _RECOMPUTED_BLOCKS * max(encoder_block, decoder_block)
    else:
        kept = enc * encoder_block + dec * decoder_block
    return MemoryBreakdown(
        weights=4.0 * base,
        adapter=16.0 * lora,  # fp32 weights, gradients, AdamW's two moments
        activations=act_bytes * b * kept + 4.0 * b * position_bias,
        logits=4.0 * _LOGIT_COPIES * b * t * vocab,
        micro_batch=b,
        precision=precision,
        notes=notes,
    )
