"""The drift tests: two-sample tests on text features, change detectors on metric
streams, and the relative-change test on a reference configuration's cost.

Every test returns a :class:`DriftResult` with a ``score`` on one scale: 1.0 is
the test's threshold, whatever its statistic.

Data tests (length, vocabulary, embedding) are permutation tests: whole texts are
shuffled between the reference and the window, which gives the statistic's null
distribution for exactly these two samples. Their threshold is the null's critical
value at the level ``alpha`` (the monitor passes alpha / number of tests), and
``score = (statistic - null median) / (critical value - null median)``, floored at 0:
about 0 on windows like the reference, above 1 exactly when the permutation
p-value is at most ``alpha``, and growing linearly with the statistic (it does not
saturate). A fixed ``threshold`` given for a data test is an extra floor on the
statistic (an effect size the test must also reach), not a replacement for the
calibration. Performance and cost tests have ``score = statistic / threshold``.

The novelty test (``_drift_novelty``) counts documents unlike every reference
document; its p-value is a binomial tail under a model of the reference's distances,
and its ``score = log(p) / log(alpha)``: 0 when no document is novel, 1.0 exactly at
``p = alpha``, growing with the evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from hpod.monitors._drift_novelty import NoveltyReference
from hpod.spec._monitors import DEFAULT_OPTIONS, DEFAULT_THRESHOLDS

__all__ = [
    "REASONS",
    "DriftResult",
    "adjust_p_values",
    "cost_drift",
    "embedding_drift",
    "length_drift",
    "novelty_drift",
    "performance_drift",
    "vocabulary_drift",
]

Direction = Literal["increase", "decrease", "both"]

#: The reason each detector reports (recorded with an alarm and a retune).
REASONS: dict[str, str] = {
    "ks": "drift:data:length",
    "wasserstein": "drift:data:length",
    "js": "drift:data:vocabulary",
    "psi": "drift:data:vocabulary",
    "mmd": "drift:data:embedding",
    "novelty": "drift:data:novelty",
    "page_hinkley": "drift:performance",
    "adwin": "drift:performance",
    "cusum": "drift:performance",
    "relative_change": "drift:cost",
}

# Proportions below this are floored before PSI's logarithm; the usual choice in
# credit-risk practice, where PSI comes from.
_PSI_FLOOR = 1e-4
# Above this many pooled samples the MMD kernel matrix (n x n) is computed on a
# random subsample of the reference; memory grows as n squared.
_MMD_MAX_POOLED = 2000


@dataclass(frozen=True)
class DriftResult:
    """The outcome of one drift test on one window.

    ``statistic`` is on the test's own scale (see ``DEFAULT_THRESHOLDS``),
    ``score`` is 1.0 at the threshold (module doc); ``p_value`` is the raw p-value where the
    test has one, ``p_value_adjusted`` the value after the monitor's correction
    (equal to ``p_value`` for a test used alone). ``reason`` is the retune reason
    (``drift:data:length``, ``drift:data:vocabulary``, ``drift:data:embedding``,
    ``drift:performance``, ``drift:cost``).
    """

    detector: str
    reason: str
    statistic: float
    threshold: float
    score: float
    over_threshold: bool
    p_value: float | None = None
    p_value_adjusted: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (non-finite floats become None)."""
        data: dict[str, Any] = _json_safe(asdict(self))
        return data


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _critical_value(null: np.ndarray, alpha: float) -> float:
    """The smallest value whose permutation p-value ``(1 + #{null >= v}) / (1 + P)`` is at
    most ``alpha`` is anything above the returned value (the (K+1)-th largest null value,
    K = floor(alpha (P + 1)) - 1). Raises ValueError when P permutations cannot reach alpha."""
    k = math.floor(alpha * (null.size + 1) + 1e-9) - 1
    if k < 0:
        raise ValueError(
            f"{null.size} permutations cannot give a p-value <= {alpha:.3g}; "
            f"use at least {math.ceil(1 / alpha) - 1} permutations"
        )
    return float(np.sort(null)[::-1][k])


