"""Drift monitors: spec defaults, text features, detectors and alarm discipline on real text."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from hpod.errors import DataError
from hpod.monitors.drift import (
    Monitor,
    MonitorSpec,
    TextFeatures,
    adjust_p_values,
    cost_drift,
    embedding_drift,
    features_from_path,
    novelty_drift,
    novelty_reference,
    performance_drift,
    text_features,
)

CNNDM = Path(__file__).resolve().parents[2].parent / "shared/data/cnndm_sample_100.jsonl"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_LEGAL_WORDS = (
    "the lessee shall indemnify lessor against any claim arising under this agreement pursuant to "
    "section clause herein thereof whereas notwithstanding foregoing party parties covenant warrant "
    "represent tenant landlord premises term termination breach remedy liability damages arbitration "
    "jurisdiction governing law severability assignment consent notice writing executed counterpart"
).split()


@pytest.fixture(scope="module")
def articles() -> list[list[str]]:
    if not CNNDM.exists():
        pytest.skip(f"{CNNDM} is absent")
    rows = [json.loads(line)["article"] for line in CNNDM.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [_SENTENCE.split(text) for text in rows]


def _window(
    rng: np.random.Generator, articles: list[list[str]], size: int = 50, keep: float = 1.0, legal: bool = False
) -> list[str]:
    """Sentence-resampled articles; ``keep`` truncates them, ``legal`` swaps every sentence
    for a contract-like sentence of the same length (another domain)."""
    docs = []
    for _ in range(size):
        sentences = articles[rng.integers(len(articles))]
        doc = [sentences[j] for j in rng.integers(len(sentences), size=len(sentences))]
        doc = doc[: max(1, round(len(doc) * keep))]
        if legal:
            doc = [" ".join(rng.choice(_LEGAL_WORDS, size=len(s.split()))).capitalize() + "." for s in doc]
        docs.append(" ".join(doc))
    return docs


@pytest.fixture(scope="module")
def reference(articles: list[list[str]]) -> list[TextFeatures]:
    # a random half of the real articles is the window the model was tuned on
    order = np.random.default_rng(7).permutation(len(articles))
    return [text_features(" ".join(articles[i])) for i in order[: len(articles) // 2]]


# -- spec ------------------------------------------------------------------


def test_kind_alone_gives_a_working_data_monitor(reference: list[TextFeatures], articles: list[list[str]]) -> None:
    spec = MonitorSpec.model_validate({"kind": "data"})
    assert (spec.name, spec.source.type, spec.detector) == ("data", "served", ["ks", "js", "novelty"])
    assert spec.confirm >= 2 and spec.window >= spec.min_samples
    check = Monitor(spec, reference).check(_window(np.random.default_rng(0), articles))
    assert check.status == "checked" and not check.over_threshold


def test_spec_defaults_for_performance_and_cost() -> None:
    performance = MonitorSpec.model_validate({"kind": "performance"})
    assert performance.source.type == "observations" and performance.source.metric == "loss"
    cost = MonitorSpec.model_validate({"kind": "cost", "cooldown": "6h"})
    assert cost.source.metric == "energy_joules" and cost.cooldown_seconds == 21600.0
    watched = MonitorSpec.model_validate({"kind": "data", "source": {"type": "path", "path": "/data/new"}})
    assert str(watched.source.path) == "/data/new"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "data", "detector": "adwin"}, "detector 'adwin' is not a data detector"),
        ({"kind": "data", "threshold": {"psi": 0.2}}, "threshold names 'psi'"),
        ({"kind": "data", "window": 10, "min_samples": 20}, "min_samples (20) must be <= window (10)"),
        ({"kind": "performance", "source": "served"}, "source 'served' cannot feed a performance monitor"),
        ({"kind": "data", "cooldown": "soon"}, "got 'soon'"),
        ({"kind": "data", "confirm": 0}, "greater than or equal to 1"),
        ({"kind": "data", "colour": "red"}, "Extra inputs are not permitted"),
        ({"kind": "cost", "options": {"k": 1}}, "options.k is not an option"),
        ({"kind": "data", "options": {"tail": 0.7}}, "options.tail must be in (0, 0.5), got 0.7"),
        ({"kind": "data", "options": {"pool": 1.5}}, "options.pool must be a whole number of windows"),
        ({"kind": "data", "detector": ["ks"], "options": {"pool": 2}}, "options.pool is not an option"),
    ],
)
def test_spec_rejects_bad_entries_with_a_clear_message(entry: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        MonitorSpec.model_validate(entry)


# -- features --------------------------------------------------------------


def test_features_keep_no_text_and_survive_json() -> None:
    text = "Zanzibarian quokkas negotiated the treaty."
    features = text_features(text)
    encoded = json.dumps(features.model_dump(mode="json"))
    assert "quokka" not in encoded.lower()
    assert TextFeatures.model_validate(json.loads(encoded)) == features
    assert features.n_tokens == 6 and features.n_bytes == len(text)
    assert sum(features.buckets.values()) == 6


def test_feature_hashing_is_identical_across_processes() -> None:
    code = "from hpod.monitors.drift import text_features; print(sorted(text_features('a b c drift').buckets))"
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
        outputs.add(run.stdout)
    assert len(outputs) == 1


def test_features_use_a_tokenizers_ids() -> None:
    class Ids:
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return [ord(c) for c in text]

    features = text_features("abca", Ids())
    assert features.n_tokens == 4 and sum(features.buckets.values()) == 4 and len(features.buckets) <= 3


def test_features_from_a_watched_path_read_only_new_records(tmp_path: Path) -> None:
    data = tmp_path / "new.jsonl"
    data.write_text(json.dumps({"article": "one two three"}) + "\n", encoding="utf-8")
    first, offsets = features_from_path(tmp_path, "article")
    with data.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"article": "four five"}) + "\n" + '{"article": "half writ')
    second, offsets = features_from_path(tmp_path, "article", offsets=offsets)
    assert [f.n_tokens for f in first] == [3] and [f.n_tokens for f in second] == [2]
    with pytest.raises(DataError, match="text_field='text'"):
        features_from_path(data, "text")


# -- data drift on real text -----------------------------------------------


def _alarms(monitor: Monitor, windows: list[list[str]]) -> list[int]:
    return [i for i, window in enumerate(windows) if monitor.check(window).fired]


def test_in_distribution_stream_raises_no_alarm(reference: list[TextFeatures], articles: list[list[str]]) -> None:
    rng = np.random.default_rng(1)
    monitor = Monitor({"kind": "data"}, reference)
    checks = [monitor.check(_window(rng, articles)) for _ in range(20)]
    assert not any(check.fired for check in checks)
    assert monitor.alarms_total == 0
    assert all(check.p_value is not None and 0 < check.p_value <= 1 for check in checks)


@pytest.mark.parametrize(
    ("shift", "reason"),
    [({"keep": 0.25}, "drift:data:length"), ({"legal": True}, "drift:data:vocabulary")],
    ids=["shorter-texts", "legal-domain"],
)
def test_shifted_stream_fires_once_after_confirmation_then_cools_down(
    reference: list[TextFeatures], articles: list[list[str]], shift: dict, reason: str
) -> None:
    rng = np.random.default_rng(2)
    monitor = Monitor({"kind": "data", "confirm": 2, "cooldown": 10}, reference)
    checks = [monitor.check(_window(rng, articles, **shift)) for _ in range(12)]
    assert all(check.over_threshold for check in checks)
    assert [i for i, check in enumerate(checks) if check.fired] == [1]  # the 2nd window confirms
    # the test that names the shift rejects; texts this short or this foreign are also
    # each unlike the reference, so the novelty test rejects too and may give the reason
    over = {r.reason for r in checks[1].results if r.over_threshold}
    assert reason in over and checks[1].reason in over and monitor.alarms_total == 1
    assert checks[-1].cooldown_remaining == 0


def test_window_below_min_samples_is_ignored(reference: list[TextFeatures], articles: list[list[str]]) -> None:
    monitor = Monitor({"kind": "data", "min_samples": 20}, reference)
    monitor.check(_window(np.random.default_rng(3), articles, keep=0.25))
    check = monitor.check(_window(np.random.default_rng(3), articles, size=5, keep=0.25))
    assert check.status == "insufficient" and not check.fired and check.consecutive == 1
    assert monitor.check(_window(np.random.default_rng(4), articles, keep=0.25)).fired


def test_embedding_mmd_detects_a_mean_shift_not_noise() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(60, 16))
    same = embedding_drift(reference, rng.normal(size=(40, 16)), rng=rng)
    shifted = embedding_drift(reference, rng.normal(size=(40, 16)) + 0.8, rng=rng)
    assert not same.over_threshold and same.p_value > 0.05
    assert shifted.over_threshold and shifted.reason == "drift:data:embedding"


def test_mmd_monitor_reads_embeddings_from_features() -> None:
    rng = np.random.default_rng(5)

    def window(offset: float, size: int = 30) -> list[dict]:
        return [
            text_features("x y", embedding=rng.normal(size=8) + offset).model_dump(mode="json") for _ in range(size)
        ]

    monitor = Monitor({"kind": "data", "detector": ["mmd"], "confirm": 1}, window(0.0, 60))
    assert not monitor.check(window(0.0)).fired
    assert monitor.check(window(1.0)).fired


def test_holm_is_less_conservative_than_bonferroni() -> None:
    assert adjust_p_values([0.01, 0.04, 0.03], "bonferroni") == pytest.approx([0.03, 0.12, 0.09])
    assert adjust_p_values([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])


# -- performance and cost --------------------------------------------------


@pytest.mark.parametrize("detector", ["page_hinkley", "adwin", "cusum"])
def test_performance_monitor_fires_on_a_step_not_without(detector: str) -> None:
    rng = np.random.default_rng(11)
    noise = rng.normal(0.0, 0.05, size=1000)
    for step, expect_alarm in ((0.0, False), (0.15, True)):
        stream = 1.2 + noise + np.where(np.arange(1000) >= 525, step, 0.0)  # validation loss
        monitor = Monitor({"kind": "performance", "detector": detector})  # first window = reference
        windows = [stream[i : i + 50] for i in range(0, 1000, 50)]
        alarms = _alarms(monitor, windows)  # type: ignore[arg-type]
        if expect_alarm:
            assert alarms and 10 <= alarms[0] <= 12, alarms
        else:
            assert alarms == []


def test_performance_direction_ignores_improvements() -> None:
    reference = np.random.default_rng(0).normal(1.0, 0.05, size=50)
    better = reference - 0.2
    assert performance_drift(reference, better, method="cusum").over_threshold
    assert not performance_drift(reference, better, method="cusum", direction="increase").over_threshold


def test_cost_monitor_fires_on_30_percent_more_energy_not_on_noise() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(5000.0, 150.0, size=5)  # joules per epoch of the reference configuration
    noise = Monitor({"kind": "cost"}, reference)
    shifted = Monitor({"kind": "cost"}, reference)
    assert _alarms(noise, [rng.normal(5000.0, 150.0, size=3) for _ in range(20)]) == []  # type: ignore[misc]
    alarms = _alarms(shifted, [rng.normal(6500.0, 150.0, size=3) for _ in range(20)])  # type: ignore[misc]
    assert alarms[0] == 1
    result = cost_drift(reference, [6500.0] * 3)
    assert result.reason == "drift:cost" and result.details["relative_change"] == pytest.approx(0.3, abs=0.05)


# -- the novelty test --------------------------------------------------------


def _counts(rng: np.random.Generator, topic: int, n: int, buckets: int = 4096) -> np.ndarray:
    """``n`` documents (token counts over ``buckets``) of a Zipfian topic: topic 0 uses
    buckets 0-999, topic 1 buckets 600-1599 in another order; each document draws its
    own word distribution around the topic's (Dirichlet), and 150-400 tokens."""
    ranks = np.arange(1, 1001)
    base = (1.0 / ranks) / (1.0 / ranks).sum()
    columns = np.arange(1000) if topic == 0 else 600 + np.random.default_rng(99).permutation(1000)
    out = np.zeros((n, buckets))
    for row in range(n):
        probs = rng.dirichlet(base * 300)
        out[row, columns] = rng.multinomial(int(rng.integers(150, 401)), probs)
    return out


