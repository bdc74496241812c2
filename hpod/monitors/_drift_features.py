"""Privacy-preserving text features for data-drift monitors.

A served input or a new training example is reduced to its length and a hashed
bag of token buckets; the raw text is never kept, and the features are plain JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hpod.errors import DataError

__all__ = [
    "DEFAULT_BUCKETS",
    "TextFeatures",
    "as_features",
    "bucket_matrix",
    "features_from_path",
    "stable_bucket",
    "text_features",
]

#: Default number of hash buckets for the token distribution.
DEFAULT_BUCKETS = 4096

# Words, numbers and single punctuation marks; lower-cased so that sentence-initial
# capitals do not look like a vocabulary change.
_WORD_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)

#: Name recorded in features built without a tokenizer.
WORD_TOKENIZER = "word-blake2b"


def stable_bucket(token: str | int, n_buckets: int) -> int:
    """Bucket of ``token`` in ``[0, n_buckets)``, identical across processes and runs.

    Python's ``hash()`` is salted per process (PYTHONHASHSEED), so features hashed
    by the serving process and by the daemon would not match; blake2b does.
    """
    digest = hashlib.blake2b(str(token).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_buckets


class TextFeatures(BaseModel):
    """What a data monitor keeps of one text: lengths and a hashed token histogram.

    ``n_tokens`` counts tokens of ``tokenizer`` (``word-blake2b`` when none was given),
    ``n_bytes`` the UTF-8 bytes, ``buckets`` maps a bucket index in ``[0, n_buckets)``
    to the number of the text's tokens hashed into it. ``embedding`` is an optional
    vector (e.g. an encoder's mean-pooled hidden states) for the MMD test.
    ``model_dump(mode="json")`` is JSON-serialisable; ``TextFeatures.model_validate``
    reads it back (bucket keys may be strings after a JSON round trip).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_tokens: int = Field(ge=0)
    n_bytes: int = Field(ge=0)
    n_buckets: int = Field(default=DEFAULT_BUCKETS, ge=2, le=1 << 20)
    buckets: dict[int, int] = Field(default_factory=dict)
    tokenizer: str = WORD_TOKENIZER
    embedding: list[float] | None = None

    @field_validator("buckets")
    @classmethod
    def _check_buckets(cls, value: dict[int, int]) -> dict[int, int]:
        for index, count in value.items():
            if index < 0 or count < 0:
                raise ValueError(f"buckets must map indices >= 0 to counts >= 0, got {index}: {count}")
        return value

    def model_post_init(self, __context: Any) -> None:
        for index in self.buckets:
            if index >= self.n_buckets:
                raise ValueError(f"bucket index {index} is out of range for n_buckets={self.n_buckets}")


def _tokenize(text: str, tokenizer: Any) -> tuple[list[str | int], str]:
    if tokenizer is None:
        return list(_WORD_RE.findall(text.lower())), WORD_TOKENIZER
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    encode = getattr(tokenizer, "encode", None)
    if encode is not None:
        try:
            ids = encode(text, add_special_tokens=False)
        except TypeError:  # a tokenizer whose encode takes no keyword arguments
            ids = encode(text)
        # tokenizers.Tokenizer.encode returns an Encoding object, not a list
        ids = getattr(ids, "ids", ids)
        return list(ids), name
    if callable(tokenizer):
        return list(tokenizer(text)), name
    raise TypeError(
        f"tokenizer must be None, have an encode() method or be callable, got {type(tokenizer).__name__}"
    )


def text_features(
    text: str,
    tokenizer: Any = None,
    *,
    n_buckets: int = DEFAULT_BUCKETS,
    embedding: Sequence[float] | np.ndarray | None = None,
) -> TextFeatures:
    """Features of ``text`` for data-drift monitors; the text itself is not kept.

    ``tokenizer`` is None (lower-cased words and punctuation), a Hugging Face
    tokenizer (its ``encode(text, add_special_tokens=False)`` ids are used), or any
    callable returning a list of tokens. Tokens are hashed into ``n_buckets``
    buckets with a stable hash, so features from different processes compare.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not 2 <= n_buckets <= 1 << 20:
        raise ValueError(f"n_buckets must be in [2, {1 << 20}], got {n_buckets}")
    tokens, name = _tokenize(text, tokenizer)
    counts = Counter(stable_bucket(token, n_buckets) for token in tokens)
    vector: list[float] | None = None
    if embedding is not None:
        vector = [float(x) for x in np.asarray(embedding, dtype=float).ravel()]
    return TextFeatures(
        n_tokens=len(tokens),
        n_bytes=len(text.encode("utf-8")),
        n_buckets=n_buckets,
        buckets=dict(counts),
        tokenizer=name,
        embedding=vector,
    )


def as_features(
    items: Iterable[TextFeatures | dict[str, Any] | str],
    *,
    tokenizer: Any = None,
    n_buckets: int = DEFAULT_BUCKETS,
) -> list[TextFeatures]:
    """Coerce texts, feature dicts (as stored or posted) and features to :class:`TextFeatures`."""
    out: list[TextFeatures] = []
    for item in items:
        if isinstance(item, TextFeatures):
            out.append(item)
        elif isinstance(item, str):
            out.append(text_features(item, tokenizer, n_buckets=n_buckets))
        elif isinstance(item, dict):
            out.append(TextFeatures.model_validate(item))
        else:
            raise TypeError(
                f"a data window holds str, dict or TextFeatures items, got {type(item).__name__}"
            )
    return out


def bucket_matrix(features: Sequence[TextFeatures], n_buckets: int) -> np.ndarray:
    """Dense ``len(features) x n_buckets`` matrix of token counts (one row per text)."""
    matrix = np.zeros((len(features), n_buckets), dtype=np.float64)
    for row, item in enumerate(features):
        if item.n_buckets != n_buckets:
            raise ValueError(
                f"features hashed into {item.n_buckets} buckets cannot be compared with "
                f"a monitor using n_buckets={n_buckets}"
            )
        if item.buckets:
            matrix[row, list(item.buckets.keys())] = list(item.buckets.values())
    return matrix



def features_from_path(
    path: str | Path,
    text_field: str = "text",
    *,
    tokenizer: Any = None,
    n_buckets: int = DEFAULT_BUCKETS,
    offsets: dict[str, int] | None = None,
) -> tuple[list[TextFeatures], dict[str, int]]:
    """Features of the records added to a watched JSONL file or directory since ``offsets``.

    ``path`` is a ``.jsonl`` file or a directory whose ``*.jsonl`` files are read in
    name order. ``offsets`` maps a file to the byte offset read up to (the second
    value returned last time; persist it with the monitor state); a partly written
    last line is left for the next call. Raises :class:`~hpod.errors.DataError` when
    the path is missing or a record is not JSON or lacks ``text_field``.
    """

    root = Path(path)
    if root.is_dir():
        files = sorted(root.glob("*.jsonl"))
    elif root.is_file():
        files = [root]
    else:
        raise DataError(f"source.path {str(root)!r} does not exist")
    seen = dict(offsets or {})
    out: list[TextFeatures] = []
    for file in files:
        key = str(file)
        start = seen.get(key, 0)
        if file.stat().st_size < start:  # the file was replaced: read it again from the top
            start = 0
        with file.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        for number, line in enumerate(complete.decode("utf-8", errors="strict").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}: a new line ({number} after byte {start}) is not JSON: {exc}") from exc
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(
                    f"{file}: a new record ({number} after byte {start}) has no string field "
                    f"text_field={text_field!r}; fields: {sorted(record) if isinstance(record, dict) else '-'}"
                )
            out.append(text_features(text, tokenizer, n_buckets=n_buckets))
        seen[key] = start + len(complete)
    return out, seen