def _calibrated(
    detector: str,
    observed: float,
    null: np.ndarray,
    *,
    alpha: float,
    floor: float | None,
    details: dict[str, Any],
) -> DriftResult:
    """A permutation test's result on the calibrated score scale (see the module doc)."""
    p_value = _permutation_p(observed, null)
    critical = _critical_value(null, alpha)
    center = float(np.median(null))
    # a degenerate null (every permutation gives the same value) has no spread
    margin = critical - center if critical > center else max(abs(critical), 1.0) * 1e-9
    score = max(0.0, (observed - center) / margin)
    over = p_value <= alpha and (floor is None or observed >= floor)
    details = {**details, "null_median": center, "critical_value": critical, "level": alpha}
    if floor is not None:
        details["floor"] = float(floor)
    return DriftResult(
        detector=detector,
        reason=REASONS[detector],
        statistic=float(observed),
        threshold=critical if floor is None else max(critical, float(floor)),
        score=score,
        over_threshold=over,
        p_value=p_value,
        p_value_adjusted=p_value,
        details=details,
    )


def _floor(detector: str, threshold: float | None) -> float | None:
    if threshold is None:
        return None
    if not threshold > 0:
        raise ValueError(f"threshold for {detector} must be > 0, got {threshold}")
    return float(threshold)


def _result(
    detector: str,
    statistic: float,
    threshold: float | None,
    *,
    p_value: float | None = None,
    alpha: float = 0.05,
    details: dict[str, Any] | None = None,
) -> DriftResult:
    limit = DEFAULT_THRESHOLDS[detector] if threshold is None else float(threshold)
    if not limit > 0:
        raise ValueError(f"threshold for {detector} must be > 0, got {limit}")
    score = float(statistic) / limit
    over = score >= 1.0 and (p_value is None or p_value <= alpha)
    return DriftResult(
        detector=detector,
        reason=REASONS[detector],
        statistic=float(statistic),
        threshold=limit,
        score=score,
        over_threshold=over,
        p_value=p_value,
        p_value_adjusted=p_value,
        details=details or {},
    )


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} must hold at least one value, got none")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must hold finite numbers, got {array[~np.isfinite(array)][:3].tolist()}")
    return array


def _permutation_p(observed: float, permuted: np.ndarray) -> float:
    # (1 + #{T* >= T}) / (1 + P): never 0, valid at level alpha (Phipson & Smyth 2010)
    return float((1 + np.count_nonzero(permuted >= observed - 1e-12)) / (1 + permuted.size))