def test_novelty_flags_a_few_foreign_documents_not_familiar_ones() -> None:
    from scipy import stats

    rng = np.random.default_rng(21)
    reference = novelty_reference(_counts(rng, 0, 60))
    clean = [novelty_drift(reference, _counts(rng, 0, 30), alpha=0.05 / 3) for _ in range(5)]
    assert not any(r.over_threshold for r in clean) and all(r.score < 1.0 for r in clean)
    mixed = novelty_drift(reference, np.vstack([_counts(rng, 0, 27), _counts(rng, 1, 3)]), alpha=0.05 / 3)
    assert mixed.over_threshold and mixed.reason == "drift:data:novelty" and mixed.details["novel_current"] >= 3
    # the p-value is the binomial tail of the count of novel documents
    k, m, tail = int(mixed.statistic), mixed.details["n_pooled"], mixed.details["tail"]
    assert mixed.p_value == pytest.approx(stats.binom.sf(k - 1, m, tail), rel=1e-9)
    assert mixed.statistic >= mixed.threshold and mixed.score > 1.0
    with pytest.raises(ValueError, match="at least 5 reference texts"):
        novelty_reference(_counts(rng, 0, 4))


def test_novelty_score_grows_with_the_number_of_foreign_documents() -> None:
    rng = np.random.default_rng(22)
    reference = novelty_reference(_counts(rng, 0, 60))
    scores = [
        novelty_drift(reference, np.vstack([_counts(rng, 0, 30 - k), _counts(rng, 1, k)]), alpha=0.05 / 3).score
        for k in (3, 6, 15, 30)
    ]
    assert 1.0 < scores[0] < scores[1] < scores[2] < scores[3], scores


