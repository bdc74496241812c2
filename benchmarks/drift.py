"""Drift detectors on real text: the criteria of issue 13 on whole held-out documents.

Run ``python -m benchmarks.drift`` (``--quick`` for a CI smoke run). Main table (real
text only): in-distribution documents are whole CNN/DailyMail articles
(../shared/data/cnndm_sample_100.jsonl). Each stream splits the 100 articles at random
into a reference (50 articles, what the model was tuned on) and a held-out pool (the
other 50, disjoint by article); a window holds ``window`` whole documents: held-out
articles, with a share of them (10 / 25 / 50 / 100 %) replaced by whole documents of
another real domain. Domains, all on this machine and kept only when their length
(words) is within the range of the articles' lengths, so that length alone does not
give them away:

* ``debian-copyright`` (TUNING domain: the novelty test's distances, tail and pool were
  chosen on it): distinct /usr/share/doc/*/copyright files, licence texts;
* ``python-pydoc`` (held out from the choice of settings, but its figures were printed
  while comparing per-document distances): Python's reference topics
  (``pydoc_data.topics``), technical documentation;
* ``package-descriptions`` (HELD OUT: added, and first read, after the settings were
  fixed): the long descriptions (README) in the METADATA of the Python packages
  installed beside hpod.

Criteria (issue 13): a 25 % mix detected in >= 90 % of streams within 4 windows, 10 %
in >= 50 %; <= 1 % false alarms over >= 500 held-out in-distribution windows;
``hpod_drift_score`` below 1.0 on >= 95 % of clean windows and larger for larger
mixes. Every alarm goes through the default data monitor's discipline. A second,
labelled table keeps the old synthetic rows (sentence-resampled articles, word-list
substitution), and a third the simulated performance and cost streams.
Results: benchmarks/results/drift.json and drift.md.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.metadata
import itertools
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._machine import describe_machine
from hpod.monitors.drift import DEFAULT_BUCKETS, Monitor, MonitorSpec, TextFeatures, text_features

ROOT = Path(__file__).resolve().parents[1]
CNNDM = ROOT.parent / "shared/data/cnndm_sample_100.jsonl"
RESULTS = ROOT / "benchmarks/results"
DEFAULT_SPEC = MonitorSpec.model_validate({"kind": "data"})
REFERENCE_ARTICLES = 50
MIXES = (0.1, 0.25, 0.5, 1.0)
HORIZON = 4  # "detected within 4 windows"
WINDOW_SYNTHETIC = 50
WINDOW_METRIC = 50
MAX_DELAY_WINDOWS = 20
TUNING_DOMAIN = "debian-copyright"
DOMAIN_ROLES = {
    "debian-copyright": "tuning",
    "python-pydoc": "held out (seen while exploring)",
    "package-descriptions": "held out",
}
CLEAN_WINDOWS = 12
#: seed of the real-text streams' splits and draws; the exploration that chose the
#: novelty test's settings used other seeds (0, 1, 5)
REAL_SEED = 20261130
#: issue 13's targets
TARGETS = {"false_alarm_rate": 0.01, "clean_windows": 500, "score_below_1_rate": 0.95, 0.25: 0.9, 0.1: 0.5}
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_LEGAL_WORDS = (
    "the lessee shall indemnify lessor against any claim arising under this agreement pursuant to "
    "section clause herein thereof whereas notwithstanding foregoing party parties covenant warrant "
    "represent tenant landlord premises term termination breach remedy liability damages arbitration "
    "jurisdiction governing law severability assignment consent notice writing executed counterpart"
).split()

#: shift sizes of the synthetic and simulated streams: fraction of sentences kept
#: (length), fraction replaced by word-list sentences (vocabulary), step in reference
#: SDs (performance), cost change.
SHIFTS: dict[str, dict[str, float]] = {
    "length": {"small": 0.8, "medium": 0.5, "large": 0.25},
    "vocabulary": {"small": 0.1, "medium": 0.25, "large": 1.0},
    "performance": {"small": 0.5, "medium": 1.0, "large": 2.0},
    "cost": {"small": 0.1, "medium": 0.2, "large": 0.3},
}
SYNTHETIC_DETECTORS: dict[str, list[str]] = {"ks+js+novelty (default)": ["ks", "js", "novelty"]}


def machine() -> dict[str, Any]:
    info = describe_machine()
    try:
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        info["load_average_1_5_15"] = None
    return info


# -- real text -------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.split())


def load_articles() -> list[str]:
    return [json.loads(line)["article"] for line in CNNDM.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_domains(articles: list[str]) -> dict[str, list[str]]:
    """Whole documents of other real domains found on this machine, length-matched to
    the articles (kept when their word count is within the articles' range)."""
    low, high = min(map(_words, articles)), max(map(_words, articles))
    copyright_texts: dict[str, str] = {}
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        copyright_texts.setdefault(hashlib.sha256(text.encode()).hexdigest(), text)
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a Python built without its documentation data
        topics = {}
    descriptions: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        metadata = dist.read_text("METADATA") or ""
        name = (dist.metadata["Name"] or "").lower()
        # the long description is the METADATA body, after the first blank line
        body = metadata.split("\n\n", 1)[1] if "\n\n" in metadata else ""
        if name and body.strip():
            descriptions.setdefault(name, body)
    domains = {
        "debian-copyright": list(copyright_texts.values()),
        "python-pydoc": [topics[key] for key in sorted(topics)],
        "package-descriptions": [descriptions[key] for key in sorted(descriptions)],
    }
    return {name: [t for t in texts if low <= _words(t) <= high] for name, texts in domains.items()}


def _features(texts: list[str], n_buckets: int) -> list[TextFeatures]:
    return [text_features(text, n_buckets=n_buckets) for text in texts]


def _check_until_alarm(monitor: Monitor, windows: list[list[TextFeatures]]) -> tuple[int | None, list[Any]]:
    """Check windows up to the first alarm; the delay is its 1-based window, None when
    none fired (the checks of every window then)."""
    checks = []
    for window in windows:
        checks.append(monitor.check(window))
        if checks[-1].fired:
            return len(checks), checks
    return None, checks


def _raw_p(check: Any) -> dict[str, float | None]:
    return {r.detector: r.p_value for r in check.results}


def run_real(
    articles: list[str],
    domains: dict[str, list[str]],
    spec: MonitorSpec,
    *,
    streams: int,
    clean_windows: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Clean streams (false alarms) and mixed streams (detection) on whole documents."""
    window = spec.window
    held_out = len(articles) - REFERENCE_ARTICLES
    if window > held_out:
        raise SystemExit(f"the window ({window}) is larger than the held-out pool ({held_out} articles)")
    news = _features(articles, spec.n_buckets)
    other = {name: _features(texts, spec.n_buckets) for name, texts in domains.items() if len(texts) >= window}
    rng = np.random.default_rng(seed)
    clean: list[dict[str, Any]] = []
    mixed: list[dict[str, Any]] = []
    seconds: list[float] = []
    cpu_seconds: list[float] = []
    for stream in range(streams):
        order = rng.permutation(len(articles))
        reference = [news[i] for i in order[:REFERENCE_ARTICLES]]
        pool = order[REFERENCE_ARTICLES:]
        stream_spec = spec.model_copy(update={"seed": seed * 100_003 + stream})

        def draw(share: float, docs: list[TextFeatures] | None, pool: np.ndarray = pool) -> list[TextFeatures]:
            # stochastic rounding keeps the expected share exact at any window size
            k = 0 if docs is None else int(np.floor(share * window + rng.random()))
            chosen = [news[i] for i in rng.choice(pool, size=window - k, replace=False)]
            if k:
                chosen += [docs[i] for i in rng.choice(len(docs), size=k, replace=False)]  # type: ignore[index]
            return [chosen[i] for i in rng.permutation(len(chosen))]

        monitor = Monitor(stream_spec, reference)
        checks = []
        for _ in range(clean_windows):
            window_features = draw(0.0, None)
            started, cpu_started = time.perf_counter(), time.process_time()
            checks.append(monitor.check(window_features))
            seconds.append(time.perf_counter() - started)
            cpu_seconds.append(time.process_time() - cpu_started)
        clean.append(
            {
                "stream": stream,
                "windows": len(checks),
                "alarms": sum(c.fired for c in checks),
                "over_threshold": sum(c.over_threshold for c in checks),
                "scores": [round(c.score, 4) for c in checks],
                "p_values": [_raw_p(c) for c in checks],
            }
        )
        for name, docs in other.items():
            for share in MIXES:
                windows = [draw(share, docs) for _ in range(HORIZON)]
                delay, mixed_checks = _check_until_alarm(Monitor(stream_spec, reference), windows)
                fired = next((c for c in mixed_checks if c.fired), None)
                mixed.append(
                    {
                        "stream": stream,
                        "domain": name,
                        "mix": share,
                        "delay": delay,
                        "first_window_score": round(mixed_checks[0].score, 4),
                        "scores": [round(c.score, 4) for c in mixed_checks],
                        "p_values": [_raw_p(c) for c in mixed_checks],
                        "reason": None if fired is None else fired.reason,
                    }
                )
    return {"clean": clean, "mixed": mixed, "seconds_per_check": seconds, "cpu_seconds_per_check": cpu_seconds}


def summarise_real(raw: dict[str, Any], domains: dict[str, list[str]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    clean = raw["clean"]
    windows = sum(s["windows"] for s in clean)
    scores = np.array([x for s in clean for x in s["scores"]])
    rows.append(
        {
            "scenario": "held-out in-distribution",
            "domain": "cnn-dailymail (held-out articles)",
            "mix": 0.0,
            "streams": len(clean),
            "windows": windows,
            "false_alarm_rate": sum(s["alarms"] for s in clean) / windows,
            "window_over_threshold_rate": sum(s["over_threshold"] for s in clean) / windows,
            "score_below_1_rate": float(np.mean(scores < 1.0)),
            "median_score": float(np.median(scores)),
            "detection_rate": None,
            "detection_delay_windows": None,
            "alarm_reasons": None,
        }
    )
    for name in sorted({m["domain"] for m in raw["mixed"]}, key=list(DOMAIN_ROLES).index):
        for share in MIXES:
            members = [m for m in raw["mixed"] if m["domain"] == name and m["mix"] == share]
            delays = [m["delay"] for m in members if m["delay"] is not None]
            reasons: dict[str, int] = {}
            for m in members:
                if m["reason"]:
                    reasons[m["reason"]] = reasons.get(m["reason"], 0) + 1
            rows.append(
                {
                    "scenario": f"{share:.0%} {name}",
                    "domain": f"{name} ({DOMAIN_ROLES[name]})",
                    "mix": share,
                    "streams": len(members),
                    "windows": len(members) * HORIZON,
                    "false_alarm_rate": None,
                    "window_over_threshold_rate": None,
                    "score_below_1_rate": None,
                    "median_score": float(np.median([x for m in members for x in m["scores"]])),
                    "detection_rate": len(delays) / len(members),
                    "detection_delay_windows": float(np.mean(delays)) if delays else None,
                    "alarm_reasons": reasons,
                    "documents_in_domain": len(domains[name]),
                }
            )
    return rows


def criteria(real: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 13's criteria, each with its target, the measured value and whether it is met."""
    clean = real[0]
    out: list[dict[str, Any]] = [
        {
            "criterion": "false alarms on held-out in-distribution windows",
            "target": f"<= {TARGETS['false_alarm_rate']:.0%} over >= {TARGETS['clean_windows']} windows",
            "measured": f"{clean['false_alarm_rate']:.2%} over {clean['windows']} windows",
            "met": clean["false_alarm_rate"] <= TARGETS["false_alarm_rate"]
            and clean["windows"] >= TARGETS["clean_windows"],
        },
        {
            "criterion": "hpod_drift_score below 1.0 on clean windows",
            "target": f">= {TARGETS['score_below_1_rate']:.0%}",
            "measured": f"{clean['score_below_1_rate']:.1%}",
            "met": clean["score_below_1_rate"] >= TARGETS["score_below_1_rate"],
        },
    ]
    for name in [n for n in DOMAIN_ROLES if any(r["scenario"].endswith(n) for r in real[1:])]:
        rows = {r["mix"]: r for r in real[1:] if r["scenario"].endswith(name)}
        for share in (0.25, 0.1):
            rate = rows[share]["detection_rate"]
            out.append(
                {
                    "criterion": f"{share:.0%} {name} ({DOMAIN_ROLES[name]}) detected within {HORIZON} windows",
                    "target": f">= {TARGETS[share]:.0%} of streams",
                    "measured": f"{rate:.0%} of {rows[share]['streams']}",
                    "met": rate >= TARGETS[share],
                }
            )
        medians = [clean["median_score"]] + [rows[m]["median_score"] for m in MIXES]
        out.append(
            {
                "criterion": f"median score grows with the share of {name}",
                "target": "0 % < 10 % < 25 % < 50 % < 100 %",
                "measured": " < ".join(f"{x:.2f}" for x in medians),
                "met": all(a < b for a, b in itertools.pairwise(medians)),
            }
        )
    return out


# -- synthetic and simulated streams (secondary tables) ----------------------


class TextStream:
    """Windows of sentence-resampled CNN/DM articles, with optional shifts."""

    def __init__(self, articles: list[list[str]], seed: int) -> None:
        self.articles = articles
        self.rng = np.random.default_rng(seed)
        # a fixed random projection of bag-of-buckets vectors stands in for an encoder's
        # mean-pooled states in the MMD rows (no model download on a benchmark machine)
        self.projection = np.random.default_rng(12345).normal(size=(DEFAULT_BUCKETS, 32)) / np.sqrt(32)
        order = self.rng.permutation(len(articles))
        reference = [text_features(" ".join(articles[i])) for i in order[: len(articles) // 2]]
        self.reference = self._embed(reference)

    def _embed(self, features: list[TextFeatures]) -> list[TextFeatures]:
        out = []
        for item in features:
            vector = np.zeros(item.n_buckets)
            vector[list(item.buckets)] = list(item.buckets.values())
            vector = np.sqrt(vector / max(vector.sum(), 1.0))
            out.append(item.model_copy(update={"embedding": (vector @ self.projection).tolist()}))
        return out

    def window(self, keep: float = 1.0, replace: float = 0.0) -> list[TextFeatures]:
        rng = self.rng
        docs = []
        for _ in range(WINDOW_SYNTHETIC):
            sentences = self.articles[rng.integers(len(self.articles))]
            doc = [sentences[j] for j in rng.integers(len(sentences), size=len(sentences))]
            doc = doc[: max(1, round(len(doc) * keep))]
            doc = [
                " ".join(rng.choice(_LEGAL_WORDS, size=len(s.split()))).capitalize() + "."
                if rng.random() < replace
                else s
                for s in doc
            ]
            docs.append(text_features(" ".join(doc)))
        return self._embed(docs)


def _delay(monitor: Monitor, windows: list[Any]) -> int | None:
    for index, window in enumerate(windows):
        if monitor.check(window).fired:
            return index + 1
    return None


def _row(detector: str, stream: str, shift: str, seed: int, **values: Any) -> dict[str, Any]:
    return {"detector": detector, "stream": stream, "shift": shift, "seed": seed, **values}


def run_synthetic(articles: list[list[str]], seed: int, far_windows: int, delay_windows: int) -> list[dict[str, Any]]:
    stream = TextStream(articles, seed)
    rows: list[dict[str, Any]] = []
    in_dist = [stream.window() for _ in range(far_windows)]
    shifted = {
        (kind, size): [
            stream.window(keep=value) if kind == "length" else stream.window(replace=value)
            for _ in range(delay_windows)
        ]
        for kind in ("length", "vocabulary")
        for size, value in SHIFTS[kind].items()
    }
    for name, detectors in SYNTHETIC_DETECTORS.items():
        spec = {"kind": "data", "detector": detectors, "seed": seed, "window": WINDOW_SYNTHETIC}
        monitor = Monitor(spec, stream.reference)
        started = time.perf_counter()
        checks = [monitor.check(window) for window in in_dist]
        seconds_per_check = (time.perf_counter() - started) / len(checks)
        rows.append(
            _row(
                name,
                "in-distribution",
                "none",
                seed,
                false_alarm_rate=sum(c.fired for c in checks) / len(checks),
                window_over_threshold_rate=sum(c.over_threshold for c in checks) / len(checks),
                windows=len(checks),
                seconds_per_check=seconds_per_check,
            )
        )
        for (kind, size), windows in shifted.items():
            delay = _delay(Monitor(spec, stream.reference), windows)
            rows.append(_row(name, kind, size, seed, detection_delay_windows=delay, detected=delay is not None))
    return rows


def run_performance(seed: int, far_windows: int, delay_windows: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for detector in ("page_hinkley", "adwin", "cusum"):
        rng = np.random.default_rng([seed, 1])
        mean, sd = 1.2, 0.05  # a validation loss and its per-batch noise
        reference = rng.normal(mean, sd, size=WINDOW_METRIC)
        spec = {"kind": "performance", "detector": detector}
        monitor = Monitor(spec, reference)
        checks = [monitor.check(rng.normal(mean, sd, size=WINDOW_METRIC)) for _ in range(far_windows)]
        rows.append(
            _row(
                detector,
                "in-distribution",
                "none",
                seed,
                false_alarm_rate=sum(c.fired for c in checks) / len(checks),
                window_over_threshold_rate=sum(c.over_threshold for c in checks) / len(checks),
                windows=len(checks),
            )
        )
        for size, step in SHIFTS["performance"].items():
            windows = [rng.normal(mean + step * sd, sd, size=WINDOW_METRIC) for _ in range(delay_windows)]
            first_score = Monitor(spec, reference).check(windows[0]).score
            delay = _delay(Monitor(spec, reference), windows)
            rows.append(
                _row(
                    detector,
                    "performance",
                    size,
                    seed,
                    detection_delay_windows=delay,
                    detected=delay is not None,
                    first_window_score=first_score,
                )
            )
    return rows


def run_cost(seed: int, far_windows: int, delay_windows: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng([seed, 2])
    joules, noise = 5000.0, 0.03  # energy per epoch of the reference configuration, 3 % run-to-run noise
    reference = joules * (1 + noise * rng.standard_normal(5))
    spec = {"kind": "cost"}
    monitor = Monitor(spec, reference)
    checks = [monitor.check(joules * (1 + noise * rng.standard_normal(3))) for _ in range(far_windows)]
    rows = [
        _row(
            "relative_change",
            "in-distribution",
            "none",
            seed,
            false_alarm_rate=sum(c.fired for c in checks) / len(checks),
            window_over_threshold_rate=sum(c.over_threshold for c in checks) / len(checks),
            windows=len(checks),
        )
    ]
    for size, change in SHIFTS["cost"].items():
        windows = [joules * (1 + change) * (1 + noise * rng.standard_normal(3)) for _ in range(delay_windows)]
        delay = _delay(Monitor(spec, reference), windows)
        rows.append(
            _row("relative_change", "cost", size, seed, detection_delay_windows=delay, detected=delay is not None)
        )
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (detector, stream, shift) of the synthetic and simulated streams, over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["detector"], row["stream"], row["shift"]), []).append(row)
    out = []
    for (detector, stream, shift), members in groups.items():
        summary: dict[str, Any] = {"detector": detector, "stream": stream, "shift": shift, "seeds": len(members)}
        if stream == "in-distribution":
            summary["false_alarm_rate"] = float(np.mean([m["false_alarm_rate"] for m in members]))
            summary["window_over_threshold_rate"] = float(np.mean([m["window_over_threshold_rate"] for m in members]))
            summary["windows"] = int(members[0]["windows"])
            summary["detection_delay_windows"] = None
        else:
            delays = [m["detection_delay_windows"] for m in members if m["detected"]]
            summary["detection_delay_windows"] = float(np.mean(delays)) if delays else None
            summary["detected_fraction"] = len(delays) / len(members)
            summary["false_alarm_rate"] = None
            if "first_window_score" in members[0]:
                summary["first_window_score"] = float(np.mean([m["first_window_score"] for m in members]))
        out.append(summary)
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def markdown(
    real: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    info: dict[str, Any],
    met: list[dict[str, Any]],
) -> str:
    spec = info["spec"]
    m = info["machine"]
    lines = [
        "# Drift detectors on real text: issue 13's criteria on whole held-out documents",
        "",
        (f"Machine: {m['cpu']}, {m['cores']} cores, load average {m.get('load_average_1_5_15')} at the start "
         f"(other work ran beside this benchmark); command `{info['command']}` ({info['seconds']:.0f} s). "
         + (f"Time to check one window (reference {REFERENCE_ARTICLES} texts, window {spec['window']}): median "
            f"{info['check_seconds']['median']:.3f} s, 95th percentile {info['check_seconds']['p95']:.3f} s"
            + (f" wall-clock, {info['check_seconds']['cpu_median']:.3f} s of CPU (median)."
               if "cpu_median" in info["check_seconds"] else " wall-clock.")
            if info.get("check_seconds") else "")),
        "",
        (f"Default data monitor: detectors {spec['detector']}, family alpha {spec['alpha']} with Holm's "
         f"correction (each test at {spec['test_level']:.3g}); ks and js are permutation tests "
         f"({spec['permutations']} permutations); novelty counts documents unlike every reference document "
         f"(tail {info['novelty_options']['tail']}, pooled over the last {info['novelty_options']['pool']:.0f} "
         f"windows; hpod/monitors/_drift_novelty.py). Window = {spec['window']} texts, confirm = "
         f"{spec['confirm']} windows, so no alarm before {spec['samples_to_alarm']} texts once the reference "
         f"is set (both shown by `hpod status`); cooldown {spec['cooldown']} windows; {spec['n_buckets']} "
         "hash buckets."),
        "",
        (f"Each stream: a random split of the 100 CNN/DailyMail articles into a reference of "
         f"{REFERENCE_ARTICLES} and a held-out pool of the rest (disjoint by article); windows of whole "
         f"documents drawn from the held-out pool, a share of them replaced by whole documents of another "
         f"domain (length-matched to the articles). Detection = an alarm within {HORIZON} windows. "
         f"Domains: {', '.join(f'{k} ({v})' for k, v in DOMAIN_ROLES.items())}; documents per domain: "
         f"{info['domain_sizes']}. The stream seeds of this run were not used while choosing the settings."),
        "",
        "## Criteria",
        "",
        "| criterion | target | measured | met |",
        "|---|---|---|---|",
        *[f"| {c['criterion']} | {c['target']} | {c['measured']} | {'yes' if c['met'] else 'NO'} |" for c in met],
        "",
        "## Per scenario",
        "",
        ("| scenario | domain | streams | windows | false alarms | windows over threshold | score < 1 | "
         "median score | detected | delay (windows) | alarm reasons |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in real:
        reasons = row.get("alarm_reasons")
        lines.append(
            f"| {row['scenario']} | {row['domain']} | {row['streams']} | {_fmt(row['windows'])} | "
            f"{_pct(row['false_alarm_rate'])} | {_pct(row['window_over_threshold_rate'])} | "
            f"{_pct(row['score_below_1_rate'])} | {_fmt(row['median_score'])} | {_pct(row['detection_rate'])} | "
            f"{_fmt(row['detection_delay_windows'])} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(reasons.items())) if reasons else '–'} |"
        )
    lines += [
        "",
        ("false alarms = alarms fired / clean windows; windows over threshold = clean windows some test "
         "rejected (before confirmation); score < 1 = clean windows whose `hpod_drift_score` is below 1.0; "
         f"median score = of the clean windows, or of the windows of each mixed stream up to its alarm (at most "
         f"{HORIZON}); detected = "
         f"streams with an alarm within {HORIZON} windows; delay = mean windows to the alarm over the "
         "streams that detected (the fastest possible is `confirm`)."),
        "",
        ("Limits: 100 articles give 50 held-out documents per stream, so the clean windows of a stream "
         "overlap (they are not independent); the novelty test's null is a model (a Student-t tail for the "
         "reference's log-distances), checked here on news only: on other data its false-alarm rate is "
         "what this table measures for news only if the reference's distances are as well-behaved; with "
         "a reference of 50 texts no test that only permutes texts can reach p < 0.05 on a window of 30 "
         "with 3 foreign documents; the other domains are technical and legal texts, far from "
         "news: a shift within news (another topic, another outlet) is subtler and was not measured."),
    ]
    lines += [
        "",
        "## Synthetic substitution (secondary; not real text)",
        "",
        (f"Sentence-resampled CNN/DailyMail articles (window = {WINDOW_SYNTHETIC}); length shifts keep "
         "80 / 50 / 25 % of sentences; vocabulary shifts replace 10 / 25 / 100 % of sentences with words from a "
         "60-word contract list. Its in-distribution texts are sentence bootstraps of the articles (sentences "
         "drawn with replacement, so a text repeats sentences, which no real article does): the length and "
         "vocabulary tests find them like the reference, but the novelty test finds many of them unlike every "
         "whole reference article, hence the in-distribution row's false alarms (whole held-out articles, in "
         "the table above, do not show them); its shifted rows are far more optimistic than real text. "
         f"Performance streams: a validation loss stepping by "
         f"0.5 / 1 / 2 reference SDs (window = {WINDOW_METRIC} values); cost: energy +10 / +20 / +30 % "
         f"(threshold 15 %, 3 runs a window). Seeds {info['seeds']}; {info['far_windows']} in-distribution "
         f"windows per seed; delay censored at {info['delay_windows']} windows."),
        "",
        ("| detector | stream | shift | false_alarm_rate | window_over_threshold_rate | "
         "detection_delay_windows | detected_fraction | first_window_score |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        lines.append(
            f"| {row['detector']} | {row['stream']} | {row['shift']} | {_fmt(row.get('false_alarm_rate'))} | "
            f"{_fmt(row.get('window_over_threshold_rate'))} | {_fmt(row.get('detection_delay_windows'))} | "
            f"{_fmt(row.get('detected_fraction'))} | {_fmt(row.get('first_window_score'))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few streams and windows (CI smoke run)")
    parser.add_argument("--streams", type=int, default=50, help="streams (reference splits), default 50")
    parser.add_argument("--clean-windows", type=int, default=CLEAN_WINDOWS,
                        help=f"clean windows per stream, default {CLEAN_WINDOWS}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the synthetic tables, default 3")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    for name in ("streams", "clean_windows", "seeds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    streams, clean_windows = (3, 4) if args.quick else (args.streams, args.clean_windows)
    seeds = list(range(1 if args.quick else args.seeds))
    far_windows = 10 if args.quick else 60
    delay_windows = 4 if args.quick else MAX_DELAY_WINDOWS
    spec = DEFAULT_SPEC
    info: dict[str, Any] = {
        "machine": machine(),
        "spec": {**spec.facts(), "detector": spec.detector, "n_buckets": spec.n_buckets},
        "novelty_options": {key: spec.option("novelty", key) for key in ("tail", "pool")},
        "real_seed": REAL_SEED,
        "domain_roles": DOMAIN_ROLES,
        "reference_articles": REFERENCE_ARTICLES,
        "horizon_windows": HORIZON,
        "tuning_domain": TUNING_DOMAIN,
        "seeds": seeds,
        "far_windows": far_windows,
        "delay_windows": delay_windows,
        "command": " ".join(["python -m benchmarks.drift", *(argv if argv is not None else sys.argv[1:])]),
    }
    print(f"machine: {info['machine']}")
    started = time.perf_counter()
    real: list[dict[str, Any]] = []
    met: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    if CNNDM.exists():
        texts = load_articles()
        domains = load_domains(texts)
        info["domain_sizes"] = {name: len(docs) for name, docs in domains.items()}
        raw = run_real(texts, domains, spec, streams=streams, clean_windows=clean_windows, seed=REAL_SEED)
        real = summarise_real(raw, domains)
        met = criteria(real)
        info["check_seconds"] = {
            "median": float(np.median(raw["seconds_per_check"])),
            "p95": float(np.quantile(raw["seconds_per_check"], 0.95)),
            "checks": len(raw["seconds_per_check"]),
            "cpu_median": float(np.median(raw["cpu_seconds_per_check"])),
        }
        print(f"real text done at {time.perf_counter() - started:.0f} s")
        articles = [_SENTENCE.split(text) for text in texts]
        for seed in seeds:
            rows += run_synthetic(articles, seed, far_windows, delay_windows)
    else:
        info["domain_sizes"] = {}
        print(f"{CNNDM} is absent: the real-text and synthetic text rows are skipped")
    for seed in seeds:
        rows += run_performance(seed, far_windows, delay_windows)
        rows += run_cost(seed, far_windows, delay_windows)
    info["seconds"] = time.perf_counter() - started
    summary = summarise(rows)
    out = args.out / "quick" if args.quick else args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift.json").write_text(
        json.dumps(
            {
                "info": info,
                "criteria": met,
                "real_text": real,
                "synthetic": summary,
                "real_text_streams": raw,
                "per_seed": rows,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    table = markdown(real, summary, info, met)
    (out / "drift.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