def _window_masks(n_pooled: int, n_window: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """``permutations x n_pooled`` 0/1 matrix; each row marks a random window of size n_window."""
    order = np.argsort(rng.random((permutations, n_pooled)), axis=1)
    masks = np.zeros((permutations, n_pooled), dtype=np.float64)
    np.put_along_axis(masks, order[:, :n_window], 1.0, axis=1)
    return masks


# -- data drift ------------------------------------------------------------


def _ks_rows(pooled: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Row-wise two-sample KS statistic D between the values a 0/1 mask row marks (the
    window) and the rest (the reference), for every row of ``masks``."""
    order = np.argsort(pooled, kind="stable")
    values = pooled[order]
    marked = masks[:, order]
    m = marked.sum(axis=1, keepdims=True)
    n = pooled.size - m
    window_cdf = np.cumsum(marked, axis=1) / m
    reference_cdf = np.cumsum(1.0 - marked, axis=1) / n
    # compare the two empirical CDFs only after the last of each run of tied values
    last_of_ties = np.append(values[1:] != values[:-1], True)
    distances: np.ndarray = np.abs(window_cdf - reference_cdf)[:, last_of_ties].max(axis=1)
    return distances


def length_drift(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    *,
    method: Literal["ks", "wasserstein"] = "ks",
    threshold: float | None = None,
    alpha: float = 0.05,
    permutations: int = 999,
    rng: np.random.Generator | None = None,
) -> DriftResult:
    """Has the length distribution (tokens per text) moved?

    ``ks``: the two-sample Kolmogorov-Smirnov statistic D in [0, 1];
    ``wasserstein``: the Wasserstein-1 distance between the log(1 + length)
    distributions in units of the reference's standard deviation of log-length.
    Both are calibrated by permuting texts between the samples (module doc);
    ``threshold`` is an optional floor on the statistic.
    """
    from scipy import stats

    ref = _as_1d(reference, "reference")
    cur = _as_1d(current, "current")
    if method not in ("ks", "wasserstein"):
        raise ValueError(f"method must be 'ks' or 'wasserstein', got {method!r}")
    details: dict[str, Any] = {
        "reference_median": float(np.median(ref)),
        "current_median": float(np.median(cur)),
        "n_reference": int(ref.size),
        "n_current": int(cur.size),
    }
    rng = rng or np.random.default_rng(0)
    if method == "ks":
        pooled = np.concatenate([ref, cur])
        window = np.zeros((1, pooled.size))
        window[0, ref.size :] = 1.0
        statistics = _ks_rows(pooled, np.vstack([window, _window_masks(pooled.size, cur.size, permutations, rng)]))
        return _calibrated(
            "ks", float(statistics[0]), statistics[1:], alpha=alpha, floor=_floor("ks", threshold), details=details
        )
    log_ref, log_cur = np.log1p(ref), np.log1p(cur)
    # a reference of identical lengths has no spread; any difference is then large
    scale = max(float(np.std(log_ref, ddof=1)) if ref.size > 1 else 0.0, 1e-3)
    observed = stats.wasserstein_distance(log_ref, log_cur) / scale
    pooled = np.concatenate([log_ref, log_cur])
    permuted = np.empty(permutations)
    for i in range(permutations):
        shuffled = rng.permutation(pooled)
        permuted[i] = stats.wasserstein_distance(shuffled[: ref.size], shuffled[ref.size :]) / scale
    return _calibrated(
        "wasserstein", observed, permuted, alpha=alpha, floor=_floor("wasserstein", threshold), details=details
    )


def _js_rows(p_counts: np.ndarray, q_counts: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon distance (base 2, in [0, 1]) between count vectors."""
    from scipy.special import rel_entr

    p = p_counts / np.maximum(p_counts.sum(axis=-1, keepdims=True), 1e-300)
    q = q_counts / np.maximum(q_counts.sum(axis=-1, keepdims=True), 1e-300)
    m = 0.5 * (p + q)
    divergence = 0.5 * (rel_entr(p, m).sum(axis=-1) + rel_entr(q, m).sum(axis=-1)) / math.log(2)
    distance: np.ndarray = np.sqrt(np.clip(divergence, 0.0, 1.0))
    return distance


def _psi_rows(p_counts: np.ndarray, q_counts: np.ndarray) -> np.ndarray:
    """Row-wise population stability index sum((q - p) ln(q / p)), reference p."""
    p = p_counts / np.maximum(p_counts.sum(axis=-1, keepdims=True), 1e-300)
    q = q_counts / np.maximum(q_counts.sum(axis=-1, keepdims=True), 1e-300)
    p = np.maximum(p, _PSI_FLOOR)
    q = np.maximum(q, _PSI_FLOOR)
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    index: np.ndarray = ((q - p) * np.log(q / p)).sum(axis=-1)
    return index


def vocabulary_drift(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    method: Literal["js", "psi"] = "js",
    threshold: float | None = None,
    alpha: float = 0.05,
    permutations: int = 999,
    rng: np.random.Generator | None = None,
) -> DriftResult:
    """Has the token distribution moved?

    ``reference`` and ``current`` are ``texts x buckets`` count matrices (one row
    per text, see :func:`text_features`). The statistic compares the pooled bucket
    distributions: ``js`` the Jensen-Shannon distance (base 2, in [0, 1]), ``psi``
    the population stability index. The p-value comes from permuting whole texts
    between the two samples: words come in topical bursts, so a test that treated
    tokens as independent (chi-square) would alarm on every new news topic. The
    threshold is the permutation null's critical value at ``alpha`` (module doc);
    ``threshold`` is an optional floor on the statistic.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError(
            f"reference and current must be texts x buckets matrices with equal bucket counts, "
            f"got shapes {ref.shape} and {cur.shape}"
        )
    if ref.shape[0] == 0 or cur.shape[0] == 0:
        raise ValueError(f"reference and current must hold at least one text, got {ref.shape[0]} and {cur.shape[0]}")
    if method == "js":
        statistic_rows = _js_rows
    elif method == "psi":
        statistic_rows = _psi_rows
    else:
        raise ValueError(f"method must be 'js' or 'psi', got {method!r}")
    ref_total, cur_total = ref.sum(axis=0), cur.sum(axis=0)
    observed = float(statistic_rows(ref_total[None, :], cur_total[None, :])[0])
    rng = rng or np.random.default_rng(0)
    pooled = np.vstack([ref, cur])
    masks = _window_masks(pooled.shape[0], cur.shape[0], permutations, rng)
    window_counts = masks @ pooled
    permuted = statistic_rows(pooled.sum(axis=0)[None, :] - window_counts, window_counts)
    top = np.argsort(np.abs(cur_total / max(cur_total.sum(), 1) - ref_total / max(ref_total.sum(), 1)))[::-1][:5]
    details = {
        "n_reference": int(ref.shape[0]),
        "n_current": int(cur.shape[0]),
        "tokens_reference": int(ref_total.sum()),
        "tokens_current": int(cur_total.sum()),
        "top_buckets": [int(i) for i in top],
    }
    return _calibrated(method, observed, permuted, alpha=alpha, floor=_floor(method, threshold), details=details)


def embedding_drift(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    threshold: float | None = None,
    alpha: float = 0.05,
    permutations: int = 999,
    rng: np.random.Generator | None = None,
) -> DriftResult:
    """Maximum mean discrepancy between two sets of embedding vectors.

    ``reference`` is ``n x d``, ``current`` ``m x d`` (e.g. an encoder's
    mean-pooled hidden states). Statistic: unbiased squared MMD with an RBF kernel
    whose bandwidth is the median pairwise distance of the pooled sample (in
    [-small, 2]), calibrated by a permutation test (module doc); ``threshold`` is
    an optional floor on the statistic.
    """
    from scipy.spatial.distance import pdist, squareform

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError(
            f"reference and current must be n x d arrays of equal d, got shapes {ref.shape} and {cur.shape}"
        )
    if ref.shape[0] < 2 or cur.shape[0] < 2:
        raise ValueError(f"MMD needs at least 2 vectors per sample, got {ref.shape[0]} and {cur.shape[0]}")
    rng = rng or np.random.default_rng(0)
    if ref.shape[0] + cur.shape[0] > _MMD_MAX_POOLED:
        keep = max(_MMD_MAX_POOLED - cur.shape[0], 2)
        ref = ref[rng.choice(ref.shape[0], size=min(keep, ref.shape[0]), replace=False)]
    pooled = np.vstack([ref, cur])
    distances = pdist(pooled, "sqeuclidean")
    bandwidth = float(np.median(distances)) or 1.0
    kernel = squareform(np.exp(-distances / bandwidth))  # zero diagonal: the unbiased estimator
    n, m = ref.shape[0], cur.shape[0]
    window = np.zeros((1, n + m))
    window[0, n:] = 1.0
    masks = np.vstack([window, _window_masks(n + m, m, permutations, rng)])
    rest = 1.0 - masks
    k_window = masks @ kernel
    within_window = (k_window * masks).sum(axis=1) / (m * (m - 1))
    cross = (k_window * rest).sum(axis=1) / (n * m)
    within_rest = ((rest @ kernel) * rest).sum(axis=1) / (n * (n - 1))
    mmd2 = within_rest + within_window - 2.0 * cross
    observed = float(mmd2[0])
    details = {"n_reference": n, "n_current": m, "bandwidth": bandwidth}
    return _calibrated("mmd", observed, mmd2[1:], alpha=alpha, floor=_floor("mmd", threshold), details=details)


def novelty_drift(
    reference: NoveltyReference,
    current: np.ndarray,
    *,
    previous: Sequence[Sequence[float]] = (),
    tail: float = 0.003,
    threshold: float | None = None,
    alpha: float = 0.05,
) -> DriftResult:
    """Does the window hold more documents unlike the reference than chance allows?

    ``reference`` comes from :func:`novelty_reference`; ``current`` is the window's
    ``texts x buckets`` count matrix; ``previous`` the z-scores of earlier windows to
    pool with it (see :meth:`Monitor.check`: the monitor pools the last ``pool``
    windows). Statistic: the number K of pooled documents whose z-score is beyond the
    ``tail`` quantile (``_drift_novelty``); p-value P(Bin(m, tail) >= K) for m pooled
    documents; ``score = log(p) / log(alpha)``. ``threshold`` is an optional floor on K.
    ``details["z_scores"]`` holds this window's z-scores (numbers only, no text).
    """
    from scipy import stats

    if not 0.0 < tail < 0.5:
        raise ValueError(f"tail must be in (0, 0.5), got {tail}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    counts = np.asarray(current, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] != reference.log_probs.size:
        raise ValueError(
            f"current must be a texts x {reference.log_probs.size} buckets matrix with at least one text, "
            f"got shape {counts.shape}"
        )
    z = reference.z_scores(counts)
    pooled = np.concatenate([np.asarray(w, dtype=np.float64) for w in previous] + [z])
    cut = reference.tail_z(tail)
    novel = int(np.count_nonzero(pooled > cut))
    log_p = float(stats.binom.logsf(novel - 1, pooled.size, tail)) if novel else 0.0
    p_value = math.exp(log_p)
    floor = _floor("novelty", threshold)
    score = max(0.0, log_p / math.log(alpha))
    details: dict[str, Any] = {
        "n_reference": reference.size,
        "n_current": int(counts.shape[0]),
        "n_pooled": int(pooled.size),
        "windows_pooled": len(previous) + 1,
        "novel_current": int(np.count_nonzero(z > cut)),
        "novel_pooled": novel,
        "tail": tail,
        "z_cut": cut,
        "log_p": log_p,
        "level": alpha,
        "z_scores": [round(float(x), 4) for x in z],
    }
    if floor is not None:
        details["floor"] = floor
    # the count at which the binomial tail first reaches alpha: the statistic's threshold
    critical = int(stats.binom.isf(alpha, pooled.size, tail)) + 1
    return DriftResult(
        detector="novelty",
        reason=REASONS["novelty"],
        statistic=float(novel),
        threshold=float(critical if floor is None else max(critical, floor)),
        score=score,
        over_threshold=p_value <= alpha and (floor is None or novel >= floor),
        p_value=p_value,
        p_value_adjusted=p_value,
        details=details,
    )


def adjust_p_values(p_values: Sequence[float], method: Literal["holm", "bonferroni"] = "holm") -> list[float]:
    """Family-wise corrected p-values (compare each with alpha).

    ``bonferroni`` multiplies by the number of tests; ``holm`` is the step-down
    version, uniformly more powerful at the same family-wise error rate.
    """
    p = np.asarray(p_values, dtype=np.float64)
    k = p.size
    if k == 0:
        return []
    if method == "bonferroni":
        return [float(x) for x in np.minimum(p * k, 1.0)]
    if method != "holm":
        raise ValueError(f"method must be 'holm' or 'bonferroni', got {method!r}")
    order = np.argsort(p)
    stepped = np.maximum.accumulate(p[order] * (k - np.arange(k)))
    adjusted = np.empty(k)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(x) for x in adjusted]


# -- performance drift -----------------------------------------------------


def _standardise(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    mean = float(reference.mean())
    sd = float(reference.std(ddof=1)) if reference.size > 1 else 0.0
    # a flat reference (a deterministic metric) would divide by zero; any change is then "large"
    sd = max(sd, 1e-9 * max(1.0, abs(mean)))
    return (reference - mean) / sd, (current - mean) / sd, mean, sd


def performance_drift(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    *,
    method: Literal["page_hinkley", "adwin", "cusum"] = "page_hinkley",
    threshold: float | None = None,
    direction: Direction = "both",
    options: dict[str, float] | None = None,
) -> DriftResult:
    """Has a metric stream (validation loss, ROUGE of served summaries...) changed level?

    Values are standardised with the reference's mean and standard deviation, so
    thresholds are in reference standard deviations whatever the metric's unit.
    ``page_hinkley`` (river's recurrence, without its reset after a detection) and
    ``adwin`` (river) read the reference followed by the window, and the window is
    over threshold when they detect a change inside it; ``cusum`` runs a tabular
    CUSUM (slack ``k``) over the window from zero.
    Statistic: Page-Hinkley's and CUSUM's largest cumulative deviation in the window
    (SDs); ADWIN's is 1.0 when it detected a change in the window, else 0.0.
    ``direction`` keeps only increases or decreases of the metric.
    """
    if direction not in ("increase", "decrease", "both"):
        raise ValueError(f"direction must be 'increase', 'decrease' or 'both', got {direction!r}")
    if method not in DEFAULT_OPTIONS:
        raise ValueError(f"method must be one of page_hinkley, adwin, cusum, got {method!r}")
    opts = {**DEFAULT_OPTIONS[method], **(options or {})}
    ref_z, cur_z, mean, sd = _standardise(_as_1d(reference, "reference"), _as_1d(current, "current"))
    limit = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
    details: dict[str, Any] = {
        "reference_mean": mean,
        "reference_sd": sd,
        "current_mean": float(mean + sd * cur_z.mean()),
        "shift_sd": float(cur_z.mean()),
        "change_index": None,
    }
    if method == "cusum":
        k = opts["k"]
        high = low = peak = 0.0
        for index, z in enumerate(cur_z):
            high, low = max(0.0, high + z - k), max(0.0, low - z - k)
            value = {"increase": high, "decrease": low, "both": max(high, low)}[direction]
            if value > peak:
                peak = value
            if value >= limit and details["change_index"] is None:
                details["change_index"] = index
        return _result("cusum", peak, limit, details=details)

    if method == "page_hinkley":
        path = _page_hinkley_path(
            np.concatenate([ref_z, cur_z]), opts["delta"], opts["alpha"], int(opts["min_instances"]), direction
        )[ref_z.size :]
        crossed = np.flatnonzero(path >= limit)
        details["change_index"] = int(crossed[0]) if crossed.size else None
        return _result(method, float(path.max()), limit, details=details)

    from river import drift

    detector = drift.ADWIN(delta=opts["delta"], grace_period=int(opts["grace_period"]))
    for z in ref_z:
        detector.update(float(z))
    peak = 0.0
    for index, z in enumerate(cur_z):
        detector.update(float(z))
        if detector.drift_detected:
            # ADWIN flags changes in either direction; keep the ones asked for
            recent = float(np.mean(cur_z[max(0, index - 9) : index + 1]))
            if (direction == "increase" and recent <= 0) or (direction == "decrease" and recent >= 0):
                continue
            peak = 1.0
            if details["change_index"] is None:
                details["change_index"] = index
    return _result(method, peak, limit, details=details)


def _page_hinkley_path(
    z: np.ndarray, delta: float, alpha: float, min_instances: int, direction: Direction
) -> np.ndarray:
    """The Page-Hinkley statistic after each value of ``z`` (river's recurrence: running
    mean, forgetting factor ``alpha``, slack ``delta``), 0 before ``min_instances`` values.

    river's ``PageHinkley`` resets itself right after it detects, so reading its sums
    gives a score stuck near the threshold whatever the size of the change; here the
    sums run on, and the statistic keeps growing with the shift.
    """
    out = np.zeros(z.size)
    mean = up = down = 0.0
    min_up, max_down = math.inf, -1.0  # river's starting values
    for i, x in enumerate(z):
        mean += (x - mean) / (i + 1)
        dev = x - mean
        up = alpha * up + dev - delta
        down = alpha * down + dev + delta
        min_up = min(min_up, up)
        max_down = max(max_down, down)
        if i + 1 >= min_instances:
            increase, decrease = up - min_up, max_down - down
            out[i] = {"increase": increase, "decrease": decrease, "both": max(increase, decrease)}[direction]
    return out


# -- cost drift ------------------------------------------------------------


def cost_drift(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    *,
    threshold: float | None = None,
    direction: Direction = "both",
) -> DriftResult:
    """Has the cost (energy in joules or seconds per epoch) of a fixed reference
    configuration moved? Statistic: relative change of the median, |current /
    reference - 1| (0.3 = 30 %), counting only the ``direction`` asked for.
    Medians keep one throttled run from looking like new hardware.
    """
    if direction not in ("increase", "decrease", "both"):
        raise ValueError(f"direction must be 'increase', 'decrease' or 'both', got {direction!r}")
    ref = _as_1d(reference, "reference")
    cur = _as_1d(current, "current")
    base = float(np.median(ref))
    if base <= 0:
        raise ValueError(f"reference cost must be > 0 (joules or seconds), got median {base}")
    change = float(np.median(cur)) / base - 1.0
    statistic = {"both": abs(change), "increase": max(change, 0.0), "decrease": max(-change, 0.0)}[direction]
    details = {
        "reference_median": base,
        "current_median": float(np.median(cur)),
        "relative_change": change,
        "n_reference": int(ref.size),
        "n_current": int(cur.size),
    }
    return _result("relative_change", statistic, threshold, details=details)