def test_novelty_pools_the_last_windows_and_survives_a_restart() -> None:
    from hpod.monitors.drift import TextFeatures

    def features(counts: np.ndarray) -> list[TextFeatures]:
        return [
            TextFeatures(n_tokens=int(row.sum()), n_bytes=int(row.sum()) * 5,
                         buckets={int(i): int(row[i]) for i in np.flatnonzero(row)})
            for row in counts
        ]

    rng = np.random.default_rng(23)
    spec = {"kind": "data", "detector": ["novelty"], "confirm": 2, "cooldown": 1, "options": {"pool": 2}}
    monitor = Monitor(spec, features(_counts(rng, 0, 60)))
    first = monitor.check(features(np.vstack([_counts(rng, 0, 28), _counts(rng, 1, 2)])))
    stored = json.loads(json.dumps(monitor.state_dict()))
    resumed = Monitor.from_state(spec, stored)
    window = features(np.vstack([_counts(rng, 0, 28), _counts(rng, 1, 2)]))
    second, again = monitor.check(window), resumed.check(window)
    details = second.results[0].details
    assert first.results[0].details["windows_pooled"] == 1
    assert (details["windows_pooled"], details["n_pooled"]) == (2, 60)
    assert details["novel_pooled"] == details["novel_current"] + first.results[0].details["novel_current"]
    assert again.results[0].to_dict() == second.results[0].to_dict()
    assert "z_scores" not in details  # per-document numbers stay in the monitor's state, not in the record
    # an alarm empties the pool and a window in the cooldown does not feed it: the documents
    # that raised the alarm are not counted again once traffic is back to normal
    assert second.fired and not first.fired
    familiar = features(_counts(rng, 0, 30))
    after = [monitor.check(familiar) for _ in range(3)]
    assert [c.results[0].details["windows_pooled"] for c in after] == [1, 1, 2]
    assert not any(c.fired for c in after)
    monitor.set_reference(features(_counts(rng, 0, 60)))  # a new reference: the old windows' z-scores go
    assert monitor.check(window).results[0].details["windows_pooled"] == 1


