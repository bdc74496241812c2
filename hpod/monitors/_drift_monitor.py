"""A drift monitor: a spec, a reference window and the alarm discipline around the tests.

A :class:`Monitor` judges one window at a time against its reference. It fires only
after ``confirm`` consecutive windows over threshold, then stays quiet for
``cooldown``; its counters (and, optionally, its reference) are plain JSON so the
daemon can persist them and resume after a restart.

Concurrency: a Monitor is not thread-safe; the daemon checks each monitor from one
scheduler job at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from hpod.monitors._drift_detectors import (
    REASONS,
    DriftResult,
    _json_safe,
    adjust_p_values,
    cost_drift,
    embedding_drift,
    length_drift,
    novelty_drift,
    performance_drift,
    vocabulary_drift,
)
from hpod.monitors._drift_features import TextFeatures, as_features, bucket_matrix
from hpod.monitors._drift_novelty import NoveltyReference, novelty_reference
from hpod.spec._monitors import MonitorSpec

__all__ = ["STATE_VERSION", "Monitor", "MonitorCheck"]

STATE_VERSION = 1

DataItem = TextFeatures | dict[str, Any] | str
Window = Sequence[DataItem] | Sequence[float] | np.ndarray

#: The vocabulary tests (js, psi) compare counts folded into this many buckets when the
#: monitor hashes into a multiple of it: their cost grows with the bucket count, and
#: 512 is what they were measured with (benchmarks/drift.py).
VOCABULARY_BUCKETS = 512


def _fold(counts: np.ndarray, buckets: int) -> np.ndarray:
    """Counts hashed into a multiple of ``buckets`` buckets, folded into ``buckets``
    (bucket b goes to b mod buckets: the same bucket as hashing into ``buckets``)."""
    n, width = counts.shape
    if width <= buckets or width % buckets:
        return counts
    folded: np.ndarray = counts.reshape(n, width // buckets, buckets).sum(axis=1)
    return folded


@dataclass(frozen=True)
class MonitorCheck:
    """The verdict on one window.

    ``status``: ``checked``; ``reference`` (the window became the reference, for a
    monitor built without one); ``insufficient`` (fewer than ``min_samples``
    samples: the window is ignored, counters unchanged, ``score`` is NaN).
    ``score``: the largest test score (1.0 = at its threshold, see ``_drift_detectors``),
    the value exported as ``hpod_drift_score{study,monitor}``. ``over_threshold``:
    some test is at or over its threshold and, where it has a p-value, significant
    after correction. ``fired``: this window raised an alarm (retune with
    ``reason``). ``p_value``: the smallest corrected p-value among the tests.
    ``window``: samples per window (the spec's); ``samples_to_alarm``: the fewest
    samples from a fresh start before this monitor can fire (``confirm`` windows, plus
    one window when the first window must become the reference).
    """

    monitor: str
    kind: str
    status: Literal["checked", "reference", "insufficient"]
    score: float
    over_threshold: bool
    fired: bool
    reason: str
    p_value: float | None
    n_samples: int
    consecutive: int
    cooldown_remaining: int
    cooldown_until: float | None
    alarms_total: int
    checked_at: float
    window: int = 0
    samples_to_alarm: int = 0
    results: tuple[DriftResult, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN becomes None), for the database and the API."""
        data = asdict(self)
        data["results"] = [result.to_dict() for result in self.results]
        safe: dict[str, Any] = _json_safe(data)
        return safe


class Monitor:
    """One drift monitor of a study.

    ``Monitor(spec, reference, tokenizer=None)``: ``reference`` is the window the
    model was tuned on: texts, :class:`TextFeatures` or their dicts for a data
    monitor; metric values for a performance monitor; the reference
    configuration's costs (joules or seconds) for a cost monitor. Without one, the
    first window with at least ``min_samples`` samples becomes the reference.
    ``tokenizer`` hashes raw texts passed to :meth:`check` (None: word tokens).

    Raises ``ValueError`` for a malformed window or reference (wrong item types,
    non-finite values, feature buckets that do not match ``spec.n_buckets``).
    """

    def __init__(
        self,
        spec: MonitorSpec | dict[str, Any],
        reference: Window | None = None,
        *,
        tokenizer: Any = None,
    ) -> None:
        self.spec = spec if isinstance(spec, MonitorSpec) else MonitorSpec.model_validate(spec)
        self.tokenizer = tokenizer
        self._reference: Any = None
        self.consecutive = 0
        self.cooldown_remaining = 0
        self.cooldown_until: float | None = None
        self.alarms_total = 0
        self.checks_total = 0
        self.last_score: float | None = None
        self.last_fired_at: float | None = None
        self._novelty: NoveltyReference | None = None
        # the novelty test's z-scores of the last `pool - 1` windows (numbers, no text)
        self._novelty_recent: list[list[float]] = []
        self._novelty_pending: list[float] | None = None
        if reference is not None:
            self.set_reference(reference)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def has_reference(self) -> bool:
        return self._reference is not None

    @property
    def samples_to_alarm(self) -> int:
        """The fewest samples from a fresh start before this monitor can fire:
        ``confirm x window``, plus one window while it has no reference."""
        return self.spec.samples_to_alarm + (0 if self.has_reference else self.spec.window)

    def facts(self) -> dict[str, Any]:
        """The monitor's stated facts (``MonitorSpec.facts`` plus its reference size and
        ``samples_to_alarm`` given whether it has a reference), for status displays."""
        return {**self.spec.facts(), "samples_to_alarm": self.samples_to_alarm, "reference_size": self.reference_size}

    @property
    def reference_size(self) -> int:
        if self._reference is None:
            return 0
        if self.spec.kind == "data":
            return int(self._reference["lengths"].size)
        return int(self._reference.size)

    # -- reference -------------------------------------------------------

    def set_reference(self, reference: Window) -> None:
        """Replace the reference window (e.g. after a retune on new data).

        Resets the run of consecutive windows over threshold; the cooldown and
        ``alarms_total`` carry on. Raises ValueError when the reference has fewer
        than ``min_samples`` samples.
        """
        prepared = self._prepare(reference, "reference")
        size = prepared["lengths"].size if self.spec.kind == "data" else prepared.size
        if size < self.spec.min_samples:
            raise ValueError(
                f"reference for monitor {self.name!r} needs at least min_samples={self.spec.min_samples} "
                f"samples, got {size}"
            )
        if self.spec.kind == "data" and "mmd" in self.spec.detector and prepared["embeddings"] is None:
            raise ValueError(f"monitor {self.name!r} uses detector 'mmd': every reference item needs an embedding")
        self._reference = prepared
        self._set_novelty()
        self.consecutive = 0

    def _set_novelty(self) -> None:
        self._novelty_recent = []
        self._novelty = None
        if self.spec.kind == "data" and "novelty" in self.spec.detector:
            self._novelty = novelty_reference(self._reference["counts"], seed=self.spec.seed)

    def _prepare(self, window: Window, what: str) -> Any:
        if self.spec.kind != "data":
            if len(window) and isinstance(window[0], TextFeatures | dict | str):
                raise ValueError(f"a {self.spec.kind} monitor's {what} holds numbers, got {type(window[0]).__name__}")
            values = np.asarray(window, dtype=np.float64).ravel()
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{what} for monitor {self.name!r} holds non-finite values")
            return values
        features = as_features(window, tokenizer=self.tokenizer, n_buckets=self.spec.n_buckets)  # type: ignore[arg-type]  # a data monitor's window holds text items
        embeddings = None
        if features and all(item.embedding is not None for item in features):
            embeddings = np.asarray([item.embedding for item in features], dtype=np.float64)
        return {
            "lengths": np.asarray([item.n_tokens for item in features], dtype=np.float64),
            "counts": bucket_matrix(features, self.spec.n_buckets),
            "embeddings": embeddings,
        }

    # -- checking --------------------------------------------------------

    def check(self, window: Window, *, now: float | None = None) -> MonitorCheck:
        """Judge one window against the reference and apply the alarm discipline.

        ``now`` (epoch seconds, default ``time.time()``) drives a cooldown given as
        a duration. A window with fewer than ``min_samples`` samples is ignored.
        """
        now = time.time() if now is None else float(now)
        prepared = self._prepare(window, "window")
        size = int(prepared["lengths"].size if self.spec.kind == "data" else prepared.size)
        if size < self.spec.min_samples:
            return self._verdict("insufficient", math.nan, False, False, self._default_reason(), None, size, now, ())
        if self._reference is None:
            self.set_reference(window)
            return self._verdict("reference", math.nan, False, False, self._default_reason(), None, size, now, ())

        results = self._run_tests(prepared)
        over = any(result.over_threshold for result in results)
        score = max(result.score for result in results)
        ranked = sorted(results, key=lambda r: (r.over_threshold, r.score), reverse=True)
        reason = ranked[0].reason
        adjusted = [r.p_value_adjusted for r in results if r.p_value_adjusted is not None]
        p_value = min(adjusted) if adjusted else None

        # alarm discipline: count the run, fire at `confirm`, then keep quiet
        self.checks_total += 1
        in_cooldown = self.cooldown_remaining > 0 or (self.cooldown_until is not None and now < self.cooldown_until)
        self.consecutive = self.consecutive + 1 if over else 0
        if self.cooldown_remaining > 0:
            self.cooldown_remaining -= 1
        fired = over and self.consecutive >= self.spec.confirm and not in_cooldown
        self._pool_novelty(fired=fired, in_cooldown=in_cooldown)
        if fired:
            self.alarms_total += 1
            self.consecutive = 0
            self.last_fired_at = now
            self.cooldown_remaining = self.spec.cooldown_windows
            self.cooldown_until = now + self.spec.cooldown_seconds if self.spec.cooldown_seconds else None
        self.last_score = score
        return self._verdict("checked", score, over, fired, reason, p_value, size, now, tuple(results))

    def _pool_novelty(self, *, fired: bool, in_cooldown: bool) -> None:
        """Keep the novelty z-scores of the last ``pool - 1`` windows to pool with the next.

        The pool accumulates evidence too weak for one window (a few foreign documents in
        each). An alarm empties it and windows in the cooldown do not feed it, so the
        documents that caused an alarm are never counted again once traffic is back to
        normal."""
        pending, self._novelty_pending = self._novelty_pending, None
        pool = int(self.spec.option("novelty", "pool")) if "novelty" in self.spec.detector else 1
        if fired or pool <= 1:
            self._novelty_recent = []
        elif pending is not None and not in_cooldown:
            self._novelty_recent = [*self._novelty_recent, pending][-(pool - 1):]

    def _default_reason(self) -> str:
        return REASONS[self.spec.detector[0]]

    def _verdict(
        self,
        status: Literal["checked", "reference", "insufficient"],
        score: float,
        over: bool,
        fired: bool,
        reason: str,
        p_value: float | None,
        size: int,
        now: float,
        results: tuple[DriftResult, ...],
    ) -> MonitorCheck:
        return MonitorCheck(
            monitor=self.name,
            kind=self.spec.kind,
            status=status,
            score=score,
            over_threshold=over,
            fired=fired,
            reason=reason,
            p_value=p_value,
            n_samples=size,
            consecutive=self.consecutive,
            cooldown_remaining=self.cooldown_remaining,
            cooldown_until=self.cooldown_until,
            alarms_total=self.alarms_total,
            checked_at=now,
            window=self.spec.window,
            samples_to_alarm=self.samples_to_alarm,
            results=results,
        )

    def _run_tests(self, window: Any) -> list[DriftResult]:
        spec, ref = self.spec, self._reference
        if spec.kind == "performance":
            method = spec.detector[0]
            return [
                performance_drift(
                    ref,
                    window,
                    method=method,  # type: ignore[arg-type]  # MonitorSpec admits only performance detectors here
                    threshold=spec.threshold_for(method),
                    direction=spec.direction,
                    options=dict(spec.options),
                )
            ]
        if spec.kind == "cost":
            return [cost_drift(ref, window, threshold=spec.threshold_for("relative_change"), direction=spec.direction)]

        # permutation tests draw from a generator seeded by (seed, check number), so a
        # check gives the same verdict after a restart
        rng = np.random.default_rng([spec.seed, self.checks_total])
        # each test's critical value (score 1.0) is at alpha / tests: the score of the
        # most significant test reaches 1.0 exactly when Holm rejects at family level alpha
        alpha, permutations = spec.test_level, spec.permutations
        results: list[DriftResult] = []
        for name in spec.detector:
            threshold = spec.floor_for(name)
            if name == "ks" or name == "wasserstein":
                results.append(length_drift(ref["lengths"], window["lengths"], method=name,  # type: ignore[arg-type]  # mypy does not narrow a str by ==
                                            threshold=threshold,
                                            alpha=alpha, permutations=permutations, rng=rng))
            elif name == "js" or name == "psi":
                results.append(vocabulary_drift(_fold(ref["counts"], VOCABULARY_BUCKETS),
                                                _fold(window["counts"], VOCABULARY_BUCKETS), method=name,  # type: ignore[arg-type]  # mypy does not narrow a str by ==
                                                threshold=threshold,
                                                alpha=alpha, permutations=permutations, rng=rng))
            elif name == "mmd":
                if window["embeddings"] is None:
                    raise ValueError(f"monitor {self.name!r} uses detector 'mmd': every window item needs an embedding")
                results.append(embedding_drift(ref["embeddings"], window["embeddings"], threshold=threshold,
                                               alpha=alpha, permutations=permutations, rng=rng))
            elif name == "novelty" and self._novelty is not None:
                result = novelty_drift(self._novelty, window["counts"], previous=self._novelty_recent,
                                       tail=spec.option("novelty", "tail"), threshold=threshold, alpha=alpha)
                # this window's z-scores go to the pool (check() decides), not into the check's record
                details = dict(result.details)
                self._novelty_pending = details.pop("z_scores")
                results.append(replace(result, details=details))
        return self._correct(results)

    def _correct(self, results: list[DriftResult]) -> list[DriftResult]:
        with_p = [i for i, r in enumerate(results) if r.p_value is not None]
        p_values = [p for p in (results[i].p_value for i in with_p) if p is not None]
        adjusted = adjust_p_values(p_values, self.spec.correction)
        out = list(results)
        for i, p_adj in zip(with_p, adjusted, strict=True):
            r = results[i]
            floor = r.details.get("floor")
            over = p_adj <= self.spec.alpha and (floor is None or r.statistic >= floor)
            out[i] = DriftResult(
                detector=r.detector,
                reason=r.reason,
                statistic=r.statistic,
                threshold=r.threshold,
                score=r.score,
                over_threshold=over,
                p_value=r.p_value,
                p_value_adjusted=p_adj,
                details=r.details,
            )
        return out

    # -- persistence -----------------------------------------------------

    def state_dict(self, *, include_reference: bool = True) -> dict[str, Any]:
        """The monitor's state as JSON-serialisable data.

        Counters always; the reference too unless ``include_reference=False`` (a
        data reference is stored as its lengths and sparse bucket counts, never as
        text). Persist it after each check; :meth:`load_state_dict` resumes.
        """
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "monitor": self.name,
            "kind": self.spec.kind,
            "consecutive": self.consecutive,
            "cooldown_remaining": self.cooldown_remaining,
            "cooldown_until": self.cooldown_until,
            "alarms_total": self.alarms_total,
            "checks_total": self.checks_total,
            "last_score": self.last_score,
            "last_fired_at": self.last_fired_at,
            "facts": self.facts(),
        }
        if self._novelty_recent:
            state["novelty_recent"] = self._novelty_recent
        if include_reference and self._reference is not None:
            state["reference"] = self._reference_state()
        safe: dict[str, Any] = _json_safe(state)
        return safe

    def _reference_state(self) -> dict[str, Any]:
        ref = self._reference
        if self.spec.kind != "data":
            return {"values": ref.tolist()}
        counts = ref["counts"]
        rows = []
        for row in counts:
            nonzero = np.flatnonzero(row)
            rows.append([[int(i), int(row[i])] for i in nonzero])
        return {
            "n_buckets": self.spec.n_buckets,
            "lengths": ref["lengths"].tolist(),
            "buckets": rows,
            "embeddings": None if ref["embeddings"] is None else ref["embeddings"].tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters (and the reference when present) from :meth:`state_dict`.

        Raises ValueError when the state belongs to another kind of monitor or a
        newer state version.
        """
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"monitor state version must be {STATE_VERSION}, got {version!r}")
        if state.get("kind") != self.spec.kind:
            raise ValueError(f"state is for a {state.get('kind')!r} monitor, this one is {self.spec.kind!r}")
        self.consecutive = int(state["consecutive"])
        self.cooldown_remaining = int(state["cooldown_remaining"])
        self.cooldown_until = None if state.get("cooldown_until") is None else float(state["cooldown_until"])
        self.alarms_total = int(state["alarms_total"])
        self.checks_total = int(state["checks_total"])
        self.last_score = None if state.get("last_score") is None else float(state["last_score"])
        self.last_fired_at = None if state.get("last_fired_at") is None else float(state["last_fired_at"])
        reference = state.get("reference")
        if reference is None:
            return
        if self.spec.kind != "data":
            self._reference = np.asarray(reference["values"], dtype=np.float64)
            return
        if int(reference["n_buckets"]) != self.spec.n_buckets:
            raise ValueError(
                f"stored reference uses n_buckets={reference['n_buckets']}, the spec asks for {self.spec.n_buckets}"
            )
        counts = np.zeros((len(reference["buckets"]), self.spec.n_buckets))
        for row, pairs in enumerate(reference["buckets"]):
            for index, count in pairs:
                counts[row, int(index)] = count
        embeddings = reference.get("embeddings")
        self._reference = {
            "lengths": np.asarray(reference["lengths"], dtype=np.float64),
            "counts": counts,
            "embeddings": None if embeddings is None else np.asarray(embeddings, dtype=np.float64),
        }
        self._set_novelty()
        self._novelty_recent = [[float(x) for x in w] for w in state.get("novelty_recent") or []]

    @classmethod
    def from_state(
        cls, spec: MonitorSpec | dict[str, Any], state: dict[str, Any], *, tokenizer: Any = None
    ) -> Monitor:
        """A monitor resumed from a stored :meth:`state_dict`."""
        monitor = cls(spec, tokenizer=tokenizer)
        monitor.load_state_dict(state)
        return monitor
