"""The offline tiny T5's tokenizer: a byte-level BPE vocabulary learned from the
corpus the tiny base is trained on.

Words the corpus uses often become single tokens (an article is ~40 tokens instead of
~200 bytes, so the tiny model learns to summarize in a few hundred steps); every
other string is still representable, down to single bytes (the 256 byte symbols are
always in the vocabulary), so text of a new domain — names, numbers, other scripts —
is encoded without ``<unk>`` and decodes back exactly. Digits are split one by one,
so numbers are copied digit by digit whatever their size.

``tokenizers`` (a transformers dependency) is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["SPECIAL_TOKENS", "build_tokenizer"]

#: T5's special ids: pad 0 (also the decoder start), eos 1, unk 2.
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
#: Pre-tokenization: a word with its leading space, one digit, or a run of punctuation.
_SPLIT = r" ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+"


def build_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A ``PreTrainedTokenizerFast`` with a byte-level BPE vocabulary of
    ``vocab_size`` ids (specials and the 256 byte symbols included) learned from
    ``texts``. Deterministic for the same texts and size."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size must be >= {len(SPECIAL_TOKENS) + 256}, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    # A leading space on the first word too, so a word has one id wherever it stands.
    tokenizer.normalizer = normalizers.Prepend(" ")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)
