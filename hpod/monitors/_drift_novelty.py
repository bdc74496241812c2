"""The novelty test: does a window hold more documents unlike every reference document
than chance allows?

A share of documents from another domain mixed into otherwise familiar traffic barely
moves the pooled token distribution (the ``js`` test) or the length distribution
(``ks``), but each foreign document is, on its own, far from the reference. This test
scores each document against the reference and counts the atypical ones.

Per document, three distances to the reference, computed on the hashed token counts
(no text is kept): (1) one minus the mean cosine similarity (of square-root counts) to
its 3 nearest reference documents; (2) the Hellinger distance between its profile over
the reference's 50 most frequent buckets (plus one "other" bucket) and the reference's
mean profile; (3) its cross-entropy (nats per token) under the reference's smoothed
token distribution. Each distance is logged and standardised with the mean and standard
deviation of the reference documents' own leave-one-out values; the mean of the three
is standardised once more the same way, giving a z-score ``z``.

A document is *novel* when its z-score is beyond the ``tail`` quantile of a
Student-t prediction for a new reference-like document (``t`` with n - 1 degrees of
freedom, scaled by sqrt(1 + 1/n): the reference's mean and SD are estimates). The test
statistic is the number K of novel documents in the last ``pool`` windows pooled; its
p-value is the binomial tail P(Bin(m, tail) >= K) for the m pooled documents. This null
is a model (approximately normal log-distances), not a permutation: a permutation
test between 50 reference documents and a window of 30 cannot give a p-value below
about 0.05 when 3 documents differ, whatever its statistic. benchmarks/drift.py
measures the false-alarm rate it actually gives on held-out documents.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

__all__ = ["NoveltyReference", "novelty_reference"]

#: Nearest reference documents averaged in the cosine distance.
NEIGHBOURS = 3
#: Most frequent reference buckets in the Hellinger profile.
PROFILE_BUCKETS = 50
#: Add-one-half smoothing of the reference token distribution (cross-entropy).
SMOOTHING = 0.5
#: Above this many reference documents, a seeded random subset of this size is used
#: (the leave-one-out similarities are an n x n product).
MAX_REFERENCE = 1000
#: Fewest reference documents the test accepts (a mean and an SD of leave-one-out values).
MIN_REFERENCE = 5
_FLOOR = 1e-12
#: The daemon rebuilds a monitor from its stored state at every check; prepared
#: references are kept by content (a digest of the counts) so that is not redone.
_CACHE_SIZE = 16
_cache: OrderedDict[tuple[str, int], NoveltyReference] = OrderedDict()
_cache_lock = threading.Lock()


def _unit_sqrt(counts: np.ndarray) -> np.ndarray:
    root = np.sqrt(counts)
    norms = np.linalg.norm(root, axis=1, keepdims=True)
    out: np.ndarray = root / np.maximum(norms, _FLOOR)
    return out


def _profile(counts: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Rows: the share of a document's tokens in each of the ``top`` buckets and in the rest."""
    totals = counts.sum(axis=1, keepdims=True)
    head = counts[:, top]
    rows = np.concatenate([head, totals - head.sum(axis=1, keepdims=True)], axis=1)
    out: np.ndarray = rows / np.maximum(totals, 1.0)
    return out


@dataclass(frozen=True)
class NoveltyReference:
    """What the novelty test keeps of a reference: the unit square-root rows, the top
    buckets and mean profile, the smoothed log-probabilities, and the leave-one-out
    calibration (means and SDs of the logged distances and of their combined z)."""

    unit_rows: np.ndarray
    top: np.ndarray
    mean_profile: np.ndarray
    log_probs: np.ndarray
    feature_mean: np.ndarray
    feature_sd: np.ndarray
    combined_mean: float
    combined_sd: float
    size: int

    def z_scores(self, counts: np.ndarray) -> np.ndarray:
        """The z-score of each row of ``counts`` (texts x buckets) against the reference."""
        counts = np.asarray(counts, dtype=np.float64)
        similarities = _unit_sqrt(counts) @ self.unit_rows.T
        k = min(NEIGHBOURS, self.unit_rows.shape[0])
        cosine = 1.0 - np.sort(similarities, axis=1)[:, -k:].mean(axis=1)
        hellinger = np.linalg.norm(np.sqrt(_profile(counts, self.top)) - np.sqrt(self.mean_profile), axis=1)
        entropy = -(counts @ self.log_probs) / np.maximum(counts.sum(axis=1), 1.0)
        return self._combine(np.stack([cosine, hellinger, entropy], axis=1))

    def _combine(self, raw: np.ndarray) -> np.ndarray:
        z = ((np.log(np.maximum(raw, _FLOOR)) - self.feature_mean) / self.feature_sd).mean(axis=1)
        out: np.ndarray = (z - self.combined_mean) / self.combined_sd
        return out

    def tail_z(self, tail: float) -> float:
        """The z-score beyond which a document is novel at level ``tail`` (module doc)."""
        from scipy import stats

        n = self.size
        return float(stats.t.isf(tail, n - 1) * math.sqrt(1.0 + 1.0 / n))