# -- state -----------------------------------------------------------------


def test_state_round_trips_through_json_and_resumes(reference: list[TextFeatures], articles: list[list[str]]) -> None:
    rng = np.random.default_rng(4)
    spec = {"kind": "data", "confirm": 2, "cooldown": 3}
    original = Monitor(spec, reference)
    assert original.check(_window(rng, articles, keep=0.25)).over_threshold
    stored = json.loads(json.dumps(original.state_dict()))
    resumed = Monitor.from_state(spec, stored)
    assert resumed.state_dict() == original.state_dict()
    upcoming = [_window(rng, articles, keep=0.25) for _ in range(4)]
    left = [original.check(w).to_dict() for w in upcoming]
    right = [resumed.check(w).to_dict() for w in upcoming]
    for a, b in zip(left, right, strict=True):
        a.pop("checked_at"), b.pop("checked_at")
        assert a == b
    assert [c["fired"] for c in right] == [True, False, False, False]  # the run of 1 carried over
    assert resumed.state_dict(include_reference=False)["alarms_total"] == 1


def test_cooldown_in_seconds_uses_the_clock() -> None:
    reference = np.full(5, 100.0)
    monitor = Monitor({"kind": "cost", "confirm": 1, "cooldown": "1h"}, reference)
    assert monitor.check([150.0] * 3, now=0.0).fired
    assert not monitor.check([150.0] * 3, now=1800.0).fired
    assert monitor.check([150.0] * 3, now=3601.0).fired
    with pytest.raises(ValueError, match="state is for a 'cost' monitor"):
        Monitor({"kind": "performance"}).load_state_dict(monitor.state_dict())


# -- real text: whole held-out articles, another real domain mixed in ---------


@pytest.fixture(scope="module")
def split_articles() -> tuple[list[TextFeatures], list[TextFeatures]]:
    """Whole CNN/DailyMail articles: a reference of 50 and the 50 held-out others."""
    if not CNNDM.exists():
        pytest.skip(f"{CNNDM} is absent")
    texts = [json.loads(line)["article"] for line in CNNDM.read_text(encoding="utf-8").splitlines() if line.strip()]
    order = np.random.default_rng(11).permutation(len(texts))
    features = [text_features(texts[i]) for i in order]
    return features[:50], features[50:]