def novelty_reference(counts: np.ndarray, *, seed: int = 0) -> NoveltyReference:
    """Prepare the novelty test for a reference (texts x buckets token counts).

    Raises ValueError for fewer than ``MIN_REFERENCE`` documents or a reference with no
    tokens at all. More than ``MAX_REFERENCE`` documents are subsampled (seeded). The
    result is cached by content (the last ``_CACHE_SIZE`` references).
    """
    ref = np.ascontiguousarray(counts, dtype=np.float64)
    key = (hashlib.blake2b(ref.tobytes() + repr(ref.shape).encode(), digest_size=16).hexdigest(), seed)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    prepared = _prepare(ref, seed)
    with _cache_lock:
        _cache[key] = prepared
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return prepared


def _prepare(ref: np.ndarray, seed: int) -> NoveltyReference:
    if ref.ndim != 2:
        raise ValueError(f"reference must be a texts x buckets matrix, got shape {ref.shape}")
    if ref.shape[0] < MIN_REFERENCE:
        raise ValueError(f"the novelty test needs at least {MIN_REFERENCE} reference texts, got {ref.shape[0]}")
    if ref.shape[0] > MAX_REFERENCE:
        keep = np.random.default_rng(seed).choice(ref.shape[0], size=MAX_REFERENCE, replace=False)
        ref = ref[np.sort(keep)]
    n, buckets = ref.shape
    totals = ref.sum(axis=0)
    if totals.sum() <= 0:
        raise ValueError("the novelty test needs a reference with at least one token")
    unit = _unit_sqrt(ref)
    # leave-one-out: each reference document against the n - 1 others
    similarities = unit @ unit.T
    np.fill_diagonal(similarities, -np.inf)
    k = min(NEIGHBOURS, n - 1)
    cosine = 1.0 - np.sort(similarities, axis=1)[:, -k:].mean(axis=1)
    top = np.argsort(totals, kind="stable")[::-1][: min(PROFILE_BUCKETS, buckets - 1)]
    profiles = _profile(ref, top)
    mean_profile = profiles.mean(axis=0)
    loo_profiles = (n * mean_profile[None, :] - profiles) / (n - 1)
    hellinger = np.linalg.norm(np.sqrt(profiles) - np.sqrt(np.maximum(loo_profiles, 0.0)), axis=1)
    rest = totals[None, :] - ref
    loo_log_probs = np.log((rest + SMOOTHING) / (rest.sum(axis=1, keepdims=True) + SMOOTHING * buckets))
    entropy = -(ref * loo_log_probs).sum(axis=1) / np.maximum(ref.sum(axis=1), 1.0)
    logged = np.log(np.maximum(np.stack([cosine, hellinger, entropy], axis=1), _FLOOR))
    feature_mean = logged.mean(axis=0)
    feature_sd = np.maximum(logged.std(axis=0, ddof=1), 1e-9)
    combined = ((logged - feature_mean) / feature_sd).mean(axis=1)
    return NoveltyReference(
        unit_rows=unit,
        top=top,
        mean_profile=mean_profile,
        log_probs=np.log((totals + SMOOTHING) / (totals.sum() + SMOOTHING * buckets)),
        feature_mean=feature_mean,
        feature_sd=feature_sd,
        combined_mean=float(combined.mean()),
        combined_sd=max(float(combined.std(ddof=1)), 1e-9),
        size=n,
    )