@pytest.fixture(scope="module")
def python_docs() -> list[TextFeatures]:
    """Another real domain that ships with Python: its reference documentation topics,
    kept when as long as news articles (150 to 1700 words)."""
    topics = pytest.importorskip("pydoc_data.topics").topics
    return [text_features(topics[k]) for k in sorted(topics) if 150 <= len(topics[k].split()) <= 1700]


def _mixed(
    rng: np.random.Generator, held_out: list[TextFeatures], other: list[TextFeatures], share: float, size: int = 30
) -> list[TextFeatures]:
    k = round(share * size)
    window = [held_out[i] for i in rng.choice(len(held_out), size - k, replace=False)]
    return window + [other[i] for i in rng.choice(len(other), k, replace=False)]


def test_default_monitor_states_its_window_and_the_texts_before_an_alarm(
    split_articles: tuple[list[TextFeatures], list[TextFeatures]],
) -> None:
    reference, held_out = split_articles
    spec = MonitorSpec.model_validate({"kind": "data"})
    assert spec.facts()["window"] == spec.window and spec.samples_to_alarm == spec.confirm * spec.window
    fresh = Monitor(spec)
    assert fresh.samples_to_alarm == spec.samples_to_alarm + spec.window  # the first window becomes the reference
    monitor = Monitor(spec, reference)
    check = monitor.check(held_out[: spec.window])
    assert (check.window, check.samples_to_alarm) == (spec.window, spec.samples_to_alarm)
    facts = monitor.state_dict()["facts"]
    assert facts["samples_to_alarm"] == spec.samples_to_alarm and facts["reference_size"] == len(reference)


def test_held_out_articles_do_not_alarm_and_score_below_one(
    split_articles: tuple[list[TextFeatures], list[TextFeatures]],
) -> None:
    reference, held_out = split_articles
    rng = np.random.default_rng(12)
    monitor = Monitor({"kind": "data"}, reference)
    checks = [monitor.check(_mixed(rng, held_out, [], 0.0)) for _ in range(8)]
    assert not any(check.fired for check in checks)
    assert sum(check.score < 1.0 for check in checks) >= 7


def test_half_python_docs_alarms_within_four_windows(
    split_articles: tuple[list[TextFeatures], list[TextFeatures]], python_docs: list[TextFeatures]
) -> None:
    reference, held_out = split_articles
    rng = np.random.default_rng(13)
    monitor = Monitor({"kind": "data"}, reference)
    checks = [monitor.check(_mixed(rng, held_out, python_docs, 0.5)) for _ in range(4)]
    fired = [check for check in checks if check.fired]
    assert fired and fired[0].reason == "drift:data:novelty"


def test_a_tenth_of_python_docs_alarms_within_four_windows(
    split_articles: tuple[list[TextFeatures], list[TextFeatures]], python_docs: list[TextFeatures]
) -> None:
    reference, held_out = split_articles
    fired = 0
    for seed in range(3):
        rng = np.random.default_rng([16, seed])
        monitor = Monitor({"kind": "data"}, reference)
        checks = [monitor.check(_mixed(rng, held_out, python_docs, 0.1)) for _ in range(4)]
        fired += any(check.fired for check in checks)
    assert fired >= 2


def test_drift_score_grows_with_the_share_of_another_domain(
    split_articles: tuple[list[TextFeatures], list[TextFeatures]], python_docs: list[TextFeatures]
) -> None:
    reference, held_out = split_articles
    means = []
    for share in (0.0, 0.1, 0.25, 0.5, 1.0):
        rng = np.random.default_rng(14)
        monitor = Monitor({"kind": "data"}, reference)
        means.append(np.mean([monitor.check(_mixed(rng, held_out, python_docs, share)).score for _ in range(3)]))
    assert means[0] < 1.0 < means[1] < means[2] < means[3] < means[4], means


def test_page_hinkley_score_keeps_growing_with_the_step() -> None:
    rng = np.random.default_rng(15)
    reference = rng.normal(1.2, 0.05, size=50)
    noise = rng.normal(0.0, 0.05, size=50)
    scores = [performance_drift(reference, 1.2 + step * 0.05 + noise).score for step in (0.0, 1.0, 2.0, 4.0)]
    assert scores[0] < 1.0 < scores[2] < scores[3] and scores[1] < scores[2], scores
